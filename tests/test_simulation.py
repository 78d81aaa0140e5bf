"""The replenishment policy replay: by hand on a demand path, and on the tiny panel's backtest."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from scipy.special import ndtri

from sales_st.decisions.simulation import (
    BASELINE,
    MODEL,
    comparison,
    inventory_at_fill_rate,
    level_quantile,
    normal_level,
    outcomes,
    replay,
    residual_sigma,
    review_plan,
    run_policy_backtest,
    summarise,
)

DEMAND = [3, 4, 5, 2, 6, 1, 0, 7, 3]  # days 1..9 after the first review (day 0)


def test_replay_by_hand():
    # reviews on days 0, 3, 6 (R = 3) with S = 10, 8, 9; orders arrive 1 day later (L = 1)
    r = replay(np.array([DEMAND]), np.array([[10, 8, 9]]), review_every=3, lead=1)
    # warm-up: 3 on hand (day 1's demand); day 0 orders 7 (arrives evening of day 1);
    # day 3: 0 left, orders 8 (evening of day 4); day 6: 1 left, orders 8 (evening of day 7)
    # measured days 2..9:   2  3  4  5  6  7  8  9
    assert r.sales.tolist() == [[4, 3, 0, 6, 1, 0, 7, 2]]
    assert r.stockout.tolist() == [[False, True, True, False, False, False, False, True]]
    assert r.on_hand.tolist() == [[3, 0, 0, 2, 1, 1, 2, 0]]
    assert r.orders.tolist() == [3]


def test_replay_without_lead_time_and_side_by_side():
    # L = 0: the order is on the shelf at once, so the review tops the stock up to S
    r = replay(np.array([[2, 5, 1, 4]] * 2), np.array([[4, 4], [6, 6]]), review_every=2, lead=0)
    # series 1: 4 | day1 sells 2 (2 left) | day2 sells 2 of 5 (0), tops up to 4 | day3 1 (3)
    #           | day4 sells 3 of 4 (0)
    assert r.sales.tolist()[0] == [2, 2, 1, 3]
    assert r.stockout.tolist()[0] == [False, True, False, True]
    # series 2: 6 | 2 (4 left) | 4 of 5 (0), up to 6 | 1 (5) | 4 (1)
    assert r.sales.tolist()[1] == [2, 4, 1, 4]
    assert r.on_hand.tolist()[1] == [4, 0, 5, 1]


def test_outcomes_and_summary_by_hand():
    levels = {(MODEL, 0.9): np.array([[10, 8, 9]]), (BASELINE, 0.9): np.array([[20, 20, 20]])}
    t = outcomes(np.array([DEMAND]), levels, review_every=3, lead=1).set_index("policy")
    assert t.loc[MODEL, "demand"] == 28 and t.loc[MODEL, "sales"] == 23
    assert t.loc[MODEL, "stockout_days"] == 3 and t.loc[MODEL, "inventory"] == 9
    assert t.loc[MODEL, "days"] == 8
    s = summarise(t.reset_index(), series=1).set_index("policy")
    assert s.loc[MODEL, "fill_rate"] == pytest.approx(23 / 28)
    assert s.loc[MODEL, "avg_inventory"] == pytest.approx(9 / 8)
    assert s.loc[MODEL, "inventory_days"] == pytest.approx((9 / 8) / (28 / 8))
    assert s.loc[BASELINE, "fill_rate"] == 1.0  # never short at 20


def test_inventory_at_a_fill_rate_is_read_off_the_curve():
    curve = pd.DataFrame({"fill_rate": [0.8, 0.9, 0.98], "avg_inventory": [10.0, 20.0, 60.0]})
    assert inventory_at_fill_rate(curve, 0.95) == pytest.approx(20 + 0.05 / 0.08 * 40)
    assert inventory_at_fill_rate(curve, 0.5) == 10.0  # the least stock already does better
    assert inventory_at_fill_rate(curve, 0.99) is None  # not reached
    summary = pd.concat(
        [
            curve.assign(policy=MODEL),
            curve.assign(policy=BASELINE, avg_inventory=curve["avg_inventory"] * 2),
        ]
    )
    comp = comparison(summary, [0.9]).iloc[0]
    assert comp["model_inventory"] == 20 and comp["baseline_inventory"] == 40
    assert comp["model_vs_baseline"] == pytest.approx(0.5)


def test_reviews_use_the_latest_forecast_that_reaches_over_the_interval():
    d = dt.date(2024, 1, 1)
    days = [d + dt.timedelta(days=k) for k in range(0, 60)]
    # one origin, horizon 42, R = 7, L = 2 (P = 9): reviews on days 0, 7, .., 28 (28 + 9 <= 42)
    assert review_plan([d], days[45], 7, 2, 42) == [(k, d, 7 * k) for k in range(5)]
    # the observed days end on day 30: the last review's interval must end by then
    assert review_plan([d], days[30], 7, 2, 42) == [(k, d, 7 * k) for k in range(4)]
    # weekly origins, horizon 7, L = 0: each review orders from its own origin
    assert review_plan([d, days[7]], days[14], 7, 0, 7) == [(0, d, 0), (1, days[7], 0)]
    # horizon 10 and origins 7 days apart: day 7 uses the origin of day 7, not day 0's
    assert review_plan([d, days[7]], days[30], 7, 2, 10)[1] == (1, days[7], 0)


def test_order_up_to_levels():
    z = float(ndtri(0.95))
    # above the median: the upper half's spread, (p90 - p50) / z(0.9)
    assert level_quantile(80, 100, 130, 0.95)[()] == pytest.approx(100 + z * 30 / ndtri(0.9))
    # below it: the lower half's
    assert level_quantile(80, 100, 130, 0.3)[()] == pytest.approx(
        100 + ndtri(0.3) * 20 / ndtri(0.9)
    )
    assert normal_level(50, 4, 9, 0.95)[()] == pytest.approx(50 + z * 4 * 3)


def test_residual_sigma_by_hand(spark):
    L, weeks = 21, 2
    rng = np.random.default_rng(3)
    y = rng.uniform(1, 3, L).round(2)
    observed = np.ones(L, dtype=int)
    observed[16] = 0
    open_ = np.ones(L, dtype=int)
    open_[9] = 0  # a closed day: neither a residual nor a reference
    row = pd.DataFrame(
        {
            "hist_y": [y.tolist()],
            "hist_observed": [observed.tolist()],
            "hist_open": [open_.tolist()],
            "scale": [10.0],
        }
    )
    got = (
        spark.createDataFrame(row)
        .select(F.expr(residual_sigma(L, weeks)).alias("s"))
        .collect()[0]["s"]
    )
    ok = (observed == 1) & (open_ == 1)
    resid = []
    for t in range(7 * weeks, L):
        prev = [t - 7 * k for k in range(1, weeks + 1) if ok[t - 7 * k]]
        if ok[t] and prev:
            resid.append(y[t] - np.mean(y[prev]))
    want = np.sqrt(np.sum(np.square(resid)) / (len(resid) - 1)) * 10.0
    assert got == pytest.approx(want)


def test_policy_backtest_on_the_tiny_panel(spark, tiny_cfg, tiny_evaluation):
    from sales_st.features.spec import read_spec

    # the tiny panel's horizon is 7 days and its origins a week apart: lead time 0
    cfg = dataclasses.replace(
        tiny_cfg, replenish=dataclasses.replace(tiny_cfg.replenish, lead_time_days=0)
    )
    spec = read_spec(cfg.path("features"))
    rows = spark.read.parquet(tiny_evaluation.predictions)
    out = run_policy_backtest(
        spark, cfg, spec, rows, tiny_evaluation.selection, ["fused"], spec.run_date
    )
    assert out is not None
    summary, info = out["summary"], out["info"]
    assert info["method"] == "best" and info["reviews"] == 2 and info["measured_days"] == 14
    assert (
        info["series"] + info["series_left_out"]
        == rows.select("store_id", "item_id").distinct().count()
    )
    assert set(summary["policy"]) == {MODEL, BASELINE}
    for _, g in summary.groupby("policy"):
        g = g.sort_values("service_level")
        assert g["fill_rate"].between(0, 1).all()
        # a higher level orders up to more at every review: never less stock, never fewer sales
        assert (np.diff(g["avg_inventory"]) >= -1e-9).all()
        assert (np.diff(g["fill_rate"]) >= -1e-9).all()
    stored = spark.table(info["table"]).where(F.col("run_date") == F.lit(spec.run_date))
    assert stored.count() == len(summary)
    assert set(out["comparison"]["target_fill_rate"]) == {0.9, 0.95, 0.99}
    # the default lead time (2 days + a 7-day review) is beyond the 7-day horizon: skipped
    assert (
        run_policy_backtest(
            spark, tiny_cfg, spec, rows, tiny_evaluation.selection, ["fused"], spec.run_date
        )
        is None
    )
