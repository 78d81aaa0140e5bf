"""Synthetic spatio-temporal sales data, generated in parallel by Spark executors.

Every random draw is a hash of (seed, tag, keys) -- ``xxhash64`` mapped to [0, 1) -- so the
output is identical for a seed whatever the partitioning, and no row is ever produced by a
loop on the driver: entities come from ``spark.range`` and the fact table from cross joins
of them.  The demand has the structure the model is meant to learn:

* per-item level and trend; weekly profile; yearly seasonality with an item phase;
* promotions (whole weeks) with a lift, and a dip in the week after a promotion;
* prices that change per 4-week period, with item-specific elasticity;
* global and regional (state) public holidays -- stores closed -- with a lift on the day
  before, and regional school holidays with a smaller lift;
* intermittent demand for slow items (occurrence x geometric size);
* store closures: Sundays for some stores, holidays, two-week refurbishments;
* spatially correlated shocks (``spatial_signal``): ``shock`` -- events with a centre, a
  start and a duration whose effect on a store decays as exp(-distance / radius), so
  neighbouring stores carry real signal; ``leadlag`` -- each city's shocks reach one leader
  store first and the city's other stores (its nearest neighbours) a number of days later,
  drawn per city, so a leader's recent sales foretell its neighbours'; ``none`` -- shocks of
  the same kind drawn per store, so neighbours carry no signal beyond what all stores share;
* new stores that opened shortly before the end (short history, for transfer learning);
* optionally (``categories``), an M5-like product hierarchy: items spread over categories
  and their departments, with demand shocks shared by a department's items in one store and
  by a category's items in every store, which the item-hierarchy aggregates can pick up;
* plan rows after the last day: promo/open/price known, target null.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sales_st.config import GeneratorConfig
from sales_st.data.contract import GLOBAL_SCOPE, PUBLIC_HOLIDAY, SCHOOL_HOLIDAY
from sales_st.data.geo import haversine_km
from sales_st.errors import ConfigError

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, int]] = {
    # about 0.2M rows: the whole pipeline runs in minutes on 2 cores
    "tiny": dict(
        days=400,
        n_states=2,
        cities_per_state=2,
        stores_per_city=3,
        n_items=2,
        plan_days=28,
        partitions=2,
    ),
    "demo": dict(
        days=730,
        n_states=3,
        cities_per_state=3,
        stores_per_city=4,
        n_items=6,
        plan_days=28,
        partitions=4,
    ),
    # M5-like: many items in a few stores, categories -> departments; 6.8M rows
    "m5": dict(
        days=730,
        n_states=2,
        cities_per_state=1,
        stores_per_city=3,
        n_items=1500,
        plan_days=28,
        partitions=16,
        categories=3,
        departments_per_category=3,
    ),
    # 12.1M rows
    "bench": dict(
        days=1095,
        n_states=8,
        cities_per_state=6,
        stores_per_city=6,
        n_items=40,
        plan_days=28,
        partitions=32,
    ),
}

# Fixed-date public holidays for every region (month, day).
GLOBAL_HOLIDAYS = ((1, 1), (5, 1), (10, 3), (12, 25), (12, 26))


def resolve(cfg: GeneratorConfig) -> GeneratorConfig:
    """Fill sizes left at 0 from the preset (``custom``: every size must be given)."""
    preset = PRESETS.get(cfg.preset, {})
    updates: dict[str, Any] = {k: v for k, v in preset.items() if getattr(cfg, k) == 0}
    missing = [
        k for k in PRESETS["demo"] if getattr(cfg, k) == 0 and k not in updates and k != "plan_days"
    ]
    if missing:
        raise ConfigError(f"generator preset 'custom' needs explicit {', '.join(missing)}")
    lags = cfg.spatial_lag_days
    if len(lags) != 2 or not 0 <= lags[0] <= lags[1]:
        raise ConfigError(
            f"data.generator.spatial_lag_days must be [lo, hi] with 0 <= lo <= hi, found {lags}"
        )
    out = dataclasses.replace(cfg, **updates)
    if out.categories > 0:
        out = dataclasses.replace(out, departments_per_category=out.departments_per_category or 1)
        groups = out.categories * out.departments_per_category
        if groups > out.n_items:
            raise ConfigError(
                f"data.generator: {out.categories} categories x {out.departments_per_category} "
                f"departments need at least {groups} items, found n_items {out.n_items}"
            )
    return out


def expected_rows(cfg: GeneratorConfig) -> int:
    """Upper bound of fact rows (new stores open late, so the true count is lower)."""
    cfg = resolve(cfg)
    stores = cfg.n_states * cfg.cities_per_state * cfg.stores_per_city
    return stores * cfg.n_items * (cfg.days + cfg.plan_days)


# ---- hashing helpers -----------------------------------------------------------------


def uniform(seed: int, tag: str, *cols: Column) -> Column:
    """Deterministic U[0, 1) from a hash of the seed, a tag and key columns."""
    h = F.xxhash64(F.lit(seed), F.lit(tag), *cols)
    return (h.bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF)).cast("double") / float(2**63)).alias(tag)


def normal(seed: int, tag: str, *cols: Column) -> Column:
    """Deterministic N(0, 1) by Box-Muller from two hashed uniforms."""
    u1 = F.greatest(uniform(seed, tag + ".1", *cols), F.lit(1e-12))
    u2 = uniform(seed, tag + ".2", *cols)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * math.pi * u2)


# ---- entities ------------------------------------------------------------------------


def states_df(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    s = cfg.seed
    i = F.col("id")
    return spark.range(cfg.n_states, numPartitions=1).select(
        i.alias("state_no"),
        F.format_string("S%02d", i + 1).alias("state"),
        (47.5 + 7.0 * uniform(s, "state.lat", i)).alias("state_lat"),
        (6.5 + 8.0 * uniform(s, "state.lon", i)).alias("state_lon"),
        F.exp(0.25 * normal(s, "state.level", i)).alias("state_factor"),
        (F.floor(uniform(s, "state.school", i) * 35) + 180).cast("int").alias("school_start_doy"),
    )


def stores_df(spark: SparkSession, cfg: GeneratorConfig, end: dt.date) -> DataFrame:
    """Store dimension with hidden generation parameters (prefixed ``g_``)."""
    s = cfg.seed
    n_cities = cfg.n_states * cfg.cities_per_state
    cities = spark.range(n_cities, numPartitions=1).select(
        F.col("id").alias("city_no"),
        F.floor(F.col("id") / cfg.cities_per_state).alias("state_no"),
        normal(s, "city.dlat", F.col("id")).alias("dlat"),
        normal(s, "city.dlon", F.col("id")).alias("dlon"),
    )
    cities = cities.join(F.broadcast(states_df(spark, cfg)), "state_no").select(
        "city_no",
        "state_no",
        "state",
        F.format_string(
            "%s-C%02d", F.col("state"), F.col("city_no") % cfg.cities_per_state + 1
        ).alias("city"),
        (F.col("state_lat") + 0.45 * F.col("dlat")).alias("city_lat"),
        (F.col("state_lon") + 0.6 * F.col("dlon")).alias("city_lon"),
        "state_factor",
        "school_start_doy",
    )
    n_stores = n_cities * cfg.stores_per_city
    st = F.col("id")
    city_no = F.floor(st / cfg.stores_per_city)
    # leadlag: one leader per city (lag 0); the city's other stores follow after its lag
    lo, hi = cfg.spatial_lag_days
    city_lag = lo + F.floor(uniform(s, "leadlag.lag", city_no) * (hi - lo + 1))
    leader = F.floor(uniform(s, "leadlag.leader", city_no) * cfg.stores_per_city)
    new_u = uniform(s, "store.new", st)
    history = F.floor(cfg.new_store_history_days * (0.5 + 0.5 * uniform(s, "store.hist", st)))
    stores = spark.range(n_stores, numPartitions=1).select(
        st.alias("store_no"),
        F.floor(st / cfg.stores_per_city).alias("city_no"),
        normal(s, "store.dlat", st).alias("dlat"),
        normal(s, "store.dlon", st).alias("dlon"),
        F.element_at(
            F.array(*[F.lit(t) for t in "abcd"]),
            (F.floor(uniform(s, "store.type", st) * 4) + 1).cast("int"),
        ).alias("store_type"),
        F.round(F.exp(0.35 * normal(s, "store.size", st)), 3).alias("size"),
        (uniform(s, "store.sunday", st) < cfg.sunday_closed_fraction).alias("g_sunday_closed"),
        F.when(new_u < cfg.new_store_fraction, F.date_sub(F.lit(end), history.cast("int")))
        .otherwise(F.lit(None).cast("date"))
        .alias("open_date"),
        (0.1 * normal(s, "store.price", st)).alias("g_price_level"),
        F.when(st % cfg.stores_per_city == leader, 0)
        .otherwise(city_lag)
        .cast("int")
        .alias("g_lag_days"),
    )
    return stores.join(F.broadcast(cities), "city_no").select(
        F.format_string("st%04d", F.col("store_no") + 1).alias("store_id"),
        "city",
        "state",
        F.lit("C1").alias("country"),
        F.round(F.col("city_lat") + 0.06 * F.col("dlat"), 5).alias("latitude"),
        F.round(F.col("city_lon") + 0.09 * F.col("dlon"), 5).alias("longitude"),
        "store_type",
        "size",
        "open_date",
        "g_sunday_closed",
        "g_price_level",
        "state_factor",
        "school_start_doy",
        F.col("store_no").alias("g_store_no"),
        F.col("city_no").alias("g_city_no"),
        "g_lag_days",
    )


def items_df(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """Item dimension with hidden generation parameters (prefixed ``g_``); with
    ``categories``, a ``department`` column and categories C01 .. (see :func:`item_groups`)."""
    s = cfg.seed
    it = F.col("id")
    slow = uniform(s, "item.slow", it) < cfg.slow_item_fraction
    if cfg.categories > 0:
        groups = item_groups(it, cfg.n_items, cfg.categories, cfg.departments_per_category)
    else:
        groups = [
            F.element_at(
                F.array(*[F.lit(c) for c in ("food", "drugstore", "household", "seasonal")]),
                (F.floor(uniform(s, "item.cat", it) * 4) + 1).cast("int"),
            ).alias("category")
        ]
    return spark.range(cfg.n_items, numPartitions=1).select(
        F.format_string("it%03d", it + 1).alias("item_id"),
        *groups,
        F.round(F.exp(1.2 + 0.6 * normal(s, "item.price", it)), 2).alias("base_price"),
        slow.alias("g_slow"),
        F.when(slow, 0.3 + 1.2 * uniform(s, "item.slowlevel", it))
        .otherwise(F.exp(3.0 + 0.7 * normal(s, "item.level", it)))
        .alias("g_level"),
        (cfg.trend_sd * normal(s, "item.trend", it)).alias("g_trend"),
        (2 * math.pi * uniform(s, "item.phase", it)).alias("g_phase"),
        (cfg.elasticity_mean * (0.5 + uniform(s, "item.elasticity", it))).alias("g_elasticity"),
    )


def item_groups(item_no: Column, n_items: int, categories: int, per_category: int) -> list[Column]:
    """``category`` (C01 ..) and ``department`` (C01-D01 ..) of item number ``item_no``
    (0-based): consecutive items share a department, the ``categories x per_category``
    departments get ``n_items`` between them as evenly as whole items allow."""
    dept_no = F.floor(item_no * (categories * per_category) / n_items)
    cat_no = F.floor(dept_no / per_category)
    category = F.format_string("C%02d", cat_no + 1)
    department = F.format_string("C%02d-D%02d", cat_no + 1, dept_no % per_category + 1)
    return [category.alias("category"), department.alias("department")]


def group_shock(cfg: GeneratorConfig, tag: str, day: Column, *group: Column) -> Column:
    """Log-effect on ``day`` of the demand shocks of one item group (keys ``group``): the
    days are cut into blocks of ``shock_days`` (shifted per group), each block a shock with
    probability ``group_shocks_per_year`` per year, with a random sign and a log-effect of
    0.5x to 1.5x ``shock_amplitude``; 0 outside shocks."""
    s, length = cfg.seed, max(1, cfg.shock_days)
    offset = F.floor(uniform(s, f"{tag}.offset", *group) * length)
    block = F.floor((day + offset) / length)
    rate = min(1.0, cfg.group_shocks_per_year * length / 365.25)
    sign = F.when(uniform(s, f"{tag}.sign", *group, block) < 0.5, -1.0).otherwise(1.0)
    size = cfg.shock_amplitude * (0.5 + uniform(s, f"{tag}.amp", *group, block))
    return F.when(uniform(s, f"{tag}.on", *group, block) < rate, sign * size).otherwise(0.0)


def dates_df(spark: SparkSession, cfg: GeneratorConfig, partitions: int) -> DataFrame:
    start = dt.date.fromisoformat(cfg.start_date)
    n = cfg.days + cfg.plan_days
    return spark.range(n, numPartitions=partitions).select(
        F.col("id").cast("int").alias("day"),
        F.date_add(F.lit(start), F.col("id").cast("int")).alias("date"),
    )


def events_df(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """Global public holidays, regional public holidays and regional school holidays."""
    s = cfg.seed
    dates = dates_df(spark, cfg, 1)
    is_global = F.lit(False)
    for m, d in GLOBAL_HOLIDAYS:
        is_global = is_global | ((F.month("date") == m) & (F.dayofmonth("date") == d))
    global_events = dates.where(is_global).select(
        "date",
        F.lit(GLOBAL_SCOPE).alias("scope"),
        F.lit(None).cast("string").alias("scope_level"),
        F.lit(PUBLIC_HOLIDAY).alias("event_type"),
    )
    states = states_df(spark, cfg)
    grid = dates.crossJoin(F.broadcast(states))
    regional = grid.where(
        (
            uniform(s, "holiday.regional", F.col("state"), F.col("date").cast("string"))
            < cfg.regional_holidays_per_year / 365.0
        )
        & (F.dayofweek("date") != 1)
        & ~is_global
    ).select(
        "date",
        F.col("state").alias("scope"),
        F.lit("state").alias("scope_level"),
        F.lit(PUBLIC_HOLIDAY).alias("event_type"),
    )
    doy = F.dayofyear("date")
    school = grid.where(
        (doy >= F.col("school_start_doy")) & (doy < F.col("school_start_doy") + 42)
    ).select(
        "date",
        F.col("state").alias("scope"),
        F.lit("state").alias("scope_level"),
        F.lit(SCHOOL_HOLIDAY).alias("event_type"),
    )
    return global_events.unionByName(regional).unionByName(school)


def shocks_df(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """Regional shock events: a centre near a state's centroid, a start day, an amplitude."""
    s = cfg.seed
    years = cfg.days / 365.25
    n = max(1, round(cfg.shocks_per_state_per_year * cfg.n_states * years))
    k = F.col("id")
    shocks = spark.range(n, numPartitions=1).select(
        k.alias("shock_no"),
        F.floor(uniform(s, "shock.state", k) * cfg.n_states).alias("state_no"),
        normal(s, "shock.dlat", k).alias("dlat"),
        normal(s, "shock.dlon", k).alias("dlon"),
        F.floor(uniform(s, "shock.start", k) * cfg.days).cast("int").alias("start_day"),
        (
            F.when(uniform(s, "shock.sign", k) < 0.5, -1.0).otherwise(1.0)
            * cfg.shock_amplitude
            * (0.5 + uniform(s, "shock.amp", k))
        ).alias("amplitude"),
    )
    return shocks.join(F.broadcast(states_df(spark, cfg)), "state_no").select(
        "shock_no",
        (F.col("state_lat") + 0.5 * F.col("dlat")).alias("shock_lat"),
        (F.col("state_lon") + 0.7 * F.col("dlon")).alias("shock_lon"),
        "start_day",
        "amplitude",
    )


