"""The data contract: every input table and each column's role, declared once.

Readers check a DataFrame against its :class:`Table` with :func:`conform`, which fails with
a :class:`ContractError` naming the table, the column, what was expected and what was found.
Feature lists, test schemas and the generic loader all derive from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pyspark.sql import Column as SqlColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_st.errors import DataError


class Role(str, Enum):  # noqa: UP042 - str() stays "Role.ID" (StrEnum would change it)
    ID = "id"  # part of the series key
    TIME = "time"
    TARGET = "target"
    KNOWN_FUTURE = "known_future"  # known ahead for the forecast horizon (plans, calendar)
    OBSERVED_PAST = "observed_past"  # only known up to the forecast origin
    STATIC = "static"  # constant per entity
    REGION = "region"  # a level of the region hierarchy
    ATTRIBUTE = "attribute"  # descriptive, not a model input


@dataclass(frozen=True)
class Column:
    name: str
    dtype: T.DataType
    role: Role
    required: bool = True
    nullable: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    doc: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def spark_schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.dtype, c.nullable) for c in self.columns])


class ContractError(DataError):
    """An input table does not match the data contract."""


SALES = Table(
    name="sales",
    key=("store_id", "item_id", "date"),
    doc="Daily sales facts, one row per (store, item, day).  Rows after the run date with a "
    "null target are plans: their price/promo/open are known-future inputs.",
    columns=(
        Column("date", T.DateType(), Role.TIME),
        Column("store_id", T.StringType(), Role.ID),
        Column("item_id", T.StringType(), Role.ID),
        Column("target", T.DoubleType(), Role.TARGET, doc="units or revenue"),
        Column("price", T.DoubleType(), Role.KNOWN_FUTURE, required=False),
        Column("promo", T.IntegerType(), Role.KNOWN_FUTURE, required=False),
        Column("open", T.IntegerType(), Role.KNOWN_FUTURE, required=False),
        Column("customers", T.DoubleType(), Role.OBSERVED_PAST, required=False),
    ),
)

STORES = Table(
    name="stores",
    key=("store_id",),
    doc="Stores with their region hierarchy (store -> city -> state -> country), optional "
    "coordinates and static attributes.",
    columns=(
        Column("store_id", T.StringType(), Role.ID, nullable=False),
        Column("city", T.StringType(), Role.REGION, required=False),
        Column("state", T.StringType(), Role.REGION, required=False),
        Column("country", T.StringType(), Role.REGION, required=False),
        Column("latitude", T.DoubleType(), Role.STATIC, required=False),
        Column("longitude", T.DoubleType(), Role.STATIC, required=False),
        Column("store_type", T.StringType(), Role.STATIC, required=False),
        Column("size", T.DoubleType(), Role.STATIC, required=False),
        Column("open_date", T.DateType(), Role.ATTRIBUTE, required=False),
    ),
)

EVENTS = Table(
    name="events",
    key=("date", "scope", "event_type"),
    doc="Calendar events.  scope is 'global' or a region id of level scope_level.",
    columns=(
        Column("date", T.DateType(), Role.TIME, nullable=False),
        Column("scope", T.StringType(), Role.REGION, nullable=False),
        Column("scope_level", T.StringType(), Role.REGION, required=False),
        Column("event_type", T.StringType(), Role.KNOWN_FUTURE, nullable=False),
    ),
)

ITEMS = Table(
    name="items",
    key=("item_id",),
    doc="Items (products) and their attributes.",
    columns=(
        Column("item_id", T.StringType(), Role.ID, nullable=False),
        Column("category", T.StringType(), Role.STATIC, required=False),
        Column("base_price", T.DoubleType(), Role.STATIC, required=False),
    ),
)

INVENTORY = Table(
    name="inventory",
    key=("store_id", "item_id", "date"),
    doc="Inventory positions per store and item as of a date (jobs/replenish.py); lead time, "
    "review period and service level per row override the replenish.* defaults.",
    columns=(
        Column("store_id", T.StringType(), Role.ID, nullable=False),
        Column("item_id", T.StringType(), Role.ID, nullable=False),
        Column("date", T.DateType(), Role.TIME, nullable=False),
        Column("on_hand", T.DoubleType(), Role.ATTRIBUTE, nullable=False),
        Column("on_order", T.DoubleType(), Role.ATTRIBUTE, required=False),
        Column("lead_time_days", T.IntegerType(), Role.ATTRIBUTE, required=False),
        Column("review_days", T.IntegerType(), Role.ATTRIBUTE, required=False),
        Column("service_level", T.DoubleType(), Role.ATTRIBUTE, required=False),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (SALES, STORES, EVENTS, ITEMS, INVENTORY)}
# A series is one (store, item); every per-series table is keyed by these columns.
SERIES_KEY = [c for c in SALES.key if SALES.column(c).role is Role.ID]
GLOBAL_SCOPE = "global"

# Event types the features know by name; others count towards "any holiday".
PUBLIC_HOLIDAY = "public_holiday"
SCHOOL_HOLIDAY = "school_holiday"


def _compatible(found: T.DataType, expected: T.DataType) -> bool:
    """Types a reader may cast losslessly (or by a documented rule) to the contract type.

    Text (CSV, or string columns) may hold any type: rows whose text does not parse are
    marked ``_malformed`` and quarantined by validation, never silently nulled."""
    if found == expected or isinstance(found, T.StringType):
        return True
    numeric = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType)
    if isinstance(expected, T.DoubleType):
        return isinstance(found, numeric + (T.DecimalType,))
    if isinstance(expected, T.IntegerType):
        return isinstance(found, (T.ByteType, T.ShortType, T.LongType, T.BooleanType))
    if isinstance(expected, T.StringType):
        return isinstance(found, numeric[:4] + (T.StringType,))
    if isinstance(expected, T.DateType):
        return isinstance(found, (T.TimestampType, T.TimestampNTZType))
    return False


# Marker columns a reader may add and validation consumes: why a row could not be read as the
# contract says (malformed), and rows a configured ``keep_if`` drops (counted, not loaded).
MALFORMED = "_malformed"
FILTERED = "_filtered"

# Dataset-specific static attributes ride along in the stores/items tables under these
# prefixes: numeric ones are scaled, categorical ones get an embedding vocabulary.
STATIC_NUM_PREFIX = "static_num_"
STATIC_CAT_PREFIX = "static_cat_"
EXTRA_TABLES = ("stores", "items")


# The config key naming each table's hierarchy columns (conform's ``region_columns``).
HIERARCHY_KEYS = {"stores": "data.hierarchy", "items": "data.item_hierarchy"}


def extra_static_columns(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith((STATIC_NUM_PREFIX, STATIC_CAT_PREFIX))]


def _unparsed(name: str, text: SqlColumn, cast: SqlColumn, dtype: T.DataType) -> SqlColumn:
    """Why a text value did not parse into ``dtype`` (null when it did, or was empty)."""
    bad = text.isNotNull() & (F.trim(text) != "") & cast.isNull()
    reason = F.concat(
        F.lit(f"{name} '"), F.substring(text, 1, 40), F.lit(f"' is not {dtype.simpleString()}")
    )
    return F.when(bad, reason)


def conform(
    df: DataFrame, table: Table, source: str = "", region_columns: tuple[str, ...] | list[str] = ()
) -> DataFrame:
    """Check ``df`` against ``table`` and return it with exactly the contract's columns.

    Optional columns that are absent are added as nulls; compatible types are cast (ints to
    string ids, ints to doubles, timestamps to dates); anything else raises ContractError
    listing every problem at once.  For stores and items, extra ``static_num_*`` (cast to
    double) and ``static_cat_*`` (cast to string) columns are kept after the contract's, and
    for stores and items the configured hierarchy's ``region_columns`` (strings: data.hierarchy
    for stores, data.item_hierarchy for items) that the contract does not name.  A hierarchy
    column the table lacks is an error, and for items even one the contract lists as optional
    (category).
    """
    where = f" ({source})" if source else ""
    present = {f.name: f.dataType for f in df.schema.fields}
    problems = []
    for col in table.columns:
        if col.name not in present:
            if col.required:
                problems.append(
                    f"missing required column '{col.name}' ({col.dtype.simpleString()})"
                )
        elif not _compatible(present[col.name], col.dtype):
            problems.append(
                f"column '{col.name}' must be {col.dtype.simpleString()}, "
                f"found {present[col.name].simpleString()}"
            )
    if problems:
        raise ContractError(
            f"table '{table.name}'{where} does not match the data contract: "
            + "; ".join(problems)
            + f". Columns found: {', '.join(f'{k}:{v.simpleString()}' for k, v in present.items())}"
        )
    out = []
    unparsed = []  # (column, "its text did not parse") for text read into typed columns
    for col in table.columns:
        if col.name in present:
            cast = F.col(col.name).cast(col.dtype)
            if isinstance(present[col.name], T.StringType) and col.dtype != T.StringType():
                text = F.col(col.name)
                unparsed.append(_unparsed(col.name, text, cast, col.dtype))
            out.append(cast.alias(col.name))
        else:
            out.append(F.lit(None).cast(col.dtype).alias(col.name))
    if table.name in HIERARCHY_KEYS:
        for name in region_columns:
            # a store level the contract declares (city, state, country) may be absent (null)
            optional = table.name == STORES.name and name in table.names
            if name not in present and not optional:
                raise ContractError(
                    f"table '{table.name}'{where} lacks the hierarchy column "
                    f"'{name}' named in {HIERARCHY_KEYS[table.name]}"
                )
            if name not in table.names:
                out.append(F.col(name).cast(T.StringType()).alias(name))
    if table.name in EXTRA_TABLES:
        for name in extra_static_columns(list(present)):
            dtype = T.DoubleType() if name.startswith(STATIC_NUM_PREFIX) else T.StringType()
            cast = F.col(name).cast(dtype)
            if isinstance(present[name], T.StringType) and dtype != T.StringType():
                unparsed.append(_unparsed(name, F.col(name), cast, dtype))
            out.append(cast.alias(name))
    if MALFORMED in present:
        unparsed.insert(0, F.col(MALFORMED))
    if unparsed:
        reasons = F.concat_ws("; ", *unparsed)
        out.append(F.when(reasons != "", reasons).alias(MALFORMED))
    if FILTERED in present:
        out.append(F.col(FILTERED))
    return df.select(*out)
