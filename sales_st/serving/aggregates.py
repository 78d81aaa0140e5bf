"""Quantiles of sums: demand over days 1..h of a forecast (lead-time demand), and the totals
of a region (city, state, ...) on each day.

A sum of quantiles is not a quantile of the sum: adding the stores' p90s gives a total far
above the total's p90 when their errors partly cancel, and adding the p10s of days 1..h
gives a lead-time p10 that is too low.  Here every forecast row has its median and a spread
``sigma = (p_hi - p_lo) / (z_hi - z_lo)`` read off its outermost quantiles.  For a sum over a
set of rows (days 1..h of one series; the series of one region on one day):

* the median is the sum of the medians (bottom-up: region totals add up, store by store);
* quantile q is ``S + s_q * sqrt(V)``, where S is that sum, V the sum of the rows' sigma^2
  (the spread the sum would have if the rows' errors were independent), and ``s_q`` a score
  fitted on the validation windows, where the truth is known, per horizon step (and per
  region level): ``s = (Y - S) / sqrt(V)`` for the true sum Y, and ``s_q`` its q-quantile.
  So the correlation between days or between stores, and the skew of the sum, are measured,
  not assumed; without fitted scores, ``s_q`` is the normal quantile (independent errors).

The quantiles are then put in order (never crossing, the median between them), cut at zero,
and, for lead-time demand, made non-decreasing in h.

A product hierarchy (``data.item_hierarchy``) adds levels of the same kind: for each of its
columns, the group over every store (level ``<column>``, e.g. category) and the group within
each store (level ``store_<column>``, region ``<store_id>|<group>``).
"""

from __future__ import annotations

import functools
from statistics import NormalDist
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sales_st.data.contract import SERIES_KEY

SCORES_VERSION = 2
MIN_SIGMA = 1e-9
# Sums a horizon's scores are fitted on at least; fewer: pooled over its week, or all horizons.
MIN_SCORE_ROWS = 100


# Level of an item group within one store: its column is ``store_<item column>``.
STORE_GROUP_PREFIX = "store_"


def item_group_levels(item_columns: list[str]) -> list[str]:
    """The total levels of a product hierarchy, finest first: per store and group
    (``store_<column>``), then per group over all stores (``<column>``), for each column."""
    return [lvl for c in item_columns for lvl in (f"{STORE_GROUP_PREFIX}{c}", c)]


def with_item_groups(rows: DataFrame, item_columns: list[str]) -> DataFrame:
    """``rows`` plus a ``store_<column>`` column (``<store_id>|<group>``; null without a
    group) for each product-hierarchy column ``rows`` carries: the key of the store's group."""
    present = [c for c in item_columns if c in rows.columns]
    return rows.select(
        "*",
        *[
            F.when(F.col(c).isNotNull(), F.concat_ws("|", "store_id", c)).alias(
                f"{STORE_GROUP_PREFIX}{c}"
            )
            for c in present
        ],
    )


def z_span(quantiles: list[float]) -> float:
    """Distance in standard-normal units between the lowest and the highest quantile."""
    qs = sorted(quantiles)
    return NormalDist().inv_cdf(qs[-1]) - NormalDist().inv_cdf(qs[0])


def with_sigma(rows: DataFrame, qcols: list[str], quantiles: list[float]) -> DataFrame:
    """``sigma``: the spread of each row, from its outermost quantile columns."""
    span = z_span(quantiles)
    hi, lo = F.col(qcols[-1]), F.col(qcols[0])
    spread = F.greatest((hi - lo) / F.lit(span), F.lit(MIN_SIGMA)).cast("double")
    # a method without quantiles (a naive baseline) has no spread, and its sums no interval
    return rows.withColumn("sigma", F.when(lo.isNotNull() & hi.isNotNull(), spread))


def median_column(qcols: list[str], quantiles: list[float]) -> str:
    """The quantile column of the median (0.5 must be one of the quantiles)."""
    qs = sorted(quantiles)
    if 0.5 not in qs:
        raise ValueError(f"the model's quantiles {qs} have no median (0.5)")
    return qcols[qs.index(0.5)]


