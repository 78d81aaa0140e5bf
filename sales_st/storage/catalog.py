"""Catalog tables: replace one run-date partition atomically, append the run manifest.

Partition replacement uses Spark's dynamic partition overwrite, which it switches on for the
write itself: the new files are written to a staging directory and moved into place only
when every task has succeeded, so a run killed mid-write leaves the earlier partition
readable, and re-running a run date replaces exactly that partition and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

MANIFEST_DDL = """
    run_id STRING, job STRING, run_date DATE, status STRING,
    started_at TIMESTAMP, finished_at TIMESTAMP, seconds DOUBLE,
    rows_in BIGINT, rows_out BIGINT, rows_quarantined BIGINT,
    model_id STRING, details STRING, error STRING
"""
QUARANTINE_DDL = """
    table_name STRING, rule STRING, detail STRING, row_json STRING, run_id STRING,
    job STRING, run_date DATE
"""


def ensure_table(spark: SparkSession, name: str, ddl: str, partitioned_by: list[str]) -> None:
    part = f"PARTITIONED BY ({', '.join(partitioned_by)})" if partitioned_by else ""
    spark.sql(f"CREATE TABLE IF NOT EXISTS {name} ({ddl}) USING parquet {part}")


def replace_partition(df: DataFrame, table: str, partition: dict[str, Any]) -> None:
    """Make the rows of ``df`` the whole content of ``partition`` (e.g. {"run_date": d}).

    ``df`` must have the table's columns; its rows must all belong to ``partition``.  An empty
    ``df`` drops the partition, so a re-run that produces nothing leaves nothing stale.
    """
    spark = df.sparkSession
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


@contextmanager
def recorded_run(
    spark: SparkSession, database: str, job: str, run_date: dt.date | None
) -> Iterator[RunRecord]:
    """Record the job in ``<database>.run_manifest`` as succeeded or failed, with timings."""
    rec = RunRecord(job=job, run_date=run_date)
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    error = None
    try:
        yield rec
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        status = "succeeded" if error is None else "failed"
        try:
            append_manifest(spark, database, rec, status, started, time.perf_counter() - t0, error)
        except Exception:  # never hide the job's own error behind a bookkeeping one
            log.exception("could not write the run manifest for %s", job)


def append_manifest(
    spark: SparkSession,
    database: str,
    rec: RunRecord,
    status: str,
    started: dt.datetime,
    seconds: float,
    error: str | None,
) -> None:
    table = f"{database}.run_manifest"
    ensure_table(spark, table, MANIFEST_DDL, [])
    finished = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    row = (
        rec.run_id,
        rec.job,
        rec.run_date,
        status,
        started,
        finished,
        float(seconds),
        rec.rows_in,
        rec.rows_out,
        rec.rows_quarantined,
        rec.model_id,
        json.dumps(rec.details, default=str, sort_keys=True),
        error,
    )
    spark.createDataFrame([row], MANIFEST_DDL).write.insertInto(table)
    log.info(
        "run manifest: %s %s %s in %.1fs (run_id %s)",
        rec.job,
        rec.run_date,
        status,
        seconds,
        rec.run_id,
    )


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
