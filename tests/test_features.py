"""Feature windows on tiny explicit data: values at known offsets, no leakage, spatial lag,
splits, and the feature job's row accounting."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from sales_st.config import RegionLevel
from sales_st.data.events import scope_levels, warn_about_scopes
from sales_st.data.geo import haversine_km
from sales_st.errors import ConfigError, DataError
from sales_st.features.assemble import build_examples_df, layout_for
from sales_st.features.calendar import Axis, store_calendar
from sales_st.features.job import iso_weekday, prepare, run_features
from sales_st.features.windows import series_offset
from tests.conftest import make_config

T0 = dt.date(2024, 1, 1)  # a Monday
N_DAYS = 70
L, H = 14, 7
STORES = [
    ("s1", "C1", "S1", 48.10, 11.50),
    ("s2", "C1", "S1", 48.20, 11.60),
    ("s3", "C2", "S1", 48.60, 11.10),
]


def base_target(store: str, day: int) -> float:
    return {"s1": 1.0 + day, "s2": 2.0 * (1 + day), "s3": 100.0 + (day % 7)}[store]


def base_promo(day: int) -> bool:
    return day % 10 == 0


def write_inputs(
    spark, root, target=base_target, extra_sales=(), extra_events=(), promo_on=base_promo
):
    rows = []
    for s, *_ in STORES:
        for d in range(N_DAYS):
            date = T0 + dt.timedelta(days=d)
            promo = 1 if promo_on(d) else 0
            rows.append((date, s, "i1", float(target(s, d)), 2.0 + 0.01 * d, promo, 1))
    rows += list(extra_sales)
    sales = spark.createDataFrame(
        rows,
        "date date, store_id string, item_id string, target double, price double, "
        "promo int, open int",
    )
    stores = spark.createDataFrame(
        [(s, c, st, "C0", lat, lon) for s, c, st, lat, lon in STORES],
        "store_id string, city string, state string, country string, latitude double, "
        "longitude double",
    )
    events = spark.createDataFrame(
        [
            (T0 + dt.timedelta(days=20), "global", None, "public_holiday"),
            (T0 + dt.timedelta(days=30), "S1", "state", "school_holiday"),
            *extra_events,
        ],
        "date date, scope string, scope_level string, event_type string",
    )
    items = spark.createDataFrame(
        [("i1", "food", 2.0)], "item_id string, category string, base_price double"
    )
    for name, df in (("sales", sales), ("stores", stores), ("events", events), ("items", items)):
        df.write.mode("overwrite").parquet(f"{root}/{name}")


def small_cfg(data_root, tag, *extra):
    return make_config(
        data_root,
        f"paths.inputs=inputs/{tag}",
        f"paths.features=features/{tag}",
        f"features.history={L}",
        f"features.horizon={H}",
        "features.stride=7",
        "features.min_history=7",
        "features.rolling_windows=[7]",
        "features.lags=[1,7]",
        "features.same_weekday_weeks=2",
        "features.spatial.k=2",
        "features.spatial.method=knn",
        "features.spatial.bandwidth_km=50",
        "features.splits.train_end=-21",
        "features.splits.val_end=-14",
        "features.rows_per_file=100",
        "features.spatial.aggregate_levels=[city,state]",
        "features.splits.train_offsets=run_date",  # hand-computed origins below
        *extra,
    )


def examples_for(spark, cfg, run_date=None, splits=("train", "val", "test", "score")):
    prep = prepare(spark, cfg, run_date)
    ex = build_examples_df(prep.wide, cfg, splits).toPandas()
    prep.release()
    return prep, ex


@pytest.fixture(scope="module")
def built(spark, data_root):
    cfg = small_cfg(data_root, "explicit")
    write_inputs(spark, cfg.path("inputs"))
    return examples_for(spark, cfg)


def test_window_values_at_known_offsets(built):
    prep, ex = built
    origin = T0 + dt.timedelta(days=41)
    r = ex[(ex.store_id == "s1") & (ex.origin == origin)].iloc[0]
    o = 41
    hist = np.array([base_target("s1", d) for d in range(o - L + 1, o + 1)])
    scale = hist.mean()
    assert r.scale == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(r.hist_y, hist / scale, rtol=1e-5)
    np.testing.assert_allclose(r.y, [base_target("s1", d) for d in range(o + 1, o + H + 1)])
    assert list(r.y_mask) == [1.0] * H
    assert r.lag_1 == pytest.approx(base_target("s1", o) / scale, rel=1e-6)
    assert r.lag_7 == pytest.approx(base_target("s1", o - 6) / scale, rel=1e-6)
    roll = np.array([base_target("s1", d) for d in range(o - 6, o + 1)])
    assert r.roll_mean_7 == pytest.approx(roll.mean() / scale, rel=1e-6)
    assert r.roll_std_7 == pytest.approx(roll.std() / scale, rel=1e-5)
    # known future: promo every 10th day, the weekday of o+1.., prices relative to history
    np.testing.assert_array_equal(
        r.fut_promo, [1.0 if d % 10 == 0 else 0.0 for d in range(o + 1, o + H + 1)]
    )
    np.testing.assert_array_equal(
        r.hist_promo, [1.0 if d % 10 == 0 else 0.0 for d in range(o - L + 1, o + 1)]
    )
    assert list(r.fut_dow) == [(d % 7) for d in range(o + 1, o + H + 1)]  # T0 is a Monday
    ref_price = np.mean([2.0 + 0.01 * d for d in range(o - L + 1, o + 1)])
    np.testing.assert_allclose(
        r.fut_price, [(2.0 + 0.01 * d) / ref_price for d in range(o + 1, o + H + 1)], rtol=1e-5
    )
    # same weekday as o+h in the last 2 weeks of history
    sw = [
        np.mean(
            [
                base_target("s1", d)
                for d in (o + h - 7 * int(np.ceil(h / 7)) - 7 * j for j in range(2))
            ]
        )
        / scale
        for h in range(1, H + 1)
    ]
    np.testing.assert_allclose(r.fut_sw_mean, sw, rtol=1e-5)


def test_calendar_flags_and_holiday_distance(built):
    _, ex = built
    # origin day 20 is the global public holiday itself
    r = ex[(ex.store_id == "s3") & (ex.origin == T0 + dt.timedelta(days=20))].iloc[0]
    assert r.hist_holiday[-1] == 1.0 and sum(r.hist_holiday) == 1.0
    # days since the holiday, divided by the 14-day window: 1/14, 2/14, ...
    np.testing.assert_allclose(r.fut_since_holiday, [h / 14 for h in range(1, H + 1)], rtol=1e-5)
    r = ex[(ex.store_id == "s3") & (ex.origin == T0 + dt.timedelta(days=27))].iloc[0]
    assert list(r.fut_school) == [0, 0, 1, 0, 0, 0, 0]  # day 30 is o+3
    np.testing.assert_allclose(r.fut_to_holiday, [1.0] * H)  # no public holiday ahead
    # o+1 .. o+7 are 2024-01-29 .. 02-04: the month turns after o+3 (February has 29 days)
    np.testing.assert_allclose(r.fut_dom, np.array([28, 29, 30, 0, 1, 2, 3]) / 30, rtol=1e-6)
    np.testing.assert_allclose(
        r.fut_to_month_end, np.array([2, 1, 0, 28, 27, 26, 25]) / 30, rtol=1e-6
    )


def test_spatial_lag_hand_computed_for_three_stores(built, spark):
    prep, ex = built
    origin = T0 + dt.timedelta(days=41)
    o = 41
    coords = {s: (lat, lon) for s, _, _, lat, lon in STORES}
    rows = [(a, b, *coords[a], *coords[b]) for a in coords for b in coords if a != b]
    dist = (
        spark.createDataFrame(
            rows, "a string, b string, la double, oa double, lb double, ob double"
        )
        .select(
            "a", "b", haversine_km(F.col("la"), F.col("oa"), F.col("lb"), F.col("ob")).alias("km")
        )
        .toPandas()
        .set_index(["a", "b"])["km"]
    )
    r = ex[(ex.store_id == "s1") & (ex.origin == origin)].iloc[0]
    neighbours = ["s2", "s3"]  # by distance from s1
    raw = np.array([1.0 / (1.0 + dist[("s1", n)] / 50.0) for n in neighbours])
    w = raw / raw.sum()
    np.testing.assert_allclose(r.nbr_weight, w, rtol=1e-5)
    np.testing.assert_allclose(r.nbr_dist, [dist[("s1", n)] for n in neighbours], rtol=1e-3)
    seqs = []
    for n in neighbours:
        h = np.array([base_target(n, d) for d in range(o - L + 1, o + 1)])
        seqs.append(h / h.mean())
    np.testing.assert_allclose(np.array(r.nbr_y).reshape(2, L), seqs, rtol=1e-5)
    lag = (w[:, None] * np.array(seqs)).sum(axis=0)
    np.testing.assert_allclose(r.hist_spatial_lag, lag, rtol=1e-5)
    assert list(r.nbr_ids) == neighbours
    # hierarchy aggregates: the city C1 mean is over s1 and s2, scaled by its window mean
    c1 = np.array(
        [(base_target("s1", d) + base_target("s2", d)) / 2 for d in range(o - L + 1, o + 1)]
    )
    np.testing.assert_allclose(r.hist_agg_city, c1 / c1.mean(), rtol=1e-5)
    st = np.array(
        [np.mean([base_target(s, d) for s in ("s1", "s2", "s3")]) for d in range(o - L + 1, o + 1)]
    )
    np.testing.assert_allclose(r.hist_agg_state, st / st.mean(), rtol=1e-5)
    nb = prep.wide.neighbours.toPandas().sort_values(["store_id", "rank"])
    assert list(nb[nb.store_id == "s1"].neighbour_id) == neighbours
    assert nb.groupby("store_id").weight.sum().round(9).tolist() == [1.0, 1.0, 1.0]


def test_same_weekday_mean_falls_back_to_the_level_across_a_gap(spark, data_root):
    """Days 40..47 of s1 missing: at origin 48, h = 6 finds neither of its same weekdays (47
    and 40) observed, so fut_sw_mean is the series' mean level (1 in scale units), not 0;
    the other steps average what was observed (h = 1..5: one week back only)."""
    cfg = small_cfg(data_root, "swgap", "features.min_history=3")
    write_inputs(spark, cfg.path("inputs"))
    sales = spark.read.parquet(f"{cfg.path('inputs')}/sales")
    gap = (F.col("store_id") == "s1") & F.col("date").between(
        T0 + dt.timedelta(days=40), T0 + dt.timedelta(days=47)
    )
    kept = sales.where(~gap).toPandas()
    spark.createDataFrame(kept, sales.schema).write.mode("overwrite").parquet(
        f"{cfg.path('inputs')}/sales"
    )
    _, ex = examples_for(spark, cfg)
    o = 48
    r = ex[(ex.store_id == "s1") & (ex.origin == T0 + dt.timedelta(days=o))].iloc[0]
    seen = [d for d in range(o - L + 1, o + 1) if not 40 <= d <= 47]
    scale = np.mean([base_target("s1", d) for d in seen])
    assert r.scale == pytest.approx(scale, rel=1e-6)
    sw = []
    for h in range(1, H + 1):
        days = [o + h - 7 - 7 * j for j in range(2) if not 40 <= o + h - 7 - 7 * j <= 47]
        sw.append(np.mean([base_target("s1", d) for d in days]) / scale if days else 1.0)
    assert sw[5] == 1.0 and sw[:5] == [base_target("s1", 35 + h) / scale for h in range(5)]
    np.testing.assert_allclose(r.fut_sw_mean, sw, rtol=1e-5)
    # where the days were observed the mean is unchanged (origin 62: days 55..62 and 48..55)
    r = ex[(ex.store_id == "s1") & (ex.origin == T0 + dt.timedelta(days=62))].iloc[0]
    sw = [
        np.mean([base_target("s1", 62 + h - 7 - 7 * j) for j in range(2)]) / r.scale
        for h in range(1, H + 1)
    ]
    np.testing.assert_allclose(r.fut_sw_mean, sw, rtol=1e-5)


def test_matched_means_read_the_same_weekdays_with_the_target_days_flag(spark, data_root):
    """Promotions on days d % 14 < 2 and on day 62.  At origin 55 with matched_weeks = 4,
    h = 1 (day 56, a promotion) averages the promotion days 42 and 28 of its weekday's last
    four (49, 42, 35, 28), h = 2 the days 43 and 29, h = 3..6 (no promotion) all four; h = 7
    (day 62, a promotion) finds none among 55, 48, 41, 34 and takes fut_sw_mean."""

    def promo_on(d):
        return d % 14 < 2 or d == 62

    cfg = small_cfg(
        data_root, "matched", "features.matched_means=[promo]", "features.matched_weeks=4"
    )
    write_inputs(spark, cfg.path("inputs"), promo_on=promo_on)
    _, ex = examples_for(spark, cfg)
    o = 55
    r = ex[(ex.store_id == "s1") & (ex.origin == T0 + dt.timedelta(days=o))].iloc[0]
    scale = np.mean([base_target("s1", d) for d in range(o - L + 1, o + 1)])
    assert r.scale == pytest.approx(scale, rel=1e-6)
    matched = [
        [42, 28],
        [43, 29],
        [51, 44, 37, 30],
        [52, 45, 38, 31],
        [53, 46, 39, 32],
        [54, 47, 40, 33],
    ]
    expected = [np.mean([base_target("s1", d) for d in days]) / scale for days in matched]
    expected.append(r.fut_sw_mean[6])  # none matched: the plain same-weekday mean
    assert r.fut_sw_mean[6] == pytest.approx(np.mean([56.0, 49.0]) / scale, rel=1e-6)
    np.testing.assert_allclose(r.fut_sw_mean_promo, expected, rtol=1e-5)
    assert list(r.fut_promo) == [1, 1, 0, 0, 0, 0, 1]
    cols = list(ex.columns)
    assert cols.index("fut_sw_mean_promo") == cols.index("fut_days_since_school") + 1
    # the channel follows the event distances in the feature spec, and is refused for a flag
    # the days do not carry
    # refused when the config is loaded
    with pytest.raises(ConfigError, match="'price' is not one of promo, holiday, school"):
        small_cfg(data_root, "matched", "features.matched_means=[price]")
    with pytest.raises(ConfigError, match="'promo' is named twice"):
        small_cfg(data_root, "matched", "features.matched_means=[promo, promo]")
    with pytest.raises(ConfigError, match="'features.matched_weeks' .*must be at least 1"):
        small_cfg(
            data_root, "matched", "features.matched_means=[promo]", "features.matched_weeks=0"
        )


def test_no_leakage_changing_data_after_an_origin(spark, data_root, built):
    _, ex = built
    origin_day = 41
    cut = T0 + dt.timedelta(days=origin_day)
    cfg = small_cfg(data_root, "leak")

    def changed(store, day):
        return base_target(store, day) * (10.0 if day > origin_day else 1.0)

    write_inputs(spark, cfg.path("inputs"), target=changed)
    _, ex2 = examples_for(spark, cfg, run_date=T0 + dt.timedelta(days=N_DAYS - 1))
    a = ex[ex.origin == cut].sort_values("store_id").reset_index(drop=True)
    b = ex2[ex2.origin == cut].sort_values("store_id").reset_index(drop=True)
    assert len(a) == 3
    features = [c for c in a.columns if c not in ("y", "split")]
    for c in features:
        for x, y in zip(a[c], b[c]):
            if isinstance(x, np.ndarray) or isinstance(x, list):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=c)
            else:
                assert x == y or (pd.isna(x) and pd.isna(y)), c
    # ...while the targets after the origin did change
    assert not np.allclose(np.stack(a.y), np.stack(b.y))


def test_splits_respect_boundaries(built):
    prep, ex = built
    run = prep.run_date
    assert run == T0 + dt.timedelta(days=N_DAYS - 1)
    train_end, val_end = run - dt.timedelta(days=21), run - dt.timedelta(days=14)
    tr, va, te, sc = (ex[ex.split == s] for s in ("train", "val", "test", "score"))
    assert len(tr) and len(va) and len(sc) == 3
    assert (tr.origin + pd.Timedelta(days=H) <= train_end).all()
    assert ((va.origin >= train_end) & (va.origin + pd.Timedelta(days=H) <= val_end)).all()
    assert (te.origin >= val_end).all() and (te.origin + pd.Timedelta(days=H) <= run).all()
    assert (sc.origin == run).all() and (np.stack(sc.y_mask) == 0).all()
    # origins sit on the stride grid anchored at the run date (same weekday as the forecast)
    assert {(run - o).days % 7 for o in ex.origin} == {0}
    # a series needs min_history days before its first origin
    assert ex.origin.min() >= T0 + dt.timedelta(days=L - 1)


def test_training_origins_shifted_per_series_cover_the_weekdays(spark, data_root, built):
    """train_offsets=series: each series keeps the stride, shifted by its own offset."""
    cfg = small_cfg(data_root, "explicit", "features.splits.train_offsets=series")
    prep, ex = examples_for(spark, cfg)
    run = prep.run_date
    tr = ex[ex.split == "train"]
    # validation, test and score origins stay on the run date's grid
    assert {(run - o).days % 7 for o in ex[ex.split != "train"].origin} == {0}
    keys = tr[["store_id", "item_id"]].drop_duplicates()
    want = (
        spark.createDataFrame(keys)
        .select("store_id", "item_id", series_offset(7).alias("offset"))
        .toPandas()
        .set_index(["store_id", "item_id"])["offset"]
    )
    assert len(want) == 3 and want.nunique() > 1  # these keys' offsets differ
    for key, g in tr.groupby(["store_id", "item_id"]):
        assert {(run - o).days % 7 for o in g.origin} == {want[key]}
        steps = np.diff(np.sort(g.origin.to_numpy())).astype("timedelta64[D]").astype(int)
        assert set(steps) == {7}
    # about as many training origins as on the run date's grid (up to the data's edges)
    fixed = built[1][built[1].split == "train"]
    assert abs(len(tr) - len(fixed)) <= len(keys)
    # the spec's weekdays of the origins (iso_weekday) are Python's ISO weekdays
    days = spark.createDataFrame(tr[["origin"]]).select(iso_weekday("origin").alias("d"))
    assert sorted(r.d for r in days.collect()) == sorted(o.isoweekday() for o in tr.origin)
    assert len({o.isoweekday() for o in tr.origin}) == want.nunique() > 1


def test_feature_job_accounts_for_every_row(spark, data_root):
    cfg = small_cfg(data_root, "accounting")
    bad = [
        (T0, "s1", "i1", 5.0, 2.0, 0, 1),  # duplicate of an existing key
        (T0, "ghost", "i1", 1.0, 2.0, 0, 1),  # unknown store
        (T0 + dt.timedelta(days=3), "s2", "i1", -4.0, 2.0, 0, 1),
    ]  # negative (+ duplicate)
    write_inputs(spark, cfg.path("inputs"), extra_sales=bad)
    out = run_features(spark, cfg, None)
    c = out.counts
    assert c["input"] == 3 * N_DAYS + 3
    assert c["input"] == c["accepted_written"] + c["quarantined_written"]
    assert c["duplicate_key"] == 3 and c["unknown_store"] == 1 and c["negative_target"] == 1
    q = (
        spark.table("sales_st.quarantine")
        .where(F.col("run_date") == F.lit(out.run_date))
        .groupBy("rule")
        .count()
        .toPandas()
        .set_index("rule")["count"]
        .to_dict()
    )
    assert q == {"duplicate_key": 3, "unknown_store": 1, "negative_target": 1}
    manifest = json.load(open(f"{cfg.path('runs')}/features/{out.run_date}/manifest.json"))
    assert manifest["counts"]["input"] == c["input"]
    spec = json.load(open(f"{cfg.path('features')}/feature_spec.json"))
    assert spec["splits"]["train"]["rows"] == c["examples_train"]
    assert spec["shapes"]["nbr_y"] == [2, L] and spec["shapes"]["hist_y"] == [L]
    assert set(spec["scalers"]) >= {"lag_1", "roll_mean_7", "log_scale"}
    # re-running is idempotent: same examples, same quarantine partition
    again = run_features(spark, cfg, None)
    assert again.counts == c
    q2 = spark.table("sales_st.quarantine").where(F.col("run_date") == F.lit(out.run_date)).count()
    assert q2 == 5


def test_more_write_tasks_write_the_same_examples(spark, data_root, tiny_cfg, tiny_features):
    """Windows larger than features.write_task_mb per core spread the examples' write over
    more tasks than cores; the table they write is row for row the same."""
    from sales_st.storage.files import current_version
    from tests.conftest import TINY

    cfg = make_config(
        data_root,
        *TINY,
        "paths.inputs=inputs/tiny",
        "paths.features=features/tiny_write_tasks",
        "features.write_task_mb=0.03",  # about 60 tasks for the tiny panel's 2 MB of windows
    )
    run_features(spark, cfg, None)

    def written(path):
        return spark.read.parquet(current_version(spark, f"{path}/examples"))

    def tasks(df):  # the write task of each file: part-<task>-<uuid>...
        task = F.regexp_extract(F.input_file_name(), r"part-(\d+)-", 1)
        return df.select(task).distinct().count()

    few, many = written(tiny_cfg.path("features")), written(cfg.path("features"))
    # one task per core (at least 2) by default; 16 series hashed over some 60 tasks
    assert tasks(few) <= max(2, spark.sparkContext.defaultParallelism) and tasks(many) >= 8
    assert few.count() == many.count() > 0
    assert few.exceptAll(many).count() == 0 and many.exceptAll(few).count() == 0


def test_scale_falls_back_to_the_last_year_after_a_closure(spark):
    from sales_st.config import FeaturesConfig
    from sales_st.features.windows import with_history

    n, o, L = 120, 119, 14
    y = [10.0 if d < 100 else 0.0 for d in range(n)]  # closed for the last 20 days
    y[o - 1] = 30.0  # one day with sales in the window: fewer than 3
    row = (o, y, [1] * n, [1] * n, [0] * n, [None] * n, [0] * n, [0] * n)
    df = spark.createDataFrame(
        [row],
        "o int, y array<double>, has_y array<int>, open array<int>, "
        "promo array<int>, price array<double>, holiday array<int>, "
        "school array<int>",
    ).withColumn("oi", F.col("o"))  # arrays not cut: the origin's index is the day itself
    r = with_history(df, FeaturesConfig(history=L, min_history=7)).first()
    positive = [v for v in y[o - 363 : o + 1] if v > 0]
    assert r["scale"] == pytest.approx(np.mean(positive))
    assert r["n_obs"] == L
    # enough sales days in the window: their mean, zeros (closed days) left out
    y2 = [0.0 if d % 2 else 8.0 for d in range(n)]
    r2 = with_history(
        df.withColumn("y", F.array(*[F.lit(v) for v in y2])),
        FeaturesConfig(history=L, min_history=7),
    ).first()
    assert r2["scale"] == pytest.approx(8.0)


def test_windows_without_any_sales_in_a_year_have_no_scale(spark):
    from sales_st.config import FeaturesConfig
    from sales_st.features.windows import with_history

    n = 60
    row = (59, [0.0] * n, [1] * n, [0] * n, [0] * n, [None] * n, [0] * n, [0] * n)
    df = spark.createDataFrame(
        [row],
        "o int, y array<double>, has_y array<int>, open array<int>, "
        "promo array<int>, price array<double>, holiday array<int>, "
        "school array<int>",
    ).withColumn("oi", F.col("o"))
    r = with_history(df, FeaturesConfig(history=14, min_history=7)).first()
    assert (r["has_scale"], r["scale"]) == (0, 1.0)


def test_last_year_level_per_horizon_day(spark):
    from sales_st.config import FeaturesConfig
    from sales_st.features.calendar import Axis
    from sales_st.features.windows import with_future

    n, o, H = 420, 400, 3
    y = [float(d) for d in range(n)]
    opn = [1] * n
    opn[400 + 1 - 364] = 0  # a closed day a year before o+1: left out of the mean
    zeros = [0] * n
    row = (o, 2.0, 1.0, y, [1] * n, opn, zeros, [None] * n, zeros, zeros, [999] * n, [999] * n)
    df = spark.createDataFrame(
        [row],
        "o int, scale double, ref_price double, y array<double>, "
        "has_y array<int>, open array<int>, promo array<int>, "
        "price array<double>, holiday array<int>, school array<int>, "
        "to_holiday array<int>, since_holiday array<int>",
    ).withColumn("oi", F.col("o"))
    # event distances are sliced from per-series arrays built before the origins: none here
    cfg = FeaturesConfig(
        history=14, horizon=H, min_history=7, same_weekday_weeks=2, event_distances=[]
    )
    r = with_future(df, cfg, Axis(T0, n)).first()
    expected = []
    for h in range(1, H + 1):
        days = [o + h - 364 + 7 * j for j in (-1, 0, 1) if opn[o + h - 364 + 7 * j]]
        expected.append(np.mean(days) / 2.0)
    np.testing.assert_allclose(r["fut_last_year"], expected)
    assert expected[0] == pytest.approx((30 + 44) / 2 / 2.0)  # day 37 was closed


def test_same_weekday_mean_over_a_horizon_of_several_weeks(spark):
    """H = 17 > 7: every horizon day h reads the same weekdays before the origin (o + h - 7 *
    ceil(h / 7), then a week earlier), so h, h + 7 and h + 14 share their mean; closed days
    are left out, and a weekday with none observed takes the level (1)."""
    from sales_st.config import FeaturesConfig
    from sales_st.features.calendar import Axis
    from sales_st.features.windows import with_future

    n, o, H, W = 80, 50, 17, 3
    y = [float(10 + d) for d in range(n)]
    has_y = [1] * n
    opn = [1] * n
    opn[44] = 0  # o + 1 - 7: closed, the same weekday's other weeks remain
    for d in (45, 38, 31):  # o + 2 - 7 * (1, 2, 3): none observed
        has_y[d] = 0
    zeros = [0] * n
    row = (o, 2.0, 1.0, y, has_y, opn, zeros, [None] * n, zeros, zeros, [999] * n, [999] * n)
    df = spark.createDataFrame(
        [row],
        "o int, scale double, ref_price double, y array<double>, "
        "has_y array<int>, open array<int>, promo array<int>, "
        "price array<double>, holiday array<int>, school array<int>, "
        "to_holiday array<int>, since_holiday array<int>",
    ).withColumn("oi", F.col("o"))
    cfg = FeaturesConfig(
        history=14, horizon=H, min_history=7, same_weekday_weeks=W, event_distances=[]
    )
    r = with_future(df, cfg, Axis(T0, n)).first()
    expected = []
    for h in range(1, H + 1):
        days = [o + h - 7 * int(np.ceil(h / 7)) - 7 * j for j in range(W)]
        seen = [y[d] for d in days if has_y[d] and opn[d]]
        expected.append(np.mean(seen) / 2.0 if seen else 1.0)
    assert expected[0] == pytest.approx((10 + 37 + 10 + 30) / 2 / 2.0)  # day 44 left out
    assert expected[1] == expected[8] == expected[15] == 1.0
    np.testing.assert_allclose(r["fut_sw_mean"], expected)


def test_cut_own_arrays_give_the_features_of_the_whole_arrays(spark):
    """explode_origins cuts the own arrays to the lookback before each origin and the horizon
    after it: every history, future and scalar feature equals the one computed from the
    axis-long arrays, for origins past the lookback and before it."""
    from sales_st.config import FeaturesConfig
    from sales_st.features.calendar import Axis
    from sales_st.features.splits import OriginRule
    from sales_st.features.windows import (
        context_windows,
        explode_origins,
        lookback,
        origin_index,
        with_future,
        with_history,
        with_scalars,
    )

    n, H = 600, 7
    cfg = FeaturesConfig(
        history=28,
        horizon=H,
        min_history=7,
        lags=[1, 7, 28],
        rolling_windows=[7, 91],
        same_weekday_weeks=4,
        event_distances=[],
        matched_means=["promo", "holiday"],
        matched_weeks=8,
    )
    B = lookback(cfg)
    assert B == 370  # the level a year earlier: 364 days and a week either side
    assert lookback(dataclasses.replace(cfg, matched_weeks=60)) == 419  # 60 weeks back
    rng = np.random.default_rng(5)
    y = [float(v) for v in rng.integers(0, 50, n)]
    has_y = [int(v) for v in rng.random(n) > 0.1]
    opn = [int(v) for v in rng.random(n) > 0.15]
    promo = [int(d % 3 == 0) for d in range(n)]
    price = [None if d % 11 == 0 else 1.0 + d / 1000 for d in range(n)]
    hol = [int(d % 17 == 0) for d in range(n)]
    row = ("s1", "i1", 0, y, has_y, opn, promo, price, hol, [0] * n)
    series = spark.createDataFrame(
        [row],
        "store_id string, item_id string, first_day int, y array<double>, "
        "has_y array<int>, open array<int>, promo array<int>, price array<double>, "
        "holiday array<int>, school array<int>",
    )
    # origins 20..580 every 7 days: before and after the lookback, the last ones near the end
    rule = OriginRule("val", 580, 7, 20, 580, n + H, False)
    windows = context_windows(series.columns, cfg, [], [], [])
    assert set(windows) == {"y", "has_y", "open", "promo", "price", "holiday", "school"}
    cut = explode_origins(series, [rule], cfg, windows, origin_index(cfg))
    whole = explode_origins(series, [rule], cfg)  # oi = o, arrays untouched

    def features(df):
        df = df.withColumn("to_holiday", F.array_repeat(F.lit(5), H))
        df = df.withColumn("since_holiday", F.array_repeat(F.lit(5), H))
        df = with_scalars(with_future(with_history(df, cfg), cfg, Axis(T0, n)), cfg)
        return df.drop(*windows, "oi", "to_holiday", "since_holiday").toPandas()

    a = features(cut).sort_values("o").reset_index(drop=True)
    b = features(whole).sort_values("o").reset_index(drop=True)
    assert len(a) == len(b) == 80 and a.o.min() < B < a.o.max()  # 27 + 5 .. 580
    pd.testing.assert_frame_equal(a, b)
    c = cut.select("o", "oi", F.size("y").alias("n"), F.col("y")[F.col("oi")].alias("y_o"))
    for r in c.collect():
        assert r.oi == min(r.o, B) and r.y_o == y[r.o]
        assert r.n == min(B + H + 1, n - max(r.o - B, 0))


def test_event_distances_at_known_offsets(built):
    """Days until / since promotions (every 10th day), closures (none) and the school holiday
    (day 30), over event_window + 1 = 15, for the horizon days o+1..o+H of origin 41."""
    _, ex = built
    r = ex[(ex.store_id == "s1") & (ex.origin == T0 + dt.timedelta(days=41))].iloc[0]
    days = range(42, 42 + H)
    until_promo = [min(p - d for p in (40, 50, 60) if p >= d) / 15 for d in days]
    since_promo = [min(d - p for p in (40, 50) if p <= d) / 15 for d in days]
    np.testing.assert_allclose(r.fut_days_to_promo, until_promo, rtol=1e-5)
    np.testing.assert_allclose(r.fut_days_since_promo, since_promo, rtol=1e-5)
    assert list(r.fut_days_to_closed) == [1.0] * H and list(r.fut_days_since_closed) == [1.0] * H
    since_school = [(d - 30) / 15 if d - 30 <= 14 else 1.0 for d in days]
    np.testing.assert_allclose(r.fut_days_since_school, since_school, rtol=1e-5)
    assert list(r.fut_days_to_school) == [1.0] * H


def test_a_declared_event_type_reaches_only_the_stores_in_its_scope(spark, data_root):
    cfg = small_cfg(
        data_root,
        "custom_events",
        "data.event_types=[public_holiday, school_holiday, flood, fair]",
        "features.event_distances=[flood, fair]",
        'features.future_expressions={"fut_month": "month(date)"}',
    )
    flood = (T0 + dt.timedelta(days=44), "C2", "city", "flood")  # city C2: store s3 only
    fair = (T0 + dt.timedelta(days=44), "C1", "state", "fair")  # no *state* is called C1
    write_inputs(spark, cfg.path("inputs"), extra_events=[flood, fair])
    prep, ex = examples_for(spark, cfg)
    at = ex[ex.origin == T0 + dt.timedelta(days=41)].set_index("store_id")
    until_flood = [(44 - d) / 15 if d <= 44 else 1.0 for d in range(42, 42 + H)]
    np.testing.assert_allclose(at.loc["s3", "fut_days_to_flood"], until_flood, rtol=1e-5)
    for store in ("s1", "s2"):
        assert list(at.loc[store, "fut_days_to_flood"]) == [1.0] * H
    for store in ("s1", "s2", "s3"):
        assert list(at.loc[store, "fut_days_to_fair"]) == [1.0] * H
    months = [(T0 + dt.timedelta(days=d)).month for d in range(42, 42 + H)]
    assert list(at.loc["s1", "fut_month"]) == months
    # every declared type has its indicator channel: 1 on the horizon days the event reaches
    # the store -- the flood day for s3 alone, never the fair
    for r in ex.itertuples():
        o = (r.origin - T0).days
        hit = [1.0 if r.store_id == "s3" and o + h == 44 else 0.0 for h in range(1, H + 1)]
        assert list(r.fut_event_flood) == hit, (r.store_id, r.origin)
        assert list(r.fut_event_fair) == [0.0] * H
    assert at.loc["s3", "fut_event_flood"].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert layout_for(cfg, prep.wide).fut[-7:] == [
        "fut_event_flood",
        "fut_event_fair",
        "fut_days_to_flood",
        "fut_days_since_flood",
        "fut_days_to_fair",
        "fut_days_since_fair",
        "fut_month",
    ]


def test_an_undeclared_event_type_is_an_error_with_its_count(spark, data_root):
    cfg = small_cfg(data_root, "undeclared_events")
    typo = [(T0 + dt.timedelta(days=d), "S1", "state", "scool_holiday") for d in (3, 4, 5)]
    write_inputs(spark, cfg.path("inputs"), extra_events=typo)
    with pytest.raises(DataError) as err:
        prepare(spark, cfg, None)
    assert str(err.value) == (
        "the events table holds event types that data.event_types does not declare: "
        "'scool_holiday' (3 rows) (declared: public_holiday, school_holiday); declare them in "
        "data.event_types, or drop them with data.events.keep_if "
        "(e.g. \"event_type <> 'scool_holiday'\")"
    )


def test_event_distances_need_a_declared_type(spark, data_root):
    cfg = small_cfg(data_root, "explicit", "features.event_distances=[promo, flood]")
    with pytest.raises(ConfigError, match="'flood' is neither one of promo, closed"):
        prepare(spark, cfg, None)


def test_a_state_scope_does_not_reach_a_city_of_the_same_name(spark, caplog):
    """Georgia is a state (store b) and a city of Alabama (store a)."""
    stores = spark.createDataFrame(
        [("a", "Georgia", "Alabama"), ("b", "Atlanta", "Georgia"), ("c", "Mobile", "Alabama")],
        "store_id string, city string, state string",
    )
    events = spark.createDataFrame(
        [
            (T0 + dt.timedelta(days=1), "Georgia", "state", "fair"),
            (T0 + dt.timedelta(days=2), "Georgia", "city", "fair"),
            (T0 + dt.timedelta(days=3), "Georgia", None, "fair"),  # both: a warning
            (T0 + dt.timedelta(days=4), "DE", "global", "fair"),  # every store
            (T0 + dt.timedelta(days=5), "Alabama", "county", "fair"),  # no such level
        ],
        "date date, scope string, scope_level string, event_type string",
    )
    levels = scope_levels(
        [RegionLevel("city", "city"), RegionLevel("state", "state")], stores.columns
    )
    cal = store_calendar(stores, events, Axis(T0, 7), levels, 14, ["fair"])
    got = {r["store_id"]: list(r["event_fair"]) for r in cal.collect()}
    assert got == {
        "a": [0, 0, 1, 1, 1, 0, 0],
        "b": [0, 1, 0, 1, 1, 0, 0],
        "c": [0, 0, 0, 0, 1, 0, 0],
    }
    with caplog.at_level(logging.WARNING, logger="sales_st"):
        warn_about_scopes(stores, events, levels)
    assert (
        "scope 'Georgia' has no scope_level and names regions at several levels (city, state)"
        in caplog.text
    )
    assert "scope_level 'county' (1 rows) is not a level of data.hierarchy" in caplog.text