def cumulative_sums(
    rows: DataFrame, keys: list[str], median: str, actual: str | None = None
) -> DataFrame:
    """Per ``keys`` (a series and its origin or run date), in horizon order: ``sum_p50`` and
    ``sum_var`` over days 1..h and, given ``actual``, the true sum ``sum_actual`` (null when a
    day up to h has no actual)."""
    w = Window.partitionBy(*keys).orderBy("horizon").rowsBetween(Window.unboundedPreceding, 0)
    out = rows.withColumn("sum_p50", F.sum(median).over(w)).withColumn(
        "sum_var", F.sum(F.col("sigma") * F.col("sigma")).over(w)
    )
    if actual is not None:
        known = F.count(actual).over(w) == F.count(F.lit(1)).over(w)
        out = out.withColumn("sum_actual", F.when(known, F.sum(actual).over(w)))
    return out


def region_sums(
    rows: DataFrame, level: str, keys: list[str], median: str, actual: str | None = None
) -> DataFrame:
    """Per region of ``level`` and ``keys`` (origin or run date, target date, horizon): the
    sums of the medians, of sigma^2 and, given ``actual``, of the actuals (null when a series
    of the region has none that day), with the number of series summed."""
    aggs = [
        F.sum(median).alias("sum_p50"),
        F.sum(F.col("sigma") * F.col("sigma")).alias("sum_var"),
        F.count(F.lit(1)).alias("series"),
    ]
    if actual is not None:
        aggs.append(F.when(F.count(actual) == F.count(F.lit(1)), F.sum(actual)).alias("sum_actual"))
    return (
        rows.where(F.col(level).isNotNull())
        .groupBy(F.col(level).alias("region"), *keys)
        .agg(*aggs)
        .withColumn("level", F.lit(level))
    )


def _score_quantiles(
    scored: DataFrame, groups: list[str], qs: list[float]
) -> dict[str, tuple[list[float], int]]:
    rows = (
        scored.groupBy(*groups)
        .agg(
            F.percentile_approx("score", F.array(*[F.lit(q) for q in qs]), 10_000).alias("s"),
            F.count(F.lit(1)).alias("n"),
        )
        .collect()
    )
    return {
        "|".join(str(r[g]) for g in groups): ([float(v) for v in r["s"]], int(r["n"])) for r in rows
    }