def store_shock_effects(stores: DataFrame, shocks: DataFrame, cfg: GeneratorConfig) -> DataFrame:
    """(store_id, day, shock) additive log-effect, for days a shock is active near a store."""
    dist = haversine_km(
        F.col("latitude"), F.col("longitude"), F.col("shock_lat"), F.col("shock_lon")
    )
    pairs = stores.select("store_id", "latitude", "longitude").crossJoin(F.broadcast(shocks))
    pairs = pairs.withColumn("dist_km", dist).where(F.col("dist_km") < 4 * cfg.shock_radius_km)
    effect = F.col("amplitude") * F.exp(-F.col("dist_km") / cfg.shock_radius_km)
    days = F.sequence(F.col("start_day"), F.col("start_day") + cfg.shock_days - 1)
    return (
        pairs.select("store_id", effect.alias("effect"), F.explode(days).alias("day"))
        .groupBy("store_id", "day")
        .agg(F.sum("effect").alias("shock"))
    )


def signal_shocks_df(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """Shock events of the ``leadlag`` (one unit per city) and ``none`` (one unit per store)
    signals: unit, start day (its leader's, for leadlag), duration and log-effect."""
    s = cfg.seed
    n_cities = cfg.n_states * cfg.cities_per_state
    units = n_cities if cfg.spatial_signal == "leadlag" else n_cities * cfg.stores_per_city
    n = max(1, round(cfg.signal_shocks_per_year * units * cfg.days / 365.25))
    # starts from before the first day, so that followers are shocked from day 0 on too
    first = -(cfg.spatial_lag_days[1] + cfg.shock_days)
    k = F.col("id")
    return spark.range(n, numPartitions=1).select(
        k.alias("shock_no"),
        F.floor(uniform(s, "signal.unit", k) * units).cast("int").alias("unit_no"),
        (first + F.floor(uniform(s, "signal.start", k) * (cfg.days - first)))
        .cast("int")
        .alias("start_day"),
        F.greatest(F.lit(1), F.round(cfg.shock_days * (0.5 + uniform(s, "signal.days", k))))
        .cast("int")
        .alias("shock_days"),
        (
            F.when(uniform(s, "signal.sign", k) < 0.5, -1.0).otherwise(1.0)
            * cfg.shock_amplitude
            * (0.5 + uniform(s, "signal.amp", k))
        ).alias("amplitude"),
    )


def store_signal_effects(stores: DataFrame, shocks: DataFrame, cfg: GeneratorConfig) -> DataFrame:
    """(store_id, day, shock) log-effect of the ``leadlag`` / ``none`` shock events: a store
    feels each shock of its unit from the event's start plus its own lag (0 for ``none``)."""
    if cfg.spatial_signal == "leadlag":
        unit, lag = F.col("g_city_no"), F.col("g_lag_days")
    else:
        unit, lag = F.col("g_store_no"), F.lit(0)
    first = F.col("start_day") + F.col("lag")
    pairs = stores.select("store_id", unit.cast("int").alias("unit_no"), lag.alias("lag")).join(
        F.broadcast(shocks), "unit_no"
    )
    days = F.sequence(first, first + F.col("shock_days") - 1)
    return (
        pairs.select("store_id", "amplitude", F.explode(days).alias("day"))
        .where(F.col("day") >= 0)
        .groupBy("store_id", "day")
        .agg(F.sum("amplitude").alias("shock"))
    )


def shock_effects(spark: SparkSession, cfg: GeneratorConfig, stores: DataFrame) -> DataFrame:
    """(store_id, day, shock): the additive log-effect of the configured ``spatial_signal``
    on each store and day it is non-zero; ``stores`` is the store dimension with its hidden
    ``g_`` columns."""
    if cfg.spatial_signal == "shock":
        return store_shock_effects(stores, shocks_df(spark, cfg), cfg)
    return store_signal_effects(stores, signal_shocks_df(spark, cfg), cfg)


def spatial_truth(spark: SparkSession, cfg: GeneratorConfig) -> dict[str, DataFrame]:
    """The hidden spatial structure of a generated panel, for tests and benchmarks:
    ``stores`` (store_id, city, lag_days -- 0 for a city's leader, its city's lag for the
    followers; meaningful for ``leadlag``) and ``shocks`` (store_id, day, shock)."""
    cfg = resolve(cfg)
    end = dt.date.fromisoformat(cfg.start_date) + dt.timedelta(days=cfg.days - 1)
    stores = stores_df(spark, cfg, end)
    return {
        "stores": stores.select("store_id", "city", F.col("g_lag_days").alias("lag_days")),
        "shocks": shock_effects(spark, cfg, stores),
    }


# ---- facts ---------------------------------------------------------------------------


def sales_df(
    spark: SparkSession,
    cfg: GeneratorConfig,
    stores: DataFrame,
    items: DataFrame,
    events: DataFrame,
) -> DataFrame:
    s = cfg.seed
    dates = dates_df(spark, cfg, cfg.partitions)

    # Per (state, date) calendar flags, small: broadcast.
    ev = events.select(F.col("date").alias("ev_date"), "scope", "event_type")
    state_days = stores.select("state").distinct().crossJoin(dates.select("date"))
    flags = (
        state_days.join(
            F.broadcast(ev),
            (F.col("ev_date") == F.col("date"))
            & ((F.col("scope") == F.col("state")) | (F.col("scope") == GLOBAL_SCOPE)),
            "left",
        )
        .groupBy("state", "date")
        .agg(
            F.max((F.col("event_type") == PUBLIC_HOLIDAY).cast("int")).alias("holiday"),
            F.max((F.col("event_type") == SCHOOL_HOLIDAY).cast("int")).alias("school"),
        )
        .fillna(0, ["holiday", "school"])
    )
    w_next = F.lead("holiday", 1).over(Window.partitionBy("state").orderBy("date"))
    flags = flags.withColumn("pre_holiday", F.coalesce(w_next, F.lit(0)) * (1 - F.col("holiday")))

    shocks = shock_effects(spark, cfg, stores)

    grid = dates.crossJoin(F.broadcast(stores.crossJoin(items)))
    grid = grid.where(F.col("open_date").isNull() | (F.col("date") >= F.col("open_date")))
    grid = grid.join(F.broadcast(flags), ["state", "date"], "left")
    grid = grid.join(shocks, ["store_id", "day"], "left")

    st, it, day = F.col("store_id"), F.col("item_id"), F.col("day")
    week = F.floor(day / 7)
    period = F.floor(day / 28)
    wd_idx = ((F.dayofweek("date") + 5) % 7 + 1).cast("int")  # Monday = 1
    weekday = F.element_at(F.array(*[F.lit(v) for v in cfg.weekday_profile]), wd_idx)
    t_years = day / 365.25
    yearly = 1 + cfg.yearly_amplitude * F.sin(2 * math.pi * t_years + F.col("g_phase"))
    trend = F.greatest(F.lit(0.2), 1 + F.col("g_trend") * t_years)
    promo = uniform(s, "promo", st, it, week) < cfg.promo_probability
    promo_prev = uniform(s, "promo", st, it, week - 1) < cfg.promo_probability
    dip = (~promo) & promo_prev & (week > 0)
    changed = uniform(s, "price.change", st, it, period) < cfg.price_change_probability
    price_mult = F.when(
        changed, F.exp(cfg.price_change_sd * normal(s, "price.mult", st, it, period))
    )
    ref_price = F.col("base_price") * F.exp(F.col("g_price_level"))
    price = F.round(ref_price * F.coalesce(price_mult, F.lit(1.0)), 2)
    refurb = (uniform(s, "refurb", st, F.floor(day / 30)) < cfg.refurbishment_probability) & (
        (day % 30) < 14
    )
    closed = (F.col("holiday") == 1) | (F.col("g_sunday_closed") & (wd_idx == 7)) | refurb
    mu = (
        F.col("g_level")
        * F.col("size")
        * F.col("state_factor")
        * weekday
        * yearly
        * trend
        * F.when(promo, cfg.promo_lift).otherwise(1.0)
        * F.when(dip, cfg.promo_dip).otherwise(1.0)
        * F.pow(F.col("price") / ref_price, -F.col("g_elasticity"))
        * (1 + cfg.holiday_lift * F.col("pre_holiday"))
        * (1 + 0.5 * cfg.holiday_lift * F.col("school"))
        * F.exp(F.coalesce(F.col("shock"), F.lit(0.0)))
    )
    if cfg.categories > 0:  # shocks shared by a department's items in a store, a category's
        mu = mu * F.exp(
            group_shock(cfg, "dept.shock", day, st, F.col("department"))
            + group_shock(cfg, "cat.shock", day, F.col("category"))
        )
    # Fast items: multiplicative log-normal noise with mean 1.
    z = normal(s, "noise", st, it, day)
    cv = cfg.noise_cv
    fast = F.round(F.col("mu") * F.exp(cv * z - cv * cv / 2))
    # Slow items: occurrence with P = 1 - exp(-mu), size ~ 1 + geometric, mean = mu overall.
    p_occ = 1 - F.exp(-F.col("mu"))
    mean_size = F.greatest(F.col("mu") / F.greatest(p_occ, F.lit(1e-9)), F.lit(1.0))
    p_geo = F.least(1 / mean_size, F.lit(0.999))
    size = 1 + F.floor(
        F.log(F.greatest(uniform(s, "slow.size", st, it, day), F.lit(1e-12))) / F.log(1 - p_geo)
    )
    slow = F.when(uniform(s, "slow.occ", st, it, day) < p_occ, size).otherwise(0.0)
    target = F.when(F.col("closed"), 0.0).when(F.col("g_slow"), slow).otherwise(fast)
    end_day = cfg.days

    out = (
        grid.withColumn("price", price)
        .withColumn("closed", closed)
        .withColumn("mu", mu)
        .select(
            "date",
            "store_id",
            "item_id",
            F.when(day < end_day, target).cast("double").alias("target"),
            "price",
            promo.cast("int").alias("promo"),
            (~F.col("closed")).cast("int").alias("open"),
            F.year("date").alias("year"),
        )
    )
    return out


def generate(spark: SparkSession, cfg: GeneratorConfig) -> dict[str, DataFrame]:
    """Build all contract tables (lazy DataFrames) for the resolved generator config."""
    cfg = resolve(cfg)
    end = dt.date.fromisoformat(cfg.start_date) + dt.timedelta(days=cfg.days - 1)
    stores_full = stores_df(spark, cfg, end).cache()
    items_full = items_df(spark, cfg).cache()
    events = events_df(spark, cfg).cache()
    sales = sales_df(spark, cfg, stores_full, items_full, events)
    stores = stores_full.select(
        "store_id",
        "city",
        "state",
        "country",
        "latitude",
        "longitude",
        "store_type",
        "size",
        "open_date",
    )
    hierarchy = ["department"] if cfg.categories > 0 else []
    items = items_full.select("item_id", "category", *hierarchy, "base_price")
    if cfg.frequency != "day":
        sales = period_sales(sales, cfg.frequency)
    return {"sales": sales, "stores": stores, "items": items, "events": events}


def period_sales(daily: DataFrame, frequency: str) -> DataFrame:
    """The daily sales summed per week (dated on the Sunday ending it) or calendar month
    (dated on its 1st): the target summed, promo and open when so on any day, the mean
    price.  Periods the daily rows do not cover whole, or that mix days with and without a
    target (history and plan), are dropped: a partial sum would read as a drop in demand."""
    if frequency == "week":
        # next_day(d - 1, 'Sun'): the Sunday on or after d
        label = F.next_day(F.date_sub("date", 1), "Sun")
        length = F.lit(7)
    else:
        label = F.trunc("date", "month")
        length = F.dayofmonth(F.last_day("date"))
    rows = daily.select("*", label.alias("_period"), length.alias("_length"))
    agg = rows.groupBy("store_id", "item_id", "_period").agg(
        F.count(F.lit(1)).alias("_days"),
        F.count("target").alias("_observed"),
        F.first("_length").alias("_length"),
        F.sum("target").alias("target"),
        F.avg("price").alias("price"),
        F.max("promo").alias("promo"),
        F.max("open").alias("open"),
    )
    whole = (F.col("_days") == F.col("_length")) & F.col("_observed").isin(0, F.col("_days"))
    return agg.where(whole).select(
        F.col("_period").alias("date"),
        "store_id",
        "item_id",
        F.when(F.col("_observed") > 0, F.col("target")).cast("double").alias("target"),
        "price",
        F.col("promo").cast("int").alias("promo"),
        F.col("open").cast("int").alias("open"),
        F.year("_period").alias("year"),
    )


def inventory_df(sales: DataFrame, seed: int) -> DataFrame:
    """Inventory positions on the last day with sales, for the replenishment demo: on hand
    0-12 days of the series' recent mean sales, an open order (0-6 days of sales) for about
    a third of the series, a lead time of 1-4 days per store, the default review period and
    service level (null)."""

    def draw(*salt: Any) -> Column:  # uniform in [0, 1), fixed per series and seed
        h = F.xxhash64("store_id", "item_id", F.lit(seed), *[F.lit(x) for x in salt])
        return (F.abs(h) % 100_000) / 100_000.0

    observed = sales.where(F.col("target").isNotNull())
    last = observed.agg(F.max("date").alias("last"))
    recent = (
        observed.crossJoin(F.broadcast(last))
        .where(F.col("date") > F.date_sub("last", 28))
        .groupBy("store_id", "item_id", "last")
        .agg(F.avg("target").alias("mean"))
    )
    lead = (F.abs(F.xxhash64("store_id", F.lit(seed))) % 4 + 1).cast("int")
    return recent.select(
        "store_id",
        "item_id",
        F.col("last").alias("date"),
        F.round(F.col("mean") * draw("on_hand") * 12).alias("on_hand"),
        F.when(draw("open") < 0.35, F.round(F.col("mean") * draw("on_order") * 6))
        .otherwise(0.0)
        .alias("on_order"),
        lead.alias("lead_time_days"),
        F.lit(None).cast("int").alias("review_days"),
        F.lit(None).cast("double").alias("service_level"),
    )


def write_generated(spark: SparkSession, cfg: GeneratorConfig, out_dir: str) -> dict[str, int]:
    """Generate and write every table atomically under ``out_dir``; returns row counts."""
    from sales_st.storage.files import write_parquet_atomic  # local: keeps this module storage-free

    resolved = resolve(cfg)
    tables = generate(spark, resolved)
    written = {
        name: write_parquet_atomic(tables[name].coalesce(1), f"{out_dir}/{name}")
        for name in ("stores", "items", "events")
    }
    sales = tables["sales"].sortWithinPartitions("year", "store_id", "item_id", "date")
    written["sales"] = write_parquet_atomic(sales, f"{out_dir}/sales", partition_by=["year"])
    inventory = inventory_df(spark.read.parquet(written["sales"]), resolved.seed)
    written["inventory"] = write_parquet_atomic(inventory.coalesce(1), f"{out_dir}/inventory")
    counts = {name: spark.read.parquet(path).count() for name, path in written.items()}
    log.info("generated %s under %s", counts, out_dir)
    return counts
