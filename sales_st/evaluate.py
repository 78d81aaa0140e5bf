"""Evaluation: rolling-origin backtest of the models and the baselines on the test windows.

Every origin of the test split (``features.splits``) is a backtest origin: the models were
trained only on targets up to ``val_end``, and each origin's windows use history up to that
origin.  Models and baselines are scored on exactly the same examples, the errors are
aggregated per method overall, per horizon, origin, region and series, and bottom-up to the
region levels; metrics go to the ``<database>.metrics`` table (partition = run date), the
per-row predictions to ``<reports>/<run date>/predictions``, and an HTML report with plots
to ``<reports>/<run date>/report.html``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st import model_store
from sales_st.baselines import KEYS, predict_lightgbm, simple_baselines, train_lightgbm, truth_rows
from sales_st.config import Config
from sales_st.features import load_spec
from sales_st.forecast import quantile_columns, score_examples
from sales_st.io import read_json, write_parquet_atomic
from sales_st.metrics import METRICS, bottom_up, compute_metrics

log = logging.getLogger(__name__)

METRICS_DDL = (
    "method STRING, level STRING, group_key STRING, n BIGINT, mse DOUBLE, rmse DOUBLE, "
    "mae DOUBLE, wape DOUBLE, smape DOUBLE, rmspe DOUBLE, mase DOUBLE, pinball DOUBLE, "
    "coverage DOUBLE, model_id STRING, run_date DATE"
)


def model_predictions(test: DataFrame, spec: dict[str, Any], cfg: Config, run_date: dt.date,
                      quantiles: list[float]) -> tuple[list[DataFrame], dict[str, str]]:
    """Scored test windows for every configured model that exists."""
    root = cfg.path("models")
    qcols = quantile_columns(quantiles)
    out, ids = [], {}
    for name, ref in cfg.evaluate.models.items():
        try:
            mid = model_store.resolve(root, ref)
        except FileNotFoundError:
            log.warning("evaluate: model '%s' (%s) not found: skipped", name, ref)
            continue
        mspec = read_json(f"{model_store.model_dir(root, mid)}/feature_spec.json")
        if mspec["features_config"] != spec["features_config"]:
            raise ValueError(f"model {mid} was trained on other features than {cfg.path('features')}"
                             "; re-run the feature job and retrain, or pick another model")
        mq = model_store.load_meta(root, mid)["model_config"]["quantiles"]
        if sorted(mq) != sorted(quantiles):
            raise ValueError(f"model {mid} predicts quantiles {mq}, expected {quantiles}")
        scored = score_examples(test, root, mid, quantiles, run_date, explain=False, top_steps=0)
        out.append(scored.select(
            F.lit(name).alias("method"), "store_id", "item_id",
            F.expr("date_sub(target_date, horizon)").alias("origin"), "horizon",
            F.col(qcols[sorted(quantiles).index(0.5)]).alias("point"), *qcols,
        ))
        ids[name] = mid
    return out, ids


def run_evaluate(spark: SparkSession, cfg: Config, run_date: dt.date | None = None,
                 record: Any = None) -> dict[str, Any]:
    from sales_st.report import write_report
    from sales_st.warehouse import ensure_table, replace_partition

    spec = load_spec(cfg)
    run_date = run_date or dt.date.fromisoformat(spec["run_date"])
    test = spark.read.parquet(spec["splits"]["test"]["path"]).persist()
    n_test = test.count()
    if n_test == 0:
        raise ValueError("the test split is empty: no backtest origin has observed targets "
                         "(check features.splits and the run date)")
    quantiles = sorted(cfg.model.quantiles)
    qcols = quantile_columns(quantiles)
    qmap = dict(zip(qcols, quantiles))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.forecast.batch_size))

    preds = []
    base = simple_baselines(test, spec)
    preds.append(base.select("*", *[F.lit(None).cast("double").alias(c) for c in qcols]))
    models, model_ids = model_predictions(test, spec, cfg, run_date, quantiles)
    preds += models
    if "lightgbm" in cfg.evaluate.baselines:
        train = spark.read.parquet(spec["splits"]["train"]["path"])
        lgbm = train_lightgbm(spark, train, spec, quantiles, cfg.evaluate.lightgbm_rounds,
                              cfg.evaluate.lightgbm_leaves, cfg.evaluate.lightgbm_max_rows)
        preds.append(predict_lightgbm(spark, lgbm, test, spec, qcols))
    wanted = set(cfg.evaluate.baselines) | set(model_ids)
    all_preds = None
    for p in preds:
        p = p.select("method", *KEYS, "horizon", "point", *qcols)
        all_preds = p if all_preds is None else all_preds.unionByName(p)
    all_preds = all_preds.where(F.col("method").isin(sorted(wanted)))

    truth = truth_rows(test, spec)
    rows = truth.join(all_preds, KEYS + ["horizon"], "inner").withColumn(
        "p_lo", F.col(qcols[0])).withColumn("p_hi", F.col(qcols[-1]))
    out_dir = f"{cfg.path('reports')}/{run_date}"
    write_parquet_atomic(rows.repartition(2), f"{out_dir}/predictions")
    rows = spark.read.parquet(f"{out_dir}/predictions")
    scored = rows.where(F.expr(cfg.evaluate.metric_filter))

    regions = [c for c in ("state", "city") if c in rows.columns
               and rows.where(F.col(c).isNotNull()).limit(1).count()]
    levels = {"overall": [], "horizon": ["horizon"], "origin": ["origin"],
              "series": ["store_id", "item_id"]}
    levels.update({r: [r] for r in regions})
    metrics = compute_metrics(scored, levels, qmap)
    for r in regions:
        metrics = metrics.unionByName(
            compute_metrics(bottom_up(scored, r), {f"{r}_total": [r]}, {})
        )
    ids = spark.createDataFrame(
        [(m, i) for m, i in model_ids.items()] or [("", "")], "method string, model_id string"
    )
    metrics = metrics.join(F.broadcast(ids), "method", "left").withColumn(
        "run_date", F.lit(run_date).cast("date"))
    table = f"{cfg.database}.metrics"
    ensure_table(spark, table, METRICS_DDL, ["run_date"])
    replace_partition(metrics, table, {"run_date": run_date})
    overall = (spark.table(table).where((F.col("run_date") == F.lit(run_date))
                                        & (F.col("level") == "overall"))
               .orderBy("wape").toPandas())
    report = write_report(spark, cfg, rows, scored, spark.table(table).where(
        F.col("run_date") == F.lit(run_date)), out_dir, spec, qcols, run_date)
    log.info("evaluation (%d test windows, metric filter '%s'):\n%s", n_test,
             cfg.evaluate.metric_filter,
             overall[["method", "n", "rmspe", "wape", "mae", "rmse", "mase", "pinball", "coverage"]]
             .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if record is not None:
        record.run_date = run_date
        record.rows_in = n_test
        record.rows_out = int(scored.count())
        record.model_id = model_ids.get("fused")
        record.details = {"report": report, "overall": overall[["method", *METRICS]]
                          .to_dict(orient="records")}
    test.unpersist()
    return {"report": report, "overall": overall, "metrics_table": table,
            "predictions": f"{out_dir}/predictions"}
