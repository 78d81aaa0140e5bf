"""The feature spec: what the example tables hold and how to read them, typed and versioned.

Written by the feature job next to the examples (:func:`write_spec`), read by training to
build the model and its input pipeline, and copied into the model store, so that scoring
rebuilds windows with the vocabularies and scalers the model was trained with.  JSON on disk,
:class:`FeatureSpec` in memory; :func:`read_spec` refuses a spec of another version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import DataError, MissingInputError
from sales_st.features import names as N
from sales_st.storage.files import json_exists, read_json, write_json

SPEC_VERSION = 2
SPEC_FILE = "feature_spec.json"
SPLITS = ("train", "val", "test", "score")


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the model's input columns (see :mod:`sales_st.features.names`)."""

    history: int
    horizon: int
    k: int
    hist: list[str]  # own history channels, then region context channels
    fut: list[str]
    categorical: list[str]  # *_idx columns
    scalars: list[str]
    static_numeric: list[str]

    @property
    def own_hist(self) -> list[str]:
        return [c for c in self.hist if c in N.OWN_HISTORY]

    @property
    def context_hist(self) -> list[str]:
        return [c for c in self.hist if c not in N.OWN_HISTORY]

    @property
    def numeric(self) -> list[str]:
        return self.scalars + self.static_numeric

    def input_columns(self) -> list[str]:
        """Every column the model reads (scoring needs no more)."""
        return (
            self.hist
            + [N.HIST_DOW]
            + self.fut
            + [N.FUT_DOW]
            + list(N.NEIGHBOUR)
            + self.categorical
            + self.numeric
        )

    def all_columns(self) -> list[str]:
        """Model inputs plus targets (what training reads)."""
        return self.input_columns() + list(N.TARGETS)

    def float_columns(self) -> list[str]:
        return self.hist + self.fut + list(N.NEIGHBOUR) + self.numeric + list(N.TARGETS)

    def shapes(self) -> dict[str, list[int]]:
        L, H, K = self.history, self.horizon, self.k
        out: dict[str, list[int]] = {}
        for c in self.hist + [N.HIST_DOW]:
            out[c] = [L]
        for c in self.fut + [N.FUT_DOW, "y", "y_mask"]:
            out[c] = [H]
        out["nbr_y"] = [K, L]
        for c in ("nbr_mask", "nbr_dist", "nbr_weight"):
            out[c] = [K]
        for c in self.categorical + self.numeric + ["scale"]:
            out[c] = []
        return out

    def dtypes(self) -> dict[str, str]:
        ints = set(self.categorical) | {N.HIST_DOW, N.FUT_DOW}
        return {c: ("int32" if c in ints else "float32") for c in self.shapes()}


def make_layout(
    history: int,
    horizon: int,
    k: int,
    lags: list[int],
    rolling_windows: list[int],
    agg_levels: list[str],
    vocab_names: list[str],
    static_numeric: list[str],
    extra_future: list[str] | None = None,
    item_levels: list[str] | None = None,
) -> Layout:
    """The layout of a feature configuration; ``extra_future`` are the config-declared
    known-future channels (event distances, date expressions), after the fixed ones;
    ``item_levels`` the product hierarchy's aggregate channels, after the regions'."""
    return Layout(
        history=history,
        horizon=horizon,
        k=k,
        hist=list(N.OWN_HISTORY)
        + list(N.CONTEXT_HISTORY)
        + [N.aggregate_channel(lvl) for lvl in agg_levels]
        + [N.item_aggregate_channel(lvl) for lvl in item_levels or []],
        fut=list(N.FUTURE) + list(extra_future or []),
        categorical=[N.index_column(name) for name in vocab_names],
        scalars=N.scalar_names(lags, rolling_windows),
        static_numeric=list(static_numeric),
    )


@dataclass(frozen=True)
class SplitInfo:
    path: str
    rows: int


