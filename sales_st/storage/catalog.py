"""Catalog tables: create them self-described, replace one partition atomically, the run
manifest, the quarantine.

Partition replacement uses Spark's dynamic partition overwrite, which it switches on for the
write itself: the new files are written to a staging directory and moved into place only
when every task has succeeded, so a run killed mid-write leaves the earlier partition
readable, and re-running a run date replaces exactly that partition and nothing else.

Every table carries a table comment and a comment on each column saying what it holds and in
which unit, so that ``DESCRIBE TABLE EXTENDED`` (and any SQL client) documents it; the comments
live beside each table's DDL and :func:`ensure_table` brings tables made by older versions up
to date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.frames import one_row
from sales_st.storage.files import clean_stale_staging

log = logging.getLogger(__name__)

# The run manifest: one row per run, in a partition of its own (run_id), written "running"
# when a job starts and replaced by its closing row -- succeeded, failed (with the cause in
# one line) or abandoned.  A partition per run lets concurrent jobs write without sharing a
# staging directory (each partition replacement stages under its own job id).
MANIFEST_DDL = """
    job STRING, run_date DATE, status STRING,
    started_at TIMESTAMP, finished_at TIMESTAMP, seconds DOUBLE,
    rows_in BIGINT, rows_out BIGINT, rows_quarantined BIGINT,
    model_id STRING, details STRING, error STRING, host STRING, pid BIGINT, run_id STRING
"""
MANIFEST_PARTITION = "run_id"
MANIFEST_COMMENT = (
    "Run manifest of the sales_st jobs: one row per job run (one partition per run_id), "
    "written 'running' when the job starts and replaced by its closing row."
)
MANIFEST_COLUMNS = {
    "job": "job name: generate, features, train, tune, evaluate, forecast or pipeline",
    "run_date": "run date the job ran for: the last day with observed sales (date; null "
    "when the job has none)",
    "status": "running, succeeded, failed, or abandoned (its process ended without closing it)",
    "started_at": "when the job started (timestamp, UTC)",
    "finished_at": "when the job ended (timestamp, UTC; null while running)",
    "seconds": "wall-clock duration of the job (seconds; null while running)",
    "rows_in": "size of the job's input, as the job counts it: sales rows, test windows or "
    "series (count)",
    "rows_out": "rows the job wrote, e.g. forecast rows (count)",
    "rows_quarantined": "input rows set aside by validation, see the quarantine table (count)",
    "model_id": "model-store id the job trained, evaluated or published",
    "details": "job-specific details, e.g. the published method or the model selection (JSON)",
    "error": "cause of a failed or abandoned run, in one line (null otherwise)",
    "host": "host name of the job's driver",
    "pid": "process id of the job's driver on that host",
    "run_id": "id of the run (12 hex digits); partition column",
}
RUNNING, SUCCEEDED, FAILED, ABANDONED = "running", "succeeded", "failed", "abandoned"
QUARANTINE_DDL = """
    table_name STRING, rule STRING, detail STRING, row_json STRING, run_id STRING,
    job STRING, run_date DATE
"""
QUARANTINE_COMMENT = (
    "Input rows that validation set aside instead of failing the run, one partition per "
    "run date; each row says which rule it broke."
)
QUARANTINE_COLUMNS = {
    "table_name": "input table the row came from: sales, stores, items or events",
    "rule": "validation rule the row broke (the first, in order of precedence)",
    "detail": "what was wrong with the row, in words",
    "row_json": "the rejected row as read, all its columns (JSON)",
    "run_id": "run that set the row aside (run_manifest.run_id)",
    "job": "job that set the row aside",
    "run_date": "run date of that run (date); partition column",
}


def sql_string(text: str) -> str:
    """``text`` as a Spark SQL string literal (backslashes and single quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ensure_table(
    spark: SparkSession,
    name: str,
    ddl: str,
    partitioned_by: list[str],
    comment: str = "",
    column_comments: Mapping[str, str] | None = None,
) -> None:
    """Create the table with its comments, or bring an older version of it up to date.

    ``comment`` is the table's comment and ``column_comments`` maps a column to what it holds
    and its unit.  An existing table gets the columns of ``ddl`` it lacks, then every comment
    that differs (unchanged ones are not touched, so a second call alters nothing).  Spark 3.5
    cannot change the comment of an existing table's partition column (ALTER COLUMN knows
    only data columns): such a table keeps the partition column as it was created.
    """
    docs = dict(column_comments or {})
    wanted = spark.createDataFrame([], ddl).schema
    part = f"PARTITIONED BY ({', '.join(partitioned_by)})" if partitioned_by else ""
    about = f"COMMENT {sql_string(comment)}" if comment else ""
    if not spark.catalog.tableExists(name):
        cols = ", ".join(_column_sql(f.name, f.dataType.simpleString(), docs) for f in wanted)
        try:
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} ({cols}) USING parquet {about} {part}")
        except Exception:
            # another job (on a shared metastore) created it in the same instant
            if not spark.catalog.tableExists(name):
                raise
        return
    have = {c.name: c for c in spark.catalog.listColumns(name)}
    missing = [f for f in wanted.fields if f.name not in have]
    if missing:
        cols = ", ".join(_column_sql(f.name, f.dataType.simpleString(), docs) for f in missing)
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({cols})")
    for col, text in docs.items():
        c = have.get(col)
        if c is None or c.isPartition or (c.description or "") == text:
            continue
        spark.sql(f"ALTER TABLE {name} ALTER COLUMN {col} COMMENT {sql_string(text)}")
    if comment and (spark.catalog.getTable(name).description or "") != comment:
        spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('comment' = {sql_string(comment)})")


