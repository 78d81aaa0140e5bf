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

from sales_st.io import json_exists, read_json, write_json

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
    aliases.update({n: mid for n in names})
    write_json(f"{root}/{ALIASES}", aliases)


def resolve(root: str, ref: str) -> str:
    """A model id or an alias -> the model id; a clear error if neither exists."""
    aliases = read_aliases(root)
    mid = aliases.get(ref, ref)
    if not json_exists(f"{model_dir(root, mid)}/model.json"):
        known = ", ".join(sorted(aliases)) or "none"
        raise FileNotFoundError(
            f"model '{ref}' not found in {root} (aliases: {known}); train one with jobs/train.py"
        )
    return mid


def load_meta(root: str, mid: str) -> dict[str, Any]:
    return read_json(f"{model_dir(root, mid)}/model.json")


def is_complete(root: str, mid: str) -> bool:
    path = f"{model_dir(root, mid)}/model.json"
    return json_exists(path) and read_json(path).get("status") == "complete"


def load_model(root: str, ref: str):
    """(full Keras model with explanation outputs, feature spec, meta) for ``ref``."""
    from sales_st.config import ModelConfig
    from sales_st.model import build_model

    mid = resolve(root, ref)
    d = model_dir(root, mid)
    meta = load_meta(root, mid)
    spec = read_json(f"{d}/feature_spec.json")
    full = build_model(spec, ModelConfig(**meta["model_config"]))
    full.load_weights(_local(f"{d}/weights.h5"))
    return full, spec, meta


def _local(path: str) -> str:
    """h5py needs a local file: copy remote weights to a temp file first."""
    if "://" not in path or path.startswith("file://"):
        return path.replace("file://", "")
    import os
    import tempfile

    import fsspec

    local = os.path.join(tempfile.mkdtemp(prefix="sales_st_"), "weights.h5")
    with fsspec.open(path, "rb") as src, open(local, "wb") as dst:
        dst.write(src.read())
    return local
