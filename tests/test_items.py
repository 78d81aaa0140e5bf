"""Product hierarchies (data.item_hierarchy): the aggregate channels and the item-group
totals by hand, the contract and config errors, the check profile's group counts and the
generator's M5-like catalogue."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F

from sales_st.config import GeneratorConfig
from sales_st.data.contract import ITEMS, ContractError, conform
from sales_st.errors import ConfigError
from sales_st.evaluation.backtest import metric_levels
from sales_st.features import names as N
from sales_st.features.assemble import layout_for
from sales_st.serving import aggregates as A
from tests.conftest import make_config
from tests.test_aggregates import QCOLS, Z90, Q
from tests.test_features import N_DAYS, T0, L, examples_for, small_cfg, write_inputs

# Four items in two stores: i1 and i2 in department D1, i3 in D2 (both of category C1), i4
# in D3 (category C2).
ITEM_ROWS = [
    ("i1", "C1", "D1", 1.0),
    ("i2", "C1", "D1", 1.0),
    ("i3", "C1", "D2", 1.0),
    ("i4", "C2", "D3", 1.0),
]
LEVELS = [
    "data.item_hierarchy=[{name: department, column: department}, "
    "{name: category, column: category}]"
]
ORIGIN_DAY = 41
MISSING_DAY = 38  # i2 has no row in store s1 that day: the means count only observed items


def item_target(store: str, item: str, day: int) -> float:
    level = {"i1": 1.0, "i2": 3.0, "i3": 10.0, "i4": 50.0}[item]
    return level * (1 + day % 7) * (2.0 if store == "s2" else 1.0)


def write_item_inputs(spark, root) -> None:
    """The explicit three-store panel of test_features (item i1), plus items i2..i4 in
    stores s1 and s2, and an items table with the hierarchy's columns."""
    extra = [
        (T0 + dt.timedelta(days=d), s, i, item_target(s, i, d), 2.0, 0, 1)
        for s in ("s1", "s2")
        for i in ("i2", "i3", "i4")
        for d in range(N_DAYS)
        if not (s, i, d) == ("s1", "i2", MISSING_DAY)
    ]
    write_inputs(spark, root, target=lambda s, d: item_target(s, "i1", d), extra_sales=extra)
    spark.createDataFrame(
        ITEM_ROWS, "item_id string, category string, department string, base_price double"
    ).write.mode("overwrite").parquet(f"{root}/items")


@pytest.fixture(scope="module")
def item_panel(spark, data_root):
    cfg = small_cfg(data_root, "items", *LEVELS)
    write_item_inputs(spark, cfg.path("inputs"))
    prep, ex = examples_for(spark, cfg)
    return cfg, prep, ex


def group_mean(store: str, items: list[str], days: range) -> np.ndarray:
    out = []
    for d in days:
        seen = [i for i in items if (store, i, d) != ("s1", "i2", MISSING_DAY)]
        out.append(np.mean([item_target(store, i, d) for i in seen]))
    return np.array(out)


def test_item_aggregates_hand_computed(item_panel):
    cfg, prep, ex = item_panel
    days = range(ORIGIN_DAY - L + 1, ORIGIN_DAY + 1)
    origin = T0 + dt.timedelta(days=ORIGIN_DAY)
    for store, item, department, category in (
        ("s1", "i1", ["i1", "i2"], ["i1", "i2", "i3"]),
        ("s2", "i3", ["i3"], ["i1", "i2", "i3"]),
        ("s1", "i4", ["i4"], ["i4"]),
    ):
        r = ex[(ex.store_id == store) & (ex.item_id == item) & (ex.origin == origin)].iloc[0]
        dep = group_mean(store, department, days)
        cat = group_mean(store, category, days)
        # the same store's items of the group, each day's mean over the observed ones,
        # scaled by the window's mean
        np.testing.assert_allclose(r.hist_item_agg_department, dep / dep.mean(), rtol=1e-5)
        np.testing.assert_allclose(r.hist_item_agg_category, cat / cat.mean(), rtol=1e-5)
        assert (r.department, r.category) == {i: (d, c) for i, c, d, _ in ITEM_ROWS}[item]
    # the channels follow the region aggregates in the model's context inputs
    layout = layout_for(cfg, prep.wide)
    assert layout.context_hist == [
        N.SPATIAL_LAG,
        "hist_agg_city",
        "hist_agg_state",
        "hist_item_agg_department",
        "hist_item_agg_category",
    ]
    assert prep.wide.item_levels == ["department", "category"]
    assert prep.wide.vocab["department"] == ["D1", "D2", "D3"]


