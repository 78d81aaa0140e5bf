"""Views for analysts over the catalog tables: ``<database>.forecast_runs``.

    SELECT * FROM sales_st.forecast_runs ORDER BY run_date DESC

One row per forecast run date: what was published (model and method), the data it used, how
many rows it wrote, and how that model scored -- its validation score from the evaluation's
model selection and its overall test metrics from the metrics table.  The view is SQL over
the forecasts, metrics and run-manifest tables (no copy), so it is current whenever any of
them changes; the forecast and evaluation jobs (re)create it after they write, with whichever
of those tables exist (a missing one leaves its columns null until a later run).
"""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from sales_st.data.contract import SERIES_KEY
from sales_st.storage.catalog import sql_string

log = logging.getLogger(__name__)

FORECAST_RUNS = "forecast_runs"
FORECAST_RUNS_COMMENT = (
    "One row per forecast run date: the published model and method, the data it used, its "
    "row count, and the model's validation score and overall test metrics. Built from the "
    "forecasts, metrics and run_manifest tables; null where one of them has no record."
)
# column -> what it holds and its unit, in the view's column order
FORECAST_RUNS_COLUMNS = {
    "run_date": "run date of the forecast: partition of the forecasts table (date)",
    "method": "method the forecast job published: the validation winner for forecast.model="
    "best (a network, lightgbm or ensemble), else the configured model reference; from its "
    "run_manifest row (null when no recorded job wrote it)",
    "model_id": "model-store id of the published model (the forecasts' model_id)",
    "data_through": "last day of observed sales the forecast used: its first target date "
    "minus one day (date)",
    "last_target_date": "last day forecast (date)",
    "forecast_rows": "forecast rows written, one per series and target date (count)",
    "series": "series (store, item) forecast (count)",
    "evaluated_on": "run date of the evaluation the scores below come from: the latest one "
    "of this model on or before run_date (date)",
    "validation_metric": "metric of the model selection on the validation split: wape, "
    "rmspe or mae",
    "validation_score": "the published method's validation_metric on the validation split "
    "(fraction for wape and rmspe, target units for mae; from the evaluate run's "
    "run_manifest row)",
    "test_n": "test-split forecast rows the test metrics cover (count)",
    "test_wape": "weighted absolute percentage error on the test split, sum|y-p50|/sum|y| "
    "(fraction)",
    "test_rmspe": "root mean squared percentage error on the test split, over rows with "
    "y != 0 (fraction)",
    "test_mase": "mean absolute scaled error on the test split (ratio to the series' "
    "in-sample weekly-seasonal naive error)",
    "test_pinball": "mean pinball loss over the quantiles on the test split (target units)",
    "test_coverage": "share of test actuals within [lowest, highest] quantile forecast (fraction)",
}
TEST_METRICS = ("n", "wape", "rmspe", "mase", "pinball", "coverage")
# what the view reads from run_manifest.details: the forecast job's published method and the
# evaluation job's model selection (sales_st.evaluation.selection)
DETAILS_SCHEMA = (
    "method STRING, selection STRUCT<metric: STRING, winner: STRING, "
    "validation: MAP<STRING, DOUBLE>, model_ids: MAP<STRING, STRING>>"
)


