"""Operable like the platforms its users know: self-describing catalog tables, the
``forecast_runs`` view, Spark event logs and the history server over them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
from pyspark.testing import assertDataFrameEqual

from sales_st.evaluation.job import METRICS_COLUMNS, METRICS_COMMENT, METRICS_DDL
from sales_st.runtime.session import spark_properties
from sales_st.serving.scoring import FORECASTS_COMMENT, forecast_comments, forecast_ddl
from sales_st.storage.catalog import (
    MANIFEST_COLUMNS,
    MANIFEST_COMMENT,
    MANIFEST_DDL,
    QUARANTINE_COLUMNS,
    QUARANTINE_COMMENT,
    QUARANTINE_DDL,
    SUCCEEDED,
    RunRecord,
    append_manifest,
    ensure_table,
    recorded_run,
    replace_partition,
)
from sales_st.storage.views import (
    FORECAST_RUNS,
    FORECAST_RUNS_COLUMNS,
    FORECAST_RUNS_COMMENT,
    create_forecast_runs,
)
from tests.conftest import ROOT, make_config

D = dt.date
QUANTILES = [0.1, 0.5, 0.9]
REGIONS = ["city", "state"]
FORECAST_DDL = forecast_ddl(QUANTILES, REGIONS)
# (DDL, partition columns, table comment, column comments) of every table the project writes
TABLES = {
    "forecasts": (
        FORECAST_DDL,
        ["run_date"],
        FORECASTS_COMMENT,
        forecast_comments(QUANTILES, REGIONS),
    ),
    "metrics": (METRICS_DDL, ["run_date"], METRICS_COMMENT, METRICS_COLUMNS),
    "run_manifest": (MANIFEST_DDL, ["run_id"], MANIFEST_COMMENT, MANIFEST_COLUMNS),
    "quarantine": (QUARANTINE_DDL, ["run_date"], QUARANTINE_COMMENT, QUARANTINE_COLUMNS),
}


def described(spark, table: str) -> tuple[dict[str, str | None], str | None]:
    """Column -> comment and the table comment, as ``DESCRIBE TABLE EXTENDED`` shows them."""
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
    columns: dict[str, str | None] = {}
    comment = None
    for r in rows:
        if r.col_name.startswith("#") or not r.col_name:
            if r.col_name == "# Detailed Table Information":
                break
            continue
        columns.setdefault(r.col_name, r.comment)
    for r in rows:
        if r.col_name == "Comment":
            comment = r.data_type
    return columns, comment


def recording_sql(spark, monkeypatch) -> list[str]:
    """The statements ``spark.sql`` runs from here on."""
    issued: list[str] = []
    real = spark.sql

    def sql(query, *args, **kwargs):
        issued.append(" ".join(str(query).split()))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(spark, "sql", sql)
    return issued


# ---- self-describing tables -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TABLES))
def test_new_tables_describe_every_column_and_themselves(spark, name):
    ddl, parts, comment, docs = TABLES[name]
    spark.sql("CREATE DATABASE IF NOT EXISTS ops_docs")
    table = f"ops_docs.{name}"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    ensure_table(spark, table, ddl, parts, comment, docs)
    columns, got_comment = described(spark, table)
    names = spark.createDataFrame([], ddl).schema.names
    assert list(columns) == names  # partition columns last, as in each DDL
    assert columns == {c: docs[c] for c in names}  # every column documented, partitions too
    assert all(len(text) > 15 for text in columns.values())
    assert got_comment == comment


def test_an_old_table_gets_columns_and_comments_once(spark, monkeypatch):
    """A metrics table of an older version (no comments, no coverage/model_id) is brought up
    to date in place, its rows kept; a second call issues no statement that changes it."""
    spark.sql("CREATE DATABASE IF NOT EXISTS ops_docs")
    table = "ops_docs.metrics_old"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    old_ddl = METRICS_DDL.replace("coverage DOUBLE, model_id STRING, ", "")
    spark.sql(f"CREATE TABLE {table} ({old_ddl}) USING parquet PARTITIONED BY (run_date)")
    spark.sql(
        f"INSERT INTO {table} PARTITION (run_date = '2024-01-07') "
        "SELECT 'fused', 'overall', 'all', 10, 1.0, 1.0, 0.5, 0.25, 0.3, 0.4, 0.9, 0.2"
    )
    # one comment with a quote and a backslash: escaped, not a syntax error or an injection
    docs = {**METRICS_COLUMNS, "mae": "mean |y-p| (target units; the store's \\ item's)"}
    ensure_table(spark, table, METRICS_DDL, ["run_date"], METRICS_COMMENT, docs)
    columns, comment = described(spark, table)
    assert comment == METRICS_COMMENT
    names = spark.createDataFrame([], METRICS_DDL).schema.names
    assert set(columns) == set(names)
    # Spark 3.5's ALTER COLUMN knows data columns only: the old partition column stays bare
    assert columns == {c: (None if c == "run_date" else docs[c]) for c in names}
    row = spark.table(table).collect()
    assert len(row) == 1 and row[0].wape == 0.25 and row[0].model_id is None

    issued = recording_sql(spark, monkeypatch)
    ensure_table(spark, table, METRICS_DDL, ["run_date"], METRICS_COMMENT, docs)
    assert [q for q in issued if not q.upper().startswith(("DESCRIBE", "SHOW"))] == []
    assert described(spark, table) == (columns, comment)

    # a comment that changed in the code is changed in the table, and only that one
    issued.clear()
    ensure_table(spark, table, METRICS_DDL, ["run_date"], METRICS_COMMENT, {**docs, "n": "rows"})
    assert issued == [f"ALTER TABLE {table} ALTER COLUMN n COMMENT 'rows'"]
    assert described(spark, table)[0]["n"] == "rows"


# ---- the forecast_runs view -------------------------------------------------------------------

RUN0, RUN1, RUN2, RUN3 = D(2023, 12, 31), D(2024, 1, 7), D(2024, 1, 14), D(2024, 1, 28)


def forecast_rows(spark, run_date, model_id, series, horizon):
    names = spark.createDataFrame([], FORECAST_DDL).schema.names
    rows = []
    for store, item in series:
        for h in range(1, horizon + 1):
            values = {
                "store_id": store,
                "item_id": item,
                "city": "c1",
                "state": "s1",
                "target_date": run_date + dt.timedelta(days=h),
                "horizon": h,
                "p10": 1.0,
                "p50": 2.0 + h,
                "p90": 5.0,
                "model_id": model_id,
                "run_date": run_date,
            }
            rows.append(tuple(values.get(c) for c in names))
    return spark.createDataFrame(rows, FORECAST_DDL)


def metric_row(run_date, method, model_id, wape, level="overall"):
    """A metrics row: method, level, group_key, n, mse, rmse, mae, wape, smape, rmspe, mase,
    pinball, coverage, model_id, run_date."""
    errors = (4.0, 2.0, 1.5, wape, 0.3, wape + 0.1, 0.8, 0.6, 0.75)
    return (method, level, "all", 100, *errors, model_id, run_date)


def selection(metric, validation, model_ids):
    """An evaluate run's details: its model selection (what fit_selection records)."""
    winner = min(validation, key=validation.get)
    return {
        "selection": {
            "metric": metric,
            "validation": validation,
            "model_ids": model_ids,
            "winner": winner,
            "weights": {"0": [0.5, 0.5]},
        }
    }