def fit_scores(
    sums: DataFrame, groups: list[str], quantiles: list[float], min_rows: int = 0
) -> dict[str, Any]:
    """The q-quantiles of ``(sum_actual - sum_p50) / sqrt(sum_var)`` per group (e.g. horizon,
    or level and horizon), as {"|"-joined group values: [s_q per quantile]} with row counts.

    With ``min_rows`` and ``horizon`` the last group column, a group with fewer sums than
    that takes the scores of its horizon week (days 1-7, 8-14, ...) or, when the week has
    too few as well, of all its horizons (``pooled`` says which): the 10th and 90th
    percentile of a handful of sums -- a country's total on four validation origins -- is
    little more than their smallest and largest, and the intervals it gives under-cover."""
    qs = sorted(quantiles)
    score = (F.col("sum_actual") - F.col("sum_p50")) / F.sqrt(
        F.greatest(F.col("sum_var"), F.lit(MIN_SIGMA))
    )
    scored = sums.where(F.col("sum_actual").isNotNull()).withColumn("score", score)
    fitted = _score_quantiles(scored, groups, qs)
    out: dict[str, Any] = {"quantiles": qs, "scores": {}, "rows": {}}
    for key, (s, n) in fitted.items():
        out["scores"][key] = s
        out["rows"][key] = n
    if not min_rows or groups[-1] != "horizon" or all(n >= min_rows for _, n in fitted.values()):
        return out
    outer = groups[:-1]
    week = ((F.col("horizon") - 1) / 7).cast("int").alias("_week")
    weekly = _score_quantiles(scored.withColumn("_week", week), [*outer, "_week"], qs)
    whole = _score_quantiles(scored.withColumn("_all", F.lit("all")), [*outer, "_all"], qs)
    out["pooled"] = {}
    for key, (_, n) in fitted.items():
        if n >= min_rows:
            continue
        *prefix, h = key.split("|")
        wk = weekly.get("|".join([*prefix, str((int(h) - 1) // 7)]))
        if wk is not None and wk[1] >= min_rows:
            out["scores"][key], out["pooled"][key] = wk[0], "week"
        else:
            out["scores"][key], out["pooled"][key] = whole["|".join([*prefix, "all"])][0], "all"
    return out


def apply_scores(
    sums: DataFrame,
    fitted: dict[str, Any] | None,
    groups: list[str],
    qcols: list[str],
    quantiles: list[float],
    out_cols: list[str] | None = None,
) -> DataFrame:
    """The quantile columns of each sum (named ``out_cols``, default ``qcols``):
    ``sum_p50 + s_q * sqrt(sum_var)`` with the fitted scores of its group (normal quantiles
    for a group without any), the median exactly ``sum_p50``, in order and at least zero;
    only the median where the sum has no spread (``sum_var`` null)."""
    qs = sorted(quantiles)
    normal = [NormalDist().inv_cdf(q) for q in qs]
    scores = (fitted or {}).get("scores", {})
    spark = sums.sparkSession
    key = F.concat_ws("|", *[F.col(g).cast("string") for g in groups])
    table = spark.createDataFrame(
        [(k, [float(v) for v in s]) for k, s in scores.items()] or [("\0", normal)],
        "score_key string, s array<double>",
    )
    out = sums.withColumn("score_key", key).join(F.broadcast(table), "score_key", "left")
    scale = F.sqrt(F.greatest(F.col("sum_var"), F.lit(MIN_SIGMA)))
    raw = {
        c: F.col("sum_p50")
        if q == 0.5
        else F.col("sum_p50") + F.coalesce(F.col("s")[i], F.lit(normal[i])) * scale
        for i, (c, q) in enumerate(zip(qcols, qs))
    }
    # in order: below the median never above it, above never below; then cumulative max
    # from the median outwards keeps every pair of quantiles from crossing
    ordered: dict[str, Any] = {}
    below = [i for i, q in enumerate(qs) if q < 0.5]
    above = [i for i, q in enumerate(qs) if q > 0.5]
    ordered[qcols[qs.index(0.5)]] = F.col("sum_p50")
    bound = F.col("sum_p50")
    for i in reversed(below):
        bound = F.least(bound, raw[qcols[i]])
        ordered[qcols[i]] = bound
    bound = F.col("sum_p50")
    for i in above:
        bound = F.greatest(bound, raw[qcols[i]])
        ordered[qcols[i]] = bound
    median = qcols[qs.index(0.5)]
    has_spread = F.col("sum_var").isNotNull()
    for c, name in zip(qcols, out_cols or qcols):
        value = F.greatest(ordered[c], F.lit(0.0))
        out = out.withColumn(name, value if c == median else F.when(has_spread, value))
    return out.drop("score_key", "s")


def non_decreasing(df: DataFrame, keys: list[str], qcols: list[str]) -> DataFrame:
    """Each quantile column made non-decreasing in the horizon within ``keys`` (a running max:
    demand over days 1..h+1 is at least demand over days 1..h)."""
    w = Window.partitionBy(*keys).orderBy("horizon").rowsBetween(Window.unboundedPreceding, 0)
    for c in qcols:
        df = df.withColumn(c, F.max(c).over(w))
    return df


# ---- fitted on the backtest, applied to forecasts ------------------------------------------


def fit_sum_scores(
    rows: DataFrame, region_levels: list[str], qcols: list[str], quantiles: list[float]
) -> dict[str, Any]:
    """Scores of lead-time demand (per method and horizon) and of region totals (per method,
    level and horizon) from backtest rows: ``method``, series keys, ``origin``,
    ``target_date``, ``horizon``, ``actual``, ``observed``, ``point`` (the median), the
    quantile columns and the region columns.  A day without an observed actual leaves the
    sums it belongs to out."""
    base = with_sigma(rows, qcols, quantiles).withColumn(
        "y", F.when(F.col("observed") == 1, F.col("actual"))
    )
    base = base.persist()
    try:
        cum = cumulative_sums(base, ["method", *SERIES_KEY, "origin"], "point", "y")
        out: dict[str, Any] = {
            "version": SCORES_VERSION,
            "lead_time": fit_scores(cum, ["method", "horizon"], quantiles, MIN_SCORE_ROWS),
            "regions": {},
        }
        for level in region_levels:
            keys = ["method", "origin", "target_date", "horizon"]
            sums = region_sums(base, level, keys, "point", "y")
            out["regions"][level] = fit_scores(
                sums, ["method", "horizon"], quantiles, MIN_SCORE_ROWS
            )
    finally:
        base.unpersist()
    return out


def scores_for(fitted: dict[str, Any] | None, method: str) -> dict[str, Any] | None:
    """The scores of one method (keys "<method>|<h>" -> "<h>"), or None when it has none."""
    if not fitted:
        return None
    prefix = f"{method}|"
    scores = {
        k[len(prefix) :]: v for k, v in fitted.get("scores", {}).items() if k.startswith(prefix)
    }
    return {"scores": scores} if scores else None


def _with_truth(rows: DataFrame) -> tuple[DataFrame, str | None]:
    if "actual" in rows.columns and "observed" in rows.columns:
        return rows.withColumn("y", F.when(F.col("observed") == 1, F.col("actual"))), "y"
    return rows, None


def with_lead_time(
    rows: DataFrame,
    keys: list[str],
    qcols: list[str],
    quantiles: list[float],
    fitted: dict[str, Any] | None,
    median: str = "point",
    groups: tuple[str, ...] = ("horizon",),
) -> DataFrame:
    """``rows`` plus ``cum_<q>`` for each quantile column: quantiles of the demand over days
    1..h of each series (``keys``), non-decreasing in h; and ``cum_actual`` when ``rows``
    has ``actual`` and ``observed``.  Scores are looked up by the ``groups`` columns."""
    base, actual = _with_truth(with_sigma(rows, qcols, quantiles))
    sums = cumulative_sums(base, keys, median, actual)
    cum = [f"cum_{c}" for c in qcols]
    out = non_decreasing(apply_scores(sums, fitted, list(groups), qcols, quantiles, cum), keys, cum)
    if actual:
        out = out.withColumnRenamed("sum_actual", "cum_actual").drop("y")
    return out.drop("sigma", "sum_p50", "sum_var")


def region_totals(
    rows: DataFrame,
    levels: list[str],
    keys: list[str],
    qcols: list[str],
    quantiles: list[float],
    fitted: dict[str, Any],
    median: str = "point",
    groups: tuple[str, ...] = ("horizon",),
) -> DataFrame:
    """Per region of each level and per ``keys``: ``level``, ``region``, ``series`` summed,
    ``point`` (their summed medians, also the median quantile column) and the other
    quantiles of the total; ``actual`` (summed) when ``rows`` has ``actual`` and
    ``observed``."""
    base, actual = _with_truth(with_sigma(rows, qcols, quantiles))
    parts = []
    for level in levels:
        sums = region_sums(base, level, keys, median, actual)
        part = apply_scores(sums, fitted.get(level), list(groups), qcols, quantiles)
        if actual:
            part = part.withColumnRenamed("sum_actual", "actual")
        parts.append(part.drop("sum_var").withColumnRenamed("sum_p50", "point"))
    return functools.reduce(lambda a, b: a.unionByName(b), parts)
