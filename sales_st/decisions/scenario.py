"""Promotion and price what-if: the published model scores the run date's windows twice,
once as planned (the baseline) and once with a plan's overrides of the known-future inputs,
and ``<database>.scenarios`` gets both forecasts side by side with the uplift.

The overrides go into the per-series day arrays the feature code cuts windows from (the
same arrays the forecast job uses), so every feature derived from a promotion or a price --
the flags, days to and since the next promotion, the price relative to the history's -- is
recomputed exactly as it would be had the plan been in the input tables.  Only the series a
plan touches are scored.

The uplift check (:func:`run_uplift_check`) asks whether the model's response to
promotions is believable: at a backtest origin, each store's planned promotions are turned
off, and the model's implied uplift (the planned days' median forecast with / without) is
compared with the uplift the store showed in its history before the origin (mean sales on
promotion days / on other days, weekday by weekday).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import SERIES_KEY
from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import DataError, MissingInputError
from sales_st.features.assemble import Wide, build_examples_df
from sales_st.features.job import prepare
from sales_st.frames import to_pandas
from sales_st.serving.scoring import quantile_columns
from sales_st.storage.catalog import RunSummary, ensure_table, replace_partition
from sales_st.training import store as model_store

log = logging.getLogger(__name__)

# The known-future inputs a plan may override, with their day array's element type.
OVERRIDES = {"promo": "int", "price": "double", "open": "int"}

SCENARIO_COMMENT = (
    "Promotion and price what-if: the published model's forecasts as planned (baseline) "
    "and with a plan's overrides of the known-future inputs (scenario), for the series the "
    "plan touches; one partition per run date and scenario."
)
UPLIFT_COMMENT = (
    "Promotion uplift check at a backtest origin: per store, the model's implied uplift "
    "(median forecast of the planned promotion days as planned / with the promotions off) "
    "against the uplift observed in the store's history; one partition per run date."
)


def scenario_ddl(quantiles: list[float]) -> str:
    q = quantile_columns(quantiles)
    cols = [f"{c}_baseline DOUBLE" for c in q] + [f"{c}_scenario DOUBLE" for c in q]
    return (
        "store_id STRING, item_id STRING, target_date DATE, horizon INT, overridden INT, "
        + ", ".join(cols)
        + ", uplift DOUBLE, uplift_pct DOUBLE, model_id STRING, method STRING, "
        "run_date DATE, scenario_id STRING"
    )


def scenario_comments(quantiles: list[float]) -> dict[str, str]:
    out = {
        "store_id": "store (series key)",
        "item_id": "item (series key)",
        "target_date": "forecast day (date)",
        "horizon": "days after the run date (days)",
        "overridden": "1 when the plan changes an input of this series on this day",
        "uplift": "scenario median minus baseline median (target units)",
        "uplift_pct": "uplift / baseline median (fraction; null when the baseline is 0)",
        "model_id": "model-store id of the published method that scored both",
        "method": "published method (forecast.model)",
        "run_date": "run date of the forecasts (date); partition column",
        "scenario_id": "the scenario's name (--scenario-id, default the plan file's name); "
        "partition column",
    }
    for c, q in zip(quantile_columns(quantiles), sorted(quantiles)):
        out[f"{c}_baseline"] = f"{q:g} quantile as planned (target units)"
        out[f"{c}_scenario"] = f"{q:g} quantile with the plan's overrides (target units)"
    return out


# ---- the plan ------------------------------------------------------------------------------


def read_plan(spark: SparkSession, path: str) -> DataFrame:
    """A plan file (CSV with a header, or Parquet by its extension): ``store_id``,
    ``item_id`` (optional: every item of the store), ``date`` and at least one of
    ``promo``, ``price``, ``open`` (an empty value keeps the planned input)."""
    if not os.path.exists(path) and "://" not in path:
        raise MissingInputError(f"scenario plan {path} does not exist")
    if path.endswith(".parquet") or os.path.isdir(path):
        plan = spark.read.parquet(path)
    else:
        plan = spark.read.option("header", True).csv(path)
    missing = [c for c in ("store_id", "date") if c not in plan.columns]
    given = [c for c in OVERRIDES if c in plan.columns]
    if missing or not given:
        raise DataError(
            f"scenario plan {path}: needs the columns store_id, date and at least one of "
            f"{', '.join(OVERRIDES)}; it has {', '.join(plan.columns)}"
        )
    item = F.col("item_id").cast("string") if "item_id" in plan.columns else F.lit(None)
    return plan.select(
        F.col("store_id").cast("string").alias("store_id"),
        item.cast("string").alias("item_id"),
        F.to_date(F.col("date").cast("string")).alias("date"),
        F.col("date").cast("string").alias("date_text"),
        *[
            (F.col(c).cast(t) if c in plan.columns else F.lit(None).cast(t)).alias(c)
            for c, t in OVERRIDES.items()
        ],
        *[
            (F.col(c).cast("string") if c in plan.columns else F.lit(None).cast("string")).alias(
                f"{c}_text"
            )
            for c in OVERRIDES
        ],
    )


def plan_problems(
    plan: DataFrame, series: DataFrame, first: dt.date, last: dt.date, grid: Grid = DAILY
) -> DataFrame:
    """The plan's rows that cannot be applied, each with its reason: a missing store or
    date, a date outside the forecast days or off the sales' grid (weekly, monthly), a
    value that is not a number (or a promo / open flag not 0 or 1, a price not above 0), a
    store or series without a scoring window."""
    reasons = [
        (F.col("store_id").isNull(), "store_id is empty"),
        (F.col("date").isNull(), "date is empty or not a date"),
        (
            (F.col("date") < F.lit(first)) | (F.col("date") > F.lit(last)),
            f"date outside the forecast days {first} .. {last}",
        ),
        (
            ~F.expr(grid.on_grid_sql("date")),
            f"date is off the grid: the sales are {grid.describe()}",
        ),
    ]
    for c in OVERRIDES:
        text = F.col(f"{c}_text")
        reasons.append((text.isNotNull() & F.col(c).isNull(), f"{c} is not a number"))
    for c in ("promo", "open"):
        reasons.append((~F.col(c).isin(0, 1), f"{c} is not 0 or 1"))
    reasons.append(((F.col("price") <= 0) | F.isnan("price"), "price is not above 0"))
    reasons.append(
        (F.coalesce(*[F.col(f"{c}_text") for c in OVERRIDES]).isNull(), "no override given")
    )
    reason = F.lit(None).cast("string")
    for cond, why in reversed(reasons):
        reason = F.when(F.coalesce(cond, F.lit(False)), F.lit(why)).otherwise(reason)
    checked = plan.withColumn("reason", reason)
    stores = series.select("store_id").distinct().withColumn("_store", F.lit(1))
    pairs = series.select(*SERIES_KEY).withColumn("_series", F.lit(1))
    checked = (
        checked.join(stores, "store_id", "left")
        .join(pairs, SERIES_KEY, "left")
        .withColumn(
            "reason",
            F.coalesce(
                "reason",
                F.when(F.col("_store").isNull(), F.lit("store has no scoring window")),
                F.when(
                    F.col("item_id").isNotNull() & F.col("_series").isNull(),
                    F.lit("series has no scoring window"),
                ),
            ),
        )
    )
    return checked.where(F.col("reason").isNotNull()).select(
        "store_id", "item_id", "date_text", "reason"
    )


def expand_plan(plan: DataFrame, series: DataFrame) -> DataFrame:
    """One row per series and day: a store-wide row (no item) applies to every item of the
    store; a series' own row wins over its store's."""
    items = series.select(*SERIES_KEY)
    own = plan.where(F.col("item_id").isNotNull()).withColumn("_rank", F.lit(0))
    wide = (
        plan.where(F.col("item_id").isNull())
        .drop("item_id")
        .join(items, "store_id")
        .withColumn("_rank", F.lit(1))
    )
    both = own.unionByName(wide)
    best = both.groupBy(*SERIES_KEY, "date").agg(F.min("_rank").alias("_rank"))
    return both.join(best, [*SERIES_KEY, "date", "_rank"]).drop("_rank")


def duplicate_days(expanded: DataFrame) -> list[Any]:
    return (
        expanded.groupBy(*SERIES_KEY, "date").count().where(F.col("count") > 1).limit(5).collect()
    )


def apply_plan(wide: Wide, plan: DataFrame) -> Wide:
    """The wide table of the plan's series only, their day arrays with the plan's values
    (a null value keeps the array's), and a column ``overridden_days``: the array indices
    the plan changed."""
    day = wide.axis.index_col("date")
    entries = [
        F.map_from_entries(
            F.filter(
                F.collect_list(F.struct(day.alias("k"), F.col(c).alias("v"))),
                lambda e: e["v"].isNotNull(),
            )
        ).alias(f"_m_{c}")
        for c in OVERRIDES
    ]
    maps = plan.groupBy(*SERIES_KEY).agg(*entries, F.collect_set(day).alias("overridden_days"))
    table = wide.table.join(maps, SERIES_KEY, "inner")
    for c in OVERRIDES:
        m = f"_m_{c}"
        table = table.withColumn(
            c,
            F.expr(f"transform({c}, (v, i) -> IF(map_contains_key({m}, i), {m}[i], v))"),
        ).drop(m)
    return dataclasses.replace(wide, table=table, cached=[])


# ---- scoring ------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    table: str
    scenario_id: str
    run_date: dt.date
    rows: int
    series: int
    uplift: float  # scenario minus baseline, summed medians over every row
    baseline: float  # the baseline medians, summed
    counts: dict[str, int] = field(default_factory=dict)
    summary: RunSummary = field(default_factory=RunSummary)


def _published(cfg: Config) -> tuple[Any, list[float], Any]:
    from sales_st.serving.job import resolve_published

    root = cfg.path("models")
    pub = resolve_published(root, cfg.forecast.model)
    first = next(iter(pub.members.values()), pub.model_id)
    meta = model_store.load_meta(root, first)
    return pub, sorted(meta["model_config"]["quantiles"]), model_store.load_spec(root, first)


def score_both(
    spark: SparkSession,
    cfg: Config,
    pub: Any,
    quantiles: list[float],
    wide: Wide,
    scenario: Wide,
    cached: list[DataFrame],
) -> DataFrame:
    """Baseline and scenario forecasts of the scenario's series side by side."""
    from sales_st.serving.job import score_published, scoring_tasks

    qcols, axis = quantile_columns(quantiles), wide.axis
    keep = scenario.table.select(*SERIES_KEY, "overridden_days")
    n_series = keep.count()
    base_wide = dataclasses.replace(
        wide, table=wide.table.join(keep.drop("overridden_days"), SERIES_KEY)
    )
    out = []
    for name, w in (("baseline", base_wide), ("scenario", scenario)):
        examples = scoring_tasks(build_examples_df(w, cfg, ("score",)), n_series, cfg)
        scored = score_published(
            spark, cfg, pub, examples, quantiles, wide.run_date, cached, False, axis.grid
        ).select(
            *SERIES_KEY,
            "target_date",
            "horizon",
            *[F.col(c).alias(f"{c}_{name}") for c in qcols],
        )
        out.append(scored)
    median = qcols[quantiles.index(0.5)]
    joined = (
        out[0]
        .join(out[1], [*SERIES_KEY, "target_date", "horizon"], "full")
        .join(keep, SERIES_KEY, "left")
        .withColumn(
            "overridden",
            F.array_contains("overridden_days", axis.index_col("target_date")).cast("int"),
        )
        .drop("overridden_days")
    )
    b, s = F.col(f"{median}_baseline"), F.col(f"{median}_scenario")
    return joined.withColumn("uplift", s - b).withColumn("uplift_pct", F.when(b != 0, (s - b) / b))


def run_scenario(
    spark: SparkSession,
    cfg: Config,
    plan_path: str,
    scenario_id: str | None = None,
    run_date: dt.date | None = None,
) -> ScenarioResult:
    """Score the plan's series as planned and with the plan; replace the (run date,
    scenario) partition of ``<database>.scenarios``.  A plan with rows that cannot be
    applied is refused whole (nothing written), its bad rows listed."""
    scenario_id = scenario_id or os.path.splitext(os.path.basename(plan_path.rstrip("/")))[0]
    if not scenario_id.replace("-", "_").isidentifier():
        raise DataError(f"scenario id {scenario_id!r}: letters, digits, - and _ only")
    pub, quantiles, spec = _published(cfg)
    prep = prepare(spark, cfg, run_date, vocab=spec.vocab)
    cached: list[DataFrame] = []
    try:
        from sales_st.serving.job import check_compatible

        check_compatible(spec, cfg, prep.wide.levels, prep.wide.item_levels)
        wide, rd = prep.wide, prep.run_date
        grid, horizon = wide.axis.grid, cfg.features.horizon
        first, last = grid.shift(rd, 1), grid.shift(rd, horizon)
        series = build_examples_df(wide, cfg, ("score",)).select(*SERIES_KEY).persist()
        cached.append(series)
        plan = read_plan(spark, plan_path).persist()
        cached.append(plan)
        n_plan = plan.count()
        bad = plan_problems(plan, series, first, last, grid)
        n_bad = bad.count()
        if n_bad:
            shown = "; ".join(
                f"{r['store_id']}/{r['item_id'] or '*'}/{r['date_text']}: {r['reason']}"
                for r in bad.limit(5).collect()
            )
            raise DataError(
                f"scenario plan {plan_path}: {n_bad} of {n_plan} rows cannot be applied, "
                f"nothing written (first: {shown})"
            )
        expanded = expand_plan(plan, series)
        dup = duplicate_days(expanded)
        if dup:
            raise DataError(
                f"scenario plan {plan_path}: a series is set twice on the same day, nothing "
                "written (first: "
                + "; ".join(f"{r['store_id']}/{r['item_id']}/{r['date']}" for r in dup)
                + ")"
            )
        scenario = apply_plan(wide, expanded)
        rows = score_both(spark, cfg, pub, quantiles, wide, scenario, cached).select(
            "*",
            F.lit(pub.model_id).alias("model_id"),
            F.lit(pub.method).alias("method"),
            F.lit(rd).cast("date").alias("run_date"),
            F.lit(scenario_id).alias("scenario_id"),
        )
        table = f"{cfg.database}.scenarios"
        ensure_table(
            spark,
            table,
            scenario_ddl(quantiles),
            ["run_date", "scenario_id"],
            SCENARIO_COMMENT,
            scenario_comments(quantiles),
        )
        replace_partition(rows, table, {"run_date": rd, "scenario_id": scenario_id})
    finally:
        prep.release()
        for df in cached:
            df.unpersist()
    written = spark.table(table).where(
        (F.col("run_date") == F.lit(rd)) & (F.col("scenario_id") == scenario_id)
    )
    median = quantile_columns(quantiles)[quantiles.index(0.5)]
    agg = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(*SERIES_KEY).alias("series"),
        F.sum("uplift").alias("uplift"),
        F.sum(f"{median}_baseline").alias("baseline"),
        F.sum("overridden").alias("overridden"),
    ).first()
    assert agg is not None
    uplift, baseline = float(agg["uplift"] or 0.0), float(agg["baseline"] or 0.0)
    log.info(
        "scenario %s (run date %s, %s): %d plan rows -> %d series, %d forecast days "
        "(%d overridden); median total %.1f as planned, %+.1f (%+.2f%%) with the plan -> %s",
        scenario_id,
        rd,
        pub.method,
        n_plan,
        agg["series"],
        agg["rows"],
        agg["overridden"] or 0,
        baseline,
        uplift,
        100 * uplift / baseline if baseline else float("nan"),
        table,
    )
    counts = {"plan_rows": n_plan, "series": int(agg["series"]), "rows": int(agg["rows"])}
    return ScenarioResult(
        table=table,
        scenario_id=scenario_id,
        run_date=rd,
        rows=int(agg["rows"]),
        series=int(agg["series"]),
        uplift=uplift,
        baseline=baseline,
        counts=counts,
        summary=RunSummary(
            run_date=rd,
            rows_in=n_plan,
            rows_out=int(agg["rows"]),
            model_id=pub.model_id,
            details={**counts, "uplift": uplift, "baseline": baseline},
        ),
    )


