"""The feature spec: names, shapes, dtypes, vocabularies and scalers of the example tables.

Written by the feature job next to the examples, read by training (to build the model and
its input pipeline) and copied into the model store, so that forecasting rebuilds windows
with the vocabularies and scalers the model was trained with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sales_st.config import Config

SPEC_VERSION = 1
# Region columns carried as metadata on every example (for segments and evaluation).
REGION_META = ("city", "state", "country")

# History channels of the series itself; the other hist_* channels are region context.
OWN_HIST = ["hist_y", "hist_observed", "hist_open", "hist_promo", "hist_price",
            "hist_holiday", "hist_school"]
HIST_BASE = ["hist_y", "hist_observed", "hist_open", "hist_promo", "hist_price",
             "hist_holiday", "hist_school", "hist_spatial_lag"]
FUT_BASE = ["fut_open", "fut_promo", "fut_price", "fut_holiday", "fut_school",
            "fut_to_holiday", "fut_since_holiday", "fut_doy", "fut_sw_mean", "fut_last_year"]
NBR = ["nbr_y", "nbr_mask", "nbr_dist", "nbr_weight"]
TARGETS = ["y", "y_mask", "scale"]


@dataclass(frozen=True)
class Layout:
    history: int
    horizon: int
    k: int
    hist: list[str]
    fut: list[str]
    categorical: list[str]  # *_idx columns
    scalars: list[str]
    static_numeric: list[str]
    extra: list[str] = field(default_factory=list)

    def all_columns(self) -> list[str]:
        return (self.hist + ["hist_dow"] + self.fut + ["fut_dow"] + NBR + self.categorical
                + self.scalars + self.static_numeric + TARGETS)

    def float_columns(self) -> list[str]:
        return self.hist + self.fut + NBR + self.scalars + self.static_numeric + TARGETS

    def scaled_columns(self) -> list[str]:
        return self.scalars + self.static_numeric

    def shapes(self) -> dict[str, list[int]]:
        L, H, K = self.history, self.horizon, self.k
        out: dict[str, list[int]] = {}
        for c in self.hist + ["hist_dow"]:
            out[c] = [L]
        for c in self.fut + ["fut_dow", "y", "y_mask"]:
            out[c] = [H]
        out["nbr_y"] = [K, L]
        for c in ("nbr_mask", "nbr_dist", "nbr_weight"):
            out[c] = [K]
        for c in self.categorical + self.scalars + self.static_numeric + ["scale"]:
            out[c] = []
        return out

    def dtypes(self) -> dict[str, str]:
        ints = set(self.categorical) | {"hist_dow", "fut_dow"}
        return {c: ("int32" if c in ints else "float32") for c in self.shapes()}


def layout(cfg: Config, agg_levels: list[str], vocab_names: list[str],
           static_numeric: list[str]) -> Layout:
    f = cfg.features
    scalars = [f"lag_{k}" for k in f.lags]
    for w in f.rolling_windows:
        scalars += [f"roll_mean_{w}", f"roll_std_{w}"]
    scalars += ["log_scale", "obs_frac", "log_age"]
    return Layout(
        history=f.history,
        horizon=f.horizon,
        k=f.spatial.k,
        hist=HIST_BASE + [f"hist_agg_{lvl}" for lvl in agg_levels],
        fut=list(FUT_BASE),
        categorical=[f"{name}_idx" for name in vocab_names],
        scalars=scalars,
        static_numeric=list(static_numeric),
    )


def layout_from_spec(spec: dict[str, Any]) -> Layout:
    g = spec["groups"]
    return Layout(history=spec["history"], horizon=spec["horizon"], k=spec["k"],
                  hist=g["hist"], fut=g["fut"], categorical=g["categorical"],
                  scalars=g["scalars"], static_numeric=g["static_numeric"])


def code_fingerprint() -> str:
    """The library's source: outputs re-made by changed code must not pass for old ones.

    Reads through importlib.resources, so it works from a source tree and from the wheel
    that spark-submit.sh ships (a zip on the Python path)."""
    from importlib.resources import files

    h = hashlib.sha256()
    for entry in sorted(files("sales_st").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py"):
            h.update(entry.name.encode() + entry.read_bytes())
    return h.hexdigest()[:16]


def make_spec(cfg: Config, lay: Layout, prep: Any, scalers: dict[str, list[float]],
              split_rows: dict[str, int], out_dir: str) -> dict[str, Any]:
    settings = cfg.fingerprint("features", "data", "validation")
    return {
        "version": SPEC_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": cfg.data.name,
        "run_date": prep.run_date.isoformat(),
        "t0": prep.axis.t0.isoformat(),
        "n_days": prep.axis.n_days,
        "history": lay.history,
        "horizon": lay.horizon,
        "k": lay.k,
        "aggregate_levels": prep.levels,
        "groups": {
            "hist": lay.hist,
            "fut": lay.fut,
            "categorical": lay.categorical,
            "scalars": lay.scalars,
            "static_numeric": lay.static_numeric,
            "neighbour": NBR,
            "targets": TARGETS,
        },
        "shapes": lay.shapes(),
        "dtypes": lay.dtypes(),
        "vocab": prep.vocab,
        "vocab_sizes": {f"{k}_idx": len(v) + 1 for k, v in prep.vocab.items()},
        "scalers": scalers,
        "splits": {
            s: {"path": f"{out_dir}/examples/split={s}", "rows": split_rows.get(s, 0)}
            for s in ("train", "val", "test", "score")
        },
        "neighbours": f"{out_dir}/neighbours",
        "features_config": settings,
        # what a model trained on these examples depends on: settings, code, data, run date
        "features_id": hashlib.sha256(repr((
            settings, code_fingerprint(),
            sorted(split_rows.items()), prep.run_date.isoformat(),
        )).encode()).hexdigest()[:16],
    }
