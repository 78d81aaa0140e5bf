"""Scoring example windows with a stored model in Spark (``mapInArrow``): the Keras model
is loaded once per Python worker and fed Arrow batches, read into numpy without pandas; the
output has the forecasts table's columns -- one row per (series, target date) with quantile
columns, region keys, the model id and, when enabled, explanations (most-attended history
days, spatial attention over neighbours and region aggregates, the fusion gate).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_st.data.contract import SERIES_KEY
from sales_st.data.frequency import DAILY, Grid
from sales_st.features.spec import FeatureSpec
from sales_st.training import store as model_store

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}  # one model per Python worker process


def quantile_columns(quantiles: list[float]) -> list[str]:
    return [f"p{round(q * 100):02d}" for q in sorted(quantiles)]


def method_rows(
    scored: DataFrame, method: str, quantiles: list[float], grid: Grid = DAILY
) -> DataFrame:
    """Forecast rows (``score_examples``) as a backtest method's long rows: ``method``,
    series key, ``origin`` (``horizon`` periods of ``grid`` before the target date),
    ``horizon``, ``point`` (the median) and the quantile columns."""
    qcols = quantile_columns(quantiles)
    return scored.select(
        F.lit(method).alias("method"),
        *SERIES_KEY,
        F.expr(grid.shift_sql("target_date", "-horizon")).alias("origin"),
        "horizon",
        F.col(qcols[sorted(quantiles).index(0.5)]).alias("point"),
        *qcols,
    )


# The columns after the quantiles, in forecast rows and in the scorer's window rows: the
# model id, the explanations (one set per window, the same at every horizon step), the run date.
TAIL_DDL = (
    "model_id STRING, gate DOUBLE, top_history_dates ARRAY<DATE>, "
    "top_history_weights ARRAY<DOUBLE>, spatial_sources ARRAY<STRING>, "
    "spatial_weights ARRAY<DOUBLE>, run_date DATE"
)
TAIL_COLUMNS = [field.split()[0] for field in TAIL_DDL.split(", ")]


def forecast_ddl(quantiles: list[float], region_columns: list[str]) -> str:
    qcols = ", ".join(f"{c} DOUBLE" for c in quantile_columns(quantiles))
    keys = ", ".join(f"{c} STRING" for c in SERIES_KEY + list(region_columns))
    return f"{keys}, target_date DATE, horizon INT, {qcols}, {TAIL_DDL}"


def forecast_table_ddl(quantiles: list[float], region_columns: list[str]) -> str:
    """The forecasts table: the scored rows' columns plus the lead-time quantiles
    (``cum_<q>``: demand over days 1..horizon, see ``aggregates``)."""
    cum = ", ".join(f"cum_{c} DOUBLE" for c in quantile_columns(quantiles))
    return forecast_ddl(quantiles, region_columns).replace(
        ", model_id STRING", f", {cum}, model_id STRING", 1
    )


def region_ddl(quantiles: list[float]) -> str:
    qcols = ", ".join(f"{c} DOUBLE" for c in quantile_columns(quantiles))
    return (
        "level STRING, region STRING, target_date DATE, horizon INT, series BIGINT, "
        f"{qcols}, model_id STRING, method STRING, run_date DATE"
    )


REGION_COMMENT = (
    "Region totals of the daily forecasts, for every level of the region hierarchy: p50 is "
    "the sum of the series' medians (bottom-up, so totals add up), the other quantiles are "
    "quantiles of the total (not sums of the series' quantiles); one partition per run date."
)


def region_comments(quantiles: list[float]) -> dict[str, str]:
    qs = sorted(quantiles)
    docs = {
        "level": "hierarchy level of the region (a column of data.hierarchy: city, state, ...), "
        "or of an item group (a column of data.item_hierarchy, e.g. category, or "
        "store_<column>: the group within each store)",
        "region": "the region: a value of that level's column (store_<column>: <store_id>|<group>)",
        "target_date": "day forecast (date)",
        "horizon": "days from the run date to target_date, 1 = the next day (days)",
        "series": "series (store, item) of the region summed (count)",
    }
    for q, c in zip(qs, quantile_columns(qs)):
        docs[c] = (
            "sum of the series' medians (target units)"
            if q == 0.5
            else f"{q:g} quantile of the region's total on target_date (target units)"
        )
    docs.update(
        model_id="model-store id of the published model (see forecasts.model_id)",
        method="published method: a network, lightgbm or ensemble",
        run_date="run date of the forecast (date); partition column",
    )
    return docs


FORECASTS_COMMENT = (
    "Daily sales forecasts: one row per series (store, item) and target date, as quantiles of "
    "the target in target units (units sold, or the dataset's target, e.g. revenue); one "
    "partition per run date, replaced whole when that date is re-run."
)


def forecast_comments(quantiles: list[float], region_columns: list[str]) -> dict[str, str]:
    """What each column of :func:`forecast_ddl` holds and its unit (the table's comments)."""
    qs = sorted(quantiles)
    docs = {
        "store_id": "store of the series (series key)",
        "item_id": "item of the series (series key)",
    }
    for c in region_columns:
        docs[c] = f"the store's {c}: a level of the region hierarchy, from the stores table"
    docs["target_date"] = "day forecast (date)"
    docs["horizon"] = "days from the run date to target_date, 1 = the next day (days)"
    for q, c in zip(qs, quantile_columns(qs)):
        what = "median" if q == 0.5 else f"{q:g} quantile"
        docs[c] = (
            f"{what} forecast of the target on target_date: the actual falls below it with "
            f"probability {q:g} (target units)"
        )
    for q, c in zip(qs, quantile_columns(qs)):
        docs[f"cum_{c}"] = (
            "median of the demand over days 1..horizon: the sum of the daily medians (target units)"
            if q == 0.5
            else f"{q:g} quantile of the demand over days 1..horizon (lead-time demand through "
            "target_date; not a sum of daily quantiles; non-decreasing in horizon) (target units)"
        )
    docs.update(
        model_id="model-store id that produced the row: a network, LightGBM or an ensemble",
        gate="fusion gate: weight of the neighbour-aware (spatio-temporal) representation "
        "against the temporal-only one (0-1; null without explanations or for LightGBM)",
        top_history_dates="history days the temporal attention weighted most, most first "
        "(dates; forecast.top_steps of them)",
        top_history_weights="attention weights of top_history_dates (fractions of 1)",
        spatial_sources="neighbour store ids and context channels (spatial_lag, agg_<level>, "
        "item_agg_<column>) the spatial attention weighted, most first",
        spatial_weights="attention weights of spatial_sources (fractions of 1)",
        run_date="run date: the last day of observed sales the forecast used; target dates "
        "follow it (date); partition column",
    )
    return docs


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
        _MODELS[key] = (full, spec, meta, compiled_call(full))
    return _MODELS[key]


def compiled_call(full: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``full(inputs, training=False)`` as one TensorFlow graph, traced once for any batch
    size: called eagerly, a Keras model runs op by op (each LSTM step apart), 2-3x slower on
    CPU than the same model in a graph, which is what ``model.predict`` runs."""
    import tensorflow as tf

    signature = {
        k: tf.TensorSpec((None, *v.shape[1:]), v.dtype, name=k) for k, v in full.input.items()
    }
    return tf.function(lambda x: full(x, training=False), input_signature=[signature])


def predict_columns(
    full: Any,
    spec: FeatureSpec,
    cols: dict[str, np.ndarray],
    calibration: dict[str, Any] | None = None,
    call: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Model outputs for a batch of example columns (the model's inputs and ``scale``), the
    quantiles back in target units (after the conformal ``calibration`` of the intervals,
    when given); ``call``: the model as a graph (:func:`compiled_call`), else it is called
    eagerly.

    Days known to be closed (``fut_open = 0``, from plans or holidays) are forecast as 0.
    """
    from sales_st.model.tensors import model_inputs_from_columns
    from sales_st.serving.calibration import apply

    x = model_inputs_from_columns(cols, spec)
    out = call(x) if call is not None else full(x, training=False)
    scale = cols["scale"].astype(np.float64)
    q = apply(out["quantiles"].numpy().astype(np.float64), calibration) * scale[:, None, None]
    q *= cols["fut_open"].astype(np.float64)[:, :, None]
    return {
        "quantiles": np.maximum(q, 0.0),
        "temporal_attention": out["temporal_attention"].numpy(),
        "spatial_attention": out["spatial_attention"].numpy(),
        "gate": out["gate"].numpy(),
    }


def window_ddl(quantiles: list[float], region_columns: list[str]) -> str:
    """What the Python scorer returns: one row per example window, each quantile as an
    array over the horizon; :func:`score_examples` explodes it into forecast rows."""
    qcols = ", ".join(f"{c}_h ARRAY<DOUBLE>" for c in quantile_columns(quantiles))
    keys = ", ".join(f"{c} STRING" for c in SERIES_KEY + list(region_columns))
    return f"{keys}, origin DATE, {qcols}, {TAIL_DDL}"


def _rows_of(values: np.ndarray) -> pa.Array:
    """A ``[n, w]`` numpy array as an Arrow list array of n lists of w values."""
    n, w = values.shape[0], values.shape[1]
    offsets = pa.array(np.arange(0, n * w + 1, w, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def window_batch(
    batch: pa.RecordBatch,
    cols: dict[str, np.ndarray],
    pred: dict[str, np.ndarray],
    spec: FeatureSpec,
    schema: pa.Schema,
    model_id: str,
    run_date: dt.date,
    explain: bool,
    top_steps: int,
) -> pa.RecordBatch:
    """One row per example window (:func:`window_ddl`, as the Arrow ``schema``), built from
    numpy arrays without pandas: the explanations are made once per window, and Spark
    repeats them over the horizon, not Python."""
    n, L = batch.num_rows, spec.history
    names = batch.schema.names
    arrays: dict[str, pa.Array] = {}
    n_keys = schema.names.index("origin")
    for c in schema.names[:n_keys]:
        arrays[c] = batch.column(c) if c in names else pa.nulls(n, pa.string())
    arrays["origin"] = batch.column("origin")
    q = pred["quantiles"]  # [n, H, Q]
    for i, c in enumerate(schema.names[n_keys + 1 : n_keys + 1 + q.shape[2]]):
        arrays[c] = _rows_of(np.ascontiguousarray(q[:, :, i]))
    arrays["model_id"] = pa.array([model_id] * n, pa.string())
    if explain:
        origin = cols["origin"]  # datetime64[D]
        ctx_names = [c.replace("hist_", "") for c in spec.layout.context_hist]
        alpha = pred["temporal_attention"]
        top = np.argsort(-alpha, axis=1)[:, :top_steps]
        back = spec.period.shift_np(np.repeat(origin, top.shape[1]), (top - (L - 1)).ravel())
        beta = pred["spatial_attention"]
        sources, sweights = [], []
        nbr_ids: list[Any] = (
            batch.column("nbr_ids").to_pylist() if "nbr_ids" in names else [None] * n
        )
        for i in range(n):
            ids: list[Any] = [] if nbr_ids[i] is None else list(nbr_ids[i])
            labels = [x if x is not None else "" for x in ids]
            labels = (labels + [""] * spec.k)[: spec.k] + ctx_names
            pairs = sorted(
                ((float(w), s) for w, s in zip(beta[i], labels) if w > 1e-4 and s), reverse=True
            )
            sources.append([s for _, s in pairs])
            sweights.append([w for w, _ in pairs])
        arrays["gate"] = pa.array(pred["gate"].reshape(n).astype(np.float64))
        arrays["top_history_dates"] = _rows_of(back.reshape(top.shape).astype("datetime64[D]"))
        weights = np.take_along_axis(alpha, top, axis=1).astype(np.float64)
        arrays["top_history_weights"] = _rows_of(weights)
        arrays["spatial_sources"] = pa.array(sources, pa.list_(pa.string()))
        arrays["spatial_weights"] = pa.array(sweights, pa.list_(pa.float64()))
    else:  # no explanations: nulls
        for c in TAIL_COLUMNS[1:-1]:
            arrays[c] = pa.nulls(n, schema.field(c).type)
    arrays["run_date"] = pa.array([run_date] * n, pa.date32())
    out = [arrays[f.name] for f in schema]
    return pa.RecordBatch.from_arrays(
        [a if a.type == f.type else a.cast(f.type) for a, f in zip(out, schema)], schema=schema
    )


def scorer(
    root: str,
    mid: str,
    schema: pa.Schema,
    run_date: dt.date,
    explain: bool,
    top_steps: int,
    calibration: dict[str, Any] | None = None,
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def score(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from sales_st.model.tensors import columns_from_arrow

        full, spec, meta, call = _load_cached(root, mid)
        names = [*spec.layout.input_columns(), "scale", "origin"]
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cols = columns_from_arrow(batch, names)
            pred = predict_columns(full, spec, cols, calibration, call)
            yield window_batch(batch, cols, pred, spec, schema, mid, run_date, explain, top_steps)

    return score


def score_examples(
    examples: DataFrame,
    root: str,
    mid: str,
    quantiles: list[float],
    region_columns: list[str],
    run_date: dt.date,
    explain: bool,
    top_steps: int,
    calibrated: bool = True,
) -> DataFrame:
    """Forecast rows (the forecasts table's columns) for every example row; intervals
    conformally calibrated when the model has offsets (and ``calibrated``).  Python scores
    and explains each window once; the JVM spreads it over the horizon's rows."""
    from pyspark.sql.pandas.types import to_arrow_schema

    qcols = quantile_columns(quantiles)
    calibration = model_store.load_calibration(root, mid) if calibrated else None
    spec = model_store.load_spec(root, mid)
    grid = spec.period
    ddl = window_ddl(quantiles, region_columns)
    schema = to_arrow_schema(examples.sparkSession.createDataFrame([], ddl).schema)
    fn = scorer(root, mid, schema, run_date, explain, top_steps, calibration)
    # only the columns the scorer reads cross into Python (not the targets, for one; the
    # neighbours' ids only to name the explanations' sources)
    wanted = [*SERIES_KEY, *region_columns, "origin", *(["nbr_ids"] if explain else []), "scale"]
    wanted += spec.layout.input_columns()
    present = set(examples.columns)
    windows = examples.select(*dict.fromkeys(c for c in wanted if c in present)).mapInArrow(fn, ddl)
    steps = windows.select(
        "*", F.posexplode(F.arrays_zip(*[f"{c}_h" for c in qcols])).alias("_h0", "_q")
    )
    horizon = (F.col("_h0") + 1).cast("int")
    keys = [F.col(c) for c in SERIES_KEY + list(region_columns)]
    return steps.select(
        *keys,
        grid.shift_col(F.col("origin"), horizon).alias("target_date"),
        horizon.alias("horizon"),
        *[F.col(f"_q.{c}_h").alias(c) for c in qcols],
        *TAIL_COLUMNS,
    )