def manifest(spark, db, job, run_date, status, details):
    rec = RunRecord(job=job, run_date=run_date, details=details)
    start = dt.datetime(2024, 2, 1)
    append_manifest(spark, db, rec, status, start, 1.0, None)


def legacy_manifest(spark, db, job, run_date, details):
    """A row as earlier versions wrote it: NaN left in ``details`` (invalid JSON)."""
    text = json.dumps(details, sort_keys=True)
    assert "NaN" in text
    now = dt.datetime(2024, 2, 1)
    row = (
        job,
        run_date,
        SUCCEEDED,
        now,
        now,
        1.0,
        None,
        None,
        None,
        None,
        text,
        None,
        "h",
        1,
        "legacy",
    )
    table = f"{db}.run_manifest"
    replace_partition(spark.createDataFrame([row], MANIFEST_DDL), table, {"run_id": "legacy"})


def expected_runs(spark, db) -> list[tuple]:
    """The view's rows computed in pandas from the three tables."""
    f = spark.table(f"{db}.forecasts").toPandas()
    have = {t.name for t in spark.catalog.listTables(db)}
    m = spark.table(f"{db}.metrics").toPandas() if "metrics" in have else None
    r = spark.table(f"{db}.run_manifest").toPandas() if "run_manifest" in have else None
    out = []
    for run_date, g in f.groupby("run_date"):
        model = g.model_id.max()
        method = evaluated = metric = score = None
        tests = dict.fromkeys(("n", "wape", "rmspe", "mase", "pinball", "coverage"))
        if r is not None:
            fc = r[(r.job == "forecast") & (r.status == "succeeded") & (r.run_date == run_date)]
            if len(fc):
                method = json.loads(fc.sort_values(["finished_at", "run_id"]).details.iloc[-1])[
                    "method"
                ]
        if m is not None:
            t = m[(m.level == "overall") & (m.model_id == model) & (m.run_date <= run_date)]
            if len(t):
                evaluated = t.run_date.max()
                t = t[t.run_date == evaluated]
                for pick in (t[t.method == method], t[t.method == "best"], t.sort_values("method")):
                    if len(pick):
                        tests = {k: v.item() for k, v in pick.iloc[0][list(tests)].items()}
                        break
        if r is not None and evaluated is not None:
            ev = r[(r.job == "evaluate") & (r.status == "succeeded") & (r.run_date == evaluated)]
            if len(ev):
                sel = json.loads(ev.sort_values(["finished_at", "run_id"]).details.iloc[-1])[
                    "selection"
                ]
                metric = sel["metric"]
                name = next((k for k, v in sel["model_ids"].items() if v == model), None)
                score = sel["validation"].get(method, sel["validation"].get(name))
        out.append(
            (
                run_date,
                method,
                model,
                g.target_date.min() - dt.timedelta(days=1),
                g.target_date.max(),
                len(g),
                len(g[["store_id", "item_id"]].drop_duplicates()),
                evaluated,
                metric,
                score,
                *[None if pd.isna(v) else v for v in tests.values()],
            )
        )
    return out


