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

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_st.config import Config, TableSource
from sales_st.data.contract import FILTERED, MALFORMED, TABLES, ContractError, conform
from sales_st.errors import ConfigError, MissingInputError
from sales_st.storage.files import current_version, path_exists

log = logging.getLogger(__name__)

INPUT_TABLES = ("sales", "stores", "items", "events")


def load_inputs(spark: SparkSession, cfg: Config) -> dict[str, DataFrame]:
    """Contract DataFrames for the configured dataset (not yet validated)."""
    levels = {"stores": cfg.data.region_columns, "items": cfg.data.item_columns}
    if cfg.data.source == "generated":
        base = cfg.path("inputs")
        return {
            t: read_contract_table(spark, f"{base}/{t}", t, levels.get(t)) for t in INPUT_TABLES
        }
    tables = {}
    for name in INPUT_TABLES:
        src: TableSource = getattr(cfg.data, name)
        if not src.path:
            if name in ("sales", "stores"):
                raise ContractError(f"data.{name}.path is required for data.source=tables")
            if name == "items" and cfg.data.item_columns:
                raise ContractError(
                    "data.item_hierarchy names items columns "
                    f"({', '.join(cfg.data.item_columns)}) but data.items.path is not set: "
                    "map the dataset's items table"
                )
            tables[name] = spark.createDataFrame([], TABLES[name].spark_schema)
            continue
        tables[name] = map_table(
            spark, src, name, base_dir=cfg.root, region_columns=levels.get(name, [])
        )
    tables["events"] = distinct_events(tables["events"])
    if cfg.data.centroids:
        tables["stores"] = with_centroids(spark, tables["stores"], cfg)
    return tables


def load_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    """One contract table of the configured dataset outside the feature job's inputs (e.g.
    ``inventory``): the generated one, or ``data.<name>`` mapped like the others."""
    if cfg.data.source == "generated":
        return read_contract_table(spark, f"{cfg.path('inputs')}/{name}", name)
    src: TableSource = getattr(cfg.data, name)
    if not src.path:
        raise MissingInputError(
            f"data.{name}.path is not set: map the dataset's {name} table in the overlay"
        )
    return map_table(spark, src, name, base_dir=cfg.root)


def read_contract_table(
    spark: SparkSession, path: str, table: str, region_columns: list[str] | None = None
) -> DataFrame:
    """Read a Parquet dataset and conform it to the contract table ``table``."""
    if not path_exists(spark, path):
        raise MissingInputError(f"input table '{table}' not found at {path}")
    return conform(
        spark.read.parquet(current_version(spark, path)),
        TABLES[table],
        source=path,
        region_columns=region_columns or [],
    )


CORRUPT = "_corrupt_record"


def _read(spark: SparkSession, path: str, fmt: str, options: dict[str, str]) -> DataFrame:
    """Read a source file.  CSV is read as text with the header's columns -- never inferred,
    so ids like ``001`` stay strings -- and lines whose field count does not match the header
    keep their raw text in ``_corrupt_record``."""
    if not os.path.exists(path) and "://" not in path:
        raise MissingInputError(f"input file not found: {path}")
    reader = spark.read.options(**options)
    if fmt == "csv":
        header = reader.option("header", "true").option("inferSchema", "false").csv(path).columns
        schema = T.StructType(
            [T.StructField(c, T.StringType()) for c in header]
            + [T.StructField(CORRUPT, T.StringType())]
        )
        return (
            reader.option("header", "true")
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .schema(schema)
            .csv(path)
        )
    return reader.parquet(path)


def _without_corrupt_lines(df: DataFrame, path: str) -> DataFrame:
    """A joined dimension file must be clean: its malformed lines are an error, not rows."""
    if CORRUPT not in df.columns:
        return df
    bad = [r[0] for r in df.where(F.col(CORRUPT).isNotNull()).select(CORRUPT).limit(3).collect()]
    if bad:
        raise ContractError(f"{path}: lines whose fields do not match the header: {bad}")
    return df.drop(CORRUPT)


