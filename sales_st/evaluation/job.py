"""The evaluation job: a rolling-origin backtest of the models and the baselines on the test
windows (every origin of the test split is a backtest origin).

Errors are aggregated per method overall, per horizon, origin, region and series, and
bottom-up to the region levels; metrics go to the ``<database>.metrics`` table (partition =
run date), the per-row predictions to ``<reports>/<run date>/predictions``, and an HTML report
with plots to ``<reports>/<run date>/report.html``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.decisions.simulation import run_policy_backtest
from sales_st.errors import DataError
from sales_st.evaluation.backtest import all_predictions, metric_levels, scored_rows
from sales_st.evaluation.baselines import KEYS, lightgbm_model
from sales_st.evaluation.metrics import METRICS, compute_metrics, sum_metrics
from sales_st.evaluation.report import write_report
from sales_st.evaluation.selection import (
    ENSEMBLE,
    ensemble_id,
    ensemble_rows,
    select,
    selection_path,
    write_selection,
)
from sales_st.features.spec import FeatureSpec, read_spec
from sales_st.frames import to_pandas
from sales_st.runtime import tracking
from sales_st.serving.aggregates import fit_sum_scores, item_group_levels, with_item_groups
from sales_st.serving.scoring import quantile_columns
from sales_st.storage.catalog import RunSummary, ensure_table, replace_partition
from sales_st.storage.files import as_url, write_parquet_atomic
from sales_st.storage.views import create_forecast_runs
from sales_st.training import store as model_store

log = logging.getLogger(__name__)

METRICS_DDL = (
    "method STRING, level STRING, group_key STRING, n BIGINT, mse DOUBLE, rmse DOUBLE, "
    "mae DOUBLE, wape DOUBLE, smape DOUBLE, rmspe DOUBLE, mase DOUBLE, pinball DOUBLE, "
    "coverage DOUBLE, model_id STRING, run_date DATE"
)
# y: the actual target, p: the method's point forecast (the median, p50, for quantile models),
# over the test rows under evaluate.metric_filter (see sales_st.evaluation.metrics)
METRICS_COMMENT = (
    "Backtest error metrics of every forecasting method on the test split, per grouping "
    "level; one partition per evaluation run date. y = actual, p = point forecast (p50), in "
    "target units (units sold, or the dataset's target, e.g. revenue)."
)
METRICS_COLUMNS = {
    "method": "forecasting method: a network (evaluate.models), a naive baseline, lightgbm, "
    "ensemble, or best (the validation winner: what forecast.model=best publishes)",
    "level": "grouping of the row: overall, horizon, origin, series, a region column (city, "
    "state), an item group (category; store_category: per store), <level>_total (the group's "
    "sum against the quantiles of the total), lead_time or lead_time_horizon",
    "group_key": "values of the level's grouping columns joined by '|' (all for overall)",
    "n": "forecast rows (series x origin x horizon step) the metrics cover (count)",
    "mse": "mean squared error, mean (y-p)^2 (target units squared)",
    "rmse": "root mean squared error, sqrt(mse) (target units)",
    "mae": "mean absolute error, mean |y-p| (target units)",
    "wape": "weighted absolute percentage error, sum|y-p|/sum|y| (fraction)",
    "smape": "symmetric mean absolute percentage error, mean 2|y-p|/(|y|+|p|) (fraction, 0-2)",
    "rmspe": "root mean squared percentage error, sqrt(mean ((y-p)/y)^2) over rows with "
    "y != 0 (fraction)",
    "mase": "mean absolute scaled error, mean |y-p|/d, d = the series' in-sample mean absolute "
    "weekly-seasonal difference (ratio; null for sums: region totals and lead time)",
    "pinball": "mean pinball (quantile) loss over rows and quantiles (target units; null for "
    "point-only methods)",
    "coverage": "share of actuals within [lowest, highest] quantile forecast (fraction; null "
    "for point-only methods)",
    "model_id": "model-store id of the method (null for the naive baselines: no stored model)",
    "run_date": "run date of the evaluation (date); partition column",
}


@dataclass
class EvaluationResult:
    report: str
    overall: pd.DataFrame
    metrics_table: str
    predictions: str
    summary: RunSummary = field(default_factory=RunSummary)
    selection: dict[str, Any] | None = None


def run_evaluate(
    spark: SparkSession, cfg: Config, run_date: dt.date | None = None
) -> EvaluationResult:
    spec = read_spec(cfg.path("features"))
    run_date = run_date or spec.run_date
    items = spec.item_levels  # the product hierarchy's columns, carried by the examples
    test = spark.read.parquet(spec.split_path("test")).persist()
    cached = [test]
    try:
        n_test = test.count()
        if n_test == 0:
            raise DataError(
                "the test split is empty: no backtest origin has observed targets "
                "(check features.splits and the run date)"
            )
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.forecast.batch_size))
        quantiles = sorted(cfg.model.quantiles)
        qcols = quantile_columns(quantiles)
        lgbm, lgbm_id = None, None
        if "lightgbm" in cfg.evaluate.baselines:
            train = spark.read.parquet(spec.split_path("train"))
            lgbm_id, lgbm = lightgbm_model(
                spark, train, spec, cfg.evaluate, quantiles, cfg.path("models")
            )
        scored, model_ids = all_predictions(spark, test, spec, cfg, run_date, lgbm)
        # scored once: the ensemble, `best` and the truth join all read these rows
        cached.append(scored.persist())
        predictions = scored
        if lgbm_id:
            model_ids["lightgbm"] = lgbm_id
        selection = fit_selection(spark, cfg, spec, run_date, lgbm, model_ids)
        if selection:
            predictions, model_ids = with_selected(predictions, selection, model_ids, qcols)
        out_dir = f"{cfg.path('reports')}/{run_date}"
        rows = scored_rows(test, predictions, spec, cfg.data.region_columns + items, qcols)
        rows = with_item_groups(rows, items)
        predictions_dir = write_parquet_atomic(rows.repartition(2), f"{out_dir}/predictions")
    finally:
        for df in cached:
            df.unpersist()
    rows = spark.read.parquet(predictions_dir)
    scored = rows.where(F.expr(cfg.evaluate.metric_filter))
    levels, regions = metric_levels(rows, cfg.data.region_columns + item_group_levels(items))
    metrics = compute_metrics(scored, levels, dict(zip(qcols, sorted(cfg.model.quantiles))))
    fitted = selection.get("sums") if selection else None
    metrics = metrics.unionByName(
        sum_metrics(rows, regions, qcols, sorted(cfg.model.quantiles), fitted)
    )
    ids = spark.createDataFrame(
        [(m, i) for m, i in model_ids.items()] or [("", "")], "method string, model_id string"
    )
    metrics = metrics.join(F.broadcast(ids), "method", "left").withColumn(
        "run_date", F.lit(run_date).cast("date")
    )
    table = f"{cfg.database}.metrics"
    ensure_table(spark, table, METRICS_DDL, ["run_date"], METRICS_COMMENT, METRICS_COLUMNS)
    replace_partition(metrics, table, {"run_date": run_date})
    create_forecast_runs(spark, cfg.database, cfg.forecast.table)
    stored = spark.table(table).where(F.col("run_date") == F.lit(run_date))
    overall = to_pandas(stored.where(F.col("level") == "overall").orderBy("wape"))
    networks = [m for m in cfg.evaluate.models if m in model_ids]
    policy = run_policy_backtest(spark, cfg, spec, rows, selection, networks, run_date)
    report = write_report(
        spark, cfg, rows, scored, stored, out_dir, spec, qcols, run_date, policy=policy
    )
    log.info(
        "evaluation (%d test windows, metric filter '%s'):\n%s",
        n_test,
        cfg.evaluate.metric_filter,
        overall[
            ["method", "n", "rmspe", "wape", "mae", "rmse", "mase", "pinball", "coverage"]
        ].to_string(index=False, float_format=lambda v: f"{v:.4f}"),
    )
    track_evaluation(cfg, overall, report, selection, model_ids, lgbm_id)
    summary = RunSummary(
        run_date=run_date,
        rows_in=n_test,
        rows_out=int(scored.count()),
        model_id=model_ids.get("fused"),
        details={
            "report": report,
            "overall": overall[["method", *METRICS]].to_dict(orient="records"),
            "selection": selection,
            "policy": None
            if policy is None
            else {
                **policy["info"],
                "comparison": policy["comparison"].to_dict(orient="records"),
            },
        },
    )
    return EvaluationResult(
        report=report,
        overall=overall,
        metrics_table=table,
        predictions=predictions_dir,
        summary=summary,
        selection=selection,
    )


def track_evaluation(
    cfg: Config,
    overall: pd.DataFrame,
    report: str,
    selection: dict[str, Any] | None,
    model_ids: dict[str, str],
    lgbm_id: str | None,
) -> None:
    """The backtest in MLflow: every method's test metrics (``test.<method>.<metric>``), the
    validation scores of the selection, the report; LightGBM registered, and the registry
    alias ``champion`` on what ``forecast.model: best`` publishes."""
    run = tracking.current(cfg)
    for rec in overall.to_dict(orient="records"):
        run.log_metrics({f"test.{rec['method']}.{m}": rec[m] for m in METRICS})
    run.log_artifact(report, "report")
    reg = run if run.active else tracking.registry(cfg)
    root = cfg.path("models")
    if lgbm_id:
        reg.register(
            lgbm_id,
            ["lightgbm"],
            source=as_url(model_store.model_dir(root, lgbm_id)),
            tags={"kind": "lightgbm"},
        )
    if not selection:
        return
    run.log_metrics(
        {f"validation.{m}.{selection['metric']}": v for m, v in selection["validation"].items()}
    )
    run.log_dict(selection, "champion/selection.json")
    winner = selection["winner"]
    if winner == ENSEMBLE:
        reg.register(
            ensemble_id(selection),
            ["champion"],
            artifact_path="champion",
            source=as_url(selection_path(root)),
            tags={"kind": ENSEMBLE, "members": ",".join(selection["members"])},
        )
    else:
        mid = model_ids[winner]
        reg.register(mid, ["champion"], source=as_url(model_store.model_dir(root, mid)))


def fit_selection(
    spark: SparkSession,
    cfg: Config,
    spec: FeatureSpec,
    run_date: dt.date,
    lgbm: dict[float, Any] | None,
    model_ids: dict[str, str],
) -> dict[str, Any] | None:
    """Score the validation windows with every publishable method, fit the ensemble and
    pick the winner (see ``selection``); written to ``<models>/selection.json``."""
    e = cfg.evaluate
    members = [m for m in e.models if m in model_ids] + (["lightgbm"] if lgbm else [])
    if not members:
        log.warning("evaluate: no trained model or LightGBM: no selection for forecast.model=best")
        return None
    val = spark.read.parquet(spec.split_path("val"))
    qcols = quantile_columns(sorted(cfg.model.quantiles))
    preds, _ = all_predictions(
        spark, val, spec, cfg, run_date, lgbm, baselines=False, warn_missing=False
    )
    preds = preds.persist()  # the networks score the validation windows once, not per action
    try:
        rows = (
            scored_rows(val, preds, spec, [], qcols)
            .where(F.expr(e.metric_filter))
            .select("method", *KEYS, "horizon", "actual", "point")
        )
        n = rows.where(F.col("method") == members[0]).count()
        if n == 0:
            log.warning("evaluate: the validation split has no rows under the metric filter")
            return None
        sample = rows
        if n > e.selection_max_rows:  # the same rows for every method: sample by key
            keep = e.selection_max_rows / n
            bucket = F.abs(F.hash(*KEYS, "horizon")) % 1_000_000
            sample = rows.where(bucket < F.lit(int(keep * 1_000_000)))
        pdf = to_pandas(sample)
        index = [*KEYS, "horizon"]
        wide = pdf.pivot_table(index=index, columns="method", values="point", aggfunc="first")
        wide["actual"] = pdf.groupby(index)["actual"].first()
        wide = wide.reset_index()
        for m in members:
            if m not in wide:
                wide[m] = np.nan
        sel = select(
            wide, members, e.selection_metric, e.ensemble_step, e.ensemble_scale, e.ensemble_margin
        )
        sel.update(
            model_ids={m: model_ids[m] for m in members},
            run_date=str(run_date),
            features_id=spec.features_id,
        )
        # the scores of lead-time demand and region totals, per method, on the same windows
        ranked, _ = with_selected(preds, sel, dict(sel["model_ids"]), qcols)
        items = spec.item_levels
        truth = scored_rows(val, ranked, spec, cfg.data.region_columns + items, qcols)
        truth = with_item_groups(truth, items)
        groups = cfg.data.region_columns + item_group_levels(items)
        regions = [c for c in groups if c in truth.columns]
        sel["sums"] = fit_sum_scores(truth, regions, qcols, sorted(cfg.model.quantiles))
    finally:
        preds.unpersist()
    write_selection(cfg.path("models"), sel)
    table = "\n".join(
        f"  {m:<16} {v:.4f}{'  <- published by forecast.model=best' if m == sel['winner'] else ''}"
        for m, v in sorted(sel["validation"].items(), key=lambda kv: kv[1])
    )
    log.info(
        "model selection on %d validation rows (%d origins), %s:\n%s\n  ensemble weights "
        "per horizon week over %s (level factors %s): %s",
        sel["validation_rows"],
        sel["validation_origins"],
        sel["metric"],
        table,
        members,
        {m: round(v, 4) for m, v in sel["scales"].items()},
        sel["weights"],
    )
    return sel


def with_selected(
    predictions: DataFrame,
    selection: dict[str, Any],
    model_ids: dict[str, str],
    qcols: list[str],
) -> tuple[DataFrame, dict[str, str]]:
    """Test predictions plus the ``ensemble`` (weights from the validation fit) and ``best``
    (the validation winner's rows) methods."""
    ids = dict(model_ids)
    if len(selection["members"]) > 1:
        predictions = predictions.unionByName(ensemble_rows(predictions, selection, qcols))
        ids[ENSEMBLE] = ensemble_id(selection)
    winner = selection["winner"]
    best = predictions.where(F.col("method") == winner).withColumn("method", F.lit("best"))
    ids["best"] = ids.get(winner, winner)
    return predictions.unionByName(best), ids
