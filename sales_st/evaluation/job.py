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

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.errors import DataError
from sales_st.evaluation.backtest import all_predictions, metric_levels, scored_rows
from sales_st.evaluation.metrics import METRICS, bottom_up, compute_metrics
from sales_st.evaluation.report import write_report
from sales_st.features.spec import read_spec
from sales_st.frames import to_pandas
from sales_st.serving.scoring import quantile_columns
from sales_st.storage.catalog import RunSummary, ensure_table, replace_partition
from sales_st.storage.files import write_parquet_atomic

log = logging.getLogger(__name__)

METRICS_DDL = (
    "method STRING, level STRING, group_key STRING, n BIGINT, mse DOUBLE, rmse DOUBLE, "
    "mae DOUBLE, wape DOUBLE, smape DOUBLE, rmspe DOUBLE, mase DOUBLE, pinball DOUBLE, "
    "coverage DOUBLE, model_id STRING, run_date DATE"
)


@dataclass
class EvaluationResult:
    report: str
    overall: pd.DataFrame
    metrics_table: str
    predictions: str
    summary: RunSummary = field(default_factory=RunSummary)


def run_evaluate(
    spark: SparkSession, cfg: Config, run_date: dt.date | None = None
) -> EvaluationResult:
    spec = read_spec(cfg.path("features"))
    run_date = run_date or spec.run_date
    test = spark.read.parquet(spec.split_path("test")).persist()
    try:
        n_test = test.count()
        if n_test == 0:
            raise DataError(
                "the test split is empty: no backtest origin has observed targets "
                "(check features.splits and the run date)"
            )
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.forecast.batch_size))
        train = spark.read.parquet(spec.split_path("train"))
        predictions, model_ids = all_predictions(spark, test, train, spec, cfg, run_date)
        qcols = quantile_columns(sorted(cfg.model.quantiles))
        out_dir = f"{cfg.path('reports')}/{run_date}"
        rows = scored_rows(test, predictions, spec, cfg.data.region_columns, qcols)
        predictions_dir = write_parquet_atomic(rows.repartition(2), f"{out_dir}/predictions")
    finally:
        test.unpersist()
    rows = spark.read.parquet(predictions_dir)
    scored = rows.where(F.expr(cfg.evaluate.metric_filter))
    levels, regions = metric_levels(rows, cfg.data.region_columns)
    metrics = compute_metrics(scored, levels, dict(zip(qcols, sorted(cfg.model.quantiles))))
    for r in regions:
        metrics = metrics.unionByName(
            compute_metrics(bottom_up(scored, r), {f"{r}_total": [r]}, {})
        )
    ids = spark.createDataFrame(
        [(m, i) for m, i in model_ids.items()] or [("", "")], "method string, model_id string"
    )
    metrics = metrics.join(F.broadcast(ids), "method", "left").withColumn(
        "run_date", F.lit(run_date).cast("date")
    )
    table = f"{cfg.database}.metrics"
    ensure_table(spark, table, METRICS_DDL, ["run_date"])
    replace_partition(metrics, table, {"run_date": run_date})
    stored = spark.table(table).where(F.col("run_date") == F.lit(run_date))
    overall = to_pandas(stored.where(F.col("level") == "overall").orderBy("wape"))
    report = write_report(spark, cfg, rows, scored, stored, out_dir, spec, qcols, run_date)
    log.info(
        "evaluation (%d test windows, metric filter '%s'):\n%s",
        n_test,
        cfg.evaluate.metric_filter,
        overall[
            ["method", "n", "rmspe", "wape", "mae", "rmse", "mase", "pinball", "coverage"]
        ].to_string(index=False, float_format=lambda v: f"{v:.4f}"),
    )
    summary = RunSummary(
        run_date=run_date,
        rows_in=n_test,
        rows_out=int(scored.count()),
        model_id=model_ids.get("fused"),
        details={
            "report": report,
            "overall": overall[["method", *METRICS]].to_dict(orient="records"),
        },
    )
    return EvaluationResult(
        report=report,
        overall=overall,
        metrics_table=table,
        predictions=predictions_dir,
        summary=summary,
    )
