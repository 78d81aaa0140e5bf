"""The replenishment job's body: the run date's forecasts and the inventory positions in,
``<database>.replenishment`` out (one partition per run date), bad inventory rows
quarantined with their rule.

Every inventory row is accounted for: quarantined (malformed, null key, duplicate key, an
invalid value), dated after the run date (a later position: not used for this run date),
superseded by a later position of the same series on or before the run date, or used.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import INVENTORY, SERIES_KEY
from sales_st.data.sources import load_table
from sales_st.data.validation import TableValidation, validate_table
from sales_st.decisions.replenishment import PLAN_COLUMNS, plan_orders
from sales_st.errors import DataError, MissingInputError
from sales_st.frames import one_row
from sales_st.storage.catalog import RunSummary, ensure_table, replace_partition, write_quarantine

log = logging.getLogger(__name__)

PLAN_DDL = (
    "store_id STRING, item_id STRING, lead_time_days INT, review_days INT, "
    "protection_days INT, service_level DOUBLE, demand_p50 DOUBLE, "
    "demand_at_service_level DOUBLE, order_up_to DOUBLE, on_hand DOUBLE, on_order DOUBLE, "
    "position DOUBLE, order_qty DOUBLE, stockout_risk DOUBLE, stockout_risk_no_order DOUBLE, "
    "model_id STRING, run_date DATE"
)
PLAN_COMMENT = (
    "Replenishment plan per store and item: a periodic-review order-up-to policy on the "
    "forecasts' lead-time demand quantiles; one partition per run date (the day the orders "
    "are placed)."
)
PLAN_COMMENTS = {
    "store_id": "store (series key)",
    "item_id": "item (series key)",
    "lead_time_days": "days from placing an order to its arrival (days)",
    "review_days": "days between two orders (days)",
    "protection_days": "lead_time_days + review_days: the days an order must cover (days)",
    "service_level": "target probability of no stock-out before the next order arrives (fraction)",
    "demand_p50": "median demand over the protection interval (target units)",
    "demand_at_service_level": "demand over the protection interval at the service level: "
    "its service_level quantile (target units)",
    "order_up_to": "order-up-to level: the inventory position the order restores (target units)",
    "on_hand": "stock on hand on the run date (target units)",
    "on_order": "ordered, not yet arrived (target units)",
    "position": "inventory position: on_hand + on_order (target units)",
    "order_qty": "recommended order: order_up_to - position, at least 0, rounded up to "
    "replenish.order_multiple (target units)",
    "stockout_risk": "probability that demand over the protection interval exceeds the "
    "position after the recommended order (fraction)",
    "stockout_risk_no_order": "the same probability without ordering (fraction)",
    "model_id": "model-store id of the forecasts used",
    "run_date": "run date of the forecasts: the day the orders are placed (date); partition",
}


@dataclass
class ReplenishResult:
    table: str
    run_date: dt.date
    rows: int
    orders: int
    counts: dict[str, int] = field(default_factory=dict)
    summary: RunSummary = field(default_factory=RunSummary)


def inventory_checks() -> dict[str, tuple[Column, Column]]:
    """The inventory's value rules: what makes a position unusable, and why."""
    bad = [
        (F.col("on_hand") < 0, "on_hand is negative"),
        (F.isnan("on_hand"), "on_hand is not a number"),
        (F.coalesce(F.col("on_order"), F.lit(0.0)) < 0, "on_order is negative"),
        (F.col("lead_time_days") < 0, "lead_time_days is negative"),
        (F.col("review_days") < 1, "review_days is below 1"),
        (
            (F.col("service_level") <= 0.5) | (F.col("service_level") >= 1),
            "service_level is not between 0.5 and 1",
        ),
    ]
    cond = F.lit(False)
    detail = F.lit(None).cast("string")
    for c, text in reversed(bad):
        cond = cond | F.coalesce(c, F.lit(False))
        detail = F.when(F.coalesce(c, F.lit(False)), F.lit(text)).otherwise(detail)
    return {"invalid_value": (cond, detail)}


def positions_as_of(accepted: DataFrame, run_date: dt.date, cfg: Config) -> DataFrame:
    """Per series, its latest position dated on or before ``run_date``, the replenish.*
    defaults filling what the row leaves out; ``_use``: used, superseded or after_run_date."""
    r = cfg.replenish
    on_time = F.col("date") <= F.lit(run_date)
    latest = Window.partitionBy(*SERIES_KEY, on_time).orderBy(F.col("date").desc())
    ranked = accepted.withColumn("_k", F.when(on_time, F.row_number().over(latest)))
    return ranked.select(
        *SERIES_KEY,
        "date",
        "on_hand",
        F.coalesce("on_order", F.lit(0.0)).alias("on_order"),
        F.coalesce("lead_time_days", F.lit(r.lead_time_days)).cast("int").alias("lead_time_days"),
        F.coalesce("review_days", F.lit(r.review_days)).cast("int").alias("review_days"),
        F.coalesce("service_level", F.lit(r.service_level)).alias("service_level"),
        F.when(~on_time, "after_run_date")
        .when(F.col("_k") == 1, "used")
        .otherwise("superseded")
        .alias("_use"),
    )


