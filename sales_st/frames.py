"""Small typed helpers over Spark DataFrames, shared by every stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import pandas as pd
from pyspark.sql import DataFrame, Row, SparkSession


def one_row(df: DataFrame) -> Row:
    """The first row of an aggregate (which always has one)."""
    row = df.first()
    if row is None:
        raise RuntimeError("an aggregate returned no row")
    return row


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """``df.toPandas()`` typed as a pandas DataFrame; for small results only."""
    return cast(pd.DataFrame, df.toPandas())


@contextmanager
def phase(spark: SparkSession, what: str) -> Iterator[None]:
    """Name the Spark jobs run inside the block ``what`` (their description in the Spark UI,
    the history server and the event log), so that a profile reads "features: example
    windows" rather than "parquet at NativeMethodAccessorImpl.java:0"; the name the block
    found is restored after it."""
    sc = spark.sparkContext
    before = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(what)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.job.description", before)  # type: ignore[arg-type]


def checkpointed(df: DataFrame) -> DataFrame:
    """``df`` computed now and held on the executors, as a DataFrame whose plan is a scan of
    those rows: later queries on it are planned against that scan, not against ``df``'s
    whole lineage.  (``persist`` keeps the lineage: every later transformation is analysed
    over the whole plan again, which on a plan of many joined inputs costs seconds per
    step.)  Free it with :func:`release`; until then its blocks stay on the executors, and
    losing an executor fails the queries that read them."""
    return df.localCheckpoint(eager=True)


def release(df: DataFrame) -> None:
    """Free what ``df`` holds on the executors: its cache, or its :func:`checkpointed` rows."""
    df.unpersist()
    plan = df._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        plan.rdd().unpersist(False)