def test_forecast_runs_has_one_row_per_run_date_from_the_catalog_tables(spark):
    db = "ops_view"
    spark.sql(f"DROP DATABASE IF EXISTS {db} CASCADE")
    spark.sql(f"CREATE DATABASE {db}")
    assert create_forecast_runs(spark, db) is None  # no forecasts table yet: no view
    assert not spark.catalog.tableExists(f"{db}.{FORECAST_RUNS}")
    table = f"{db}.forecasts"
    ensure_table(spark, table, FORECAST_DDL, ["run_date"])
    a, b, c = ("st1", "i1"), ("st1", "i2"), ("st2", "i1")
    for run_date, model, series, horizon in (
        (RUN0, "m0", [a, b], 3),
        (RUN1, "m1", [a, b, c], 2),
        (RUN2, "m2", [a, c], 4),
        (RUN3, "m9", [a], 1),
    ):
        rows = forecast_rows(spark, run_date, model, series, horizon)
        rows.write.insertInto(table)

    # only the forecasts exist: their columns are filled, the others null
    view = create_forecast_runs(spark, db)
    assert view == f"{db}.{FORECAST_RUNS}"
    got = spark.table(view)
    assert got.columns == list(FORECAST_RUNS_COLUMNS)
    assertDataFrameEqual(got, spark.createDataFrame(expected_runs(spark, db), got.schema))
    assert got.where("run_date = DATE'2024-01-07'").first().asDict() == {
        **dict.fromkeys(FORECAST_RUNS_COLUMNS),
        "run_date": RUN1,
        "model_id": "m1",
        "data_through": RUN1,
        "last_target_date": D(2024, 1, 9),
        "forecast_rows": 6,
        "series": 3,
    }

    # then the evaluations and the recorded runs
    ensure_table(spark, f"{db}.metrics", METRICS_DDL, ["run_date"])
    metrics = [
        metric_row(RUN0, "fused", "m0", 0.31),
        metric_row(RUN0, "best", "m0", 0.32),  # published as `latest`: `best` is taken
        metric_row(RUN0 - dt.timedelta(days=7), "fused", "m1", 0.9),  # older evaluation of m1
        metric_row(RUN1, "fused", "m1", 0.21),  # the published name wins
        metric_row(RUN1, "best", "m1", 0.22),
        metric_row(RUN1, "lightgbm", "lg1", 0.5),
        metric_row(RUN1, "seasonal_naive", None, 0.6),
        metric_row(RUN1, "fused", "m1", 0.05, level="horizon"),  # not overall: ignored
        metric_row(RUN2, "ensemble", "m2", 0.11),
        metric_row(RUN2, "best", "m2", 0.12),
        metric_row(D(2024, 1, 21), "ensemble", "m2", 0.01),  # after RUN2: not RUN2's score
    ]
    spark.createDataFrame(metrics, METRICS_DDL).write.insertInto(f"{db}.metrics")
    manifest(spark, db, "forecast", RUN0, SUCCEEDED, {"method": "latest"})
    manifest(spark, db, "forecast", RUN1, "failed", {"method": "lightgbm"})
    manifest(spark, db, "forecast", RUN1, SUCCEEDED, {"method": "fused"})
    manifest(spark, db, "forecast", RUN2, SUCCEEDED, {"method": "lightgbm"})
    manifest(spark, db, "forecast", RUN2, SUCCEEDED, {"method": "ensemble"})  # the re-run
    evaluations = {
        RUN0: selection("wape", {"fused": 0.3}, {"fused": "m0"}),
        RUN1: selection(
            "wape",
            {"fused": 0.2, "lightgbm": 0.4, "ensemble": 0.19},
            {"fused": "m1", "lightgbm": "lg1"},
        ),
        RUN2: selection(
            "rmspe",
            {"fused": 0.5, "lightgbm": 0.45, "ensemble": 0.4},
            {"fused": "m2f", "lightgbm": "lg2"},
        ),
    }
    # the evaluation job records its baselines' missing metrics (pandas NaN) with the selection
    missing = {"overall": [{"method": "seasonal_naive", "pinball": float("nan")}]}
    for run_date, details in evaluations.items():
        if run_date == RUN2:
            legacy_manifest(spark, db, "evaluate", run_date, {**details, **missing})
        else:
            manifest(spark, db, "evaluate", run_date, SUCCEEDED, {**details, **missing})
    stored = spark.table(f"{db}.run_manifest").where("run_id != 'legacy'").toPandas()

    def strict(name):
        raise ValueError(f"{name} is not JSON")

    for text in stored.details:  # valid JSON now: NaN written as null
        json.loads(text, parse_constant=strict)
    view = create_forecast_runs(spark, db)
    got = spark.table(view)
    expected = expected_runs(spark, db)
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema))
    # the rules above, spelled out for one run date each
    by_date = {r[0]: r for r in expected}
    assert by_date[RUN0][1:3] == ("latest", "m0") and by_date[RUN0][8:11] == ("wape", 0.3, 100)
    assert by_date[RUN0][11] == pytest.approx(0.32)
    assert by_date[RUN1][7:10] == (RUN1, "wape", 0.2) and by_date[RUN1][11] == 0.21
    assert by_date[RUN2][1] == "ensemble" and by_date[RUN2][7:10] == (RUN2, "rmspe", 0.4)
    assert by_date[RUN2][11] == 0.11
    assert by_date[RUN3][7:] == (None,) * 9

    info = spark.catalog.getTable(view)
    assert info.tableType == "VIEW" and info.description == FORECAST_RUNS_COMMENT
    docs = {col.name: col.description for col in spark.catalog.listColumns(view)}
    assert docs == FORECAST_RUNS_COLUMNS