# ---- the uplift check -----------------------------------------------------------------------

UPLIFT_DDL = (
    "store_id STRING, item_id STRING, promo_days INT, implied_uplift DOUBLE, "
    "observed_uplift DOUBLE, history_promo_days INT, error DOUBLE, model_id STRING, "
    "method STRING, run_date DATE"
)
UPLIFT_COMMENTS = {
    "store_id": "store (series key)",
    "item_id": "item (series key)",
    "promo_days": "planned promotion days in the forecast days after the origin (days)",
    "implied_uplift": "model: median forecast of those days as planned / with the "
    "promotions off, minus 1 (fraction)",
    "observed_uplift": "history: mean sales on promotion days / on other days of the same "
    "weekday, weighted by the promotion days per weekday, minus 1 (fraction)",
    "history_promo_days": "promotion days with sales in the history window (days)",
    "error": "implied_uplift - observed_uplift (fraction)",
    "model_id": "model-store id of the published method",
    "method": "published method (forecast.model)",
    "run_date": "the backtest origin the check scored from (date); partition column",
}


def observed_uplift(
    sales: DataFrame, origin: dt.date, days: int, by_weekday: bool = True
) -> DataFrame:
    """Per series: the promotion uplift in the ``days`` before ``origin`` (inclusive), on
    days open with sales: per weekday the mean on promotion days over the mean on the
    others, averaged over the weekdays that have both, weighted by their promotion days
    (weekly and monthly sales: one group, not ``by_weekday``)."""
    lo = origin - dt.timedelta(days=days - 1)
    hist = sales.where(
        (F.col("date") >= F.lit(lo))
        & (F.col("date") <= F.lit(origin))
        & (F.col("target") > 0)
        & (F.coalesce(F.col("open"), F.lit(1)) == 1)
        & F.col("promo").isNotNull()
    ).withColumn("wd", F.dayofweek("date") if by_weekday else F.lit(0))
    per_wd = hist.groupBy(*SERIES_KEY, "wd").agg(
        F.avg(F.when(F.col("promo") == 1, F.col("target"))).alias("on"),
        F.avg(F.when(F.col("promo") == 0, F.col("target"))).alias("off"),
        F.sum((F.col("promo") == 1).cast("int")).alias("n_on"),
    )
    both = per_wd.where(F.col("on").isNotNull() & F.col("off").isNotNull() & (F.col("off") > 0))
    return both.groupBy(*SERIES_KEY).agg(
        (F.sum(F.col("on") / F.col("off") * F.col("n_on")) / F.sum("n_on") - 1).alias(
            "observed_uplift"
        ),
        F.sum("n_on").cast("int").alias("history_promo_days"),
    )


