"""Weekly and monthly sales: the period grid, windows at known offsets in periods, the
seasonal naive per frequency by hand, off-grid dates quarantined with the accounting
identity, and a wrong frequency refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import numpy as np
import pytest
from pyspark.sql import functions as F

from sales_st.data.frequency import DAILY, Frequency, Grid, grid_for, resolve_grid
from sales_st.errors import ConfigError, DataError
from sales_st.evaluation.baselines import simple_baselines, truth_rows
from sales_st.features.job import run_features
from sales_st.features.spec import read_spec
from tests.conftest import make_config

FRIDAY = dt.date(2022, 1, 7)
WEEKS = 120
WL, WH = 60, 4  # weekly history (over a season of 52 weeks) and horizon
STORES = [
    ("s1", "C1", "S1", 48.10, 11.50),
    ("s2", "C1", "S1", 48.20, 11.60),
    ("s3", "C2", "S1", 48.60, 11.10),
]


def week_target(store: str, k: int) -> float:
    return {"s1": 1.0 + k, "s2": 2.0 * (1 + k), "s3": 100.0 + (k % 4)}[store]


def month_end(k: int, year: int = 2019) -> dt.date:
    """The last day of the k-th month after January ``year``."""
    m = 12 * year + k + 1  # the month after, counted from year 0
    return dt.date(m // 12, m % 12 + 1, 1) - dt.timedelta(days=1)


def write_tables(spark, root, dates, target, extra_sales=(), events=()):
    rows = [
        (d, s, "i1", float(target(s, k)), 2.0, 0, 1)
        for s, *_ in STORES
        for k, d in enumerate(dates)
    ]
    rows += list(extra_sales)
    tables = {
        "sales": spark.createDataFrame(
            rows,
            "date date, store_id string, item_id string, target double, price double, "
            "promo int, open int",
        ),
        "stores": spark.createDataFrame(
            [(s, c, st, "C0", lat, lon) for s, c, st, lat, lon in STORES],
            "store_id string, city string, state string, country string, latitude double, "
            "longitude double",
        ),
        "events": spark.createDataFrame(
            list(events), "date date, scope string, scope_level string, event_type string"
        ),
        "items": spark.createDataFrame(
            [("i1", "food", 2.0)], "item_id string, category string, base_price double"
        ),
    }
    for name, df in tables.items():
        df.write.mode("overwrite").parquet(f"{root}/{name}")


def period_cfg(data_root, tag, history, horizon, *extra):
    return make_config(
        data_root,
        f"paths.inputs=inputs/{tag}",
        f"paths.features=features/{tag}",
        f"paths.runs=runs/{tag}",
        f"features.history={history}",
        f"features.horizon={horizon}",
        f"features.min_history={horizon}",
        "features.spatial.k=2",
        "features.spatial.method=knn",
        "features.spatial.aggregate_levels=[city]",
        "features.splits.train_offsets=run_date",
        "features.event_distances=[]",
        "features.rows_per_file=1000",
        *extra,
    )


# ---- the grid ------------------------------------------------------------------------------


def test_grid_steps_in_python():
    week = Grid("week", "friday")
    assert week.shift(FRIDAY, 3) == FRIDAY + dt.timedelta(weeks=3)
    assert week.periods(FRIDAY, FRIDAY + dt.timedelta(weeks=5)) == 5
    assert week.on_grid(FRIDAY) and not week.on_grid(FRIDAY + dt.timedelta(days=1))
    end = Grid("month", "end")
    assert end.shift(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)
    assert end.shift(dt.date(2024, 2, 29), 1) == dt.date(2024, 3, 31)
    assert end.shift(dt.date(2024, 3, 31), -13) == dt.date(2023, 2, 28)
    assert end.periods(dt.date(2023, 11, 30), dt.date(2024, 2, 29)) == 3
    assert not end.on_grid(dt.date(2024, 2, 28)) and end.on_grid(dt.date(2024, 2, 29))
    start = Grid("month", "start")
    assert start.shift(dt.date(2024, 11, 1), 3) == dt.date(2025, 2, 1)
    assert (DAILY.season, week.season, end.season) == (7, 52, 12)
    shifted = end.shift_np(np.array(["2024-01-31"], dtype="datetime64[D]"), np.array([1]))
    assert shifted[0] == np.datetime64("2024-02-29")


def test_grid_sql_agrees_with_python(spark):
    t0 = dt.date(2023, 1, 31)
    dates = [month_end(k, 2023) for k in range(0, 15)]
    df = spark.createDataFrame([(d,) for d in dates], "date date")
    end = Grid("month", "end")
    rows = df.select(
        "date",
        F.expr(end.periods_sql(t0, "date")).alias("k"),
        F.expr(end.shift_sql("date", "2")).alias("later"),
        F.expr(end.date_sql(t0, end.periods_sql(t0, "date"))).alias("back"),
        F.expr(end.on_grid_sql("date")).alias("ok"),
    ).collect()
    for r in rows:
        assert r["k"] == end.periods(t0, r["date"])
        assert r["later"] == end.shift(r["date"], 2)
        assert r["back"] == r["date"] and r["ok"]
    week = Grid("week", "friday", "end")
    days = spark.createDataFrame([(FRIDAY + dt.timedelta(days=d),) for d in range(-7, 9)], "d date")
    got = {
        r["d"]: r["p"]
        for r in days.select("d", F.expr(week.period_of_day_sql(FRIDAY, "d")).alias("p")).collect()
    }
    # a week dated on its Friday holds the Saturday before to that Friday
    assert got[FRIDAY - dt.timedelta(days=7)] == -1
    assert got[FRIDAY - dt.timedelta(days=6)] == 0 and got[FRIDAY] == 0
    assert got[FRIDAY + dt.timedelta(days=1)] == 1


def test_declared_and_inferred_frequencies(caplog):
    weekly = Frequency("week", 12, 0, 11, 0, 14, anchor="Friday", anchored=14)
    assert grid_for(weekly, "auto") == Grid("week", "friday")
    assert grid_for(weekly, "week", "Monday") == Grid("week", "monday")
    with caplog.at_level(logging.WARNING, logger="sales_st"):
        assert grid_for(weekly, "day") == DAILY
    assert "do not look daily: weekly (anchored on Friday" in caplog.text
    monthly = Frequency("month", 7, 0, 0, 7, 9, anchor="month end", anchored=8)
    assert grid_for(monthly, "auto") == Grid("month", "end")
    with pytest.raises(ConfigError, match="monthly data needs its dates on the month start"):
        grid_for(Frequency("month", 7, 0, 0, 7, 9), "auto")
    with pytest.raises(DataError, match="cannot tell the spacing of the sales dates"):
        grid_for(Frequency("ambiguous", 4, 1, 0, 0, 6), "auto")
    with pytest.raises(ConfigError, match="weekly data needs the weekday"):
        grid_for(Frequency("day", 17, 16, 0, 0, 19), "week")


def test_a_wrong_declared_frequency_is_a_config_error(spark, data_root):
    cfg = period_cfg(data_root, "wrong_freq", 8, 2, "data.frequency=week", "data.anchor=monday")
    dates = [FRIDAY + dt.timedelta(weeks=k) for k in range(10)]
    write_tables(spark, cfg.path("inputs"), dates, week_target)
    sales = spark.read.parquet(f"{cfg.path('inputs')}/sales")
    with pytest.raises(ConfigError) as err:
        resolve_grid(sales, cfg.data)
    assert "30 of 30 sales dates are off the declared grid (weekly on Mondays" in str(err.value)
    assert "the dates look weekly (anchored on Friday" in str(err.value)


# ---- a weekly panel through the feature job ------------------------------------------------

OFF_GRID = [
    (FRIDAY + dt.timedelta(weeks=50, days=4), "s1", "i1", 9.0, 2.0, 0, 1),  # a Tuesday
    (FRIDAY + dt.timedelta(weeks=51, days=1), "s2", "i1", 9.0, 2.0, 0, 1),  # a Saturday
]
# two public holidays in the week dated FRIDAY + 101 weeks (its Wednesday and Thursday), a
# school holiday on the Saturday that opens the week dated FRIDAY + 103 weeks
WEEK_EVENTS = [
    (FRIDAY + dt.timedelta(weeks=101, days=-2), "global", None, "public_holiday"),
    (FRIDAY + dt.timedelta(weeks=101, days=-1), "global", None, "public_holiday"),
    (FRIDAY + dt.timedelta(weeks=102, days=1), "S1", "state", "school_holiday"),
]


@pytest.fixture(scope="module")
def weekly(spark, data_root):
    cfg = period_cfg(
        data_root,
        "weekly",
        WL,
        WH,
        "features.stride=4",
        "features.lags=[1,4]",
        "features.rolling_windows=[4]",
        "features.same_weekday_weeks=1",
        "features.splits.train_end=-12",
        "features.splits.val_end=-8",
        "features.splits.test_stride=4",
    )
    dates = [FRIDAY + dt.timedelta(weeks=k) for k in range(WEEKS)]
    write_tables(
        spark, cfg.path("inputs"), dates, week_target, extra_sales=OFF_GRID, events=WEEK_EVENTS
    )
    out = run_features(spark, cfg, None)
    spec = read_spec(cfg.path("features"))
    examples = spark.read.parquet(f"{cfg.path('features')}/examples")
    return cfg, out, spec, examples


def test_weekly_windows_at_known_offsets_in_weeks(weekly):
    _, out, spec, examples = weekly
    assert out.run_date == FRIDAY + dt.timedelta(weeks=WEEKS - 1)
    assert spec.period == Grid("week", "friday", "end")
    assert spec.n_days == WEEKS + WH and spec.t0 == FRIDAY
    o = 99  # a training origin: run date - 20 weeks, within train_end - horizon
    origin = FRIDAY + dt.timedelta(weeks=o)
    r = examples.where((F.col("store_id") == "s1") & (F.col("origin") == origin)).toPandas()
    assert len(r) == 1 and r.split[0] == "train"
    r = r.iloc[0]
    hist = np.array([week_target("s1", k) for k in range(o - WL + 1, o + 1)])
    scale = hist.mean()
    assert r.scale == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(r.hist_y, hist / scale, rtol=1e-5)
    assert list(r.hist_observed) == [1.0] * WL  # no empty slots between the weeks
    np.testing.assert_allclose(r.y, [week_target("s1", k) for k in range(o + 1, o + WH + 1)])
    assert r.lag_1 == pytest.approx(week_target("s1", o) / scale, rel=1e-5)
    assert r.lag_4 == pytest.approx(week_target("s1", o - 3) / scale, rel=1e-5)
    roll = np.mean([week_target("s1", k) for k in range(o - 3, o + 1)])
    assert r.roll_mean_4 == pytest.approx(roll / scale, rel=1e-5)
    # the same week a year (52 weeks) earlier, for every horizon week
    year_ago = [week_target("s1", o + h - 52) / scale for h in range(1, WH + 1)]
    np.testing.assert_allclose(r.fut_sw_mean, year_ago, rtol=1e-5)
    np.testing.assert_allclose(r.fut_last_year, year_ago, rtol=1e-5)
    # holidays counted per week: two in week o + 2, the school holiday in week o + 4
    assert list(r.fut_holiday) == [0, 2, 0, 0] and list(r.fut_school) == [0, 0, 0, 1]
    weeks = [(origin + dt.timedelta(weeks=h)).isocalendar()[1] / 53 for h in range(1, WH + 1)]
    np.testing.assert_allclose(r.fut_doy, weeks, rtol=1e-5)
    assert list(r.fut_dow) == [0] * WH
    # the position in the month of each horizon week's date
    days = [origin + dt.timedelta(weeks=h) for h in range(1, WH + 1)]
    np.testing.assert_allclose(r.fut_dom, [(d.day - 1) / 30 for d in days], rtol=1e-5)
    last = [
        dt.date(d.year + d.month // 12, d.month % 12 + 1, 1) - dt.timedelta(days=1) for d in days
    ]
    np.testing.assert_allclose(
        r.fut_to_month_end, [(e - d).days / 30 for d, e in zip(days, last)], rtol=1e-5
    )


def test_weekly_origins_are_whole_weeks_apart(weekly):
    _, out, _, examples = weekly
    per_split = examples.groupBy("split").agg(F.collect_set("origin").alias("o")).collect()
    origins = {r["split"]: r["o"] for r in per_split}
    assert origins["score"] == [out.run_date]
    for split in ("train", "val", "test"):
        for d in origins[split]:
            assert (out.run_date - d).days % 28 == 0  # the stride: 4 weeks
    assert max(origins["train"]) <= out.run_date - dt.timedelta(weeks=12 + WH)


def test_off_grid_weekly_rows_are_quarantined_and_accounted_for(spark, weekly):
    _, out, _, _ = weekly
    c = out.counts
    assert c["input"] == 3 * WEEKS + len(OFF_GRID)
    assert c["off_grid"] == len(OFF_GRID)
    assert c["input"] == c["accepted_written"] + c["quarantined_written"]
    assert c["accepted_written"] == 3 * WEEKS
    q = (
        spark.table("sales_st.quarantine")
        .where((F.col("run_date") == F.lit(out.run_date)) & (F.col("rule") == "off_grid"))
        .select("detail")
        .toPandas()
    )
    assert sorted(q.detail) == sorted(
        f"date {d} is off the grid: the sales are weekly on Fridays" for d, *_ in OFF_GRID
    )


def test_the_check_job_counts_weeks_not_days(spark, weekly):
    from sales_st.data.profile import profile_inputs

    cfg, *_ = weekly
    profile = profile_inputs(spark, cfg, None)
    assert profile.frequency.kind == "week"
    # 3 series of 120 weeks each, none missing (the off-grid rows are quarantined)
    assert (profile.span_days, profile.missing_days, profile.series_with_gaps) == (360, 0, 0)


def test_weekly_seasonal_naive_and_mase_by_hand(weekly):
    _, _, spec, examples = weekly
    o = 99
    origin = FRIDAY + dt.timedelta(weeks=o)
    one = examples.where((F.col("store_id") == "s1") & (F.col("origin") == origin))
    naive = (
        simple_baselines(one, spec.history, spec.horizon, spec.period)
        .where("method = 'seasonal_naive'")
        .orderBy("horizon")
        .toPandas()
    )
    # 52 weeks before each target week
    np.testing.assert_allclose(
        naive.point, [week_target("s1", o + h - 52) for h in range(1, WH + 1)], rtol=1e-5
    )
    truth = truth_rows(one, spec.history, [], spec.period).orderBy("horizon").toPandas()
    assert list(truth.target_date) == [origin + dt.timedelta(weeks=h) for h in range(1, WH + 1)]
    # s1 grows by 1 a week: every seasonal difference is 52
    assert truth.mase_scale[0] == pytest.approx(52.0, rel=1e-5)


# ---- a monthly panel (month ends) ------------------------------------------------------------

MONTHS, ML, MH = 48, 24, 3


def month_target(store: str, k: int) -> float:
    return {"s1": 1.0 + k, "s2": 10.0 + 2 * k, "s3": 50.0 + (k % 12)}[store]


@pytest.fixture(scope="module")
def monthly(spark, data_root):
    cfg = period_cfg(
        data_root,
        "monthly",
        ML,
        MH,
        "data.frequency=month",
        "features.stride=1",
        "features.lags=[1,12]",
        "features.rolling_windows=[3]",
        "features.same_weekday_weeks=2",
        "features.splits.train_end=-6",
        "features.splits.val_end=-3",
        "features.splits.test_stride=1",
    )
    dates = [month_end(k) for k in range(MONTHS)]
    write_tables(spark, cfg.path("inputs"), dates, month_target)
    out = run_features(spark, cfg, None)
    spec = read_spec(cfg.path("features"))
    examples = spark.read.parquet(f"{cfg.path('features')}/examples")
    return cfg, out, spec, examples


def test_monthly_windows_at_known_offsets_in_months(monthly):
    _, out, spec, examples = monthly
    assert out.run_date == month_end(MONTHS - 1) and spec.period == Grid("month", "end")
    o = 30
    origin = month_end(o)
    r = examples.where((F.col("store_id") == "s1") & (F.col("origin") == origin)).toPandas()
    assert len(r) == 1
    r = r.iloc[0]
    hist = np.array([month_target("s1", k) for k in range(o - ML + 1, o + 1)])
    scale = hist.mean()
    np.testing.assert_allclose(r.hist_y, hist / scale, rtol=1e-5)
    np.testing.assert_allclose(r.y, [month_target("s1", k) for k in range(o + 1, o + MH + 1)])
    assert r.lag_12 == pytest.approx(month_target("s1", o - 11) / scale, rel=1e-5)
    # the same month 12 and 24 months back
    sw = [
        (month_target("s1", o + h - 12) + month_target("s1", o + h - 24)) / 2 / scale
        for h in range(1, MH + 1)
    ]
    np.testing.assert_allclose(r.fut_sw_mean, sw, rtol=1e-5)
    months = [month_end(o + h).month / 12 for h in range(1, MH + 1)]
    np.testing.assert_allclose(r.fut_doy, months, rtol=1e-5)
    assert list(r.fut_dom) == [0] * MH and list(r.fut_to_month_end) == [0] * MH


def test_monthly_seasonal_naive_by_hand(monthly):
    _, _, spec, examples = monthly
    o = 30
    one = examples.where((F.col("store_id") == "s3") & (F.col("origin") == month_end(o)))
    naive = (
        simple_baselines(one, spec.history, spec.horizon, spec.period)
        .where("method = 'seasonal_naive'")
        .orderBy("horizon")
        .toPandas()
    )
    # s3 repeats every 12 months: the seasonal naive is exact
    expected = [month_target("s3", o + h - 12) for h in range(1, MH + 1)]
    np.testing.assert_allclose(naive.point, expected, rtol=1e-5)
    assert expected == [month_target("s3", o + h) for h in range(1, MH + 1)]
    truth = truth_rows(one, spec.history, [], spec.period).orderBy("horizon").toPandas()
    assert list(truth.target_date) == [month_end(o + h) for h in range(1, MH + 1)]
    assert (truth.mase_scale == 0).all()  # no seasonal difference at all


# ---- the generator's weekly and monthly tables ---------------------------------------------


def test_generator_sums_whole_weeks_and_months(spark):
    from sales_st.config import GeneratorConfig
    from sales_st.data.synthetic import generate

    cfg = GeneratorConfig(
        preset="custom",
        start_date="2024-01-01",  # a Monday: the first week ends on Sunday the 7th
        days=100,
        n_states=1,
        cities_per_state=1,
        stores_per_city=2,
        n_items=2,
        plan_days=20,
        partitions=2,
        new_store_fraction=0.0,
    )
    daily = generate(spark, cfg)["sales"].toPandas()
    weekly = generate(spark, dataclasses.replace(cfg, frequency="week"))["sales"].toPandas()
    monthly = generate(spark, dataclasses.replace(cfg, frequency="month"))["sales"].toPandas()
    # days 0-99 observed (to 2024-04-09), 100-119 plan rows (to 2024-04-29): 14 whole weeks
    # of history (to Sunday 2024-04-07), 2 whole plan weeks (2024-04-15 .. 2024-04-28)
    assert sorted(set(weekly.date)) == [
        dt.date(2024, 1, 7) + dt.timedelta(weeks=k) for k in (*range(14), 15, 16)
    ]
    assert weekly[weekly.date > dt.date(2024, 4, 7)].target.isna().all()
    daily["week"] = daily.date.map(lambda d: d + dt.timedelta(days=(6 - d.weekday())))
    by_week = daily.groupby(["store_id", "item_id", "week"]).target.sum()
    for r in weekly[weekly.target.notna()].itertuples():
        assert r.target == pytest.approx(by_week[(r.store_id, r.item_id, r.date)])
    # whole months of history: January to March, dated on the 1st
    assert sorted(set(monthly.date)) == [dt.date(2024, m, 1) for m in (1, 2, 3)]
    daily["month"] = daily.date.map(lambda d: d.replace(day=1))
    by_month = daily.groupby(["store_id", "item_id", "month"]).target.sum()
    for r in monthly.itertuples():
        assert r.target == pytest.approx(by_month[(r.store_id, r.item_id, r.date)])


# ---- a generated weekly panel end to end ---------------------------------------------------


@pytest.mark.slow
def test_a_weekly_panel_end_to_end(spark, data_root):
    """Generated daily sales summed into weeks: features -> train (1 epoch, 2 ranks) ->
    forecast -> evaluate, every date a Sunday and every step a week."""
    from sales_st.data.synthetic import write_generated
    from sales_st.evaluation.job import run_evaluate
    from sales_st.serving.job import run_forecast
    from sales_st.training.driver import run_training
    from tests.conftest import TINY

    cfg = make_config(
        data_root,
        *TINY,
        "paths.inputs=inputs/weekly_e2e",
        "paths.features=features/weekly_e2e",
        "paths.models=models/weekly_e2e",
        "paths.reports=reports/weekly_e2e",
        "paths.runs=runs/weekly_e2e",
        # its own registered model: the tiny panel's registry
        # aliases (pretrained, latest) stay the tiny model's for the tests that read them
        "data.name=weekly_e2e",
        "data.generator.days=700",
        "data.generator.plan_days=28",
        "data.generator.frequency=week",
        "features.history=56",
        "features.horizon=4",
        "features.stride=2",
        "features.min_history=8",
        "features.rolling_windows=[4,13]",
        "features.lags=[1,4,52]",
        "features.splits.train_end=-12",
        "features.splits.val_end=-6",
        "features.splits.test_stride=2",
        "train.epochs=1",
        "evaluate.baselines=[seasonal_naive, weekday_average]",
    )
    write_generated(spark, cfg.data.generator, cfg.path("inputs"))
    features = run_features(spark, cfg, None)
    spec = features.spec
    assert spec.period == Grid("week", "sunday", "end")
    assert features.run_date.weekday() == 6 and features.counts.get("off_grid", 0) == 0
    run_training(spark, cfg, "pretrain")
    forecast = run_forecast(spark, cfg, None)
    rows = (
        spark.table(forecast.table)
        .where(F.col("run_date") == F.lit(features.run_date))
        .select("target_date", "horizon")
        .distinct()
        .toPandas()
    )
    assert sorted(rows.itertuples(index=False)) == [
        (features.run_date + dt.timedelta(weeks=h), h) for h in range(1, 5)
    ]
    overall = run_evaluate(spark, cfg).overall.set_index("method")
    assert {"fused", "seasonal_naive", "weekday_average"} <= set(overall.index)
    n = overall["n"]
    assert n.nunique() == 1 and n.iloc[0] > 0  # every method scored on the same weeks
    assert np.isfinite(overall.loc["seasonal_naive", "mase"])


@pytest.mark.slow
def test_a_monthly_panel_end_to_end(spark, data_root):
    """Generated daily sales summed into calendar months: features -> train (1 epoch, 2
    ranks) -> forecast -> evaluate, every date a 1st and every step a month."""
    from sales_st.data.synthetic import write_generated
    from sales_st.evaluation.job import run_evaluate
    from sales_st.serving.job import run_forecast
    from sales_st.training.driver import run_training
    from tests.conftest import TINY

    cfg = make_config(
        data_root,
        *TINY,
        "paths.inputs=inputs/monthly_e2e",
        "paths.features=features/monthly_e2e",
        "paths.models=models/monthly_e2e",
        "paths.reports=reports/monthly_e2e",
        "paths.runs=runs/monthly_e2e",
        # its own registered model: the tiny panel's registry
        # aliases (pretrained, latest) stay the tiny model's for the tests that read them
        "data.name=monthly_e2e",
        "data.generator.start_date=2019-01-01",
        "data.generator.days=1461",  # 2019 .. 2022: 48 whole months
        "data.generator.plan_days=0",
        "data.generator.frequency=month",
        "data.frequency=month",
        "features.history=24",
        "features.horizon=3",
        "features.stride=1",
        "features.min_history=6",
        "features.rolling_windows=[3,12]",
        "features.lags=[1,12]",
        "features.splits.train_end=-6",
        "features.splits.val_end=-3",
        "features.splits.test_stride=1",
        "train.epochs=1",
        "evaluate.baselines=[seasonal_naive, weekday_average]",
    )
    write_generated(spark, cfg.data.generator, cfg.path("inputs"))
    features = run_features(spark, cfg, None)
    assert features.spec.period == Grid("month", "start")
    assert features.run_date == dt.date(2022, 12, 1)
    run_training(spark, cfg, "pretrain")
    forecast = run_forecast(spark, cfg, None)
    rows = (
        spark.table(forecast.table)
        .where(F.col("run_date") == F.lit(features.run_date))
        .select("target_date", "horizon")
        .distinct()
        .toPandas()
    )
    assert sorted(rows.itertuples(index=False)) == [
        (dt.date(2023, 1, 1), 1),
        (dt.date(2023, 2, 1), 2),
        (dt.date(2023, 3, 1), 3),
    ]
    overall = run_evaluate(spark, cfg).overall.set_index("method")
    assert {"fused", "seasonal_naive", "weekday_average"} <= set(overall.index)
    assert overall["n"].nunique() == 1 and overall["n"].iloc[0] > 0
    assert np.isfinite(overall.loc["seasonal_naive", "mase"])