@pytest.mark.slow
def test_the_forecast_job_documents_its_table_and_refreshes_the_view(spark, tiny_cfg, tiny_model):
    """The real job, recorded as ``jobs/forecast.py`` records it: the table it writes is
    documented and ``forecast_runs`` says what it published."""
    from sales_st.serving.job import run_forecast

    with recorded_run(spark, tiny_cfg.database, "forecast", None) as rec:
        out = run_forecast(spark, tiny_cfg, None)
        rec.update(out.summary)
    columns, comment = described(spark, out.table)
    assert comment == FORECASTS_COMMENT
    assert columns == forecast_comments(QUANTILES, tiny_cfg.data.region_columns)
    view = spark.table(f"{tiny_cfg.database}.{FORECAST_RUNS}")
    assertDataFrameEqual(
        view, spark.createDataFrame(expected_runs(spark, tiny_cfg.database), view.schema)
    )
    row = view.where(view.run_date == out.run_date).first()
    assert (row.method, row.model_id, row.data_through) == ("latest", out.model_id, out.run_date)
    assert (row.forecast_rows, row.series) == (out.rows, out.series)


@pytest.mark.slow
def test_forecast_runs_reports_the_published_winner_and_its_scores(
    spark, tiny_cfg, tiny_evaluation
):
    """``forecast.model: best`` after the evaluation, both recorded in the run manifest as
    their jobs record them: the view names the winner with its validation score and the test
    metrics of the ``best`` rows of the metrics table."""
    from sales_st.serving.job import run_forecast

    sel = tiny_evaluation.selection
    assert sel is not None
    run_date = tiny_evaluation.summary.run_date
    with recorded_run(spark, tiny_cfg.database, "evaluate", run_date) as rec:
        rec.update(tiny_evaluation.summary)
    cfg = dataclasses.replace(
        tiny_cfg, forecast=dataclasses.replace(tiny_cfg.forecast, model="best")
    )
    with recorded_run(spark, cfg.database, "forecast", run_date) as rec:
        out = run_forecast(spark, cfg, run_date)
        rec.update(out.summary)
    view = spark.table(f"{cfg.database}.{FORECAST_RUNS}")
    row = view.where(view.run_date == run_date).first().asDict()
    best = tiny_evaluation.overall.set_index("method").loc["best"]
    assert row == {
        "run_date": run_date,
        "method": sel["winner"],
        "model_id": out.model_id,
        "data_through": run_date,
        "last_target_date": run_date + dt.timedelta(days=tiny_cfg.features.horizon),
        "forecast_rows": out.rows,
        "series": out.series,
        "evaluated_on": run_date,
        "validation_metric": sel["metric"],
        "validation_score": pytest.approx(sel["validation"][sel["winner"]]),
        **{f"test_{m}": pytest.approx(best[m]) for m in ("wape", "rmspe", "mase", "coverage")},
        "test_n": best["n"],
        "test_pinball": pytest.approx(best["pinball"]),
    }


