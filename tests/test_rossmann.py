"""The Rossmann adapter (conf/rossmann.yaml through the generic loader) on the real data."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from sales_st.data.sources import load_inputs
from sales_st.features.calendar import Axis
from sales_st.features.splits import origin_candidates, origin_rules, resolve_boundary
from tests.conftest import make_config, requires_rossmann

pytestmark = requires_rossmann


@pytest.fixture(scope="module")
def ross(spark, data_root):
    cfg = make_config(data_root, env="local,rossmann")
    # the overlay's Spark setting for the nanosecond timestamps, on the shared test session
    spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    return cfg, load_inputs(spark, cfg)


def test_counts_match_the_data_readme(ross):
    _, t = ross
    sales = t["sales"]
    agg = sales.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("store_id").alias("stores"),
        F.min("date").alias("lo"),
        F.max("date").alias("hi"),
        F.sum((F.col("open") == 0).cast("int")).alias("closed"),
    ).first()
    assert agg["rows"] == 1_017_209 and agg["stores"] == 1_115
    assert (agg["lo"], agg["hi"]) == (dt.date(2013, 1, 1), dt.date(2015, 7, 31))
    assert agg["closed"] == 172_817
    assert sales.where((F.col("open") == 0) & (F.col("target") != 0)).count() == 0
    assert set(sales.select("item_id").distinct().toPandas().item_id) == {"all"}


def test_known_gaps_are_kept(ross):
    _, t = ross
    days = t["sales"].groupBy("store_id").count()
    assert days.where("count = 941").count() == 1
    gap = t["sales"].where((F.col("date") >= "2014-07-01") & (F.col("date") <= "2014-12-31"))
    assert 1_115 - gap.select("store_id").distinct().count() == 180


def test_stores_states_centroids_and_events(ross):
    _, t = ross
    stores = t["stores"].toPandas()
    assert len(stores) == 1_115 and stores.store_id.is_unique
    assert stores.state.nunique() == 12 and stores.latitude.notna().all()
    assert {"static_cat_assortment", "static_num_competition_distance"} <= set(stores.columns)
    ev = t["events"].toPandas()
    assert set(ev.event_type) == {"public_holiday", "school_holiday"}
    assert set(ev.scope) <= set(stores.state) and ev.scope.nunique() == 12
    assert not ev.duplicated(["date", "scope", "event_type"]).any()
    # Christmas 2013 is a public holiday in every state.  (In 2014 Bavaria's stores are in the
    # six-month gap of the source, and so are its calendar flags: 11 states.)
    xmas = ev[(ev.date == dt.date(2013, 12, 25)) & (ev.event_type == "public_holiday")]
    assert xmas.scope.nunique() == 12
    xmas14 = ev[(ev.date == dt.date(2014, 12, 25)) & (ev.event_type == "public_holiday")]
    assert set(stores.state) - set(xmas14.scope) == {"BY"}


def test_standard_split(ross):
    cfg, _ = ross
    run = dt.date.fromisoformat(cfg.data.run_date)
    assert run == dt.date(2015, 6, 19) and cfg.features.horizon == 42
    # training targets end nine weeks before the run date; the weeks in between are for
    # validation (weekly origins whose 42-day horizon ends by the run date)
    assert resolve_boundary(cfg.features.splits.train_end, run) == dt.date(2015, 4, 17)
    axis = Axis(t0=dt.date(2013, 1, 1), n_days=942)
    rules = {
        r.name: r for r in origin_rules(cfg.features, axis, run, axis.day(dt.date(2015, 7, 31)))
    }
    test = rules["test"]
    assert [axis.date(d) for d in origin_candidates(test, 42, 83)] == [run]
    train = origin_candidates(rules["train"], 42, 83)
    assert axis.date(max(train)) + dt.timedelta(days=42) <= dt.date(2015, 4, 17)
    val = [axis.date(d) for d in origin_candidates(rules["val"], 42, 83)]
    assert val == [dt.date(2015, 4, 17) + dt.timedelta(days=7 * i) for i in range(4)]
    assert max(val) + dt.timedelta(days=42) <= run
