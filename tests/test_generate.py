"""The synthetic data has the structure it claims, measured on the generated rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from pyspark.testing import assertDataFrameEqual

from sales_st.config import GeneratorConfig, SpatialConfig
from sales_st.data.geo import haversine_km
from sales_st.data.synthetic import expected_rows, generate, resolve, spatial_truth
from sales_st.errors import ConfigError
from sales_st.features.spatial import neighbour_table

CFG = GeneratorConfig(
    preset="custom",
    seed=3,
    days=730,
    n_states=3,
    cities_per_state=2,
    stores_per_city=4,
    n_items=5,
    plan_days=14,
    partitions=3,
    slow_item_fraction=0.2,
    new_store_fraction=0.15,
)


@pytest.fixture(scope="module")
def tables(spark):
    out = generate(spark, CFG)
    out["sales"] = out["sales"].persist()
    return out


@pytest.fixture(scope="module")
def fast_open(spark, tables):
    """Open days of fast (non-intermittent) items, with their week number."""
    sales = tables["sales"].where(F.col("target").isNotNull() & (F.col("open") == 1))
    fast = sales.groupBy("item_id").agg(F.avg("target").alias("m")).where("m > 3")
    start = F.lit(CFG.start_date).cast("date")
    week = F.floor(F.datediff("date", start) / 7)
    return sales.join(fast.select("item_id"), "item_id").withColumn("week", week)


def test_row_counts_and_plan_rows(tables):
    sales = tables["sales"]
    n = sales.count()
    assert n <= expected_rows(CFG)
    stores = tables["stores"]
    assert stores.count() == 24
    new = stores.where(F.col("open_date").isNotNull()).count()
    assert 0 < new < 24
    # every store has rows exactly from its open date (or the start) to the last plan day
    span = sales.groupBy("store_id").agg(F.min("date").alias("lo"), F.max("date").alias("hi"))
    check = span.join(stores, "store_id").where(
        F.col("lo") != F.coalesce("open_date", F.lit(CFG.start_date).cast("date"))
    )
    assert check.count() == 0
    plans = sales.where(F.col("target").isNull())
    assert plans.count() == 24 * 5 * 14
    assert plans.agg(F.min("date")).first()[0].isoformat() == "2024-01-01"
    assert plans.where(F.col("promo").isNull() | F.col("open").isNull()).count() == 0


def test_weekday_profile_matches_config(fast_open):
    wd = (
        fast_open.groupBy(((F.dayofweek("date") + 5) % 7).alias("wd"))
        .agg(F.avg("target").alias("m"))
        .orderBy("wd")
        .toPandas()
    )
    measured = wd["m"].to_numpy() / wd["m"].mean()
    profile = np.array(CFG.weekday_profile)
    expected = profile / profile.mean()
    assert np.allclose(measured, expected, rtol=0.06), (measured, expected)


def test_promo_lift_and_post_promo_dip(fast_open):
    df = fast_open
    by_week = df.groupBy("store_id", "item_id", "week").agg(F.max("promo").alias("wpromo"))
    prev = by_week.select(
        "store_id",
        "item_id",
        (F.col("week") + 1).alias("week"),
        F.col("wpromo").alias("prev_promo"),
    )
    df = df.join(prev, ["store_id", "item_id", "week"], "left").fillna(0, ["prev_promo"])
    kind = (
        F.when(F.col("promo") == 1, "promo")
        .when(F.col("prev_promo") == 1, "dip")
        .otherwise("normal")
    )
    # ratios within each series (levels differ by series), then the median over series
    means = (
        df.withColumn("k", kind)
        .groupBy("store_id", "item_id")
        .pivot("k", ["promo", "dip", "normal"])
        .agg(F.avg("target"))
    )
    pdf = means.dropna().toPandas()
    lift = np.median(pdf["promo"] / pdf["normal"])
    dip = np.median(pdf["dip"] / pdf["normal"])
    assert lift == pytest.approx(CFG.promo_lift, rel=0.06)
    assert dip == pytest.approx(CFG.promo_dip, rel=0.06)


def test_shock_correlation_decays_with_distance(tables):
    sales = tables["sales"].where(F.col("target").isNotNull() & (F.col("open") == 1))
    stores = tables["stores"].where(F.col("open_date").isNull())
    # store-day log totals, minus the store-weekday mean and the day's mean over all stores
    daily = (
        sales.join(stores.select("store_id"), "store_id")
        .groupBy("store_id", "date")
        .agg(F.log1p(F.sum("target")).alias("v"))
    )
    daily = daily.withColumn("wd", F.dayofweek("date"))
    daily = daily.withColumn(
        "r", F.col("v") - F.avg("v").over(Window.partitionBy("store_id", "wd"))
    )
    daily = daily.withColumn("r", F.col("r") - F.avg("r").over(Window.partitionBy("date")))
    a = daily.select(F.col("store_id").alias("a"), "date", F.col("r").alias("ra"))
    b = daily.select(F.col("store_id").alias("b"), "date", F.col("r").alias("rb"))
    corr = a.join(b, "date").where("a < b").groupBy("a", "b").agg(F.corr("ra", "rb").alias("c"))
    geo = stores.select("store_id", "latitude", "longitude")
    ga = geo.select(
        F.col("store_id").alias("a"), F.col("latitude").alias("la"), F.col("longitude").alias("oa")
    )
    gb = geo.select(
        F.col("store_id").alias("b"), F.col("latitude").alias("lb"), F.col("longitude").alias("ob")
    )
    pdf = (
        corr.join(ga, "a")
        .join(gb, "b")
        .withColumn("km", haversine_km(F.col("la"), F.col("oa"), F.col("lb"), F.col("ob")))
        .toPandas()
    )
    near = pdf[pdf.km < 40].c.mean()
    mid = pdf[(pdf.km >= 40) & (pdf.km < 150)].c.mean()
    far = pdf[pdf.km >= 250].c.mean()
    assert len(pdf[pdf.km < 40]) >= 5 and len(pdf[pdf.km >= 250]) >= 5
    assert near > mid > far, (near, mid, far)
    assert near - far > 0.1, (near, far)


def test_deterministic_by_seed_whatever_the_partitioning(spark):
    small = dataclasses.replace(CFG, days=60, n_states=2, n_items=2, plan_days=0)
    a = generate(spark, dataclasses.replace(small, partitions=1))["sales"]
    b = generate(spark, dataclasses.replace(small, partitions=4))["sales"]
    assertDataFrameEqual(a, b)
    c = generate(spark, dataclasses.replace(small, seed=99))["sales"]
    diff = a.join(c, ["store_id", "item_id", "date"]).where(a.target != c.target).count()
    assert diff > 0


def test_intermittent_items_have_many_zero_days(tables):
    sales = tables["sales"].where(F.col("target").isNotNull() & (F.col("open") == 1))
    z = sales.groupBy("item_id").agg(
        F.avg("target").alias("m"), F.avg((F.col("target") == 0).cast("double")).alias("zero")
    )
    pdf = z.toPandas()
    slow = pdf[pdf.m < 3]
    assert len(slow) >= 1 and (slow.zero > 0.2).all()
    assert (pdf[pdf.m > 10].zero < 0.01).all()


def test_presets_resolve():
    demo = resolve(GeneratorConfig(preset="demo"))
    bench = resolve(GeneratorConfig(preset="bench"))
    assert expected_rows(demo) < 300_000
    assert expected_rows(bench) >= 10_000_000
    with pytest.raises(ValueError, match="explicit"):
        resolve(GeneratorConfig(preset="custom"))


# A panel whose only store-level variation beyond weekday and level is the shock signal and the
# daily noise: no promotions, price changes, regional holidays, refurbishments or trends.
SIGNAL = GeneratorConfig(
    preset="custom",
    seed=3,
    days=500,
    n_states=2,
    cities_per_state=2,
    stores_per_city=3,
    n_items=2,
    plan_days=0,
    partitions=2,
    slow_item_fraction=0.0,
    new_store_fraction=0.0,
    promo_probability=0.0,
    price_change_probability=0.0,
    regional_holidays_per_year=0,
    holiday_lift=0.0,
    refurbishment_probability=0.0,
    sunday_closed_fraction=0.0,
    yearly_amplitude=0.0,
    trend_sd=0.0,
)


def _store_residuals(spark, cfg: GeneratorConfig):
    """(date x store) log daily totals minus the store-weekday mean, and the lag truth."""
    sales = generate(spark, cfg)["sales"].where("open = 1")
    daily = sales.groupBy("store_id", "date").agg(F.log1p(F.sum("target")).alias("v"))
    daily = daily.withColumn(
        "r", F.col("v") - F.avg("v").over(Window.partitionBy("store_id", F.dayofweek("date")))
    )
    pdf = daily.toPandas()
    wide = pdf.pivot(index="date", columns="store_id", values="r")
    wide.index = pd.to_datetime(wide.index)
    truth = spatial_truth(spark, cfg)["stores"].toPandas()
    return wide.asfreq("D"), truth


def _follower_pairs(truth: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(follower, its city's leader, lag) for every follower."""
    leaders = truth[truth.lag_days == 0].set_index("city").store_id
    return [
        (r.store_id, leaders[r.city], int(r.lag_days))
        for r in truth[truth.lag_days > 0].itertuples()
    ]