def _column_sql(name: str, type_sql: str, docs: Mapping[str, str]) -> str:
    text = docs.get(name)
    return f"{name} {type_sql}" + (f" COMMENT {sql_string(text)}" if text else "")


FAIL_WRITE_ENV = "SALES_ST_FAIL_WRITE_AFTER_ROWS"  # fault injection for the write tests


def _failing_after(rows: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Pass rows through, then fail the write task once ``rows`` have gone to its files."""

    def write(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        done = 0
        for pdf in batches:
            yield pdf
            done += len(pdf)
            if done >= rows:
                raise RuntimeError(f"injected failure after writing {done} rows")

    return write


def replace_partition(df: DataFrame, table: str, partition: dict[str, Any]) -> None:
    """Make the rows of ``df`` the whole content of ``partition`` (e.g. {"run_date": d}).

    ``df`` must have the table's columns; its rows must all belong to ``partition``.  An empty
    ``df`` drops the partition, so a re-run that produces nothing leaves nothing stale.  A
    write that fails part-way leaves the previous partition as it was (``FAIL_WRITE_ENV``
    injects such a failure, for the tests).
    """
    spark = df.sparkSession
    clean_stale_staging(spark, table_location(spark, table))
    columns = spark.table(table).columns
    ordered = df.select(*columns)
    spec = ", ".join(f"{k} = '{v}'" for k, v in partition.items())
    # Computed once: the emptiness test and the write read the same checkpointed rows (a
    # lazy plan -- a model scoring, a simulation -- would otherwise run twice, or more for
    # take(1)).  A local checkpoint, not persist(): it also cuts the lineage, so the write
    # plans a scan of the rows, not the whole plan again, and no cache entry is left for
    # later queries to match their plans against.  (Its blocks live on the executors until
    # the DataFrame is collected; losing an executor before the write fails the job.)
    ordered = ordered.localCheckpoint(eager=True)
    if ordered.count() == 0:
        spark.sql(f"ALTER TABLE {table} DROP IF EXISTS PARTITION ({spec})")
        return
    # Static overwrite would delete the partition before writing; dynamic overwrite stages
    # the files and swaps them in at commit.  Set here, not left to whoever built the session.
    key = "spark.sql.sources.partitionOverwriteMode"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "dynamic")
    fail_after = int(os.environ.get(FAIL_WRITE_ENV, "0") or 0)
    out = (
        ordered.mapInPandas(_failing_after(fail_after), ordered.schema)  # type: ignore[arg-type]
        if fail_after
        else ordered
    )
    try:
        out.write.insertInto(table, overwrite=True)
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
    spark.sql(f"REFRESH TABLE {table}")


def table_location(spark: SparkSession, table: str) -> str:
    row = one_row(spark.sql(f"DESCRIBE FORMATTED {table}").where("col_name = 'Location'"))
    return str(row["data_type"])


@dataclass
class RunSummary:
    """What a job reports about its run to the run manifest."""

    run_date: dt.date | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    rows_quarantined: int | None = None
    model_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    job: str
    run_date: dt.date | None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    rows_in: int | None = None
    rows_out: int | None = None
    rows_quarantined: int | None = None
    model_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def update(self, summary: RunSummary) -> None:
        """Take the counts a job reported (fields it left unset keep their value)."""
        for name in ("run_date", "rows_in", "rows_out", "rows_quarantined", "model_id"):
            value = getattr(summary, name)
            if value is not None:
                setattr(self, name, value)
        self.details.update(summary.details)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def one_line(exc: BaseException) -> str:
    """The cause of a failure as one line (the first line of the message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:1000]


@contextmanager
def recorded_run(
    spark: SparkSession, database: str, job: str, run_date: dt.date | None
) -> Iterator[RunRecord]:
    """Record the job in ``<database>.run_manifest``: a ``running`` row now, and a closing
    row -- succeeded, or failed with its cause in one line -- when the block ends.

    Runs of this host still ``running`` whose process is gone (killed) are first closed as
    ``abandoned``."""
    mark_abandoned(spark, database)
    rec = RunRecord(job=job, run_date=run_date)
    started = _now()
    t0 = time.perf_counter()
    append_manifest(spark, database, rec, RUNNING, started, None, None)
    error = None
    try:
        yield rec
    except BaseException as exc:
        error = one_line(exc)
        raise
    finally:
        status = SUCCEEDED if error is None else FAILED
        try:
            append_manifest(spark, database, rec, status, started, time.perf_counter() - t0, error)
        except Exception:  # never hide the job's own error behind a bookkeeping one
            log.exception("could not write the run manifest for %s", job)


def ensure_manifest(spark: SparkSession, database: str) -> str:
    """The run-manifest table (an unpartitioned one from an earlier version is renamed
    ``run_manifest_legacy`` and kept)."""
    table = f"{database}.run_manifest"
    if spark.catalog.tableExists(table):
        parts = [c.name for c in spark.catalog.listColumns(table) if c.isPartition]
        if parts != [MANIFEST_PARTITION]:
            spark.sql(f"ALTER TABLE {table} RENAME TO {database}.run_manifest_legacy")
            log.warning(
                "run manifest: the earlier unpartitioned table was renamed %s.run_manifest_legacy",
                database,
            )
    ensure_table(
        spark, table, MANIFEST_DDL, [MANIFEST_PARTITION], MANIFEST_COMMENT, MANIFEST_COLUMNS
    )
    return table


def append_manifest(
    spark: SparkSession,
    database: str,
    rec: RunRecord,
    status: str,
    started: dt.datetime,
    seconds: float | None,
    error: str | None,
) -> None:
    """Write the run's row (replacing the run's earlier row, if any)."""
    table = ensure_manifest(spark, database)
    row = (
        rec.job,
        rec.run_date,
        status,
        started,
        None if status == RUNNING else _now(),
        None if seconds is None else float(seconds),
        rec.rows_in,
        rec.rows_out,
        rec.rows_quarantined,
        rec.model_id,
        details_json(rec.details),
        error,
        socket.gethostname(),
        os.getpid(),
        rec.run_id,
    )
    replace_partition(
        spark.createDataFrame([row], MANIFEST_DDL), table, {MANIFEST_PARTITION: rec.run_id}
    )
    if status != RUNNING:
        log.info(
            "run manifest: %s %s %s in %.1fs (run_id %s)",
            rec.job,
            rec.run_date,
            status,
            seconds or 0.0,
            rec.run_id,
        )


def details_json(details: dict[str, Any]) -> str:
    """The manifest's ``details`` as JSON every reader accepts (Spark's get_json_object and
    most SQL engines reject NaN): NaN and infinities -- pandas' missing values -- as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(details), default=str, sort_keys=True)


def mark_abandoned(spark: SparkSession, database: str) -> list[str]:
    """Close, as ``abandoned``, this host's runs still ``running`` whose process has ended."""
    import psutil

    table = f"{database}.run_manifest"
    if not spark.catalog.tableExists(table):
        return []
    host = socket.gethostname()
    # a job killed between moving its row's files and registering the partition leaves a
    # partition only the file system knows: register those first
    table = ensure_manifest(spark, database)
    spark.sql(f"ALTER TABLE {table} RECOVER PARTITIONS")
    open_runs = (
        spark.table(table)
        .where((F.col("status") == RUNNING) & (F.col("host") == host))
        .collect()  # open runs of this host: a handful
    )
    closed = []
    for r in open_runs:
        if r["pid"] is not None and psutil.pid_exists(int(r["pid"])):
            continue  # still running (possibly in this very process)
        rec = RunRecord(job=r["job"], run_date=r["run_date"], run_id=r["run_id"])
        append_manifest(
            spark,
            database,
            rec,
            ABANDONED,
            r["started_at"],
            None,
            f"process {r['pid']} on {host} ended without closing the run (killed?)",
        )
        closed.append(r["run_id"])
    if closed:
        log.warning(
            "run manifest: %d earlier run(s) found running with no process, marked abandoned: %s",
            len(closed),
            ", ".join(closed),
        )
    return closed


def write_quarantine(
    quarantined: DataFrame, database: str, job: str, run_id: str, run_date: dt.date
) -> None:
    table = f"{database}.quarantine"
    ensure_table(
        quarantined.sparkSession,
        table,
        QUARANTINE_DDL,
        ["run_date"],
        QUARANTINE_COMMENT,
        QUARANTINE_COLUMNS,
    )
    rows = quarantined.select(
        "table_name",
        "rule",
        "detail",
        "row_json",
        F.lit(run_id).alias("run_id"),
        F.lit(job).alias("job"),
        F.lit(run_date).cast("date").alias("run_date"),
    )
    replace_partition(rows, table, {"run_date": run_date})
