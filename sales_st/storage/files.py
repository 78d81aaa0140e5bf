"""Storage: atomic Parquet writes, paths on any Hadoop file system, small JSON artifacts.

Writes never leave half-written output visible: a dataset is written to a hidden sibling
directory and swapped in by renames through the Hadoop FileSystem API (atomic on local
disks and HDFS), so a reader sees the old dataset, or the complete new one.  Small JSON
artifacts (feature spec, manifests, lineage) go through fsspec so that Horovod workers and
Python UDFs on executors read them with the same code as the driver.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import fsspec
from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def _jpath(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm: Any = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    fs = p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, p


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, p = _jpath(spark, path)
    return bool(fs.exists(p))


def delete_path(spark: SparkSession, path: str) -> None:
    fs, p = _jpath(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def _rename(spark: SparkSession, src: str, dst: str) -> None:
    fs, s = _jpath(spark, src)
    _, d = _jpath(spark, dst)
    parent = d.getParent()
    if parent is not None and not fs.exists(parent):
        fs.mkdirs(parent)
    if not fs.rename(s, d):
        raise OSError(f"could not rename {src} to {dst}")


def write_parquet_atomic(
    df: DataFrame,
    path: str,
    partition_by: list[str] | None = None,
    max_records_per_file: int | None = None,
) -> None:
    """Write ``df`` as Parquet at ``path``, replacing what was there only once complete."""
    spark = df.sparkSession
    token = uuid.uuid4().hex[:12]
    base = path.rstrip("/")
    staging = f"{base}.__staging_{token}"
    retired = f"{base}.__retired_{token}"
    writer = df.write.mode("overwrite")
    if max_records_per_file:
        writer = writer.option("maxRecordsPerFile", max_records_per_file)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(staging)
    except Exception:
        delete_path(spark, staging)
        raise
    had_old = path_exists(spark, base)
    if had_old:
        _rename(spark, base, retired)
    try:
        _rename(spark, staging, base)
    except Exception:
        if had_old:
            _rename(spark, retired, base)
        raise
    if had_old:
        delete_path(spark, retired)
    log.info("wrote %s", base)


# ---- small JSON artifacts ------------------------------------------------------------


def write_json(path: str, obj: Any) -> None:
    """Write a small JSON document atomically (temp file + rename where supported)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    fs, fpath = fsspec.core.url_to_fs(path)
    parent = fpath.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{fpath.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(tmp, "w") as fh:
        fh.write(text)
    fs.mv(tmp, fpath)


def read_json(path: str) -> Any:
    with fsspec.open(path, "r") as fh:
        return json.load(fh)


def json_exists(path: str) -> bool:
    fs, fpath = fsspec.core.url_to_fs(path)
    return fs.exists(fpath)
