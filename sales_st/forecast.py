"""Scoring in Spark and the forecasts table.

The scoring windows are rebuilt with the feature code (vocabularies from the model's
feature spec), scored with ``mapInPandas`` -- the Keras model is loaded once per Python
worker and fed Arrow batches -- and written as one partition (the run date) of the catalog
table ``<database>.forecasts``: one row per (series, target date) with quantile columns,
region keys, the model id and, when enabled, explanations (most-attended history days,
spatial attention over neighbours and region aggregates, the fusion gate).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st import model_store
from sales_st.config import Config
from sales_st.spec import OWN_HIST

log = logging.getLogger(__name__)

FAIL_WRITE_ENV = "SALES_ST_FAIL_FORECAST_AFTER_ROWS"  # fault injection for the write test
_MODELS: dict[str, Any] = {}  # one model per Python worker process


def quantile_columns(quantiles: list[float]) -> list[str]:
    return [f"p{round(q * 100):02d}" for q in sorted(quantiles)]


def forecast_ddl(quantiles: list[float]) -> str:
    qcols = ", ".join(f"{c} DOUBLE" for c in quantile_columns(quantiles))
    return (
        "store_id STRING, item_id STRING, city STRING, state STRING, country STRING, "
        "target_date DATE, horizon INT, " + qcols + ", "
        "model_id STRING, created_at TIMESTAMP, gate DOUBLE, "
        "top_history_dates ARRAY<DATE>, top_history_weights ARRAY<DOUBLE>, "
        "spatial_sources ARRAY<STRING>, spatial_weights ARRAY<DOUBLE>, run_date DATE"
    )


def _load_cached(root: str, mid: str):
    key = f"{root}/{mid}"
    if key not in _MODELS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        threads = int(os.environ.get("SALES_ST_SCORING_THREADS", "1"))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TF already initialised in this worker
            pass
        full, spec, meta = model_store.load_model(root, mid)
        _MODELS[key] = (full, spec, meta)
    return _MODELS[key]


def predict_batch(full, spec: dict[str, Any], pdf: pd.DataFrame) -> dict[str, np.ndarray]:
    """Model outputs for a pandas batch of examples, quantiles back in target units.

    Days known to be closed (``fut_open = 0``, from plans or holidays) are forecast as 0.
    """
    from sales_st.inputs import columns_from_pandas, model_inputs_from_columns

    g = spec["groups"]
    names = (g["hist"] + ["hist_dow"] + g["fut"] + ["fut_dow"] + g["neighbour"]
             + g["categorical"] + g["scalars"] + g["static_numeric"])
    cols = columns_from_pandas(pdf, names)
    out = full(model_inputs_from_columns(cols, spec), training=False)
    scale = pdf["scale"].to_numpy(dtype=np.float64)
    q = out["quantiles"].numpy().astype(np.float64) * scale[:, None, None]
    q *= cols["fut_open"].astype(np.float64)[:, :, None]
    return {
        "quantiles": np.maximum(q, 0.0),
        "temporal_attention": out["temporal_attention"].numpy(),
        "spatial_attention": out["spatial_attention"].numpy(),
        "gate": out["gate"].numpy(),
    }


def long_rows(pdf: pd.DataFrame, pred: dict[str, np.ndarray], spec: dict[str, Any],
              qcols: list[str], model_id: str, created_at: dt.datetime, run_date: dt.date,
              explain: bool, top_steps: int) -> pd.DataFrame:
    """One row per (example, horizon step)."""
    n, H = len(pdf), spec["horizon"]
    L = spec["history"]
    origin = pd.to_datetime(pdf["origin"]).to_numpy()
    rep = np.repeat(np.arange(n), H)
    steps = np.tile(np.arange(1, H + 1), n)
    out = pd.DataFrame({
        "store_id": pdf["store_id"].to_numpy()[rep],
        "item_id": pdf["item_id"].to_numpy()[rep],
        "city": _opt(pdf, "city")[rep],
        "state": _opt(pdf, "state")[rep],
        "country": _opt(pdf, "country")[rep],
        "target_date": (origin[rep] + steps.astype("timedelta64[D]")).astype("datetime64[D]"),
        "horizon": steps.astype(np.int32),
    })
    q = pred["quantiles"].reshape(n * H, -1)
    for i, c in enumerate(qcols):
        out[c] = q[:, i]
    out["model_id"] = model_id
    out["created_at"] = pd.Timestamp(created_at)
    ctx_names = [c.replace("hist_", "") for c in spec["groups"]["hist"] if c not in OWN_HIST]
    if explain:
        alpha = pred["temporal_attention"]
        top = np.argsort(-alpha, axis=1)[:, :top_steps]
        days = [
            [(pd.Timestamp(origin[i]) - pd.Timedelta(days=int(L - 1 - j))).date() for j in row]
            for i, row in enumerate(top)
        ]
        weights = [[float(alpha[i, j]) for j in row] for i, row in enumerate(top)]
        beta = pred["spatial_attention"]
        sources, sweights = [], []
        nbr_ids = pdf["nbr_ids"].to_numpy() if "nbr_ids" in pdf else [None] * n
        for i in range(n):
            names = [x if x is not None else "" for x in (list(nbr_ids[i]) if nbr_ids[i] is not None else [])]
            names = (names + [""] * spec["k"])[: spec["k"]] + ctx_names
            pairs = sorted(((float(w), s) for w, s in zip(beta[i], names) if w > 1e-4 and s),
                           reverse=True)
            sources.append([s for _, s in pairs])
            sweights.append([w for w, _ in pairs])
        out["gate"] = pred["gate"].astype(np.float64)[rep]
        out["top_history_dates"] = [days[i] for i in rep]
        out["top_history_weights"] = [weights[i] for i in rep]
        out["spatial_sources"] = [sources[i] for i in rep]
        out["spatial_weights"] = [sweights[i] for i in rep]
    else:
        out["gate"] = np.nan
        for c in ("top_history_dates", "top_history_weights", "spatial_sources", "spatial_weights"):
            out[c] = None
    out["run_date"] = run_date
    return out


def _opt(pdf: pd.DataFrame, col: str) -> np.ndarray:
    return pdf[col].to_numpy() if col in pdf else np.full(len(pdf), None, dtype=object)


def scorer(root: str, mid: str, qcols: list[str], created_at: dt.datetime, run_date: dt.date,
           explain: bool, top_steps: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    fail_after = int(os.environ.get(FAIL_WRITE_ENV, "0") or 0)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        full, spec, meta = _load_cached(root, mid)
        done = 0
        for pdf in batches:
            if pdf.empty:
                continue
            pred = predict_batch(full, spec, pdf)
            rows = long_rows(pdf, pred, spec, qcols, mid, created_at, run_date, explain, top_steps)
            done += len(rows)
            yield rows
            if fail_after and done >= fail_after:
                raise RuntimeError(f"injected failure after writing {done} forecast rows")

    return score


def score_examples(examples: DataFrame, root: str, mid: str, quantiles: list[float],
                   run_date: dt.date, explain: bool, top_steps: int) -> DataFrame:
    """Forecast rows (the forecasts table's columns) for every example row."""
    qcols = quantile_columns(quantiles)
    created_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    fn = scorer(root, mid, qcols, created_at, run_date, explain, top_steps)
    return examples.mapInPandas(fn, forecast_ddl(quantiles))


def run_forecast(spark: SparkSession, cfg: Config, run_date: dt.date | None,
                 record: Any = None) -> dict[str, Any]:
    from sales_st.features import build_examples_df, prepare
    from sales_st.io import read_json
    from sales_st.warehouse import ensure_table, replace_partition

    root = cfg.path("models")
    mid = model_store.resolve(root, cfg.forecast.model)
    meta = model_store.load_meta(root, mid)
    spec = read_json(f"{model_store.model_dir(root, mid)}/feature_spec.json")
    prep = prepare(spark, cfg, run_date, vocab=spec["vocab"])
    check_compatible(spec, cfg, prep.levels)
    examples = build_examples_df(prep, cfg, ("score",))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.forecast.batch_size))
    quantiles = meta["model_config"]["quantiles"]
    rows = score_examples(examples, root, mid, quantiles, prep.run_date, cfg.forecast.explain,
                          cfg.forecast.top_steps)
    table = f"{cfg.database}.{cfg.forecast.table}"
    ensure_table(spark, table, forecast_ddl(quantiles), ["run_date"])
    replace_partition(rows, table, {"run_date": prep.run_date})
    written = spark.table(table).where(F.col("run_date") == F.lit(prep.run_date))
    n_rows = written.count()
    n_series = written.select("store_id", "item_id").distinct().count()
    total_series = prep.wide.count()
    if record is not None:
        record.run_date = prep.run_date
        record.model_id = mid
        record.rows_in = total_series
        record.rows_out = n_rows
        record.details = {"series_forecast": n_series, "series_total": total_series,
                          "series_without_forecast": total_series - n_series}
    if n_series < total_series:
        log.warning("forecast: %d of %d series have no scoring window (too little history)",
                    total_series - n_series, total_series)
    log.info("forecast: %d rows for %d series, run date %s, model %s -> %s", n_rows, n_series,
             prep.run_date, mid, table)
    return {"table": table, "rows": n_rows, "series": n_series, "model_id": mid,
            "run_date": prep.run_date}


def check_compatible(spec: dict[str, Any], cfg: Config, levels: list[str]) -> None:
    f = cfg.features
    want = {"history": f.history, "horizon": f.horizon, "k": f.spatial.k,
            "aggregate_levels": levels}
    have = {k: spec[k] for k in want}
    if want != have:
        raise ValueError(f"the model was trained with features {have} but the config asks for "
                         f"{want}; forecast with the same feature settings or retrain")
