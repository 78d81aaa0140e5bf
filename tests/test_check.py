"""The check job's profile of a hand-made dataset, that it writes nothing, and the inference
of the sales table's frequency (and the feature job refusing a frequency the dates
contradict; tests/test_frequency.py runs weekly and monthly data)."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from sales_st.config import load_config
from sales_st.data.events import undeclared_message
from sales_st.data.frequency import Frequency, infer_frequency
from sales_st.data.profile import DataProfile, EventTypeCheck, TableCheck, profile_inputs
from sales_st.errors import ConfigError
from tests.conftest import CONF, make_config

D = dt.date
T0 = D(2024, 1, 1)  # a Monday
DECLARED = ["public_holiday", "school_holiday", "fair"]


def day(d: int) -> str:
    return (T0 + dt.timedelta(days=d)).isoformat()


def write_csv(path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def tiny_overlay(tmp_path) -> list[str]:
    """CSV inputs mapped by an overlay: 3 stores, 4 series over 28 days, a few bad rows."""
    src = tmp_path / "src"
    src.mkdir()
    stores = write_csv(
        src / "stores.csv",
        "Shop,Town,Region,Format,Area",
        ["1,Springfield,North,big,100", "2,Springfield,North,small,50", "3,Shelby,South,big,"],
    )
    sales = []
    for d in range(28):
        promo = 1 if d % 7 == 0 else 0
        sales.append(f"{day(d)},1,a,{d % 5},{promo}")  # zero on days 0, 5, .., 25
        if d not in (10, 11):
            sales.append(f"{day(d)},2,a,3,{promo}")  # two days missing
        if d >= 7:
            sales.append(f"{day(d)},3,a,4,{promo}")  # starts on day 7
        sales.append(f"{day(d)},1,b,2,{promo}")
    sales += [f"{day(d)},1,a,,0" for d in (28, 29, 30)]  # plans after the run date
    sales += [
        f"{day(3)},9,a,1,0",  # unknown_store
        f"{day(5)},2,b,-1,0",  # negative_target
        "2024-13-40,1,a,1,0",  # malformed
        f"{day(0)},1,b,2,1",  # duplicate_key: an exact copy
    ]
    sales_path = write_csv(src / "sales.csv", "Day,Shop,Sku,Units,Promo", sales)
    events = write_csv(
        src / "events.csv",
        "Date,Where,Level,Kind",
        [
            f"{day(9)},global,,public_holiday",
            f"{day(14)},North,state,school_holiday",
            f"{day(15)},North,state,school_holiday",
            f"{day(19)},Springfield,city,fair",
            f"{day(20)},Shelby,,flod",  # a misspelt type: not declared
            f"{day(21)},Shelby,,flod",
            f"{day(22)},South,state,none",  # excluded by keep_if
            f"{day(23)},,state,fair",  # null_key
        ],
    )
    return [
        "data.source=tables",
        "data.name=tiny_check",
        f"data.event_types={json.dumps(DECLARED)}",
        "data.sales="
        + json.dumps(
            {
                "path": sales_path,
                "format": "csv",
                "columns": {
                    "date": "Day",
                    "store_id": "Shop",
                    "item_id": "Sku",
                    "target": "Units",
                    "promo": "Promo",
                },
            }
        ),
        "data.stores="
        + json.dumps(
            {
                "path": stores,
                "format": "csv",
                "columns": {
                    "store_id": "Shop",
                    "city": "Town",
                    "state": "Region",
                    "static_cat_format": "Format",
                    "static_num_area": "Area",
                },
                "constants": {"country": "X"},
            }
        ),
        "data.events="
        + json.dumps(
            {
                "path": events,
                "format": "csv",
                "columns": {
                    "date": "Date",
                    "scope": "Where",
                    "scope_level": "Level",
                    "event_type": "Kind",
                },
                "keep_if": "event_type <> 'none'",
            }
        ),
        "features.history=7",
        "features.horizon=3",
        "features.stride=7",
        "features.min_history=7",
        "features.splits.train_end=-7",
        "features.splits.val_end=-4",
        "features.splits.test_stride=1",
        "features.splits.train_offsets=run_date",
    ]


def tree(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    ) + sorted(os.path.relpath(d, root) for d, _, _ in os.walk(root))


def test_profile_of_a_hand_made_dataset_and_it_writes_nothing(spark, data_root, tmp_path):
    cfg = make_config(tmp_path, *tiny_overlay(tmp_path))
    files_before, warehouse_before = tree(tmp_path), tree(data_root / "warehouse")
    tables_before = sorted(t.name for t in spark.catalog.listTables(cfg.database))

    profile = profile_inputs(spark, cfg, None)

    expected = DataProfile(
        dataset="tiny_check",
        run_date=D(2024, 1, 28),  # the last day with a valid target (day 27)
        tables={
            "sales": TableCheck(
                input=110,
                accepted=106,
                quarantined={
                    "malformed": 1,
                    "unknown_store": 1,
                    "negative_target": 1,
                    "duplicate_key": 1,
                },
            ),
            "stores": TableCheck(input=3, accepted=3),
            "items": TableCheck(input=0, accepted=0),
            "events": TableCheck(input=8, accepted=6, filtered=1, quarantined={"null_key": 1}),
        },
        rows=106,  # 28 + 26 + 21 + 28 + 3 plans
        series=4,
        stores=3,
        items=2,
        first_date=T0,
        last_date=D(2024, 1, 31),
        last_target_date=D(2024, 1, 28),
        # dates per series 31, 26, 21, 28; gaps 30 + 25 + 20 + 27, one of them 3 days
        frequency=Frequency("day", gaps=102, daily=101, weekly=0, monthly=0, dates=106),
        declared_frequency="auto",
        targets=103,
        zero_targets=6,
        null_targets=3,
        span_days=28 + 28 + 21 + 28,
        missing_days=2,
        series_with_gaps=1,
        hierarchy={"city": 2, "state": 2, "country": 1},
        events=[
            EventTypeCheck("public_holiday", True, rows=1, dates=1, stores=3, series=4),
            EventTypeCheck("school_holiday", True, rows=2, dates=2, stores=2, series=3),
            EventTypeCheck("fair", True, rows=1, dates=1, stores=2, series=3),
            EventTypeCheck("flod", False, rows=2, dates=2, stores=1, series=1),
        ],
        ambiguous_scopes={},
        unknown_scope_levels={},
        static_columns={"stores": ["static_cat_format", "static_num_area"], "items": []},
        optional_columns={
            "sales": {"promo": 106},
            "stores": {"city": 3, "state": 3, "country": 3},
            "items": {},
            "events": {"scope_level": 3},
        },
        # run date = day 27, origins every 7 days back from it (6, 13, 20) and every day for
        # the test (23, 24); store 3 starts on day 7, so its first origin is day 13
        windows={"train": 2 * 3 + 1, "val": 4, "test": 2 * 4, "score": 4},
        problems=[undeclared_message({"flod": 2}, DECLARED)],
    )
    assert profile == expected
    assert "'flod' (2 rows)" in profile.problems[0]
    text = profile.render()
    assert "flod                 NO" in text and "Problems    1:" in text
    assert json.loads(json.dumps(profile.to_dict()))["frequency"]["kind"] == "day"

    # nothing written: no file under the dataset's data dir or the warehouse, no table
    assert tree(tmp_path) == files_before
    assert tree(data_root / "warehouse") == warehouse_before
    assert sorted(t.name for t in spark.catalog.listTables(cfg.database)) == tables_before


def test_check_job_turns_tracking_and_event_logs_off():
    from jobs.check import QUIET, arguments
    from sales_st.runtime.jobs import parser

    p = parser("check")
    arguments(p)
    ns = p.parse_args(["--env", "local", "--json", "out.json", "train.epochs=2"])
    assert ns.overrides == [*QUIET, "train.epochs=2"] and ns.json == "out.json"
    cfg = load_config(CONF, ns.env, ns.overrides)
    assert cfg.tracking.enabled is False
    assert cfg.spark.conf["spark.eventLog.enabled"] == "false"


# ---- frequency ------------------------------------------------------------------------


def panel(spark, series: dict[str, list[D]]):
    rows = [(d, s, "i", 1.0) for s, dates in series.items() for d in dates]
    return spark.createDataFrame(rows, "date date, store_id string, item_id string, target double")


def days(start: D, offsets) -> list[D]:
    return [start + dt.timedelta(days=o) for o in offsets]


def test_frequency_of_a_daily_panel(spark):
    sales = panel(spark, {"a": days(T0, range(10)), "b": days(T0, [0, 1, 2, 3, 5, 6, 7, 8, 9])})
    # gaps: a 9 x 1 day; b 7 x 1 day and one of 2 days
    assert infer_frequency(sales) == Frequency("day", 17, 16, 0, 0, 19)


def test_frequency_of_a_weekly_panel_anchored_on_friday(spark):
    friday = D(2024, 1, 5)
    sales = panel(
        spark,
        {"a": days(friday, range(0, 56, 7)), "b": days(friday, [0, 7, 21, 28, 35, 42])},
    )
    freq = infer_frequency(sales)
    # gaps: a 7 x 7 days; b 7, 14, 7, 7, 7; every date a Friday
    assert freq == Frequency("week", 12, 0, 11, 0, 14, anchor="Friday", anchored=14)
    assert freq.describe() == (
        "weekly (anchored on Friday: 92% of gaps are 7 days, 100% of dates are Fridays)"
    )


def test_frequency_of_a_monthly_panel(spark):
    starts = [D(2024, m, 1) for m in range(1, 7)]
    ends = [D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)]
    freq = infer_frequency(panel(spark, {"a": starts, "b": ends}))
    # gaps: a 31, 29, 31, 30, 31; b 29, 31; 6 of the 9 dates start a month
    assert freq == Frequency("month", 7, 0, 0, 7, 9, anchor="month start", anchored=6)


def test_frequency_of_an_ambiguous_panel(spark):
    sales = panel(spark, {"a": days(T0, [0, 3, 6, 9]), "b": days(T0, [0, 1])})
    assert infer_frequency(sales) == Frequency("ambiguous", 4, 1, 0, 0, 6)
    assert infer_frequency(panel(spark, {"a": [T0], "b": [T0]})) == Frequency(
        "ambiguous", 0, 0, 0, 0, 2
    )


def test_feature_job_refuses_a_weekly_panel_declared_monthly(spark, tmp_path):
    from sales_st.features.job import run_features

    cfg = make_config(
        tmp_path, "paths.inputs=inputs/weekly", "data.frequency=month", "data.anchor=start"
    )
    friday = D(2024, 1, 5)
    rows = [
        (friday + dt.timedelta(weeks=w), s, "i1", 10.0 + w, None, 0, 1)
        for s in ("s1", "s2")
        for w in range(30)
    ]
    tables = {
        "sales": spark.createDataFrame(
            rows,
            "date date, store_id string, item_id string, target double, price double, "
            "promo int, open int",
        ),
        "stores": spark.createDataFrame(
            [("s1", "C1", "S1"), ("s2", "C1", "S1")], "store_id string, city string, state string"
        ),
        "events": spark.createDataFrame(
            [], "date date, scope string, scope_level string, event_type string"
        ),
        "items": spark.createDataFrame([("i1",)], "item_id string"),
    }
    for name, df in tables.items():
        df.write.mode("overwrite").parquet(f"{cfg.path('inputs')}/{name}")
    with pytest.raises(ConfigError) as err:
        run_features(spark, cfg, None)
    assert str(err.value).startswith(
        "config key 'data.frequency': 58 of 60 sales dates are off the declared grid (monthly "
        "on the month start; data.frequency: month, data.anchor: start), the dates look weekly "
        "(anchored on Friday: 100% of gaps are 7 days, 100% of dates are Fridays)"
    )
    assert not os.path.exists(cfg.path("features"))
