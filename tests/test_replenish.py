"""Replenishment: the order-up-to arithmetic by hand, and the job on the tiny panel with
bad inventory rows quarantined and every row accounted for."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from sales_st.decisions.job import run_replenish
from sales_st.decisions.replenishment import Z90, order_plan
from sales_st.storage.files import write_parquet_atomic

N = NormalDist()


def test_order_up_to_by_hand():
    frame = pd.DataFrame(
        {
            "store_id": ["s1", "s1"],
            "item_id": ["a", "b"],
            "lead_time_days": [2, 3],
            "review_days": [7, 7],
            "service_level": [0.95, 0.9],
            "on_hand": [5.0, 20.0],
            "on_order": [3.0, 0.0],
            # a: median 10, upper spread 2, lower spread 2 / z90 * ... (p10 = 8)
            "cum_p10": [8.0, 30.0],
            "cum_p50": [10.0, 40.0],
            "cum_p90": [10.0 + 2 * Z90, 50.0],
        }
    )
    plan = order_plan(frame, order_multiple=1.0).set_index("item_id")
    a, b = plan.loc["a"], plan.loc["b"]
    s_a = 10 + N.inv_cdf(0.95) * 2  # 13.29
    assert a.protection_days == 9 and a.order_up_to == pytest.approx(s_a)
    assert a.position == 8.0 and a.order_qty == 6.0  # 5.29 rounded up
    assert a.stockout_risk == pytest.approx(1 - N.cdf((14 - 10) / 2))
    # without the order: 8 is below the median; the lower half's spread is 2 / z90
    assert a.stockout_risk_no_order == pytest.approx(1 - N.cdf((8 - 10) / (2 / Z90)))
    # b: the 0.9 level is p90 itself, 50 > 20 on hand: order 30
    assert b.order_up_to == pytest.approx(50.0) and b.order_qty == 30.0
    assert b.stockout_risk == pytest.approx(0.1)
    assert order_plan(frame, order_multiple=4.0).order_qty.tolist() == [8.0, 32.0]


@pytest.fixture(scope="module")
def forecasts(tiny_forecast):
    """The tiny panel's forecasts (the partition of its run date, whichever run wrote it)."""
    return tiny_forecast


@pytest.mark.slow
def test_replenish_job_plans_every_position_and_quarantines_bad_rows(
    spark, tiny_cfg, forecasts, tmp_path
):
    run = forecasts.run_date
    fc = spark.table("sales_st.forecasts").where(F.col("run_date") == F.lit(run)).toPandas()
    series = fc[["store_id", "item_id"]].drop_duplicates().values.tolist()
    (s0, i0), (s1, i1), (s2, i2) = series[:3]
    day = run
    rows = [
        # used: the latest on or before the run date; the older one is superseded
        (s0, i0, day, 4.0, 1.0, 1, 2, None),
        (s0, i0, day - dt.timedelta(days=3), 9.0, 0.0, None, None, None),
        # after the run date: a later position, not used for this run
        (s0, i0, day + dt.timedelta(days=1), 50.0, 0.0, None, None, None),
        (s1, i1, day, 0.0, None, None, None, 0.99),
        (s2, i2, day, -1.0, 0.0, None, None, None),  # invalid: negative on hand
        (s2, i2, day - dt.timedelta(days=1), 3.0, 0.0, None, None, 1.5),  # invalid level
        (None, i0, day, 1.0, 0.0, None, None, None),  # null key
        ("nowhere", i0, day, 1.0, 0.0, None, None, None),  # no forecast: not planned
    ]
    inv = spark.createDataFrame(
        rows,
        "store_id string, item_id string, date date, on_hand double, on_order double, "
        "lead_time_days int, review_days int, service_level double",
    )
    inputs = tmp_path / "inputs"
    write_parquet_atomic(inv, f"{inputs}/inventory")
    cfg = dataclasses.replace(
        tiny_cfg, paths=dataclasses.replace(tiny_cfg.paths, inputs=str(inputs))
    )
    cfg = dataclasses.replace(cfg, replenish=dataclasses.replace(cfg.replenish, review_days=3))
    out = run_replenish(spark, cfg, run, run_id="test-replenish")
    c = out.counts
    assert c["input"] == len(rows)
    assert (c["null_key"], c["invalid_value"]) == (1, 2)
    assert (c["used"], c["superseded"], c["after_run_date"]) == (3, 1, 1)
    assert c["input"] == c["accepted"] + c["null_key"] + c["invalid_value"]
    assert c["accepted"] == c["used"] + c["superseded"] + c["after_run_date"]
    assert c["used"] == c["planned"] + c["no_forecast"] + c["beyond_horizon"]
    assert (c["planned"], c["no_forecast"]) == (2, 1)
    q = spark.table("sales_st.quarantine").where("job = 'replenish'").toPandas()
    assert sorted(q.rule) == ["invalid_value", "invalid_value", "null_key"]
    assert set(q.detail) >= {"on_hand is negative", "service_level is not between 0.5 and 1"}
    plan = (
        spark.table("sales_st.replenishment")
        .where(F.col("run_date") == F.lit(run))
        .toPandas()
        .set_index(["store_id", "item_id"])
    )
    assert len(plan) == 2
    # the first series: its own lead time (1) and review period (2), defaults elsewhere
    p = plan.loc[(s0, i0)]
    assert (p.lead_time_days, p.review_days, p.protection_days) == (1, 2, 3)
    assert p.service_level == cfg.replenish.service_level and p.position == 5.0
    row = fc[(fc.store_id == s0) & (fc.item_id == i0) & (fc.horizon == 3)].iloc[0]
    level = row.cum_p50 + N.inv_cdf(p.service_level) * (row.cum_p90 - row.cum_p50) / Z90
    assert p.demand_p50 == pytest.approx(row.cum_p50)
    assert p.order_up_to == pytest.approx(max(level, 0.0))
    assert p.order_qty == max(0.0, math.ceil(p.order_up_to - p.position - 1e-9))
    q1 = plan.loc[(s1, i1)]
    assert (q1.service_level, q1.on_order, q1.protection_days) == (0.99, 0.0, 5)
    assert ((plan.stockout_risk >= 0) & (plan.stockout_risk <= plan.stockout_risk_no_order)).all()
    assert np.isclose(plan.order_up_to, plan.demand_at_service_level).all()