@dataclass(frozen=True)
class FeatureSpec:
    layout: Layout
    dataset: str
    run_date: dt.date
    t0: dt.date
    n_days: int
    aggregate_levels: list[str]
    vocab: dict[str, list[str]]
    scalers: dict[str, list[float]]  # column -> [mean, std] over the training split
    splits: dict[str, SplitInfo]
    neighbours: str
    # fingerprint of the feature settings; and of settings + code + data + run date
    features_config: str
    features_id: str
    created_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    version: int = SPEC_VERSION
    # the sales dates' grid (sales_st.data.frequency.Grid): what a period of the axis,
    # the history and the horizon is
    grid: dict[str, str] = field(default_factory=lambda: DAILY.to_dict())
    # the product hierarchy's columns with an aggregate channel (data.item_hierarchy)
    item_levels: list[str] = field(default_factory=list)
    # ISO weekdays (1 = Monday .. 7 = Sunday) of the training origins: on a daily grid one
    # with features.splits.train_offsets run_date and a stride of 7; empty when unknown
    origin_weekdays: list[int] = field(default_factory=list)

    @property
    def history(self) -> int:
        return self.layout.history

    @property
    def horizon(self) -> int:
        return self.layout.horizon

    @property
    def period(self) -> Grid:
        """The grid of the axis: the horizon's steps are its periods."""
        return Grid.from_dict(self.grid)

    @property
    def k(self) -> int:
        return self.layout.k

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Embedding sizes per *_idx column: the vocabulary plus the unknown index 0."""
        return {N.index_column(name): len(values) + 1 for name, values in self.vocab.items()}

    def split_path(self, split: str) -> str:
        return self.splits[split].path

    def replace(self, **changes: Any) -> FeatureSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["run_date"], out["t0"] = self.run_date.isoformat(), self.t0.isoformat()
        # for people reading the file; derived, ignored when read back
        out["shapes"], out["dtypes"] = self.layout.shapes(), self.layout.dtypes()
        out["vocab_sizes"] = self.vocab_sizes
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> FeatureSpec:
        version = d.get("version")
        if version != SPEC_VERSION:
            raise DataError(
                f"feature spec {source or ''} has version {version}, this code reads version "
                f"{SPEC_VERSION}: rebuild the features (jobs/features.py) and retrain"
            )
        return cls(
            layout=Layout(**d["layout"]),
            dataset=d["dataset"],
            run_date=dt.date.fromisoformat(d["run_date"]),
            t0=dt.date.fromisoformat(d["t0"]),
            n_days=int(d["n_days"]),
            aggregate_levels=list(d["aggregate_levels"]),
            vocab=d["vocab"],
            scalers=d["scalers"],
            splits={k: SplitInfo(**v) for k, v in d["splits"].items()},
            neighbours=d["neighbours"],
            features_config=d["features_config"],
            features_id=d["features_id"],
            created_at=d["created_at"],
            version=version,
            grid=d.get("grid") or DAILY.to_dict(),
            item_levels=list(d.get("item_levels") or []),
            origin_weekdays=[int(v) for v in d.get("origin_weekdays") or []],
        )


def spec_path(directory: str) -> str:
    return f"{directory.rstrip('/')}/{SPEC_FILE}"


def write_spec(directory: str, spec: FeatureSpec) -> str:
    path = spec_path(directory)
    write_json(path, spec.to_dict())
    return path


def read_spec(directory: str) -> FeatureSpec:
    """The spec stored in ``directory`` (a feature directory or a model directory)."""
    path = spec_path(directory)
    if not json_exists(path):
        raise MissingInputError(
            f"no feature spec at {path}: run the feature job (jobs/features.py) first"
        )
    return FeatureSpec.from_dict(read_json(path), path)


def code_fingerprint() -> str:
    """The library's source, every module of every subpackage: outputs made by changed code
    must not pass for old ones.

    Reads through importlib.resources, so it works from a source tree and from the wheel
    that spark-submit.sh ships (a zip on the Python path)."""
    from importlib.resources import files

    h = hashlib.sha256()

    def walk(node: Any, prefix: str) -> None:
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            name = f"{prefix}{entry.name}"
            if entry.is_dir() and entry.name != "__pycache__":
                walk(entry, name + "/")
            elif entry.name.endswith(".py"):
                h.update(name.encode() + b"\0" + entry.read_bytes())

    walk(files("sales_st"), "")
    return h.hexdigest()[:16]


def features_id(settings: str, split_rows: dict[str, int], run_date: dt.date) -> str:
    """What a model trained on these examples depends on: settings, code, data, run date."""
    blob = repr((settings, code_fingerprint(), sorted(split_rows.items()), run_date.isoformat()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