def test_without_item_hierarchy_the_inputs_are_unchanged(spark, data_root, item_panel):
    from sales_st.features.job import prepare

    cfg = small_cfg(data_root, "items")  # the same inputs, no data.item_hierarchy
    prep = prepare(spark, cfg, None)
    try:
        layout = layout_for(cfg, prep.wide)
        assert layout.context_hist == [N.SPATIAL_LAG, "hist_agg_city", "hist_agg_state"]
        assert not [c for c in prep.wide.table.columns if "agg_item" in c or c == "department"]
        assert "department" not in prep.wide.vocab and prep.wide.item_levels == []
    finally:
        prep.release()


def test_item_group_totals_hand_computed(spark):
    sigma = 2.0
    half = Z90 * sigma
    rows = spark.createDataFrame(
        [
            (store, item, cat, h, p50 - half, p50, p50 + half, actual)
            for store, item, cat, p50, actual in (
                ("a", "i1", "C1", 4.0, 5.0),
                ("a", "i2", "C1", 1.0, 1.0),
                ("a", "i3", "C2", 7.0, 6.0),
                ("b", "i1", "C1", 2.0, 3.0),
                ("b", "i9", None, 9.0, 9.0),  # an item without a category: in no group
            )
            for h in (1,)
        ],
        "store_id string, item_id string, category string, horizon int, p10 double, "
        "point double, p90 double, actual double",
    ).select("*", F.lit(1).alias("observed"), F.col("point").alias("p50"))
    grouped = A.with_item_groups(rows, ["category", "department"])  # no department column
    assert "department" not in grouped.columns and "store_department" not in grouped.columns
    levels = A.item_group_levels(["category"])
    assert levels == ["store_category", "category"]
    totals = A.region_totals(grouped, levels, ["horizon"], QCOLS, Q, {})
    got = {
        (r.level, r.region): (r.series, r.point, r.p10, r.p90, r.actual) for r in totals.collect()
    }

    def total(n: int, p50: float, actual: float) -> tuple:
        spread = Z90 * (n * sigma**2) ** 0.5  # independent errors without fitted scores
        low = max(p50 - spread, 0.0)  # a total is never below zero
        return (n, p50, pytest.approx(low), pytest.approx(p50 + spread), actual)

    assert got == {
        ("store_category", "a|C1"): total(2, 5.0, 6.0),
        ("store_category", "a|C2"): total(1, 7.0, 6.0),
        ("store_category", "b|C1"): total(1, 2.0, 3.0),
        ("category", "C1"): total(3, 7.0, 9.0),
        ("category", "C2"): total(1, 7.0, 6.0),
    }
    # the metrics table gets a level per item group, as per region
    found, present = metric_levels(grouped, ["city", *levels])
    assert present == levels
    assert found["store_category"] == ["store_category"] and found["category"] == ["category"]


def test_a_missing_item_hierarchy_column_is_a_contract_error(spark):
    items = spark.createDataFrame([("i1", 2.0)], "item_id string, base_price double")
    with pytest.raises(ContractError, match="lacks the hierarchy column 'category' named in "):
        conform(items, ITEMS, source="items.csv", region_columns=["category"])
    with_it = spark.createDataFrame(
        [("i1", "D1", 2)], "item_id string, department string, base_price int"
    )
    out = conform(with_it, ITEMS, region_columns=["department"])
    assert out.columns == ["item_id", "category", "base_price", "department"]
    assert out.collect()[0].asDict() == {
        "item_id": "i1",
        "category": None,
        "base_price": 2.0,
        "department": "D1",
    }


