"""Policy simulation on the backtest: replay the test period day by day with the orders a
policy would have placed, and measure what a planner pays for (fill rate, stock-out days)
and what it costs (inventory).

The replay (per series, lost sales):

* reviews happen every R days (``features.splits.test_stride``, the backtest origins'
  spacing) from the first test origin on, at the end of the day, after its sales;
* an order placed at a review on day d arrives at the end of day ``d + L`` (the lead time),
  so it must cover the days ``d + 1 .. d + L + R`` until the next order arrives: the
  protection interval ``P = L + R`` of the replenishment job;
* each review uses the latest forecast made on or before its day that reaches over its
  protection interval (a backtest with a single origin still replays its whole horizon,
  as a planner re-ordering from one forecast would);
* the order is ``max(0, S - position)``: S the policy's order-up-to level at that review,
  the position on hand plus on order;
* each day, the sales are ``min(on hand, demand)``: what is missing is lost (a stock-out
  day when demand exceeds what is on hand);
* the replay starts at the first review with exactly the demand of the first L days on hand
  (no policy can act before its first order arrives, so every policy starts alike), and
  days 1..L are not measured.

Two policies, each at several target (cycle) service levels:

* ``model``: S is the service-level quantile of the forecast demand over P: the sum of
  the days' medians, spread by the validation-fitted lead-time scores of a P-day sum (the
  forecasts table's ``cum_*`` at horizon P when the review is on the origin), and the
  replenishment job's two-piece normal beyond p10 and p90;
* ``baseline``: S is the weekday-average forecast summed over P plus a normal safety stock
  ``z(level) * sigma * sqrt(P)``, sigma the standard deviation of the weekday average's
  residuals over the history window at that origin (the textbook policy).

A cycle service level is not a fill rate: the fill rate of a policy at a level is usually
higher.  So the policies are compared at equal *fill rate*: the average inventory each one
needs to reach a target fill rate, read off its fill-rate / inventory curve over the levels.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import SERIES_KEY
from sales_st.decisions.replenishment import Z90
from sales_st.features.spec import FeatureSpec
from sales_st.frames import to_pandas
from sales_st.serving.aggregates import apply_scores, scores_for, with_sigma
from sales_st.serving.scoring import quantile_columns
from sales_st.storage.catalog import ensure_table, replace_partition

log = logging.getLogger(__name__)

MODEL, BASELINE = "model", "baseline"
# The levels every policy is replayed at: the curve of fill rate against inventory.
CURVE_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995)

OUTCOME_SCHEMA = (
    "policy string, service_level double, days int, demand double, sales double, "
    "stockout_days int, inventory double, orders int"
)


@dataclass(frozen=True)
class Replay:
    """Per series (rows) and measured day (columns): what was sold, whether demand was lost,
    and the stock left at the end of the day (after sales, before that evening's arrival)."""

    sales: np.ndarray
    stockout: np.ndarray
    on_hand: np.ndarray
    orders: np.ndarray  # per series: orders placed (quantity > 0)


def replay(demand: np.ndarray, order_up_to: np.ndarray, review_every: int, lead: int) -> Replay:
    """Replay series side by side.

    ``demand``: (n, T) demand on days 1..T after the first review (day 0, the first origin);
    ``order_up_to``: (n, K) the level S at the reviews on days 0, R, 2R, ... (R =
    ``review_every``); ``lead``: days from an order to its arrival (at the end of that day).
    The measured days are L+1..T (columns L..T-1 of the returned arrays)."""
    demand = np.asarray(demand, dtype=float)
    levels = np.asarray(order_up_to, dtype=float)
    n, t_days = demand.shape
    on_hand = demand[:, :lead].sum(axis=1)  # the warm-up: exactly the first L days' demand
    arriving = np.zeros((n, t_days + lead + 1))  # arrivals at the end of day d (index d)
    sales = np.zeros((n, t_days))
    stockout = np.zeros((n, t_days), dtype=bool)
    left = np.zeros((n, t_days))
    orders = np.zeros(n, dtype=int)
    for d in range(t_days + 1):
        if d:  # day d's sales, then that evening's arrival
            want = demand[:, d - 1]
            sold = np.minimum(on_hand, want)
            sales[:, d - 1] = sold
            stockout[:, d - 1] = want > on_hand + 1e-9
            on_hand = on_hand - sold
            left[:, d - 1] = on_hand
            on_hand = on_hand + arriving[:, d]
        k = d // review_every
        if d % review_every == 0 and k < levels.shape[1]:  # a review, after the arrival
            on_order = arriving[:, d + 1 :].sum(axis=1)
            qty = np.maximum(levels[:, k] - (on_hand + on_order), 0.0)
            orders += qty > 0
            if lead:
                arriving[:, d + lead] += qty
            else:  # no lead time: on the shelf at once
                on_hand = on_hand + qty
    return Replay(sales[:, lead:], stockout[:, lead:], left[:, lead:], orders)


def level_quantile(p10: Any, p50: Any, p90: Any, level: float) -> np.ndarray:
    """The ``level`` quantile of the two-piece normal through p10, p50 and p90 (the lower
    half's spread below the median, the upper half's above)."""
    from scipy.special import ndtri

    p10, p50, p90 = (np.asarray(v, dtype=float) for v in (p10, p50, p90))
    z = float(ndtri(level))
    sigma = (np.maximum(p90 - p50, 0.0) if z >= 0 else np.maximum(p50 - p10, 0.0)) / Z90
    return np.maximum(p50 + z * sigma, 0.0)


def normal_level(mean: Any, sigma: Any, periods: int, level: float) -> np.ndarray:
    """``mean + z(level) * sigma * sqrt(periods)``: the baseline's order-up-to level."""
    from scipy.special import ndtri

    mean, sigma = np.asarray(mean, dtype=float), np.asarray(sigma, dtype=float)
    return np.maximum(mean + float(ndtri(level)) * sigma * np.sqrt(periods), 0.0)


def outcomes(
    demand: np.ndarray,
    levels: dict[tuple[str, float], np.ndarray],
    review_every: int,
    lead: int,
) -> pd.DataFrame:
    """Summed outcomes of each (policy, service level)'s order-up-to levels over the series:
    measured days, demand, sales, stock-out days, inventory (end-of-day stock summed over
    series and days) and orders placed."""
    rows = []
    for (policy, level), s in levels.items():
        r = replay(demand, s, review_every, lead)
        rows.append(
            {
                "policy": policy,
                "service_level": float(level),
                "days": int(r.sales.size),
                "demand": float(demand[:, lead:].sum()),
                "sales": float(r.sales.sum()),
                "stockout_days": int(r.stockout.sum()),
                "inventory": float(r.on_hand.sum()),
                "orders": int(r.orders.sum()),
            }
        )
    return pd.DataFrame(rows, columns=[c.split()[0] for c in OUTCOME_SCHEMA.split(", ")])


def summarise(totals: pd.DataFrame, series: int) -> pd.DataFrame:
    """Per policy and level: fill rate (sales / demand), stock-out days per series, the
    share of series-days with a stock-out, average inventory per series and day, and that
    inventory in days of average demand."""
    t = totals.groupby(["policy", "service_level"], as_index=False).sum(numeric_only=True)
    out = t[["policy", "service_level"]].copy()
    out["series"] = series
    out["fill_rate"] = t["sales"] / t["demand"].where(t["demand"] > 0)
    out["stockout_days"] = t["stockout_days"] / max(series, 1)
    out["stockout_share"] = t["stockout_days"] / t["days"].where(t["days"] > 0)
    out["avg_inventory"] = t["inventory"] / t["days"].where(t["days"] > 0)
    mean_demand = t["demand"] / t["days"].where(t["days"] > 0)
    out["inventory_days"] = out["avg_inventory"] / mean_demand.where(mean_demand > 0)
    return out.sort_values(["policy", "service_level"]).reset_index(drop=True)


def inventory_at_fill_rate(curve: pd.DataFrame, target: float) -> float | None:
    """The average inventory a policy needs for ``target`` fill rate, interpolated linearly
    along its (fill rate, inventory) points; None when its curve does not reach it, and its
    least inventory when even its lowest level does better."""
    c = curve.dropna(subset=["fill_rate"]).sort_values("avg_inventory")
    fr, inv = c["fill_rate"].to_numpy(float), c["avg_inventory"].to_numpy(float)
    if not len(fr) or fr.max() < target:
        return None
    if fr[0] >= target:
        return float(inv[0])
    i = int(np.argmax(fr >= target))
    f0, f1, v0, v1 = fr[i - 1], fr[i], inv[i - 1], inv[i]
    return float(v0 + (target - f0) * (v1 - v0) / (f1 - f0)) if f1 > f0 else float(v1)


def comparison(summary: pd.DataFrame, targets: list[float]) -> pd.DataFrame:
    """Per target fill rate: each policy's interpolated inventory, and the model's relative
    to the baseline's (below 1: the model reaches it with less stock)."""
    rows = []
    for target in targets:
        inv = {
            p: inventory_at_fill_rate(summary[summary["policy"] == p], target)
            for p in (MODEL, BASELINE)
        }
        m, b = inv[MODEL], inv[BASELINE]
        rows.append(
            {
                "target_fill_rate": target,
                "model_inventory": m,
                "baseline_inventory": b,
                "model_vs_baseline": m / b if m is not None and b else None,
            }
        )
    return pd.DataFrame(rows)


# ---- on the backtest (Spark) ---------------------------------------------------------------


def residual_sigma(history: int, weeks: int) -> str:
    """SQL over a test example: the standard deviation (target units) of the weekday
    average's residuals over its history window: each open, observed day against the mean
    of the previous ``weeks`` open, observed same-weekday days."""
    prev = (
        f"filter(transform(sequence(1, {weeks}), k -> t - 7 * k), "
        "i -> hist_observed[i] = 1 AND hist_open[i] = 1)"
    )
    resid = f"hist_y[t] - aggregate({prev}, 0D, (a, i) -> a + hist_y[i]) / size({prev})"
    return (
        f"aggregate(filter(sequence({7 * weeks}, {history - 1}), t -> hist_observed[t] = 1 "
        f"AND hist_open[t] = 1 AND size({prev}) > 0), named_struct('s', 0D, 'n', 0), "
        f"(acc, t) -> named_struct('s', acc.s + pow({resid}, 2), 'n', acc.n + 1), "
        "acc -> IF(acc.n > 1, sqrt(acc.s / (acc.n - 1)) * scale, CAST(NULL AS DOUBLE)))"
    )


@dataclass(frozen=True)
class PolicySetup:
    method: str  # the forecasting method whose lead-time quantiles the model policy uses
    lead: int
    review_every: int
    levels: tuple[float, ...]
    weeks: int  # same-weekday weeks of the baseline's weekday average


def review_plan(
    origins: list[dt.date], last: dt.date, every: int, lead: int, horizon: int
) -> list[tuple[int, dt.date, int]]:
    """The reviews of the replay, ``(k, origin, offset)``: review k on day ``r0 + k * every``
    (r0 the first origin) orders from the latest origin's forecast that reaches over its
    protection interval, days ``offset + 1 .. offset + P`` after that origin.  The reviews
    go on while the interval ends on or before ``last`` (the last observed day) and some
    forecast covers it: a backtest with one origin still replays a whole horizon."""
    p = lead + every
    r0, out = origins[0], []
    for k in range(10**6):
        day = r0 + dt.timedelta(days=k * every)
        if day + dt.timedelta(days=p) > last:
            break
        usable = [o for o in origins if o <= day and (day - o).days + p <= horizon]
        if not usable:
            break
        o = max(usable)
        out.append((k, o, (day - o).days))
    return out


def review_inputs(
    rows: DataFrame,
    test: DataFrame,
    setup: PolicySetup,
    history: int,
    horizon: int,
    qcols: list[str],
    quantiles: list[float],
    fitted: dict[str, Any] | None,
) -> tuple[DataFrame, DataFrame, dt.date, dt.date] | None:
    """Demand per series and day, and per series and review (see :func:`review_plan`) the
    inputs of both policies' levels: the quantiles of the forecast demand over the
    protection interval (the sum of its daily medians, and the lead-time scores of a P-day
    sum applied to the sum of its days' variances) and the weekday average over it with its
    origin's residual sigma."""
    p = setup.lead + setup.review_every
    truth = (
        rows.where(F.col("method") == setup.method)
        .select(*SERIES_KEY, "target_date", "actual", "observed", "open")
        .dropDuplicates([*SERIES_KEY, "target_date"])
    )
    last = truth.where(F.col("observed") == 1).agg(F.max("target_date")).first()[0]  # type: ignore[index]
    if last is None:
        return None
    origins = sorted(r[0] for r in rows.select("origin").distinct().collect())
    plan = review_plan(origins, last, setup.review_every, setup.lead, horizon)
    if not plan:
        return None
    r0 = origins[0]
    end = r0 + dt.timedelta(days=plan[-1][0] * setup.review_every + p)
    demand = truth.where(
        (F.col("target_date") > F.lit(r0)) & (F.col("target_date") <= F.lit(end))
    ).select(
        *SERIES_KEY,
        F.datediff("target_date", F.lit(r0)).alias("day"),
        F.when(F.col("observed") == 1, F.col("actual")).alias("demand"),
    )
    spark = rows.sparkSession
    reviews = F.broadcast(spark.createDataFrame(plan, "review int, origin date, offset int"))
    window = (F.col("horizon") > F.col("offset")) & (F.col("horizon") <= F.col("offset") + p)

    def over_interval(frame: DataFrame, method: str, sums: list[Any]) -> DataFrame:
        # per series and review: the sums over the P days of its protection interval
        return (
            frame.where(F.col("method") == method)
            .join(reviews, "origin")
            .where(window)
            .groupBy(*SERIES_KEY, "review", "origin")
            .agg(*sums, F.count(F.lit(1)).alias("_days"))
            .where(F.col("_days") == p)
            .drop("_days")
        )

    model = over_interval(
        with_sigma(rows, qcols, quantiles),
        setup.method,
        [F.sum("point").alias("sum_p50"), F.sum(F.col("sigma") * F.col("sigma")).alias("sum_var")],
    )
    model = apply_scores(
        model.withColumn("horizon", F.lit(p)), fitted, ["horizon"], qcols, quantiles
    )
    lo, mid, hi = qcols[0], qcols[quantiles.index(0.5)], qcols[-1]
    wavg = over_interval(rows, "weekday_average", [F.sum("point").alias("base_mean")])
    sigma = test.join(reviews.select("origin").distinct(), "origin").select(
        *SERIES_KEY, "origin", F.expr(residual_sigma(history, setup.weeks)).alias("base_sigma")
    )
    inputs = (
        model.select(
            *SERIES_KEY,
            "review",
            "origin",
            F.col(lo).alias("cum_lo"),
            F.col(mid).alias("cum_mid"),
            F.col(hi).alias("cum_hi"),
        )
        .join(wavg, [*SERIES_KEY, "review", "origin"])
        .join(sigma, [*SERIES_KEY, "origin"])
        .select(
            *SERIES_KEY,
            "review",
            "cum_lo",
            "cum_mid",
            "cum_hi",
            "base_mean",
            F.coalesce("base_sigma", F.lit(0.0)).alias("base_sigma"),
        )
    )
    return demand, inputs, r0, end


def simulate_backtest(
    rows: DataFrame,
    test: DataFrame,
    setup: PolicySetup,
    history: int,
    horizon: int,
    qcols: list[str],
    quantiles: list[float],
    fitted: dict[str, Any] | None,
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Replay the backtest with both policies at every level: the summary per policy and
    level (see :func:`summarise`) and what was replayed; None when the test period is too
    short for one protection interval (``P = L + R`` beyond the observed days)."""
    got = review_inputs(rows, test, setup, history, horizon, qcols, quantiles, fitted)
    if got is None:
        return None
    demand, inputs, r0, end = got
    n_days = (end - r0).days
    n_reviews = (n_days - setup.lead) // setup.review_every
    p = setup.lead + setup.review_every
    policy_levels = tuple(setup.levels)
    lead, every = setup.lead, setup.review_every

    value_cols = ["demand", "cum_lo", "cum_mid", "cum_hi", "base_mean", "base_sigma"]

    def per_group(group: pd.DataFrame) -> pd.DataFrame:
        # one group = one series: complete only with every day's demand and every review
        d = group[group["kind"] == "day"].dropna(subset=["demand"])
        revs = group[group["kind"] == "review"]
        if len(d) != n_days or len(revs) != n_reviews or revs["at"].nunique() != n_reviews:
            return pd.DataFrame(columns=[c.split()[0] for c in OUTCOME_SCHEMA.split(", ")])
        path = d.sort_values("at")["demand"].to_numpy(float)[None, :]
        r = revs.sort_values("at")
        lv: dict[tuple[str, float], np.ndarray] = {}
        for level in policy_levels:
            model = level_quantile(r["cum_lo"], r["cum_mid"], r["cum_hi"], level)
            lv[(MODEL, level)] = model[None, :]
            base = normal_level(r["base_mean"], r["base_sigma"], p, level)
            lv[(BASELINE, level)] = base[None, :]
        return outcomes(path, lv, every, lead)

    # one long table (a cogroup of two frames of the same source is an ambiguous self-join)
    nulls = {c: F.lit(None).cast("double").alias(c) for c in value_cols}
    long = demand.select(
        *SERIES_KEY,
        F.lit("day").alias("kind"),
        F.col("day").alias("at"),
        *[F.col("demand").cast("double") if c == "demand" else nulls[c] for c in value_cols],
    ).unionByName(
        inputs.select(
            *SERIES_KEY,
            F.lit("review").alias("kind"),
            F.col("review").alias("at"),
            *[nulls[c] if c == "demand" else F.col(c).cast("double") for c in value_cols],
        )
    )
    per_series = long.groupBy(*SERIES_KEY).applyInPandas(per_group, OUTCOME_SCHEMA)
    totals = to_pandas(
        per_series.groupBy("policy", "service_level").agg(
            F.sum("days").alias("days"),
            F.sum("demand").alias("demand"),
            F.sum("sales").alias("sales"),
            F.sum("stockout_days").alias("stockout_days"),
            F.sum("inventory").alias("inventory"),
            F.sum("orders").alias("orders"),
            F.count(F.lit(1)).alias("series"),
        )
    )
    all_series = demand.select(*SERIES_KEY).distinct().count()
    if totals.empty:
        log.warning("policy simulation: no series has every day's demand and every review")
        return None
    series = int(totals["series"].max())
    summary = summarise(totals.drop(columns="series"), series)
    info = {
        "first_review": str(r0),
        "last_day": str(end),
        "reviews": n_reviews,
        "review_days": every,
        "lead_time_days": lead,
        "protection_days": p,
        "measured_days": n_days - lead,
        "series": series,
        "series_left_out": all_series - series,
        "method": setup.method,
    }
    return summary, info


# ---- the evaluation job's policy table ----------------------------------------------------

POLICY_DDL = (
    "policy STRING, service_level DOUBLE, series BIGINT, fill_rate DOUBLE, "
    "stockout_days DOUBLE, stockout_share DOUBLE, avg_inventory DOUBLE, "
    "inventory_days DOUBLE, method STRING, lead_time_days INT, review_days INT, run_date DATE"
)
POLICY_COMMENT = (
    "Replenishment policies replayed day by day over the backtest's test period (lost "
    "sales): the model's lead-time quantiles against a weekday-average-plus-safety-stock "
    "baseline, per target cycle service level; one partition per evaluation run date."
)
POLICY_COMMENTS = {
    "policy": "model (order-up-to = the forecasts' lead-time demand quantile) or baseline "
    "(weekday average over the protection interval + z * sigma * sqrt(days))",
    "service_level": "target cycle service level the order-up-to levels were set for (fraction)",
    "series": "series replayed (those with every day's demand and every review) (count)",
    "fill_rate": "demand met from stock: sales / demand over the measured days (fraction)",
    "stockout_days": "days with unmet demand, per series (days)",
    "stockout_share": "share of series-days with unmet demand (fraction)",
    "avg_inventory": "stock at the end of the day, per series and day (target units)",
    "inventory_days": "avg_inventory in days of average demand (days)",
    "method": "forecasting method whose quantiles the model policy used",
    "lead_time_days": "days from an order to its arrival (replenish.lead_time_days)",
    "review_days": "days between reviews: the backtest origins' spacing (days)",
    "run_date": "run date of the evaluation (date); partition column",
}


def policy_method(selection: dict[str, Any] | None, networks: list[str]) -> str | None:
    """The method the model policy replays: what ``forecast.model: best`` publishes when
    the evaluation selected one, else the first network backtested (None: no quantiles)."""
    if selection:
        return "best"
    return networks[0] if networks else None


def run_policy_backtest(
    spark: SparkSession,
    cfg: Config,
    spec: FeatureSpec,
    rows: DataFrame,
    selection: dict[str, Any] | None,
    networks: list[str],
    run_date: dt.date,
) -> dict[str, Any] | None:
    """The evaluation's replay (see the module doc): written to
    ``<database>.<replenish.simulate_table>`` and returned as ``summary`` (every level of the
    curve), ``comparison`` (inventory at the target fill rates) and ``info``; None, with the
    reason logged, when it cannot run."""
    r = cfg.replenish
    if not r.simulate_table:
        return None
    if not spec.period.daily:
        log.warning(
            "policy simulation: the forecasts are %s, lead times and reviews count days: skipped",
            spec.period.describe(),
        )
        return None
    method = policy_method(selection, networks)
    if method is None:
        log.info("policy simulation: no method with quantiles was backtested: skipped")
        return None
    if "weekday_average" not in cfg.evaluate.baselines:
        log.warning("policy simulation: the weekday_average baseline is not backtested: skipped")
        return None
    every = cfg.features.splits.test_stride
    setup = PolicySetup(
        method=method,
        lead=r.lead_time_days,
        review_every=every,
        levels=tuple(sorted(set(CURVE_LEVELS) | set(r.simulate_levels))),
        weeks=cfg.features.same_weekday_weeks,
    )
    if setup.lead + every > spec.horizon:
        log.warning(
            "policy simulation: lead time %d + review period %d days is beyond the horizon "
            "(%d days): skipped",
            setup.lead,
            every,
            spec.horizon,
        )
        return None
    quantiles = sorted(cfg.model.quantiles)
    qcols = quantile_columns(quantiles)
    sums = (selection or {}).get("sums") or {}
    fitted = scores_for(sums.get("lead_time"), method)
    test = spark.read.parquet(spec.split_path("test"))
    got = simulate_backtest(rows, test, setup, spec.history, spec.horizon, qcols, quantiles, fitted)
    if got is None:
        log.warning(
            "policy simulation: the test period is shorter than one protection interval "
            "(%d days) after a review: skipped",
            setup.lead + every,
        )
        return None
    summary, info = got
    comp = comparison(summary, list(r.simulate_levels))
    table = f"{cfg.database}.{r.simulate_table}"
    out = summary.assign(
        series=summary["series"].astype("int64"),
        method=method,
        lead_time_days=setup.lead,
        review_days=every,
    )
    ensure_table(spark, table, POLICY_DDL, ["run_date"], POLICY_COMMENT, POLICY_COMMENTS)
    frame = spark.createDataFrame(out).withColumn("run_date", F.lit(run_date).cast("date"))
    replace_partition(frame, table, {"run_date": run_date})
    shown = summary[summary["service_level"].isin(r.simulate_levels)]
    log.info(
        "policy simulation (%s, %d series, reviews every %d days, lead time %d days, "
        "%d measured days) -> %s:\n%s\ninventory needed per target fill rate:\n%s",
        method,
        info["series"],
        every,
        setup.lead,
        info["measured_days"],
        table,
        shown[["policy", "service_level", "fill_rate", "stockout_days", "avg_inventory"]].to_string(
            index=False, float_format=lambda v: f"{v:.4f}"
        ),
        comp.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
    )
    return {"summary": summary, "comparison": comp, "info": {**info, "table": table}}
