"""The model store: one versioned directory per model id, plus aliases.

    <models>/<model_id>/
        weights.h5            final weights (rebuilt from the spec + model config)
        model.json            model config, train config, mode, parent, status
        feature_spec.json     vocabularies, scalers, shapes the model was trained with
        history.json          loss per epoch
        lineage.json          input paths, row counts, run date, config fingerprints
        checkpoints/          per-epoch checkpoints and the resume state
        tensorboard/          TensorBoard logs
    <models>/aliases.json     {"latest": "<model_id>", "pretrained": ..., "finetuned": ...}

A model id is derived from what the model depends on (mode, run date, feature and model
config, parent), so re-running the same training resumes the same directory, and a model
whose ``status`` is ``complete`` is not trained twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sales_st.errors import DataError, MissingInputError
from sales_st.features.spec import FeatureSpec, read_spec
from sales_st.storage.files import json_exists, read_json, write_json

log = logging.getLogger(__name__)

ALIASES = "aliases.json"


def model_id(mode: str, run_date: str, parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{mode}-{run_date}-{hashlib.sha256(blob).hexdigest()[:10]}"


def model_dir(root: str, mid: str) -> str:
    return f"{root.rstrip('/')}/{mid}"


def read_aliases(root: str) -> dict[str, str]:
    path = f"{root}/{ALIASES}"
    return read_json(path) if json_exists(path) else {}


def set_aliases(root: str, mid: str, names: list[str]) -> None:
    aliases = read_aliases(root)
    aliases.update(dict.fromkeys(names, mid))
    write_json(f"{root}/{ALIASES}", aliases)


def resolve(root: str, ref: str) -> str:
    """A model id or an alias -> the model id; a clear error if neither exists."""
    aliases = read_aliases(root)
    mid = aliases.get(ref, ref)
    if not json_exists(f"{model_dir(root, mid)}/model.json"):
        known = ", ".join(sorted(aliases)) or "none"
        raise MissingInputError(
            f"model '{ref}' not found in {root} (aliases: {known}); train one with jobs/train.py"
        )
    return mid


def locate(root: str, ref: str) -> tuple[str, str]:
    """(store root, model id) of ``ref``: a model id or alias in ``root``, or the directory
    of a model in another store (a path or URL holding its ``model.json``), e.g. a model
    pre-trained on a generated catalogue."""
    if "/" in ref and json_exists(f"{ref.rstrip('/')}/model.json"):
        other, _, mid = ref.rstrip("/").rpartition("/")
        return other, mid
    return root, resolve(root, ref)


def load_meta(root: str, mid: str) -> dict[str, Any]:
    return read_json(f"{model_dir(root, mid)}/model.json")


def is_complete(root: str, mid: str) -> bool:
    path = f"{model_dir(root, mid)}/model.json"
    return json_exists(path) and read_json(path).get("status") == "complete"


def load_spec(root: str, mid: str) -> FeatureSpec:
    """The feature spec a stored model was trained with."""
    return read_spec(model_dir(root, mid))


def load_model(root: str, ref: str) -> tuple[Any, FeatureSpec, dict[str, Any]]:
    """(full Keras model with explanation outputs, feature spec, meta) for ``ref``."""
    from sales_st.config import ModelConfig
    from sales_st.config.loader import from_dict
    from sales_st.model.network import build_model

    mid = resolve(root, ref)
    d = model_dir(root, mid)
    meta = load_meta(root, mid)
    spec = load_spec(root, mid)
    full = build_model(spec, from_dict(ModelConfig, meta["model_config"]))
    full.load_weights(_local(f"{d}/weights.h5"))
    verify_outputs(full, spec, d)
    return full, spec, meta


PROBE_FILE = "probe.json"
PROBE_RTOL, PROBE_ATOL = 1e-4, 1e-5


def probe_outputs(full: Any, spec: FeatureSpec) -> list:
    """The model's quantiles on the spec's fixed probe batch (see ``tensors.probe_columns``)."""
    from sales_st.model.tensors import model_inputs_from_columns, probe_columns

    out = full(model_inputs_from_columns(probe_columns(spec), spec), training=False)
    return out["quantiles"].numpy().astype(float).tolist()


def save_weights(full: Any, spec: FeatureSpec, directory: str) -> None:
    """Save every weight of ``full`` and the outputs that prove a later load restored them.

    Raises when the file holds fewer variables than the model (a weight that Keras does not
    track would be re-drawn at random on every load)."""
    import h5py

    path = f"{directory}/weights.h5"
    remote = "://" in path and not path.startswith("file://")
    local = _temp_file() if remote else path.replace("file://", "")
    full.save_weights(local)
    with h5py.File(local, "r") as h5:
        saved = sum(len(h5[name].attrs["weight_names"]) for name in h5.attrs["layer_names"])
    if remote:
        import fsspec

        with open(local, "rb") as src, fsspec.open(path, "wb") as dst:
            dst.write(src.read())
    if saved != len(full.weights):
        raise RuntimeError(
            f"{path} holds {saved} variables, the model has {len(full.weights)}: "
            "some weights are not tracked by the model"
        )
    write_json(f"{directory}/{PROBE_FILE}", {"quantiles": probe_outputs(full, spec)})


def verify_outputs(full: Any, spec: FeatureSpec, directory: str) -> None:
    """Raise unless ``full`` reproduces the probe outputs recorded when it was trained."""
    import numpy as np

    path = f"{directory}/{PROBE_FILE}"
    if not json_exists(path):
        raise DataError(
            f"{path} is missing: the model was saved without its output probe; "
            "retrain it (jobs/train.py --force)"
        )
    want = np.asarray(read_json(path)["quantiles"])
    got = np.asarray(probe_outputs(full, spec))
    if want.shape != got.shape or not np.allclose(got, want, rtol=PROBE_RTOL, atol=PROBE_ATOL):
        diff = float(np.max(np.abs(got - want))) if want.shape == got.shape else float("nan")
        raise DataError(
            f"the model loaded from {directory} does not reproduce the outputs "
            f"recorded at training (max difference {diff:.3g}): its weights were "
            "not all restored; retrain it"
        )


def load_calibration(root: str, mid: str) -> dict[str, Any] | None:
    """The conformal offsets fitted for a model on its validation windows, if any."""
    from sales_st.serving.calibration import CALIBRATION_FILE

    path = f"{model_dir(root, mid)}/{CALIBRATION_FILE}"
    return read_json(path) if json_exists(path) else None


def _temp_file() -> str:
    import os
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="sales_st_"), "weights.h5")


def _local(path: str) -> str:
    """h5py needs a local file: copy remote weights to a temp file first."""
    if "://" not in path or path.startswith("file://"):
        return path.replace("file://", "")
    import fsspec

    local = _temp_file()
    with fsspec.open(path, "rb") as src, open(local, "wb") as dst:
        dst.write(src.read())
    return local