def run_replenish(
    spark: SparkSession, cfg: Config, run_date: dt.date | None, run_id: str = "adhoc"
) -> ReplenishResult:
    r = cfg.replenish
    if not 0.5 < r.service_level < 1:
        raise DataError(
            f"replenish.service_level must be between 0.5 and 1, found {r.service_level}"
        )
    fc_table = f"{cfg.database}.{cfg.forecast.table}"
    if not spark.catalog.tableExists(fc_table):
        raise MissingInputError(f"{fc_table} does not exist: run the forecast job first")
    forecasts = spark.table(fc_table)
    run_date = run_date or one_row(forecasts.agg(F.max("run_date")))[0]
    fc = forecasts.where(F.col("run_date") == F.lit(run_date))
    first = fc.agg(
        F.first("model_id").alias("model_id"),
        F.max("horizon").alias("h"),
        # 0 when every step is a day; weekly or monthly forecasts step further
        F.max(F.datediff("target_date", "run_date") - F.col("horizon")).alias("beyond_days"),
    ).first()
    if first is None or first["h"] is None:
        raise MissingInputError(f"{fc_table} has no forecasts for run date {run_date}")
    if first["beyond_days"]:
        raise DataError(
            f"{fc_table}: the forecasts of {run_date} step by more than a day (weekly or "
            "monthly data); replenishment plans lead times and review periods in days and "
            "needs daily forecasts"
        )
    if "cum_p50" not in fc.columns:
        raise MissingInputError(
            f"{fc_table} has no lead-time quantiles (cum_p10/cum_p50/cum_p90) for {run_date}: "
            "re-run the forecast job with this version"
        )
    model_id, horizon = first["model_id"], int(first["h"])
    validation: TableValidation = validate_table(
        load_table(spark, cfg, "inventory"), INVENTORY, cfg.validation, inventory_checks()
    )
    try:
        positions = positions_as_of(validation.accepted, run_date, cfg).persist()
        validation.cached.append(positions)
        use = {
            row["_use"]: int(row["count"]) for row in positions.groupBy("_use").count().collect()
        }
        current = positions.where(F.col("_use") == "used")
        beyond = current.where(F.col("lead_time_days") + F.col("review_days") > horizon).count()
        if beyond:
            log.warning(
                "replenish: %d series need demand over more than the %d forecast days "
                "(lead time + review period): not planned; raise features.horizon or "
                "shorten their lead time / review period",
                beyond,
                horizon,
            )
        plan = plan_orders(fc, current, r.order_multiple).select(
            *PLAN_COLUMNS,
            F.lit(model_id).alias("model_id"),
            F.lit(run_date).cast("date").alias("run_date"),
        )
        table = f"{cfg.database}.{r.table}"
        ensure_table(spark, table, PLAN_DDL, ["run_date"], PLAN_COMMENT, PLAN_COMMENTS)
        replace_partition(plan, table, {"run_date": run_date})
        write_quarantine(validation.quarantined, cfg.database, "replenish", run_id, run_date)
    finally:
        validation.release()
    written = spark.table(table).where(F.col("run_date") == F.lit(run_date))
    n_rows = written.count()
    n_orders = written.where(F.col("order_qty") > 0).count()
    counts = {
        **validation.counts,
        "used": use.get("used", 0),
        "superseded": use.get("superseded", 0),
        "after_run_date": use.get("after_run_date", 0),
        "beyond_horizon": beyond,
        "no_forecast": use.get("used", 0) - beyond - n_rows,
        "planned": n_rows,
    }
    if counts["no_forecast"]:
        log.warning(
            "replenish: %d series with a position have no forecast for %s: not planned",
            counts["no_forecast"],
            run_date,
        )
    log.info(
        "replenish: %d series planned, %d orders, run date %s -> %s (inventory rows: %s)",
        n_rows,
        n_orders,
        run_date,
        table,
        counts,
    )
    return ReplenishResult(
        table=table,
        run_date=run_date,
        rows=n_rows,
        orders=n_orders,
        counts=counts,
        summary=RunSummary(
            run_date=run_date,
            rows_in=validation.counts.get("input"),
            rows_out=n_rows,
            rows_quarantined=validation.quarantined_total,
            model_id=model_id,
            details={"orders": n_orders, **counts},
        ),
    )
