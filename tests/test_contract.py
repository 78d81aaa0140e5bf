"""The data contract and the generic loader (a new dataset is a config file, not code)."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from sales_st.config import TableSource
from sales_st.data.contract import MALFORMED, SALES, STORES, ContractError, conform
from sales_st.data.sources import map_table


def test_conform_casts_compatible_types_and_adds_optional_columns(spark):
    df = spark.createDataFrame(
        [(dt.date(2024, 1, 1), 7, "a", 3), (dt.date(2024, 1, 2), 7, "a", None)],
        "date date, store_id int, item_id string, target int",
    )
    out = conform(df, SALES)
    assert out.schema == SALES.spark_schema
    expected = spark.createDataFrame(
        [
            (dt.date(2024, 1, 1), "7", "a", 3.0, None, None, None, None),
            (dt.date(2024, 1, 2), "7", "a", None, None, None, None, None),
        ],
        SALES.spark_schema,
    )
    assertDataFrameEqual(out, expected)


def test_conform_reports_every_problem_at_once(spark):
    df = spark.createDataFrame([("x", True)], "store_id string, target boolean")
    with pytest.raises(ContractError) as err:
        conform(df, SALES, source="/some/file.parquet")
    msg = str(err.value)
    assert "table 'sales' (/some/file.parquet)" in msg
    assert "missing required column 'date' (date)" in msg
    assert "missing required column 'item_id'" in msg
    assert "column 'target' must be double, found boolean" in msg


def test_conform_keeps_dataset_specific_static_columns(spark):
    df = spark.createDataFrame(
        [(1, "BY", 3, "x")], "store_id int, state string, static_num_a int, static_cat_b string"
    )
    out = conform(df, STORES)
    assert out.columns[-2:] == ["static_num_a", "static_cat_b"]
    assert dict(out.dtypes)["static_num_a"] == "double"


def test_generic_loader_maps_csv_with_constants_values_and_join(spark, tmp_path):
    sales = tmp_path / "s.csv"
    sales.write_text("Day,Shop,Units,Flag\n2024-01-01,1,5,yes\n2024-01-02,2,0,no\n")
    src = TableSource(
        path=str(sales),
        format="csv",
        columns={
            "date": "CAST(Day AS DATE)",
            "store_id": "Shop",
            "target": "Units",
            "promo": "Flag",
        },
        constants={"item_id": "all"},
        values={"promo": {"yes": 1, "no": 0}},
    )
    out = map_table(spark, src, "sales", base_dir=str(tmp_path))
    # text read from CSV carries the reason it did not parse; every line parsed here
    assert out.where(F.col(MALFORMED).isNotNull()).count() == 0
    out = out.drop(MALFORMED)
    expected = spark.createDataFrame(
        [
            (dt.date(2024, 1, 1), "1", "all", 5.0, None, 1, None, None),
            (dt.date(2024, 1, 2), "2", "all", 0.0, None, 0, None, None),
        ],
        SALES.spark_schema,
    )
    assertDataFrameEqual(out, expected)


def test_generic_loader_melts_event_flags(spark, tmp_path):
    facts = tmp_path / "f.csv"
    facts.write_text("D,S,Hol,School\n2024-01-01,1,a,1\n2024-01-01,2,0,1\n2024-01-02,1,0,0\n")
    regions = tmp_path / "r.csv"
    regions.write_text("S,Region\n1,BY\n2,BW\n")
    src = TableSource(
        path=str(facts),
        format="csv",
        join_path=str(regions),
        join_on=["S"],
        columns={"date": "CAST(D AS DATE)", "scope": "Region"},
        constants={"scope_level": "state"},
        events_from_flags={"public_holiday": "Hol", "school_holiday": "School"},
    )
    out = map_table(spark, src, "events", base_dir=str(tmp_path))
    assert out.where(F.col(MALFORMED).isNotNull()).count() == 0
    out = out.drop(MALFORMED)
    expected = spark.createDataFrame(
        [
            (dt.date(2024, 1, 1), "BY", "state", "public_holiday"),
            (dt.date(2024, 1, 1), "BY", "state", "school_holiday"),
            (dt.date(2024, 1, 1), "BW", "state", "school_holiday"),
        ],
        T.StructType(
            [
                T.StructField("date", T.DateType()),
                T.StructField("scope", T.StringType()),
                T.StructField("scope_level", T.StringType()),
                T.StructField("event_type", T.StringType()),
            ]
        ),
    )
    assertDataFrameEqual(out, expected)


def test_generic_loader_names_missing_source_columns(spark, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n")
    src = TableSource(path=str(f), format="csv", columns={"store_id": "Store"})
    with pytest.raises(
        ContractError, match=r"source columns \['Store'\] not found .*columns there: a, b"
    ):
        map_table(spark, src, "stores", base_dir=str(tmp_path))


def test_generic_loader_missing_file(spark, tmp_path):
    src = TableSource(path="nope.parquet", columns={"store_id": "Store"})
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        map_table(spark, src, "stores", base_dir=str(tmp_path))