def test_leadlag_followers_trail_their_leader_by_the_drawn_lag(spark):
    cfg = dataclasses.replace(SIGNAL, spatial_signal="leadlag", spatial_lag_days=[3, 14])
    wide, truth = _store_residuals(spark, cfg)
    # one leader per city; every follower's lag in the configured range
    assert (truth.groupby("city").lag_days.apply(lambda s: (s == 0).sum()) == 1).all()
    followers = truth[truth.lag_days > 0]
    assert len(followers) == 8 and followers.lag_days.between(3, 14).all()
    assert followers.groupby("city").lag_days.nunique().eq(1).all()  # one lag per city
    for follower, leader, lag in _follower_pairs(truth):
        corr = [wide[follower].corr(wide[leader].shift(j)) for j in range(21)]
        # the follower's sales match its leader's sales of `lag` days before, not of today
        assert int(np.argmax(corr)) == lag, (follower, lag, np.round(corr, 2))
        assert corr[lag] > 0.7 and corr[lag] - corr[0] > 0.2, (follower, lag, corr[0], corr[lag])
    # and the feature job's neighbour sets (2 nearest) hold each follower's leader
    stores = generate(spark, cfg)["stores"]
    nb = neighbour_table(stores, SpatialConfig(k=2), ["city", "state"]).toPandas()
    pairs = set(zip(nb.store_id, nb.neighbour_id))
    assert all((f, lead) in pairs for f, lead, _ in _follower_pairs(truth))


