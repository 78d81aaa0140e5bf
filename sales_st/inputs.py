"""From example-table columns to model inputs: one function for training and for scoring.

Training maps it over a Petastorm ``tf.data`` stream; the forecast job calls it on numpy
arrays cut from pandas batches.  Scalar features are standardised with the scalers of the
feature spec (fitted on the training split); missing values become 0.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from sales_st.spec import OWN_HIST


def _f32(x: Any) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def needed_columns(spec: dict[str, Any]) -> list[str]:
    g = spec["groups"]
    return (g["hist"] + ["hist_dow"] + g["fut"] + ["fut_dow"] + g["neighbour"]
            + g["categorical"] + g["scalars"] + g["static_numeric"] + g["targets"])


def model_inputs_from_columns(cols: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, tf.Tensor]:
    g = spec["groups"]
    L, H, K = spec["history"], spec["horizon"], spec["k"]
    ctx_names = [c for c in g["hist"] if c not in OWN_HIST]
    hist = tf.stack([_f32(cols[c]) for c in OWN_HIST], axis=-1)
    if ctx_names:
        ctx = tf.stack([_f32(cols[c]) for c in ctx_names], axis=1)
    else:
        ctx = tf.zeros_like(hist[:, None, :, 0])
    fut = tf.stack([_f32(cols[c]) for c in g["fut"]], axis=-1)
    sizes = tf.constant([spec["vocab_sizes"][c] for c in g["categorical"]], tf.int32)
    cat = tf.stack([tf.cast(cols[c], tf.int32) for c in g["categorical"]], axis=-1)
    cat = tf.clip_by_value(cat, 0, sizes - 1)
    num_names = g["scalars"] + g["static_numeric"]
    mean = tf.constant([spec["scalers"][c][0] for c in num_names], tf.float32)
    std = tf.constant([spec["scalers"][c][1] for c in num_names], tf.float32)
    # missing values become the training mean (0 once standardised)
    num = (tf.stack([tf.cast(cols[c], tf.float32) for c in num_names], axis=-1) - mean) / std
    num = tf.where(tf.math.is_finite(num), num, tf.zeros_like(num))
    return {
        "hist": hist,
        "hist_dow": tf.reshape(tf.cast(cols["hist_dow"], tf.int32), [-1, L]),
        "ctx_seq": ctx,
        "nbr_y": tf.reshape(_f32(cols["nbr_y"]), [-1, K, L]),
        "nbr_mask": _f32(cols["nbr_mask"]),
        "nbr_dist": _f32(cols["nbr_dist"]),
        "fut": fut,
        "fut_dow": tf.reshape(tf.cast(cols["fut_dow"], tf.int32), [-1, H]),
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
