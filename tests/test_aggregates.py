"""Quantiles of sums (lead-time demand, region totals) checked by hand."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from pyspark.sql import functions as F

from sales_st.serving import aggregates as A

Q = [0.1, 0.5, 0.9]
QCOLS = ["p10", "p50", "p90"]
Z90 = NormalDist().inv_cdf(0.9)


def test_sigma_is_read_off_the_outer_quantiles(spark):
    df = spark.createDataFrame([(10.0, 10.0 + 2 * 2 * Z90), (5.0, 5.0)], "p10 double, p90 double")
    got = [r.sigma for r in A.with_sigma(df, ["p10", "p90"], Q).collect()]
    assert got == [pytest.approx(2.0), pytest.approx(A.MIN_SIGMA)]


def test_cumulative_sums_over_days_one_to_h(spark):
    rows = spark.createDataFrame(
        [
            ("s", 1, 1.0, 1.0, 1.0),
            ("s", 2, 2.0, 1.0, None),
            ("s", 3, 3.0, 2.0, 2.0),
            ("t", 1, 5.0, 3.0, 4.0),
        ],
        "store_id string, horizon int, p50 double, sigma double, actual double",
    )
    out = A.cumulative_sums(rows, ["store_id"], "p50", "actual").orderBy("store_id", "horizon")
    got = [(r.store_id, r.horizon, r.sum_p50, r.sum_var, r.sum_actual) for r in out.collect()]
    # a day without an actual leaves the true sum unknown from then on
    assert got == [
        ("s", 1, 1.0, 1.0, 1.0),
        ("s", 2, 3.0, 2.0, None),
        ("s", 3, 6.0, 6.0, None),
        ("t", 1, 5.0, 9.0, 4.0),
    ]


def test_region_sums_add_up_the_series(spark):
    rows = spark.createDataFrame(
        [
            ("a", "A", 1, 2.0, 1.0, 3.0),
            ("b", "A", 1, 4.0, 2.0, 5.0),
            ("c", "B", 1, 7.0, 3.0, None),
            ("d", None, 1, 9.0, 1.0, 9.0),
        ],
        "store_id string, city string, horizon int, p50 double, sigma double, actual double",
    )
    out = A.region_sums(rows, "city", ["horizon"], "p50", "actual").orderBy("region")
    got = [(r.region, r.sum_p50, r.sum_var, r.sum_actual, r.series) for r in out.collect()]
    assert got == [("A", 6.0, 5.0, 8.0, 2), ("B", 7.0, 9.0, None, 1)]


def test_scores_fitted_on_known_sums_give_the_quantiles_of_new_sums(spark):
    # five validation sums at h=1 with median 10 and spread 2: true sums 10 + 2s, s = -2..2
    val = spark.createDataFrame(
        [(1, 10.0, 4.0, 10.0 + 2 * s) for s in (-2, -1, 0, 1, 2)]
        + [(2, 10.0, 4.0, 30.0)],  # never enough for a new group to differ
        "horizon int, sum_p50 double, sum_var double, sum_actual double",
    )
    fitted = A.fit_scores(val, ["horizon"], Q)
    assert fitted["scores"]["1"] == [-2.0, 0.0, 2.0] and fitted["rows"] == {"1": 5, "2": 1}
    new = spark.createDataFrame(
        [(1, 100.0, 9.0), (3, 100.0, 9.0)], "horizon int, sum_p50 double, sum_var double"
    )
    out = A.apply_scores(new, fitted, ["horizon"], QCOLS, Q).orderBy("horizon").collect()
    assert [(r.p10, r.p50, r.p90) for r in out] == [
        (94.0, 100.0, 106.0),
        # no validation sums at h=3: the normal quantiles of an independent sum
        (pytest.approx(100 - 3 * Z90), 100.0, pytest.approx(100 + 3 * Z90)),
    ]


def test_scores_of_a_sparse_horizon_are_pooled_over_its_week_or_all(spark):
    # h=1 has 5 sums (too few), h=2..7 two each: week 1 pools 17 (enough at min_rows=15);
    # h=8 has 3 and is alone in week 2: all 20 horizons' sums pooled
    def sums(h, scores):
        return [(h, 10.0, 1.0, 10.0 + s) for s in scores]

    rows = sums(1, [-2, -1, 0, 1, 2]) + sums(8, [5, 6, 7])
    for h in range(2, 8):
        rows += sums(h, [-3 + h, 3 - h])
    val = spark.createDataFrame(
        rows, "horizon int, sum_p50 double, sum_var double, sum_actual double"
    )
    fitted = A.fit_scores(val, ["horizon"], Q, min_rows=15)
    week1 = np.array([s[3] - 10.0 for s in rows if s[0] <= 7])
    whole = np.array([s[3] - 10.0 for s in rows])

    def nearest_rank(x, q):  # percentile_approx returns an element: the ceil(q n)-th smallest
        return float(np.sort(x)[max(int(np.ceil(q * len(x))) - 1, 0)])

    assert fitted["pooled"] == {**{str(h): "week" for h in range(1, 8)}, "8": "all"}
    assert fitted["scores"]["1"] == [nearest_rank(week1, q) for q in Q]
    assert fitted["scores"]["8"] == [nearest_rank(whole, q) for q in Q]
    assert fitted["rows"]["1"] == 5  # the horizon's own count
    # enough everywhere: nothing pooled
    assert "pooled" not in A.fit_scores(val, ["horizon"], Q, min_rows=2)


def test_quantiles_of_sums_never_cross_and_stay_non_negative(spark):
    fitted = {"scores": {"1": [0.5, -0.2, -0.1], "2": [-9.0, 0.0, 1.0]}}
    new = spark.createDataFrame(
        [(1, 10.0, 4.0), (2, 3.0, 1.0)], "horizon int, sum_p50 double, sum_var double"
    )
    out = A.apply_scores(new, fitted, ["horizon"], QCOLS, Q).orderBy("horizon").collect()
    # h=1: a p10 score above zero and a p90 score below zero both meet the median
    # h=2: 3 - 9 * 1 is cut at zero
    assert [(r.p10, r.p50, r.p90) for r in out] == [(10.0, 10.0, 10.0), (0.0, 3.0, 4.0)]


def test_lead_time_quantiles_are_non_decreasing_in_h(spark):
    df = spark.createDataFrame(
        [("s", 1, 5.0, 6.0, 9.0), ("s", 2, 4.0, 7.0, 8.0), ("s", 3, 6.0, 9.0, 12.0)],
        "store_id string, horizon int, p10 double, p50 double, p90 double",
    )
    out = A.non_decreasing(df, ["store_id"], QCOLS).orderBy("horizon").collect()
    assert [(r.p10, r.p50, r.p90) for r in out] == [
        (5.0, 6.0, 9.0),
        (5.0, 7.0, 9.0),
        (6.0, 9.0, 12.0),
    ]


def test_lead_time_and_region_totals_of_forecast_rows(spark):
    sigma = 2.0
    half = Z90 * sigma  # p90 - p50 of a row whose spread is 2
    rows = (
        spark.createDataFrame(
            [
                (store, city, h, p50 - half, p50, p50 + half)
                for store, city, p50s in (("a", "X", [4.0, 6.0]), ("b", "X", [1.0, 3.0]))
                for h, p50 in enumerate(p50s, start=1)
            ]
            + [("c", "Y", 1, None, 2.0, None)],  # no quantiles (a naive baseline): median only
            "store_id string, city string, horizon int, p10 double, point double, p90 double",
        )
        .withColumn("item_id", F.lit("i"))
        .withColumn("p50", F.col("point"))
    )
    fitted = {"scores": {"2": [-1.0, 0.0, 3.0]}}  # h=1: none fitted -> normal quantiles
    lead = A.with_lead_time(rows.where("store_id = 'a'"), ["store_id"], QCOLS, Q, fitted)
    got = [(r.horizon, r.cum_p10, r.cum_p50, r.cum_p90) for r in lead.orderBy("horizon").collect()]
    var2 = 2 * sigma**2  # two days of spread 2
    assert got == [
        (1, pytest.approx(4.0 - Z90 * 2), 4.0, pytest.approx(4.0 + Z90 * 2)),
        (2, pytest.approx(10.0 - var2**0.5), 10.0, pytest.approx(10.0 + 3 * var2**0.5)),
    ]
    totals = A.region_totals(rows, ["city"], ["horizon"], QCOLS, Q, {"city": None})
    got = {
        (r.region, r.horizon): (r.series, r.point, r.p10, r.p90)
        for r in totals.collect()
        if r.region == "X"
    }
    two = (2 * sigma**2) ** 0.5
    assert got == {
        ("X", 1): (2, 5.0, pytest.approx(5.0 - Z90 * two), pytest.approx(5.0 + Z90 * two)),
        ("X", 2): (2, 9.0, pytest.approx(9.0 - Z90 * two), pytest.approx(9.0 + Z90 * two)),
    }
    (y,) = [r for r in totals.collect() if r.region == "Y"]
    assert (y.point, y.p10, y.p50, y.p90) == (2.0, None, 2.0, None)
