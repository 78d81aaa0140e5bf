"""Catalog tables: replace one partition atomically, the run manifest, the quarantine.

Partition replacement uses Spark's dynamic partition overwrite, which it switches on for the
write itself: the new files are written to a staging directory and moved into place only
when every task has succeeded, so a run killed mid-write leaves the earlier partition
readable, and re-running a run date replaces exactly that partition and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
RUNNING, SUCCEEDED, FAILED, ABANDONED = "running", "succeeded", "failed", "abandoned"
QUARANTINE_DDL = """
    table_name STRING, rule STRING, detail STRING, row_json STRING, run_id STRING,
    job STRING, run_date DATE
"""


def ensure_table(spark: SparkSession, name: str, ddl: str, partitioned_by: list[str]) -> None:
    """Create the table, or add the columns of ``ddl`` that an older version of it lacks."""
    part = f"PARTITIONED BY ({', '.join(partitioned_by)})" if partitioned_by else ""
    if not spark.catalog.tableExists(name):
        try:
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} ({ddl}) USING parquet {part}")
        except Exception:
            # another job (on a shared metastore) created it in the same instant
            if not spark.catalog.tableExists(name):
                raise
        return
    have = set(spark.table(name).columns)
    wanted = spark.createDataFrame([], ddl).schema
    missing = [f for f in wanted.fields if f.name not in have]
    if missing:
        cols = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({cols})")


def replace_partition(df: DataFrame, table: str, partition: dict[str, Any]) -> None:
    """Make the rows of ``df`` the whole content of ``partition`` (e.g. {"run_date": d}).

    ``df`` must have the table's columns; its rows must all belong to ``partition``.  An empty
    ``df`` drops the partition, so a re-run that produces nothing leaves nothing stale.
    """
    spark = df.sparkSession
    clean_stale_staging(spark, table_location(spark, table))
    columns = spark.table(table).columns
    ordered = df.select(*columns)
    spec = ", ".join(f"{k} = '{v}'" for k, v in partition.items())
    if not ordered.take(1):
        spark.sql(f"ALTER TABLE {table} DROP IF EXISTS PARTITION ({spec})")
        return
    # Static overwrite would delete the partition before writing; dynamic overwrite stages the
    # files and swaps them in at commit.  Set here, not left to whoever built the session.
    key = "spark.sql.sources.partitionOverwriteMode"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "dynamic")
    try:
        ordered.write.insertInto(table, overwrite=True)
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
    ensure_table(spark, table, MANIFEST_DDL, [MANIFEST_PARTITION])
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
        json.dumps(rec.details, default=str, sort_keys=True),
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
    ensure_table(quarantined.sparkSession, table, QUARANTINE_DDL, ["run_date"])
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
