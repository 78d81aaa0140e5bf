"""The synthetic data has the structure it claims, measured on the generated rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from pyspark.testing import assertDataFrameEqual

from sales_st.config import GeneratorConfig
from sales_st.data.geo import haversine_km
from sales_st.data.synthetic import expected_rows, generate, resolve

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