# ---- event logs and the history server --------------------------------------------------------


def test_sessions_write_an_event_log_into_the_configured_directory(spark, data_root):
    spark.range(5).count()
    events = data_root / "spark-events"
    assert spark.conf.get("spark.eventLog.enabled") == "true"
    assert spark.conf.get("spark.eventLog.dir") == str(events)
    app = spark.sparkContext.applicationId
    assert [p.name for p in events.iterdir() if p.name.startswith(app)] == [
        f"{app}.zstd.inprogress"
    ]


def test_event_log_directory_follows_the_config_and_is_created(tmp_path):
    props = spark_properties(make_config(tmp_path / "data"))
    assert props["spark.eventLog.dir"] == str(tmp_path / "data" / "spark-events")
    assert (tmp_path / "data" / "spark-events").is_dir()
    moved = make_config(tmp_path / "data", f"paths.spark_events={tmp_path}/elsewhere/events")
    assert spark_properties(moved)["spark.eventLog.dir"] == f"{tmp_path}/elsewhere/events"
    assert (tmp_path / "elsewhere" / "events").is_dir()
    # a property in spark.conf wins over the path, and its directory is made too
    over = make_config(
        tmp_path / "data", f'spark.conf={{"spark.eventLog.dir": "file:{tmp_path}/x"}}'
    )
    assert spark_properties(over)["spark.eventLog.dir"] == f"file:{tmp_path}/x"
    assert (tmp_path / "x").is_dir()
    off = make_config(tmp_path / "off", 'spark.conf={"spark.eventLog.enabled": "false"}')
    assert spark_properties(off)["spark.eventLog.enabled"] == "false"
    assert not (tmp_path / "off" / "spark-events").exists()


