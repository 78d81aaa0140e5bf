"""Inputs in contract form: generated Parquet, or any Parquet/CSV dataset through a mapping.

A new dataset needs a config overlay, not code: for each contract table,
``data.<table>`` names the file, its format, the contract <- source column mapping (a column
name, or a Spark SQL expression over source columns),
constants for columns the source lacks, value recodings, an optional second table joined on
a key, and optionally how to melt flag columns into calendar events.  See
``conf/rossmann.yaml`` for a full example.
"""

from __future__ import annotations

import logging
import os
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config, TableSource
from sales_st.data.contract import TABLES, ContractError, conform
from sales_st.errors import MissingInputError
from sales_st.storage.files import path_exists

log = logging.getLogger(__name__)

INPUT_TABLES = ("sales", "stores", "items", "events")


def load_inputs(spark: SparkSession, cfg: Config) -> dict[str, DataFrame]:
    """Contract DataFrames for the configured dataset (not yet validated)."""
    regions = cfg.data.region_columns
    if cfg.data.source == "generated":
        base = cfg.path("inputs")
        return {t: read_contract_table(spark, f"{base}/{t}", t, regions if t == "stores" else None)
                for t in INPUT_TABLES}
    tables = {}
    for name in INPUT_TABLES:
        src: TableSource = getattr(cfg.data, name)
        if not src.path:
            if name in ("sales", "stores"):
                raise ContractError(f"data.{name}.path is required for data.source=tables")
            tables[name] = spark.createDataFrame([], TABLES[name].spark_schema)
            continue
        tables[name] = map_table(spark, src, name, base_dir=cfg.root,
                                 region_columns=regions if name == "stores" else [])
    tables["events"] = distinct_events(tables["events"])
    if cfg.data.centroids:
        tables["stores"] = with_centroids(spark, tables["stores"], cfg)
    return tables


def read_contract_table(spark: SparkSession, path: str, table: str,
                        region_columns: list[str] | None = None) -> DataFrame:
    """Read a Parquet dataset and conform it to the contract table ``table``."""
    if not path_exists(spark, path):
        raise MissingInputError(f"input table '{table}' not found at {path}")
    return conform(spark.read.parquet(path), TABLES[table], source=path,
                   region_columns=region_columns or [])


def _read(spark: SparkSession, path: str, fmt: str, options: dict[str, str]) -> DataFrame:
    if not os.path.exists(path) and "://" not in path:
        raise MissingInputError(f"input file not found: {path}")
    reader = spark.read.options(**options)
    if fmt == "csv":
        return reader.option("header", "true").option("inferSchema", "true").csv(path)
    return reader.parquet(path)


def resolve_input(path: str, base_dir: str) -> str:
    return path if ("://" in path or os.path.isabs(path)) else os.path.normpath(
        os.path.join(base_dir, path)
    )


def map_table(spark: SparkSession, src: TableSource, table: str, base_dir: str,
              region_columns: list[str] | None = None) -> DataFrame:
    """Read ``src`` and map it into the contract table ``table``."""
    path = resolve_input(src.path, base_dir)
    df = _read(spark, path, src.format, src.options)
    if src.join_path:
        other = _read(spark, resolve_input(src.join_path, base_dir), src.join_format, {})
        df = df.join(other, src.join_on, "left")
    missing = sorted({c for c in src.columns.values() if not _is_expr(c) and c not in df.columns} | {
        c for c in src.events_from_flags.values() if c not in df.columns
    })
    if missing:
        raise ContractError(
            f"data.{table}: source columns {missing} not found in {path} "
            f"(columns there: {', '.join(df.columns)})"
        )
    if src.events_from_flags:
        df = _melt_events(df, src)
    cols = []
    for contract_col, source_col in src.columns.items():
        c = F.expr(source_col) if _is_expr(source_col) else F.col(source_col)
        if contract_col in src.values:
            mapping = src.values[contract_col]
            expr = None
            for k, v in mapping.items():
                cond = c.cast("string") == str(k)
                expr = F.when(cond, F.lit(v)) if expr is None else expr.when(cond, F.lit(v))
            c = expr.otherwise(c) if expr is not None else c
            contract = TABLES[table]
            if contract_col in contract.names:
                c = c.cast(contract.column(contract_col).dtype)
        cols.append(c.alias(contract_col))
    for contract_col, value in src.constants.items():
        cols.append(F.lit(value).alias(contract_col))
    if src.events_from_flags:
        cols.append(F.col("event_type"))
    out = df.select(*cols)
    if src.keep_if:
        out = out.where(F.expr(src.keep_if))
    return conform(out, TABLES[table], source=path, region_columns=region_columns or [])


def _is_expr(source: str) -> bool:
    """A mapping value that is a SQL expression rather than a column name."""
    return not source.replace("_", "").replace(" ", "x").isalnum()


def _melt_events(df: DataFrame, src: TableSource) -> DataFrame:
    """Wide flag columns (one per event type) -> one row per (row, event type) set."""
    parts = []
    for event_type, flag in src.events_from_flags.items():
        flag_col = F.col(flag).cast("string")
        hit = flag_col.isNotNull() & ~flag_col.isin("0", "", "false", "False")
        parts.append(df.where(hit).withColumn("event_type", F.lit(event_type)))
    return reduce(DataFrame.unionByName, parts)


def with_centroids(spark: SparkSession, stores: DataFrame, cfg: Config) -> DataFrame:
    """Fill missing store coordinates from region centroids (e.g. Rossmann state centroids)."""
    level = cfg.data.centroid_level
    rows = [(k, float(v[0]), float(v[1])) for k, v in cfg.data.centroids.items()]
    cent = spark.createDataFrame(rows, f"{level} string, c_lat double, c_lon double")
    return (
        stores.join(F.broadcast(cent), level, "left")
        .withColumn("latitude", F.coalesce("latitude", "c_lat"))
        .withColumn("longitude", F.coalesce("longitude", "c_lon"))
        .select(*stores.columns)
    )


def distinct_events(events: DataFrame) -> DataFrame:
    """Calendar events deduplicated by their key (melted per-store sources repeat them)."""
    return events.dropDuplicates(["date", "scope", "event_type"])