def forecast_runs_sql(forecasts: str, metrics: str | None, manifest: str | None) -> str:
    """The view's query; ``metrics`` / ``manifest`` None: those tables do not exist yet and
    their columns are null."""
    if manifest:
        # from_json, not get_json_object: it reads the NaN that earlier versions wrote into
        # details (pandas' missing metrics), which makes the whole text invalid JSON
        details = f"from_json(details, '{DETAILS_SCHEMA}')"
        published = f"""
        SELECT run_date, method FROM (
          SELECT run_date, {details}.method AS method,
                 row_number() OVER (PARTITION BY run_date
                                    ORDER BY finished_at DESC, run_id DESC) AS k
          FROM {manifest} WHERE job = 'forecast' AND status = 'succeeded')
        WHERE k = 1"""
        selections = f"""
        SELECT evaluated_on, sel.metric, sel.validation, sel.model_ids FROM (
          SELECT run_date AS evaluated_on, {details}.selection AS sel,
                 row_number() OVER (PARTITION BY run_date
                                    ORDER BY finished_at DESC, run_id DESC) AS k
          FROM {manifest}
          WHERE job = 'evaluate' AND status = 'succeeded'
            AND {details}.selection.winner IS NOT NULL)
        WHERE k = 1"""
    else:
        published = "SELECT CAST(NULL AS DATE) AS run_date, CAST(NULL AS STRING) AS method"
        selections = (
            "SELECT CAST(NULL AS DATE) AS evaluated_on, CAST(NULL AS STRING) AS metric, "
            "CAST(NULL AS MAP<STRING, DOUBLE>) AS validation, "
            "CAST(NULL AS MAP<STRING, STRING>) AS model_ids"
        )
    if metrics:
        tests = f"""
        SELECT run_date AS evaluated_on, model_id, method AS tested_method,
               {", ".join(TEST_METRICS)}
        FROM {metrics} WHERE level = 'overall' AND model_id IS NOT NULL"""
    else:
        tests = "SELECT CAST(NULL AS DATE) AS evaluated_on, CAST(NULL AS STRING) AS model_id, " + (
            "CAST(NULL AS STRING) AS tested_method, CAST(NULL AS BIGINT) AS n, "
            + ", ".join(f"CAST(NULL AS DOUBLE) AS {m}" for m in TEST_METRICS[1:])
        )
    # The published model's latest evaluation on or before the run date; a model scored
    # under several names (e.g. `best` and the winner's own) has the same rows under each,
    # so the published method's name is taken first, then `best`.
    return f"""
    WITH runs AS (
      SELECT run_date, max(model_id) AS model_id,
             date_sub(min(target_date), 1) AS data_through,
             max(target_date) AS last_target_date,
             count(*) AS forecast_rows,
             count(DISTINCT {", ".join(SERIES_KEY)}) AS series
      FROM {forecasts} GROUP BY run_date),
    published AS ({published}),
    selections AS ({selections}),
    tests AS ({tests}),
    scored AS (
      SELECT r.*, p.method, t.evaluated_on, t.{", t.".join(TEST_METRICS)},
             row_number() OVER (
               PARTITION BY r.run_date
               ORDER BY t.evaluated_on DESC NULLS LAST,
                        t.tested_method <=> p.method DESC, t.tested_method = 'best' DESC,
                        t.tested_method) AS k
      FROM runs r
      LEFT JOIN published p ON p.run_date = r.run_date
      LEFT JOIN tests t ON t.model_id = r.model_id AND t.evaluated_on <= r.run_date)
    SELECT s.run_date, s.method, s.model_id, s.data_through, s.last_target_date,
           s.forecast_rows, s.series, s.evaluated_on,
           sel.metric AS validation_metric,
           coalesce(
             try_element_at(sel.validation, s.method),
             try_element_at(sel.validation, element_at(
               map_keys(map_filter(sel.model_ids, (name, id) -> id = s.model_id)), 1))
           ) AS validation_score,
           s.n AS test_n, s.wape AS test_wape, s.rmspe AS test_rmspe, s.mase AS test_mase,
           s.pinball AS test_pinball, s.coverage AS test_coverage
    FROM scored s
    LEFT JOIN selections sel ON sel.evaluated_on = s.evaluated_on
    WHERE s.k = 1
    """


def create_forecast_runs(
    spark: SparkSession, database: str, forecasts_table: str = "forecasts"
) -> str | None:
    """(Re)create ``<database>.forecast_runs`` over the tables that exist; None (and no view)
    while there is no forecasts table."""
    forecasts = f"{database}.{forecasts_table}"
    if not spark.catalog.tableExists(forecasts):
        return None
    metrics, manifest = f"{database}.metrics", f"{database}.run_manifest"
    query = forecast_runs_sql(
        forecasts,
        metrics if spark.catalog.tableExists(metrics) else None,
        manifest if spark.catalog.tableExists(manifest) else None,
    )
    view = f"{database}.{FORECAST_RUNS}"
    cols = ", ".join(f"{c} COMMENT {sql_string(t)}" for c, t in FORECAST_RUNS_COLUMNS.items())
    try:
        spark.sql(
            f"CREATE OR REPLACE VIEW {view} ({cols}) "
            f"COMMENT {sql_string(FORECAST_RUNS_COMMENT)} AS {query}"
        )
    except Exception as exc:
        # another job (on a shared metastore) created it in the same instant
        if "already exists" not in str(exc).lower() or not spark.catalog.tableExists(view):
            raise
    log.info("view %s: one row per forecast run date", view)
    return view
