"""Calendar events: which types a dataset declares, and which stores each event reaches.

An event row reaches a store when its scope is ``global`` (or its ``scope_level`` is), or when
its scope names the store's region at the level ``scope_level`` -- a level's name or its
stores column from ``data.hierarchy``.  An event without a ``scope_level`` reaches the stores
whose region at *any* level has that name; when a name is used at several levels (a city and
a state both called Georgia) :func:`warn_about_scopes` says so.  The feature job and the
check job both match events through :func:`reach`.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_st.config import RegionLevel
from sales_st.data.contract import GLOBAL_SCOPE, PUBLIC_HOLIDAY, SCHOOL_HOLIDAY
from sales_st.errors import DataError

log = logging.getLogger(__name__)

# Types with channels of their own (holiday / school flags and distances).
BUILTIN_TYPES = (PUBLIC_HOLIDAY, SCHOOL_HOLIDAY)
# Most names listed in a warning.
MAX_LISTED = 10


def scope_levels(hierarchy: list[RegionLevel], store_columns: list[str]) -> dict[str, str]:
    """``scope_level`` value -> stores column: every level of ``hierarchy`` the stores carry,
    by its name and by its column."""
    out: dict[str, str] = {}
    for lvl in hierarchy:
        if lvl.column in store_columns:
            out[lvl.name] = lvl.column
            out[lvl.column] = lvl.column
    return out


def indicator_types(event_types: list[str]) -> list[str]:
    """Declared types that get a known-future indicator channel (all but the built-in ones)."""
    return [t for t in dict.fromkeys(event_types) if t not in BUILTIN_TYPES]


def type_counts(events: DataFrame) -> dict[str, int]:
    """Rows per event type (one row per type: small)."""
    rows = events.groupBy("event_type").count().collect()
    return {str(r["event_type"]): int(r["count"]) for r in rows}


def undeclared(counts: dict[str, int], declared: list[str]) -> dict[str, int]:
    return {t: n for t, n in sorted(counts.items()) if t not in declared}


def undeclared_message(found: dict[str, int], declared: list[str]) -> str:
    listed = ", ".join(f"{t!r} ({n} rows)" for t, n in found.items())
    example = next(iter(found))
    return (
        f"the events table holds event types that data.event_types does not declare: {listed} "
        f"(declared: {', '.join(declared)}); declare them in data.event_types, or drop them "
        f"with data.events.keep_if (e.g. \"event_type <> '{example}'\")"
    )


def check_declared(events: DataFrame, declared: list[str]) -> dict[str, int]:
    """Rows per event type; raise :class:`DataError` when a type is not declared (it would
    otherwise have no effect, silently)."""
    counts = type_counts(events)
    found = undeclared(counts, declared)
    if found:
        raise DataError(undeclared_message(found, declared))
    return counts


def store_scopes(stores: DataFrame, levels: dict[str, str]) -> DataFrame:
    """(store_id, level, scope): the global scope and the store's region at every level."""
    scopes = [F.struct(F.lit(GLOBAL_SCOPE).alias("level"), F.lit(GLOBAL_SCOPE).alias("scope"))]
    scopes += [
        F.struct(F.lit(label).alias("level"), F.col(col).alias("scope"))
        for label, col in levels.items()
    ]
    return (
        stores.select("store_id", F.explode(F.array(*scopes)).alias("s"))
        .select("store_id", "s.level", "s.scope")
        .where(F.col("scope").isNotNull())
    )


def reach(stores: DataFrame, events: DataFrame, levels: dict[str, str]) -> DataFrame:
    """(store_id, date, event_type): every store each event row reaches (not deduplicated)."""
    ss = store_scopes(stores, levels)
    is_global = (F.col("scope") == GLOBAL_SCOPE) | (F.col("scope_level") == GLOBAL_SCOPE)
    ev = events.select(
        "date",
        "event_type",
        F.when(is_global, F.lit(GLOBAL_SCOPE)).otherwise(F.col("scope")).alias("ev_scope"),
        F.col("scope_level").alias("ev_level"),
    )
    matches = (ss.scope == ev.ev_scope) & (
        ev.ev_level.isNull() | (ev.ev_level == ss.level) | (ev.ev_scope == GLOBAL_SCOPE)
    )
    return ss.join(ev, matches).select("store_id", "date", "event_type")


def reach_counts(
    stores: DataFrame, events: DataFrame, levels: dict[str, str], series: DataFrame
) -> dict[str, tuple[int, int]]:
    """Event type -> (stores, series) its rows reach; ``series`` holds the series keys
    (store_id, item_id), one row each.  Small: one row per type."""
    reached = reach(stores, events, levels).select("event_type", "store_id").distinct()
    rows = (
        reached.join(series.select("store_id", "item_id"), "store_id", "left")
        .groupBy("event_type")
        .agg(F.countDistinct("store_id").alias("stores"), F.count("item_id").alias("series"))
        .collect()
    )
    return {str(r["event_type"]): (int(r["stores"]), int(r["series"])) for r in rows}


def ambiguous_scopes(
    stores: DataFrame, events: DataFrame, levels: dict[str, str]
) -> dict[str, list[str]]:
    """Scopes of events without a ``scope_level`` that name regions at several levels
    (scope -> the stores columns holding it); small."""
    columns = {col: col for col in levels.values()}
    named = store_scopes(stores, columns).where(F.col("level") != GLOBAL_SCOPE)
    open_scopes = (
        events.where(F.col("scope_level").isNull() & (F.col("scope") != GLOBAL_SCOPE))
        .select("scope")
        .distinct()
    )
    rows = (
        named.join(open_scopes, "scope")
        .groupBy("scope")
        .agg(F.array_sort(F.collect_set("level")).alias("levels"))
        .where(F.size("levels") > 1)
        .orderBy("scope")
        .limit(MAX_LISTED)
        .collect()
    )
    return {str(r["scope"]): list(r["levels"]) for r in rows}


def unknown_scope_levels(events: DataFrame, levels: dict[str, str]) -> dict[str, int]:
    """Rows per ``scope_level`` that is neither global nor a level the stores carry: those
    events reach no store."""
    known = [*levels, GLOBAL_SCOPE]
    rows = (
        events.where(F.col("scope_level").isNotNull() & ~F.col("scope_level").isin(known))
        .where(F.col("scope") != GLOBAL_SCOPE)
        .groupBy("scope_level")
        .count()
        .orderBy("scope_level")
        .limit(MAX_LISTED)
        .collect()
    )
    return {str(r["scope_level"]): int(r["count"]) for r in rows}


def warn_about_scopes(stores: DataFrame, events: DataFrame, levels: dict[str, str]) -> None:
    """Log what would silently narrow or widen events: names used at several levels by
    events without a scope_level, and scope levels no store has."""
    for scope, cols in ambiguous_scopes(stores, events, levels).items():
        log.warning(
            "events: scope %r has no scope_level and names regions at several levels (%s): "
            "it reaches the stores of all of them; set scope_level to choose one",
            scope,
            ", ".join(cols),
        )
    unknown = unknown_scope_levels(events, levels)
    if unknown:
        log.warning(
            "events: scope_level %s is not a level of data.hierarchy the stores carry (%s): "
            "those events reach no store",
            ", ".join(f"{k!r} ({n} rows)" for k, n in unknown.items()),
            ", ".join(sorted(levels)) or "none",
        )
