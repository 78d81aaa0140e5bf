"""Storage: atomic Parquet writes, paths on any Hadoop file system, small JSON artifacts.

Writes never leave half-written output visible: a dataset is a directory of versions and a
pointer file naming the committed one, replaced by one atomic rename, so a reader sees the
old version, or the complete new one.  Small JSON
artifacts (feature spec, manifests, lineage) go through fsspec so that Horovod workers and
Python UDFs on executors read them with the same code as the driver.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from typing import Any

import fsspec
from pyspark.sql import DataFrame, SparkSession

from sales_st.errors import MissingInputError

log = logging.getLogger(__name__)


def as_url(path: str) -> str:
    """A local path as a file:// URL; a URL as it is."""
    return path if "://" in path else f"file://{path}"


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


POINTER = "_CURRENT"
VERSION_PREFIX = "v-"
STAGING_PREFIX = ".spark-staging-"
STALE_SECONDS = 3600  # staging left this long by a writer is a killed writer's


def _children(spark: SparkSession, path: str) -> list[Any]:
    fs, p = _jpath(spark, path)
    return list(fs.listStatus(p)) if fs.exists(p) else []


def current_version(spark: SparkSession, path: str) -> str:
    """The committed version of a dataset written by :func:`write_parquet_atomic` (the path
    itself for a dataset written otherwise)."""
    base = path.rstrip("/")
    pointer = f"{base}/{POINTER}"
    if json_exists(pointer):
        return f"{base}/{read_json(pointer)['version']}"
    if not path_exists(spark, base):
        raise MissingInputError(f"no dataset at {base}")
    return base


def write_parquet_atomic(
    df: DataFrame,
    path: str,
    partition_by: list[str] | None = None,
    max_records_per_file: int | None = None,
) -> str:
    """Write ``df`` as a new version of the dataset at ``path``; returns the version's path.

    The version is written to ``<path>/v-<time>-<token>`` and committed by replacing the
    pointer file ``<path>/_CURRENT`` (one atomic rename): a reader resolving the pointer
    (:func:`current_version`) sees the previous version or the complete new one, never a
    half-written or missing directory, whenever the writer is killed.  Older versions --
    including uncommitted ones of killed writers -- are removed after the commit."""
    spark = df.sparkSession
    base = path.rstrip("/")
    if path_exists(spark, base) and not json_exists(f"{base}/{POINTER}"):
        delete_path(spark, base)  # a dataset of the earlier, unversioned layout
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    version = f"{VERSION_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}"
    target = f"{base}/{version}"
    writer = df.write.mode("error")
    if max_records_per_file:
        writer = writer.option("maxRecordsPerFile", max_records_per_file)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(target)
    except Exception:
        delete_path(spark, target)
        raise
    write_json(f"{base}/{POINTER}", {"version": version})
    for status in _children(spark, base):
        name = status.getPath().getName()
        if name.startswith(VERSION_PREFIX) and name != version:
            delete_path(spark, f"{base}/{name}")
    log.debug("wrote %s", target)  # the jobs say what they wrote; this is the file detail
    return target


def clean_stale_staging(
    spark: SparkSession, directory: str, max_age_s: float = STALE_SECONDS
) -> int:
    """Delete Spark's ``.spark-staging-*`` directories under a table directory that are older
    than ``max_age_s`` (left by killed writers; younger ones may belong to a running job)."""
    now_ms = time.time() * 1000
    removed = 0
    for status in _children(spark, directory):
        name = status.getPath().getName()
        if (
            name.startswith(STAGING_PREFIX)
            and now_ms - status.getModificationTime() > max_age_s * 1000
        ):
            delete_path(spark, f"{directory.rstrip('/')}/{name}")
            removed += 1
    if removed:
        log.info(
            "removed %d stale staging director%s under %s",
            removed,
            "y" if removed == 1 else "ies",
            directory,
        )
    return removed


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


def remove_file(path: str) -> None:
    """Delete a file if it exists (any fsspec URL)."""
    fs, fpath = fsspec.core.url_to_fs(path)
    if fs.exists(fpath):
        fs.rm(fpath)


def remove_tree(path: str) -> bool:
    """Delete a directory and everything under it, if it exists (any fsspec URL); whether
    there was one."""
    fs, fpath = fsspec.core.url_to_fs(path)
    if not fs.exists(fpath):
        return False
    fs.rm(fpath, recursive=True)
    return True


def json_exists(path: str) -> bool:
    fs, fpath = fsspec.core.url_to_fs(path)
    return fs.exists(fpath)
