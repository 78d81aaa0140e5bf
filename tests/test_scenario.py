"""The what-if job on the tiny panel: a plan that changes nothing changes nothing, a plan
reaches only its series, a bad plan is refused whole, and the uplift check's history side
by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from sales_st.decisions.scenario import run_scenario, run_uplift_check
from sales_st.errors import DataError


@pytest.fixture(scope="module")
def sales(spark, tiny_cfg):
    return spark.read.parquet(f"{tiny_cfg.path('inputs')}/sales").drop("year")


@pytest.fixture(scope="module")
def run_date(tiny_model, tiny_features):
    return tiny_features.run_date


@pytest.fixture(scope="module")
def cfg(tiny_cfg, tiny_model):
    # the pre-trained network alone: the published ensemble would score three models twice
    return dataclasses.replace(
        tiny_cfg, forecast=dataclasses.replace(tiny_cfg.forecast, model="pretrained")
    )


def _scenario(spark, cfg, run_date, sid):
    return spark.table(f"{cfg.database}.scenarios").where(
        (F.col("run_date") == F.lit(run_date)) & (F.col("scenario_id") == sid)
    )


def test_a_plan_of_the_planned_values_changes_nothing(spark, cfg, sales, run_date, tmp_path):
    store, item = sorted(r[0] for r in sales.select("store_id").distinct().collect())[0], None
    days = [run_date + dt.timedelta(days=h) for h in range(1, cfg.features.horizon + 1)]
    planned = sales.where((F.col("store_id") == store) & F.col("date").isin(days)).toPandas()
    item = planned["item_id"].iloc[0]
    planned = planned[planned["item_id"] == item]
    path = tmp_path / "same.csv"
    planned[["store_id", "item_id", "date", "promo", "price"]].to_csv(path, index=False)
    out = run_scenario(spark, cfg, str(path), "same", run_date)
    rows = _scenario(spark, cfg, run_date, "same").toPandas()
    assert out.series == 1 and len(rows) == cfg.features.horizon
    assert set(rows["item_id"]) == {item} and rows["overridden"].eq(1).all()
    for q in ("p10", "p50", "p90"):
        assert (rows[f"{q}_baseline"] == rows[f"{q}_scenario"]).all()  # exactly
    assert (rows["uplift"] == 0).all() and out.uplift == 0


def test_a_store_wide_promotion_reaches_its_series_only(spark, cfg, sales, run_date, tmp_path):
    stores = sorted(r[0] for r in sales.select("store_id").distinct().collect())
    store = stores[1]
    items = sorted(
        r[0] for r in sales.where(F.col("store_id") == store).select("item_id").distinct().collect()
    )
    h = cfg.features.horizon
    plan = pd.DataFrame(
        {
            "store_id": store,
            "item_id": "",  # every item of the store
            "date": [run_date + dt.timedelta(days=d) for d in range(1, h + 1)],
            "promo": 1,
        }
    )
    path = tmp_path / "push.csv"
    plan.to_csv(path, index=False)
    run_scenario(spark, cfg, str(path), None, run_date)
    rows = _scenario(spark, cfg, run_date, "push").toPandas()
    assert set(rows["store_id"]) == {store} and sorted(set(rows["item_id"])) == items
    assert len(rows) == len(items) * h and rows["overridden"].eq(1).all()
    assert (rows["uplift"] != 0).any()  # the promotion flags and distances reached the model
    np.testing.assert_allclose(rows["uplift"], rows["p50_scenario"] - rows["p50_baseline"])


def test_a_bad_plan_is_refused_whole(spark, cfg, sales, run_date, tmp_path):
    store = sales.select("store_id").first()[0]
    inside = run_date + dt.timedelta(days=1)
    plan = pd.DataFrame(
        {
            "store_id": [store, "no-such-store", store, store],
            "date": [inside, inside, run_date, inside + dt.timedelta(days=1)],
            "promo": [1, 1, 1, 2],
        }
    )
    path = tmp_path / "bad.csv"
    plan.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"3 of 4 rows cannot be applied") as err:
        run_scenario(spark, cfg, str(path), "bad", run_date)
    msg = str(err.value)
    assert "store has no scoring window" in msg and "date outside the forecast days" in msg
    assert "promo is not 0 or 1" in msg
    exists = spark.catalog.tableExists(f"{cfg.database}.scenarios")
    assert not exists or _scenario(spark, cfg, run_date, "bad").count() == 0


def test_uplift_check_against_the_history_by_hand(spark, cfg, sales):
    out = run_uplift_check(spark, cfg, history_days=364)
    rows = spark.table(out.table).where(F.col("run_date") == F.lit(out.run_date)).toPandas()
    o, h = out.run_date, cfg.features.horizon
    s = sales.toPandas()
    s["date"] = pd.to_datetime(s["date"]).dt.date
    ahead = s[(s.date > o) & (s.date <= o + dt.timedelta(days=h)) & (s.promo == 1)]
    with_promo = set(map(tuple, ahead[["store_id", "item_id"]].drop_duplicates().values))
    got = set(map(tuple, rows[["store_id", "item_id"]].values))
    assert got and got <= with_promo
    r = rows.dropna(subset=["observed_uplift"]).iloc[0]
    one = s[(s.store_id == r.store_id) & (s.item_id == r.item_id)]
    one = one[(one.date <= o) & (one.date > o - dt.timedelta(days=364)) & (one.target > 0)]
    one = one[one.open.fillna(1) == 1].assign(wd=lambda d: pd.to_datetime(d.date).dt.weekday)
    num = den = 0.0
    for _, g in one.groupby("wd"):
        on, off = g[g.promo == 1].target, g[g.promo == 0].target
        if len(on) and len(off):
            num += on.mean() / off.mean() * len(on)
            den += len(on)
    assert r.observed_uplift == pytest.approx(num / den - 1)
    assert r.promo_days == len(ahead[(ahead.store_id == r.store_id) & (ahead.item_id == r.item_id)])
    assert out.stats["series"] >= 1 and np.isfinite(out.stats["mae"])