def test_the_feature_job_names_the_missing_column(spark, data_root, item_panel):
    cfg = small_cfg(
        data_root, "items", "data.item_hierarchy=[{name: brand, column: brand}]"
    )  # the items table has no brand
    with pytest.raises(ContractError, match=r"'brand' named in data\.item_hierarchy"):
        examples_for(spark, cfg)


@pytest.mark.parametrize(
    "column, problem",
    [("item_id", "item key"), ("city", "also a store column"), ("dept-1", "must be a name")],
)
def test_a_misnamed_item_hierarchy_column_is_a_config_error(data_root, column, problem):
    with pytest.raises(ConfigError, match=f"data.item_hierarchy.*{column!r}.*{problem}"):
        make_config(data_root, f"data.item_hierarchy=[{{name: x, column: {column}}}]")


def test_check_profile_counts_the_item_groups(spark, item_panel):
    from sales_st.data.profile import profile_inputs

    cfg, _, _ = item_panel
    profile = profile_inputs(spark, cfg, None)
    assert profile.item_hierarchy == {"department": 3, "category": 2}
    text = profile.render().splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("Hierarchy"))
    # next to the store hierarchy's line
    assert text[at + 1] == (
        "            item hierarchy: department 3, category 2 (items table: 4 items)"
    )


def test_generator_m5_like_catalogue(spark):
    from sales_st.data.synthetic import generate, items_df, resolve

    gen = GeneratorConfig(
        preset="custom",
        days=60,
        n_states=1,
        cities_per_state=1,
        stores_per_city=2,
        n_items=12,
        categories=2,
        departments_per_category=3,
        slow_item_fraction=0.5,
        new_store_fraction=0.0,
        partitions=1,
    )
    tables = generate(spark, resolve(gen))
    items = tables["items"].toPandas().set_index("item_id")
    assert list(tables["items"].columns) == ["item_id", "category", "department", "base_price"]
    # 12 items evenly over 2 categories x 3 departments, consecutive items together
    assert items.groupby("department").size().to_dict() == {
        f"C0{c}-D0{d}": 2 for c in (1, 2) for d in (1, 2, 3)
    }
    assert (items.department.str[:3] == items.category).all()
    assert items.loc["it001", "department"] == "C01-D01"
    assert items.loc["it012", "department"] == "C02-D03"
    sales = tables["sales"].where(F.col("target").isNotNull())
    per_series = sales.groupBy("store_id", "item_id").agg(
        F.count(F.lit(1)).alias("days"), F.avg((F.col("target") == 0).cast("double")).alias("z")
    )
    shape = per_series.agg(
        F.countDistinct("store_id"), F.countDistinct("item_id"), F.min("days"), F.max("days")
    ).collect()[0]
    assert tuple(shape) == (2, 12, 60, 60)  # every item in every store, every day
    # intermittent items: the slow half of the catalogue has far more days without sales
    slow = items_df(spark, resolve(gen)).select("item_id", "g_slow")
    share = per_series.join(slow, "item_id").groupBy("g_slow").agg(F.avg("z")).collect()
    zeros = {r[0]: r[1] for r in share}
    assert zeros[True] > zeros[False] + 0.2
    # the default catalogue is flat as before: no department, its four category labels
    flat = generate(spark, resolve(GeneratorConfig(preset="tiny"))).get("items")
    assert flat.columns == ["item_id", "category", "base_price"]
    assert {r.category for r in flat.collect()} <= {"food", "drugstore", "household", "seasonal"}


def test_generator_needs_an_item_per_department():
    from sales_st.data.synthetic import resolve

    with pytest.raises(ConfigError, match="need at least 6 items, found n_items 4"):
        resolve(GeneratorConfig(preset="tiny", n_items=4, categories=2, departments_per_category=3))