def check_parquet_parts(path: str, columns: list[str]) -> None:
    """Every Parquet part file of ``path`` must hold the mapped ``columns``: Spark reads the
    schema of one part, so a part without a column would silently yield nulls."""
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(path)
    parts = (
        [root]
        if fs.isfile(root)
        else sorted(
            f for f in fs.find(root) if f.endswith(".parquet") and "/." not in f and "/_" not in f
        )
    )
    for part in parts:
        with fs.open(part, "rb") as fh:
            names = set(pq.ParquetFile(fh).schema_arrow.names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise ContractError(
                f"{part}: Parquet part lacks the mapped column(s) {missing} "
                f"(it has {sorted(names)}); every part must carry them"
            )


def resolve_input(path: str, base_dir: str) -> str:
    return (
        path
        if ("://" in path or os.path.isabs(path))
        else os.path.normpath(os.path.join(base_dir, path))
    )


def map_table(
    spark: SparkSession,
    src: TableSource,
    table: str,
    base_dir: str,
    region_columns: list[str] | None = None,
) -> DataFrame:
    """Read ``src`` and map it into the contract table ``table``.

    Rows are never dropped here: lines that do not parse carry ``_malformed`` (their reason)
    and rows that ``keep_if`` excludes carry ``_filtered``; validation counts both."""
    path = resolve_input(src.path, base_dir)
    df = _read(spark, path, src.format, src.options)
    source_columns = set(df.columns)  # before the join: what the file itself must carry
    if src.join_path:
        join_path = resolve_input(src.join_path, base_dir)
        other = _without_corrupt_lines(_read(spark, join_path, src.join_format, {}), join_path)
        df = df.join(other, src.join_on, "left")
    names = [c for c in src.columns.values() if not _is_expr(c)]
    missing = sorted(
        {c for c in names if c not in df.columns}
        | {c for c in src.events_from_flags.values() if c not in df.columns}
    )
    if missing:
        raise ContractError(
            f"data.{table}: source columns {missing} not found in {path} "
            f"(columns there: {', '.join(c for c in df.columns if c != CORRUPT)})"
        )
    if src.format == "parquet":
        check_parquet_parts(path, [c for c in names if c in source_columns])
    if src.events_from_flags:
        df = _melt_events(df, src)
    contract = TABLES[table]
    cols = []
    for contract_col, source_col in src.columns.items():
        c = _expr(source_col, f"data.{table}.columns.{contract_col}")
        if contract_col in src.values:
            mapping = src.values[contract_col]
            expr = None
            for k, v in mapping.items():
                cond = c.cast("string") == str(k)
                expr = F.when(cond, F.lit(v)) if expr is None else expr.when(cond, F.lit(v))
            c = expr.otherwise(c) if expr is not None else c
            if contract_col in contract.names:
                c = c.cast(contract.column(contract_col).dtype)
        cols.append(c.alias(contract_col))
    for contract_col, value in src.constants.items():
        cols.append(F.lit(value).alias(contract_col))
    if src.events_from_flags:
        cols.append(F.col("event_type"))
    if CORRUPT in df.columns:
        cols.append(
            F.when(
                F.col(CORRUPT).isNotNull(),
                F.concat(F.lit("line does not match the header: "), F.substring(CORRUPT, 1, 80)),
            ).alias(MALFORMED)
        )
    if src.keep_if:
        keep = _expr(src.keep_if, f"data.{table}.keep_if")
        out = _select(df, cols, table)
        out = out.withColumn(FILTERED, ~F.coalesce(_with_mapped(out, keep, src), F.lit(False)))
    else:
        out = _select(df, cols, table)
    return conform(out, contract, source=path, region_columns=region_columns or [])


def _expr(text: str, key: str) -> Column:
    """A source column or SQL expression; a syntax error is a configuration error."""
    if not _is_expr(text):
        return F.col(text)
    try:
        return F.expr(text)
    except ParseException as exc:
        raise ConfigError(
            f"config key '{key}': invalid SQL expression {text!r}: {str(exc).splitlines()[0]}"
        ) from None


def _select(df: DataFrame, cols: list[Column], table: str) -> DataFrame:
    try:
        return df.select(*cols)
    except AnalysisException as exc:
        raise ConfigError(
            f"data.{table}.columns: an expression does not fit the source "
            f"columns ({', '.join(c for c in df.columns if c != CORRUPT)}): "
            f"{str(exc).splitlines()[0]}"
        ) from None


def _with_mapped(out: DataFrame, keep: Column, src: TableSource) -> Column:
    """``keep_if`` reads contract columns (after mapping): check it resolves against them."""
    try:
        out.select(keep)
    except AnalysisException as exc:
        raise ConfigError(
            f"config key 'keep_if' ({src.keep_if!r}) must use contract columns "
            f"({', '.join(out.columns)}): {str(exc).splitlines()[0]}"
        ) from None
    return keep


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
