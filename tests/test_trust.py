"""Trustworthy runs: each defect of the probe (issue "Trustworthy runs") has a test here that
failed before its fix.  Real Spark, real files, real job processes."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from sales_st.config import TableSource, ValidationConfig
from sales_st.config.sections import RULES
from sales_st.data.contract import EVENTS, ITEMS, MALFORMED, STORES, ContractError, conform
from sales_st.data.sources import map_table
from sales_st.data.validation import validate_inputs, validate_sales
from sales_st.errors import ConfigError, DataError
from sales_st.runtime.metastore import MetastoreBusyError, hold_embedded_lock
from sales_st.storage.catalog import (
    ensure_table,
    recorded_run,
    replace_partition,
    table_location,
)
from sales_st.storage.files import POINTER, current_version, write_parquet_atomic
from tests.conftest import ROOT, TINY, make_config
from tests.test_validation import sales_df

D = dt.date
QUARANTINE_ALL = ValidationConfig(rules=dict.fromkeys(RULES, "quarantine"))
PY = sys.executable


def row(date, store="s1", item="i1", target=1.0):
    return (date, store, item, target, None, 0, 1, None)


def tables(spark, sales_rows, items=(("i1", "food", 1.0), ("i2", "food", 2.0))):
    stores = conform(
        spark.createDataFrame([("s1", "BY"), ("s2", "BW")], "store_id string, state string"), STORES
    )
    return {
        "sales": sales_df(spark, sales_rows),
        "stores": stores,
        "items": conform(
            spark.createDataFrame(
                list(items), "item_id string, category string, base_price double"
            ),
            ITEMS,
        ),
        "events": spark.createDataFrame([], EVENTS.spark_schema),
    }


# ---- 2. the run date comes from accepted rows ---------------------------------------------


def test_run_date_ignores_rows_that_validation_rejects(spark):
    rows = [row(D(2024, 1, d)) for d in range(1, 11)] + [row(D(2030, 1, 1))]
    cfg = ValidationConfig(end_date="2024-12-31", rules=QUARANTINE_ALL.rules)
    res = validate_sales(
        sales_df(spark, rows),
        tables(spark, rows)["stores"],
        tables(spark, rows)["items"],
        cfg,
        None,
    )
    assert res.run_date == D(2024, 1, 10)
    assert res.counts["date_out_of_range"] == 1 and res.counts["accepted"] == 10


# ---- 3. nothing changes silently -------------------------------------------------------------


def test_duplicate_item_ids_are_quarantined_and_their_sales_accounted(spark):
    items = (("i1", "food", 1.0), ("i1", "toys", 9.0), ("i2", "food", 2.0))
    rows = [row(D(2024, 1, d), item=i) for d in (1, 2) for i in ("i1", "i2")]
    res = validate_inputs(tables(spark, rows, items), QUARANTINE_ALL, D(2024, 1, 2))
    it = res.tables["items"]
    assert it.counts == {"input": 3, "accepted": 1, "duplicate_key": 2}
    sales = res.tables["sales"]
    assert sales.counts == {"input": 4, "accepted": 2, "unknown_item": 2}
    for t in res.tables.values():
        assert t.counts["input"] == t.counts["accepted"] + t.quarantined_total
    series = res.accepted.select("store_id", "item_id").distinct().count()
    assert series == 1  # i2 only: no series multiplied by a duplicated item row


def test_csv_is_read_as_text_ids_keep_leading_zeros(spark, tmp_path):
    path = tmp_path / "stores.csv"
    path.write_text("Shop,Region\n001,BY\n010,BW\n")
    src = TableSource(path=str(path), format="csv", columns={"store_id": "Shop", "state": "Region"})
    out = map_table(spark, src, "stores", base_dir=str(tmp_path))
    assert sorted(r.store_id for r in out.collect()) == ["001", "010"]


def test_malformed_csv_lines_and_values_are_quarantined(spark, tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text(
        "Day,Shop,Units\n"
        "2024-01-01,s1,5\n"
        "2024-01-02,s1,7,EXTRA\n"  # a field too many
        "2024-01-03,s1,seven\n"  # a number that is not one
        "2024-01-04,s1,\n"  # empty: a missing value, not a malformed one
    )
    src = TableSource(
        path=str(path),
        format="csv",
        columns={"date": "Day", "store_id": "Shop", "target": "Units"},
        constants={"item_id": "i1"},
    )
    out = map_table(spark, src, "sales", base_dir=str(tmp_path))
    marks = {r.date: r[MALFORMED] for r in out.collect()}
    assert marks[D(2024, 1, 1)] is None and marks[D(2024, 1, 4)] is None
    assert "does not match the header" in marks[D(2024, 1, 2)]
    assert "target 'seven' is not double" in marks[D(2024, 1, 3)]
    t = tables(spark, [])
    res = validate_sales(out, t["stores"], t["items"], QUARANTINE_ALL, D(2024, 1, 4))
    assert res.counts == {"input": 4, "accepted": 1, "malformed": 2, "null_target": 1}


def test_a_parquet_part_without_a_mapped_column_is_an_error(spark, tmp_path):
    d = tmp_path / "sales"
    d.mkdir()
    pd.DataFrame({"Day": ["2024-01-01"], "Shop": ["s1"], "Units": [1.0], "Promo": [1]}).to_parquet(
        d / "part-0.parquet"
    )
    pd.DataFrame({"Day": ["2024-01-02"], "Shop": ["s1"], "Units": [2.0]}).to_parquet(
        d / "part-1.parquet"
    )
    src = TableSource(
        path=str(d),
        columns={
            "date": "CAST(Day AS DATE)",
            "store_id": "Shop",
            "target": "Units",
            "promo": "Promo",
        },
        constants={"item_id": "i1"},
    )
    with pytest.raises(ContractError, match=r"part-1\.parquet.*lacks the mapped column.*Promo"):
        map_table(spark, src, "sales", base_dir=str(tmp_path))


def test_keep_if_rows_are_counted_as_filtered(spark, tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("Day,Shop,Units\n2024-01-01,s1,5\n2024-01-02,s1,0\n2024-01-03,s1,4\n")
    src = TableSource(
        path=str(path),
        format="csv",
        columns={"date": "Day", "store_id": "Shop", "target": "Units"},
        constants={"item_id": "i1"},
        keep_if="target > 0",
    )
    out = map_table(spark, src, "sales", base_dir=str(tmp_path))
    t = tables(spark, [])
    res = validate_sales(out, t["stores"], t["items"], QUARANTINE_ALL, D(2024, 1, 3))
    assert res.counts == {"input": 3, "accepted": 2, "filtered": 1}
    assert res.quarantined.count() == 0  # filtered by the configuration, not quarantined


def test_invalid_sql_in_a_mapping_is_a_config_error_naming_the_key(spark, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("Day,Shop\n2024-01-01,s1\n")
    src = TableSource(
        path=str(path), format="csv", columns={"date": "CAST(Day AS", "store_id": "Shop"}
    )
    with pytest.raises(ConfigError, match="data.sales.columns.date"):
        map_table(spark, src, "sales", base_dir=str(tmp_path))


# ---- 4. late configuration errors exit 2, naming the key -------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.run_date=notadate", "data.run_date"),
        ("train.epochs=[1,", "train.epochs=[1,"),
        ("data.sales.columns={bogus: x}", "data.sales.columns.bogus"),
        ("validation.end_date=2024-13-45", "validation.end_date"),
    ],
)
def test_config_errors_exit_2_with_the_key(tmp_path, override, key):
    proc = subprocess.run(
        [PY, "jobs/features.py", f"paths.data_dir={tmp_path}", override],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert key in last and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "metastore_db")  # nothing started


# ---- 5. bookkeeping ------------------------------------------------------------------------------


def manifest(spark, run_id):
    return spark.table("sales_st.run_manifest").where(F.col("run_id") == run_id).collect()


def test_a_failed_run_is_closed_with_its_cause_in_one_line(spark):
    with pytest.raises(DataError), recorded_run(spark, "sales_st", "probe", D(2024, 1, 1)) as rec:
        assert [r.status for r in manifest(spark, rec.run_id)] == ["running"]
        raise DataError("the input is bad\nsecond line with details")
    (r,) = manifest(spark, rec.run_id)
    assert (r.status, r.error) == ("failed", "DataError: the input is bad")
    assert r.finished_at >= r.started_at and r.pid == os.getpid()


def read_manifest(data_dir):
    files = glob.glob(f"{data_dir}/warehouse/sales_st.db/run_manifest/run_id=*/*.parquet")
    out = []
    for f in files:
        df = pq.read_table(f).to_pandas()
        df["run_id"] = f.split("run_id=")[1].split("/")[0]
        out.append(df)
    return pd.concat(out) if out else pd.DataFrame(columns=["run_id", "status", "job"])


@pytest.mark.slow
def test_a_killed_run_is_marked_abandoned_at_the_next_start(tmp_path):
    args = [
        f"paths.data_dir={tmp_path}",
        *TINY,
        "data.generator.days=120",
        'spark.conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"}',
    ]
    job = subprocess.Popen(
        [PY, "jobs/generate.py", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        m = read_manifest(tmp_path)
        if (m.status == "running").any():
            break
        time.sleep(0.5)
    assert job.poll() is None, "the job ended before it could be killed"
    killed = read_manifest(tmp_path).run_id.iloc[0]
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert list(read_manifest(tmp_path).status) == ["running"]  # nobody closed it
    again = subprocess.run(
        [PY, "jobs/generate.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    m = read_manifest(tmp_path).set_index("run_id")
    assert m.loc[killed, "status"] == "abandoned"
    assert "ended without closing the run" in m.loc[killed, "error"]
    assert sorted(m.status) == ["abandoned", "succeeded"]


def test_datasets_are_versioned_behind_a_committed_pointer(spark, tmp_path):
    path = str(tmp_path / "ds")
    first = write_parquet_atomic(spark.range(3), path)
    assert current_version(spark, path) == first
    # a killed writer leaves an uncommitted version: readers never see it
    os.makedirs(f"{path}/v-00000000000000-killed")
    assert current_version(spark, path) == first
    second = write_parquet_atomic(spark.range(5), path)
    assert current_version(spark, path) == second
    assert spark.read.parquet(current_version(spark, path)).count() == 5
    assert set(os.listdir(path)) == {POINTER, os.path.basename(second)}


def test_stale_staging_directories_are_cleaned_at_the_next_write(spark):
    table = "sales_st.staging_probe"
    ensure_table(spark, table, "v BIGINT, d DATE", ["d"])
    location = table_location(spark, table).replace("file:", "")
    old, fresh = f"{location}/.spark-staging-old", f"{location}/.spark-staging-fresh"
    for p in (old, fresh):
        os.makedirs(p, exist_ok=True)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    replace_partition(
        spark.range(2).select(F.col("id").alias("v"), F.lit(D(2024, 1, 1)).alias("d")),
        table,
        {"d": D(2024, 1, 1)},
    )
    assert not os.path.exists(old) and os.path.exists(fresh)


def test_partition_replacement_does_not_depend_on_the_session_setting(spark):
    table = "sales_st.overwrite_probe"
    ensure_table(spark, table, "v BIGINT, d DATE", ["d"])
    a, b = D(2024, 1, 1), D(2024, 1, 2)
    part = spark.range(2).select(F.col("id").alias("v"))
    replace_partition(part.withColumn("d", F.lit(a)), table, {"d": a})
    key = "spark.sql.sources.partitionOverwriteMode"
    before = spark.conf.get(key)
    spark.conf.set(key, "static")  # what another session might have
    try:
        replace_partition(part.withColumn("d", F.lit(b)), table, {"d": b})
    finally:
        spark.conf.set(key, before)
    counts = {r.d: r["count"] for r in spark.table(table).groupBy("d").count().collect()}
    assert counts == {a: 2, b: 2}


# ---- concurrency ------------------------------------------------------------------------------


def test_a_second_job_on_the_embedded_metastore_fails_fast_naming_the_lock(tmp_path):
    cfg = make_config(tmp_path)
    holder = subprocess.Popen(
        [
            PY,
            "-c",
            "import sys, time; from tests.conftest import make_config; "
            "from sales_st.runtime.metastore import hold_embedded_lock; "
            f"hold_embedded_lock(make_config({str(tmp_path)!r})); print('held', flush=True); "
            "time.sleep(60)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MetastoreBusyError, match=r"metastore_db\.lock"):
            hold_embedded_lock(cfg)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [PY, "jobs/forecast.py", f"paths.data_dir={tmp_path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and time.perf_counter() - t0 < 60
        last = proc.stderr.strip().splitlines()[-1]
        assert "in use by another job" in last and "scripts/metastore.sh start" in last
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_forecast_jobs_run_at_once_on_the_metastore_service(tiny_cfg, tiny_model, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "shared"
    start = subprocess.run(
        ["scripts/metastore.sh", "start", "--port", str(port), f"paths.data_dir={data}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        run = tiny_cfg.data.run_date or str(
            json.load(open(f"{tiny_cfg.path('features')}/feature_spec.json"))["run_date"]
        )
        dates = [run, str(D.fromisoformat(run) - dt.timedelta(days=7))]
        common = [
            f"paths.data_dir={data}",
            *TINY,
            f"paths.inputs={tiny_cfg.path('inputs')}",
            f"paths.models={tiny_cfg.path('models')}",
            f"spark.metastore_uri=thrift://127.0.0.1:{port}",
            'spark.conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2",'
            ' "spark.driver.memory": "2g"}',
        ]
        jobs = [
            subprocess.Popen(
                [PY, "jobs/forecast.py", "--run-date", d, *common],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for d in dates
        ]
        outs = [j.communicate(timeout=600)[0] for j in jobs]
        assert [j.returncode for j in jobs] == [0, 0], "\n".join(o[-2000:] for o in outs)
        parts = sorted(os.listdir(data / "warehouse" / "sales_st.db" / "forecasts"))
        assert [p for p in parts if p.startswith("run_date=")] == sorted(
            f"run_date={d}" for d in dates
        )
        runs = read_manifest(data)
        assert sorted(runs.status) == ["succeeded", "succeeded"]
    finally:
        subprocess.run(
            ["scripts/metastore.sh", "stop", "--port", str(port), f"paths.data_dir={data}"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )


# ---- random overlay mappings: exit 2 or lose nothing ---------------------------------------

SOURCE_COLUMNS = ["Day", "Shop", "Units", "Promo", "Junk"]
CONTRACT = ["date", "store_id", "item_id", "target", "promo", "price", "bogus"]
EXPRESSIONS = SOURCE_COLUMNS + [
    "CAST(Day AS DATE)",
    "Units * 2",
    "upper(Shop)",
    "Units +",
    "nonexistent_column",
    "CASE WHEN Promo = 'y' THEN 1 ELSE 0 END",
]


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    mapping=st.dictionaries(
        st.sampled_from(CONTRACT), st.sampled_from(EXPRESSIONS), min_size=1, max_size=6
    )
)
def test_random_overlay_mappings_fail_with_a_config_error_or_lose_nothing(
    spark, tmp_path_factory, mapping
):
    from sales_st.config import load_config
    from tests.conftest import CONF

    d = tmp_path_factory.mktemp("overlay")
    path = d / "sales.csv"
    lines = [
        "2024-01-01,s1,5,y,a",
        "2024-01-02,s1,x,n,b",
        "bad line",
        "2024-01-03,s2,-1,y,c,d",
        "2024-01-04,s9,3,n,e",
    ]
    path.write_text("Day,Shop,Units,Promo,Junk\n" + "\n".join(lines) + "\n")
    try:
        cfg = load_config(
            CONF,
            "local",
            [
                f"paths.data_dir={d}",
                "data.source=tables",
                f"data.sales.path={path}",
                "data.sales.format=csv",
                f"data.sales.columns={json.dumps(mapping)}",
                'data.sales.constants={"item_id": "i1"}'
                if "item_id" not in mapping
                else "data.name=x",
            ],
        )
        src = cfg.data.sales
        out = map_table(spark, src, "sales", base_dir=str(d))
        t = tables(spark, [])
        res = validate_sales(out, t["stores"], t["items"], QUARANTINE_ALL, D(2024, 1, 4))
    except (ConfigError, ContractError):
        return  # a clear error before any row is loaded
    c = res.counts
    assert c["input"] == len(lines)
    assert c["input"] == c["accepted"] + res.quarantined_total + c.get("filtered", 0)
    assert res.accepted.count() + res.quarantined.count() == len(lines)


@pytest.mark.parametrize(
    "command",
    [
        ["scripts/sql.sh", "SELECT 1", "bogus.key=1"],
        ["./spark-submit.sh", "features", "bogus.key=1"],
        ["scripts/thrift-server.sh", "start", "--port", "1", "bogus.key=1"],
        ["scripts/metastore.sh", "start", "--port", "1", "bogus.key=1"],
    ],
)
def test_wrappers_pass_a_config_error_on_and_start_nothing(command):
    before = set(os.listdir(ROOT))
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "bogus" in proc.stderr.strip().splitlines()[-1]
    assert set(os.listdir(ROOT)) - before == set()  # no metastore_db, derby.log, spark-warehouse