@dataclass
class UpliftResult:
    table: str
    run_date: dt.date
    series: int
    stats: dict[str, float]
    summary: RunSummary = field(default_factory=RunSummary)


def uplift_stats(frame: pd.DataFrame) -> dict[str, float]:
    """Agreement of implied and observed uplift over the series that have both."""
    f = frame.dropna(subset=["implied_uplift", "observed_uplift"])
    if f.empty:
        return {"series": 0}
    err = f["implied_uplift"] - f["observed_uplift"]
    corr = (
        float(np.corrcoef(f["implied_uplift"], f["observed_uplift"])[0, 1])
        if len(f) > 2 and f["implied_uplift"].std() > 0 and f["observed_uplift"].std() > 0
        else float("nan")
    )
    return {
        "series": len(f),
        "implied_mean": float(f["implied_uplift"].mean()),
        "observed_mean": float(f["observed_uplift"].mean()),
        "bias": float(err.mean()),
        "mae": float(err.abs().mean()),
        "median_abs_error": float(err.abs().median()),
        "correlation": corr,
    }


def run_uplift_check(
    spark: SparkSession, cfg: Config, origin: dt.date | None = None, history_days: int = 364
) -> UpliftResult:
    """At ``origin`` (default: the first backtest origin), per series with planned
    promotions in the forecast days: the model's implied uplift against the history's."""
    from sales_st.features.spec import read_spec

    pub, quantiles, spec = _published(cfg)
    if origin is None:
        test = spark.read.parquet(read_spec(cfg.path("features")).split_path("test"))
        origin = test.agg(F.min("origin")).first()[0]  # type: ignore[index]
        if origin is None:
            raise MissingInputError("uplift check: the test split has no origin")
    prep = prepare(spark, cfg, origin, vocab=spec.vocab)
    cached: list[DataFrame] = []
    try:
        wide, rd = prep.wide, prep.run_date
        sales = prep.validation.accepted
        if "promo" not in sales.columns:
            raise DataError("uplift check: the sales table has no promo column (data.sales)")
        grid = wide.axis.grid
        last = grid.shift(rd, cfg.features.horizon)
        off = sales.where(
            (F.col("date") > F.lit(rd)) & (F.col("date") <= F.lit(last)) & (F.col("promo") == 1)
        ).select(
            *SERIES_KEY,
            "date",
            F.lit(0).alias("promo"),
            F.lit(None).cast("double").alias("price"),
            F.lit(None).cast("int").alias("open"),
        )
        series = build_examples_df(wide, cfg, ("score",)).select(*SERIES_KEY)
        off = off.join(series, SERIES_KEY).persist()
        cached.append(off)
        if not off.take(1):
            raise DataError(
                f"uplift check: no planned promotion in the {cfg.features.horizon} days after {rd}"
            )
        scenario = apply_plan(wide, off)
        rows = score_both(spark, cfg, pub, quantiles, wide, scenario, cached)
        median = quantile_columns(quantiles)[quantiles.index(0.5)]
        implied = (
            rows.where(F.col("overridden") == 1)
            .groupBy(*SERIES_KEY)
            .agg(
                F.count(F.lit(1)).cast("int").alias("promo_days"),
                (F.sum(f"{median}_baseline") / F.sum(f"{median}_scenario") - 1).alias(
                    "implied_uplift"
                ),
            )
        )
        hist = observed_uplift(sales, rd, history_days, grid.daily)
        out = (
            implied.join(hist, SERIES_KEY, "left")
            .withColumn("error", F.col("implied_uplift") - F.col("observed_uplift"))
            .select(
                *SERIES_KEY,
                "promo_days",
                "implied_uplift",
                "observed_uplift",
                "history_promo_days",
                "error",
                F.lit(pub.model_id).alias("model_id"),
                F.lit(pub.method).alias("method"),
                F.lit(rd).cast("date").alias("run_date"),
            )
        )
        table = f"{cfg.database}.uplift_check"
        ensure_table(spark, table, UPLIFT_DDL, ["run_date"], UPLIFT_COMMENT, UPLIFT_COMMENTS)
        replace_partition(out, table, {"run_date": rd})
    finally:
        prep.release()
        for df in cached:
            df.unpersist()
    frame = to_pandas(spark.table(table).where(F.col("run_date") == F.lit(rd)))
    stats = uplift_stats(frame)
    log.info(
        "uplift check at %s (%s, %d series with planned promotions): %s -> %s",
        rd,
        pub.method,
        len(frame),
        ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()),
        table,
    )
    return UpliftResult(
        table=table,
        run_date=rd,
        series=len(frame),
        stats=stats,
        summary=RunSummary(
            run_date=rd, rows_out=len(frame), model_id=pub.model_id, details=dict(stats)
        ),
    )