def test_no_spatial_signal_leaves_neighbours_uncorrelated(spark):
    cfg = dataclasses.replace(SIGNAL, spatial_signal="none")
    wide, truth = _store_residuals(spark, cfg)
    # every pair of stores of a city (each other's nearest neighbours), same day and at the
    # lag a leadlag panel would have drawn
    lag = truth.groupby("city").lag_days.max()
    pairs = [
        (a.store_id, b.store_id, int(lag[a.city]))
        for a in truth.itertuples()
        for b in truth.itertuples()
        if a.city == b.city and a.store_id != b.store_id
    ]
    same_day = np.mean([wide[a].corr(wide[b]) for a, b, _ in pairs])
    lagged = np.mean([wide[a].corr(wide[b].shift(j)) for a, b, j in pairs])
    assert len(pairs) == 24
    assert abs(same_day) < 0.1 and abs(lagged) < 0.1, (same_day, lagged)
    # the stores still have shocks of the same size, only not shared
    shocks = spatial_truth(spark, cfg)["shocks"].toPandas()
    assert shocks.store_id.nunique() == 12 and shocks.shock.abs().mean() > 0.3


def test_spatial_lag_days_must_be_a_range():
    with pytest.raises(ConfigError, match="spatial_lag_days"):
        resolve(dataclasses.replace(SIGNAL, spatial_lag_days=[5, 2]))
