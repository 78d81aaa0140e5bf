"""From example-table columns to model inputs: one function for training and for scoring.

Training maps it over a Petastorm ``tf.data`` stream; the forecast job calls it on numpy
arrays cut from Arrow batches (:func:`columns_from_arrow`).  Scalar features are
standardised with the scalers of the feature spec (fitted on the training split); missing
values become 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from sales_st.features import names as N
from sales_st.features.spec import FeatureSpec


def _f32(x: Any) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def model_inputs_from_columns(cols: Mapping[str, Any], spec: FeatureSpec) -> dict[str, tf.Tensor]:
    lay = spec.layout
    L, H, K = lay.history, lay.horizon, lay.k
    hist = tf.stack([_f32(cols[c]) for c in lay.own_hist], axis=-1)
    if lay.context_hist:
        ctx = tf.stack([_f32(cols[c]) for c in lay.context_hist], axis=1)
    else:
        ctx = tf.zeros_like(hist[:, None, :, 0])
    fut = tf.stack([_f32(cols[c]) for c in lay.fut], axis=-1)
    vocab_sizes = spec.vocab_sizes
    sizes = tf.constant([vocab_sizes[c] for c in lay.categorical], tf.int32)
    cat = tf.stack([tf.cast(cols[c], tf.int32) for c in lay.categorical], axis=-1)
    cat = tf.clip_by_value(cat, 0, sizes - 1)
    mean = tf.constant([spec.scalers[c][0] for c in lay.numeric], tf.float32)
    std = tf.constant([spec.scalers[c][1] for c in lay.numeric], tf.float32)
    # missing values become the training mean (0 once standardised)
    num = (tf.stack([tf.cast(cols[c], tf.float32) for c in lay.numeric], axis=-1) - mean) / std
    num = tf.where(tf.math.is_finite(num), num, tf.zeros_like(num))
    return {
        "hist": hist,
        "hist_dow": tf.reshape(tf.cast(cols[N.HIST_DOW], tf.int32), [-1, L]),
        "ctx_seq": ctx,
        "nbr_y": tf.reshape(_f32(cols["nbr_y"]), [-1, K, L]),
        "nbr_mask": _f32(cols["nbr_mask"]),
        "nbr_dist": _f32(cols["nbr_dist"]),
        "fut": fut,
        "fut_dow": tf.reshape(tf.cast(cols[N.FUT_DOW], tf.int32), [-1, H]),
        "cat": cat,
        "num": num,
    }


def targets_from_columns(cols: Mapping[str, Any]) -> tf.Tensor:
    """[B, H, 2]: the target divided by the example's scale, and the loss mask.

    Days known to be closed are forecast as 0 by rule, so the loss covers observed open days.
    """
    scale = tf.maximum(_f32(cols["scale"]), 1e-6)[:, None]
    mask = _f32(cols["y_mask"]) * _f32(cols["fut_open"])
    return tf.stack([_f32(cols["y"]) / scale, mask], axis=-1)


def columns_from_pandas(pdf, names: list[str]) -> dict[str, np.ndarray]:
    """Stack a pandas batch's array columns into 2-D numpy arrays (Arrow gives object arrays)."""
    out = {}
    for c in names:
        s = pdf[c]
        if s.dtype == object:
            out[c] = np.stack(s.to_numpy())
        else:
            out[c] = s.to_numpy()
    return out


def columns_from_arrow(batch: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Numpy arrays of an Arrow record batch's (or table's) columns: a list column becomes
    a 2-D array ``[rows, length]`` read straight from the list's values buffer, not one
    Python object per row as through pandas.  Every list of a column must have the same
    length and none may be null (as in the example tables); otherwise a ``ValueError``
    names the column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for c in names:
        a = batch.column(c)
        if isinstance(a, pa.ChunkedArray):
            a = a.combine_chunks()
        if not (pa.types.is_list(a.type) or pa.types.is_large_list(a.type)):
            out[c] = a.to_numpy(zero_copy_only=False)
            continue
        n = len(a)
        lengths = pc.list_value_length(a)
        bounds = pc.min_max(lengths)
        width = bounds["max"].as_py() or 0
        if a.null_count or (n and bounds["min"].as_py() != width):
            raise ValueError(
                f"column {c}: lists must all have the same length and none may be null "
                f"({a.null_count} null, lengths {bounds['min'].as_py()}..{width})"
            )
        # flatten() honours a sliced array's offsets
        out[c] = a.flatten().to_numpy(zero_copy_only=False).reshape(n, width)
    return out


def probe_columns(spec: FeatureSpec, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed, seeded batch of example columns with valid values for ``spec``'s layout: the
    model's outputs on it fingerprint a set of weights (stored at training, checked at load)."""
    rng = np.random.default_rng(seed)
    lay = spec.layout
    L, H, K = lay.history, lay.horizon, lay.k
    cols: dict[str, np.ndarray] = {}
    for c in lay.hist:
        cols[c] = rng.random((n, L)).astype("float32")
    for c in lay.fut:
        cols[c] = rng.random((n, H)).astype("float32")
    cols[N.HIST_DOW] = np.tile(np.arange(L) % 7, (n, 1)).astype("int32")
    cols[N.FUT_DOW] = np.tile(np.arange(H) % 7, (n, 1)).astype("int32")
    cols["nbr_y"] = rng.random((n, K * L)).astype("float32")
    cols["nbr_mask"] = np.ones((n, K), "float32")
    cols["nbr_dist"] = (rng.random((n, K)) * 50).astype("float32")
    cols["nbr_weight"] = np.full((n, K), 1.0 / max(K, 1), "float32")
    sizes = spec.vocab_sizes
    for c in lay.categorical:
        cols[c] = rng.integers(0, sizes[c], n).astype("int32")
    for c in lay.numeric:
        cols[c] = rng.random(n).astype("float32")
    return cols
