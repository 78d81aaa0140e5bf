"""Validation rules, row accounting, fail vs quarantine, and a property test of both."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.testing import assertDataFrameEqual

from sales_st.config import ValidationConfig
from sales_st.data.contract import SALES, STORES, conform
from sales_st.data.validation import RULE_ORDER, ValidationError, validate_sales

D = dt.date
RUN = D(2024, 1, 10)
QUARANTINE_ALL = ValidationConfig(
    start_date="2024-01-01",
    end_date="2024-02-01",
    rules=dict.fromkeys(RULE_ORDER, "quarantine"),
)


def sales_df(spark, rows):
    df = spark.createDataFrame(
        rows,
        "date date, store_id string, item_id string, target double, "
        "price double, promo int, open int, customers double",
    )
    return conform(df, SALES)


def dims(spark):
    stores = conform(
        spark.createDataFrame([("s1", "BY"), ("s2", "BW")], "store_id string, state string"), STORES
    )
    items = spark.createDataFrame(
        [("i1", None, None)], "item_id string, category string, base_price double"
    )
    return stores, items


def row(date, store="s1", item="i1", target=1.0, promo=0):
    return (date, store, item, target, None, promo, 1, None)


def test_each_rule_quarantines_its_rows(spark):
    stores, items = dims(spark)
    rows = [
        row(D(2024, 1, 1)),  # ok
        row(None),  # null_key
        row(D(2023, 12, 1)),  # date_out_of_range
        row(D(2024, 1, 2), store="s9"),  # unknown_store
        row(D(2024, 1, 2), item="i9"),  # unknown_item
        row(D(2024, 1, 3), target=float("nan")),  # non_finite_target
        row(D(2024, 1, 4), target=float("inf")),  # non_finite_target
        row(D(2024, 1, 5), target=-2.0),  # negative_target
        row(D(2024, 1, 6), target=None),  # null_target (before the run date)
        row(D(2024, 1, 20), target=None, promo=1),  # ok: a plan row after the run date
        row(D(2024, 1, 7), target=5.0),  # duplicate_key: conflicting pair
        row(D(2024, 1, 7), target=6.0),
        row(D(2024, 1, 8), target=2.0),  # exact copies: the first one is kept
        row(D(2024, 1, 8), target=2.0),
        row(None, store="s9", target=-1.0),  # several rules: charged to null_key
    ]
    res = validate_sales(sales_df(spark, rows), stores, items, QUARANTINE_ALL, RUN)
    assert res.counts["input"] == 15
    assert res.counts["accepted"] == 3
    expected_counts = {
        "malformed": 0,  # typed input: nothing to parse
        "null_key": 2,
        "date_out_of_range": 1,
        "off_grid": 0,  # daily: every date is on the grid
        "unknown_store": 1,
        "unknown_item": 1,
        "non_finite_target": 2,
        "negative_target": 1,
        "null_target": 1,
        "invalid_value": 0,  # the inventory's rule: no sales row breaks it
        "duplicate_key": 3,
    }
    assert {k: res.counts.get(k, 0) for k in RULE_ORDER} == expected_counts
    assert res.counts["input"] == res.counts["accepted"] + res.quarantined_total
    assertDataFrameEqual(
        res.accepted,
        sales_df(
            spark,
            [
                row(D(2024, 1, 1)),
                row(D(2024, 1, 20), target=None, promo=1),
                row(D(2024, 1, 8), target=2.0),
            ],
        ),
    )
    q = res.quarantined.select("rule", "detail").toPandas()
    details = dict(zip(q["rule"], q["detail"]))
    assert details["unknown_store"] == "store_id s9 not in stores"
    assert details["negative_target"] == "target -2.0 < 0"
    assert "2 rows with conflicting values" in set(q["detail"])
    assert "exact copy of an earlier row" in set(q["detail"])
    # the original row travels with its reason, as JSON
    j = res.quarantined.where("rule = 'unknown_item'").first()["row_json"]
    assert json.loads(j)["item_id"] == "i9"


def test_fail_rule_raises_with_counts_and_examples(spark):
    stores, items = dims(spark)
    cfg = ValidationConfig(rules={**QUARANTINE_ALL.rules, "negative_target": "fail"})
    rows = [row(D(2024, 1, 1)), row(D(2024, 1, 2), target=-1.0), row(D(2024, 1, 3), target=-3.0)]
    with pytest.raises(ValidationError) as err:
        validate_sales(sales_df(spark, rows), stores, items, cfg, RUN)
    msg = str(err.value)
    assert "negative_target (2 rows) of 3 rows" in msg
    assert "[negative_target] target -3.0 < 0" in msg or "[negative_target] target -1.0 < 0" in msg
    assert "validation.rules.<rule>: quarantine" in msg


def test_rules_not_listed_fail(spark):
    stores, items = dims(spark)
    with pytest.raises(ValidationError, match="unknown_store"):
        validate_sales(
            sales_df(spark, [row(D(2024, 1, 1), store="zz")]),
            stores,
            items,
            ValidationConfig(rules={}),
            RUN,
        )


def test_items_derived_from_sales_when_no_item_table(spark):
    stores, _ = dims(spark)
    empty = spark.createDataFrame([], "item_id string, category string, base_price double")
    res = validate_sales(
        sales_df(spark, [row(D(2024, 1, 1), item="anything")]), stores, empty, QUARANTINE_ALL, RUN
    )
    assert res.counts == {"accepted": 1, "input": 1}


# ---- property test ----------------------------------------------------------------------

targets = st.one_of(
    st.none(), st.just(float("nan")), st.just(float("inf")), st.floats(-5, 50, allow_nan=False)
)
dates = st.one_of(st.none(), st.dates(D(2023, 12, 25), D(2024, 2, 5)))
rows_strategy = st.lists(
    st.tuples(
        dates,
        st.sampled_from(["s1", "s2", "s3", None]),
        st.sampled_from(["i1", "i2"]),
        targets,
        st.sampled_from([0, 1]),
    ),
    min_size=1,
    max_size=25,
)
actions = st.fixed_dictionaries({r: st.sampled_from(["fail", "quarantine"]) for r in RULE_ORDER})


def _norm(date, store, item, target):
    """A comparable form of a row; ``target`` None is null, a float NaN is NaN."""
    if target is None:
        t = "null"
    elif math.isnan(target):
        t = "nan"
    else:
        t = f"{float(target):.6g}"
    d = date.isoformat() if hasattr(date, "isoformat") else date
    return (str(d), str(store), str(item), t)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=rows_strategy, rules=actions)
def test_random_bad_input_fails_clearly_or_loses_nothing(spark, rows, rules):
    stores, items = dims(spark)
    items = spark.createDataFrame(
        [("i1", None, None), ("i2", None, None)],
        "item_id string, category string, base_price double",
    )
    full = [(d, s, i, t, None, p, 1, None) for d, s, i, t, p in rows]
    cfg = ValidationConfig(start_date="2024-01-01", end_date="2024-02-01", rules=rules)
    try:
        res = validate_sales(sales_df(spark, full), stores, items, cfg, RUN)
    except ValidationError as exc:
        failing = [r for r in RULE_ORDER if rules[r] == "fail" and f"{r} (" in str(exc)]
        assert failing, f"error names no failing rule: {exc}"
        assert "Examples:" in str(exc)
        return
    acc = res.accepted.toPandas()
    q = res.quarantined.toPandas()
    assert res.counts["input"] == len(full) == len(acc) + len(q)
    assert set(q["rule"]) <= {r for r in RULE_ORDER if rules[r] == "quarantine"}
    # accepted rows break no rule
    assert acc["date"].notna().all() and acc["store_id"].isin(["s1", "s2"]).all()
    observed = acc[acc["date"] <= RUN]["target"]
    assert observed.notna().all() and (observed >= 0).all() and observed.map(math.isfinite).all()
    assert not acc.duplicated(["store_id", "item_id", "date"]).any()
    # every input row is accepted or quarantined: compare the multisets
    got = [
        _norm(r.date, r.store_id, r.item_id, None if math.isnan(r.target) else r.target)
        for r in acc.itertuples()
    ]
    for j in q["row_json"]:
        o = json.loads(j)
        t = o.get("target")
        t = float(t) if isinstance(t, str) else t  # to_json writes NaN / Infinity as strings
        got.append(_norm(o.get("date"), o.get("store_id"), o.get("item_id"), t))
    want = [_norm(d, s, i, t) for d, s, i, t, _ in rows]
    assert sorted(got) == sorted(want)