FINISHED_APP = """
import sys
from tests.conftest import make_config
from sales_st.runtime.session import get_spark
spark = get_spark(make_config(sys.argv[1]), "sales_st.history-probe")
spark.range(10).count()
print(spark.sparkContext.applicationId)
spark.stop()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["scripts/history-server.sh", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_history_server_lists_a_finished_application(tmp_path):
    app = subprocess.run(
        [sys.executable, "-c", FINISHED_APP, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert app.returncode == 0, app.stderr[-2000:]
    app_id = app.stdout.split()[-1]
    assert os.listdir(tmp_path / "spark-events") == [f"{app_id}.zstd"]  # closed: finished

    port = str(free_port())
    where = ["--port", port, f"paths.data_dir={tmp_path}"]
    started = history("start", *where)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        pid = int((tmp_path / "run" / f"history-{port}.pid").read_text())
        url = f"http://127.0.0.1:{port}/api/v1/applications"
        apps: list[dict] = []
        deadline = time.time() + 60
        while time.time() < deadline and app_id not in {a["id"] for a in apps}:
            time.sleep(1)
            with urllib.request.urlopen(url, timeout=10) as resp:
                apps = json.load(resp)
        listed = {a["id"]: a for a in apps}
        assert app_id in listed, f"{app_id} not listed in 60 s: {apps}"
        assert listed[app_id]["name"] == "sales_st.history-probe"
        assert [a["completed"] for a in listed[app_id]["attempts"]] == [True]
        status = history("status", *where)
        assert status.returncode == 0 and f"pid {pid}" in status.stdout
    finally:
        stopped = history("stop", *where)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    after = history("status", *where)
    assert after.returncode == 3 and "not running" in after.stdout


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["start", "--port", "1", "bogus.key=1"], 2, "unknown config key 'bogus'"),
        (["restart"], 2, "usage:"),
        (["status", "--port", "1"], 3, "not running"),
    ],
)
def test_history_server_script_fails_in_one_line_and_starts_nothing(tmp_path, args, code, says):
    proc = history(*args, f"paths.data_dir={tmp_path}")
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == code and len(out) == 1 and says in out[0], out
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.pid"))


def test_phase_names_the_jobs_of_its_block_and_restores_the_name_it_found(spark):
    from sales_st.frames import phase

    sc = spark.sparkContext
    key = "spark.job.description"
    assert sc.getLocalProperty(key) is None
    with phase(spark, "features: example windows"):
        assert sc.getLocalProperty(key) == "features: example windows"
        with phase(spark, "inner"):
            assert spark.range(10).count() == 10
            assert sc.getLocalProperty(key) == "inner"
        assert sc.getLocalProperty(key) == "features: example windows"
    assert sc.getLocalProperty(key) is None
    with pytest.raises(RuntimeError, match="a failing step"), phase(spark, "failing"):
        raise RuntimeError("a failing step")
    assert sc.getLocalProperty(key) is None
