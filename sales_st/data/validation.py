"""Input validation with row accounting: every input row of every table is accepted,
quarantined with a reason, or counted as filtered by the configuration (``keep_if``).

Each rule flags rows; a row that breaks several rules is charged to the first in
:data:`RULE_ORDER`, so ``input = accepted + quarantined + filtered`` holds exactly, per
table.  Per rule, config chooses ``fail`` (raise :class:`ValidationError` with the count and
a few example rows) or ``quarantine`` (the row goes to the quarantine table with the rule and
a detail).  The dimension tables (stores, items) are validated first; sales rows are then
checked against the accepted dimensions.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sales_st.config import ValidationConfig
from sales_st.config.sections import RULES
from sales_st.data.contract import EVENTS, FILTERED, ITEMS, MALFORMED, SALES, STORES, Table
from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import DataError
from sales_st.frames import one_row

log = logging.getLogger(__name__)

RULE_ORDER = RULES  # a row is charged to the first rule it breaks
KEY = list(SALES.key)
FILTERED_COUNT = "filtered"  # rows a configured keep_if excluded: counted, not loaded


class ValidationError(DataError):
    """Input rows broke a rule configured to fail the job."""


@dataclass
class TableValidation:
    """One table's accepted rows, its quarantined rows and the counts that add up."""

    table: str
    accepted: DataFrame
    quarantined: DataFrame  # table_name, rule, detail, row_json
    counts: dict[str, int] = field(default_factory=dict)  # input, accepted, filtered, per rule
    run_date: dt.date | None = None
    cached: list[DataFrame] = field(default_factory=list)

    @property
    def quarantined_total(self) -> int:
        return sum(v for k, v in self.counts.items() if k in RULE_ORDER)

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()
        self.cached.clear()


@dataclass
class ValidationResult:
    """Every input table validated; the sales table's run date."""

    tables: dict[str, TableValidation]
    run_date: dt.date

    @property
    def sales(self) -> TableValidation:
        return self.tables[SALES.name]

    @property
    def accepted(self) -> DataFrame:
        return self.sales.accepted

    @property
    def quarantined(self) -> DataFrame:
        return reduce(DataFrame.unionByName, [t.quarantined for t in self.tables.values()])

    @property
    def counts(self) -> dict[str, int]:
        """Sales counts, and the other tables' under ``<table>_<count>``."""
        out = dict(self.sales.counts)
        for name, t in self.tables.items():
            if name != SALES.name:
                out.update({f"{name}_{k}": v for k, v in t.counts.items()})
        return out

    def release(self) -> None:
        for t in self.tables.values():
            t.release()


def _finite(c: Column) -> Column:
    return ~(F.isnan(c) | c.isin(float("inf"), float("-inf")))


def _data_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (MALFORMED, FILTERED)]


def _marker_checks(df: DataFrame) -> dict[str, tuple[Column, Column]]:
    if MALFORMED not in df.columns:
        return {}
    return {"malformed": (F.col(MALFORMED).isNotNull(), F.col(MALFORMED))}


def _duplicate_check(
    df: DataFrame, key: list[str], columns: list[str]
) -> tuple[DataFrame, tuple[Column, Column]]:
    """Exact copies keep their first copy; conflicting copies are all quarantined."""
    by_key = Window.partitionBy(*key)
    value_hash = F.xxhash64(*[F.col(c) for c in columns])
    df = (
        df.withColumn("_n", F.count(F.lit(1)).over(by_key))
        .withColumn("_variants", F.size(F.collect_set(value_hash).over(by_key)))
        .withColumn(
            "_copy",
            F.row_number().over(by_key.orderBy(*[F.col(c).asc_nulls_first() for c in columns])),
        )
    )
    cond = (F.col("_n") > 1) & ((F.col("_variants") > 1) | (F.col("_copy") > 1))
    detail = F.when(
        F.col("_variants") > 1,
        F.concat(F.col("_n").cast("string"), F.lit(" rows with conflicting values")),
    ).otherwise(F.lit("exact copy of an earlier row"))
    return df, (cond, detail)


def _apply(df: DataFrame, checks: dict[str, tuple[Column, Column]], keep: list[str]) -> DataFrame:
    """``keep`` columns plus ``_rule`` (first broken rule, ``filtered``, or null), ``_detail``."""
    rule = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for name in reversed(RULE_ORDER):
        if name in checks:
            cond, text = checks[name]
            rule = F.when(cond, F.lit(name)).otherwise(rule)
            detail = F.when(cond, text).otherwise(detail)
    if FILTERED in df.columns:  # the configuration excluded it: nothing else to say
        rule = F.when(F.col(FILTERED), F.lit(FILTERED_COUNT)).otherwise(rule)
        detail = F.when(F.col(FILTERED), F.lit("excluded by keep_if")).otherwise(detail)
    return df.select(*keep, rule.alias("_rule"), detail.alias("_detail"))


def flag_sales(
    sales: DataFrame,
    store_ids: DataFrame,
    item_ids: DataFrame | None,
    cfg: ValidationConfig,
    run_date: dt.date | None,
    grid: Grid = DAILY,
) -> DataFrame:
    """Add ``_rule`` (first broken rule or null) and ``_detail`` to every sales row.

    Without a run date the ``null_target`` rule (which depends on it) is not applied; on a
    weekly or monthly ``grid``, dates off it break ``off_grid`` (a Tuesday in a table of
    Fridays would otherwise open a period of its own)."""
    columns = _data_columns(sales)
    stores = store_ids.select(F.col("store_id").alias("_store_ok")).distinct()
    df = sales.join(F.broadcast(stores), sales.store_id == stores._store_ok, "left")
    if item_ids is not None:
        items = item_ids.select(F.col("item_id").alias("_item_ok")).distinct()
        df = df.join(F.broadcast(items), df.item_id == items._item_ok, "left")
    else:
        df = df.withColumn("_item_ok", F.col("item_id"))
    key_null = F.col("store_id").isNull() | F.col("item_id").isNull() | F.col("date").isNull()
    df, duplicate = _duplicate_check(df, KEY, columns)
    out_of_range = F.lit(False)
    if cfg.start_date:
        out_of_range = out_of_range | (F.col("date") < F.lit(cfg.start_date).cast("date"))
    if cfg.end_date:
        out_of_range = out_of_range | (F.col("date") > F.lit(cfg.end_date).cast("date"))
    t = F.col("target")
    checks: dict[str, tuple[Column, Column]] = {
        **_marker_checks(sales),
        "null_key": (key_null, F.lit("store_id, item_id and date must be set")),
        "date_out_of_range": (
            out_of_range,
            F.concat(
                F.lit("date "),
                F.col("date").cast("string"),
                F.lit(f" outside [{cfg.start_date or '-inf'}, {cfg.end_date or '+inf'}]"),
            ),
        ),
        "unknown_store": (
            F.col("_store_ok").isNull(),
            F.concat(F.lit("store_id "), F.col("store_id"), F.lit(" not in stores")),
        ),
        "unknown_item": (
            F.col("_item_ok").isNull(),
            F.concat(F.lit("item_id "), F.col("item_id"), F.lit(" not in items")),
        ),
        "non_finite_target": (
            t.isNotNull() & ~_finite(t),
            F.concat(F.lit("target is "), t.cast("string")),
        ),
        "negative_target": (t < 0, F.concat(F.lit("target "), t.cast("string"), F.lit(" < 0"))),
        "duplicate_key": duplicate,
    }
    if not grid.daily:
        checks["off_grid"] = (
            ~F.expr(grid.on_grid_sql("date")),
            F.concat(
                F.lit("date "),
                F.col("date").cast("string"),
                F.lit(f" is off the grid: the sales are {grid.describe()}"),
            ),
        )
    if run_date is not None:
        checks["null_target"] = (
            t.isNull() & (F.col("date") <= F.lit(run_date)),
            F.lit(f"target is null on or before the run date {run_date}"),
        )
    keep = columns + ([FILTERED] if FILTERED in sales.columns else [])
    return _apply(df, checks, keep)


def flag_dimension(
    df: DataFrame, table: Table, extra: dict[str, tuple[Column, Column]] | None = None
) -> DataFrame:
    """``_rule``/``_detail`` for a dimension or calendar table: malformed, null key, and
    duplicate keys (conflicting copies all quarantined, exact copies after the first), plus
    the table's own ``extra`` rules (rule -> (condition, detail), e.g. invalid_value)."""
    columns = _data_columns(df)
    key = list(table.key)
    key_null = reduce(lambda a, b: a | b, [F.col(c).isNull() for c in key])
    flagged, duplicate = _duplicate_check(df, key, columns)
    checks = {
        **_marker_checks(df),
        "null_key": (key_null, F.lit(f"{', '.join(key)} must be set")),
        "duplicate_key": duplicate,
        **(extra or {}),
    }
    keep = columns + ([FILTERED] if FILTERED in df.columns else [])
    return _apply(flagged, checks, keep)


def _settle(
    flagged: DataFrame, table: str, cfg: ValidationConfig, run_date: dt.date | None = None
) -> TableValidation:
    """Count per rule, fail on rules configured to fail, split accepted and quarantined."""
    flagged = flagged.persist()
    columns = [c for c in flagged.columns if c not in ("_rule", "_detail", FILTERED)]
    rows = flagged.groupBy("_rule").count().collect()  # one row per rule: small
    counts = {r["_rule"] or "accepted": int(r["count"]) for r in rows}
    counts["input"] = sum(int(r["count"]) for r in rows)
    counts.setdefault("accepted", 0)
    failing = [r for r in RULE_ORDER if counts.get(r) and cfg.rules.get(r, "fail") == "fail"]
    if failing:
        examples = (
            flagged.where(F.col("_rule").isin(failing))
            .limit(cfg.max_examples)
            .select(F.to_json(F.struct(*columns)).alias("row"), "_rule", "_detail")
            .collect()
        )
        shown = "\n  ".join(f"[{e['_rule']}] {e['_detail']}: {e['row']}" for e in examples)
        flagged.unpersist()
        raise ValidationError(
            f"{table} input breaks rules configured to fail: "
            + ", ".join(f"{r} ({counts[r]} rows)" for r in failing)
            + f" of {counts['input']} rows. Examples:\n  {shown}\n"
            "Fix the input, or set validation.rules.<rule>: quarantine to set such rows aside."
        )
    accepted = flagged.where(F.col("_rule").isNull()).select(*columns)
    quarantined = flagged.where(
        F.col("_rule").isNotNull() & (F.col("_rule") != FILTERED_COUNT)
    ).select(
        F.lit(table).alias("table_name"),
        F.col("_rule").alias("rule"),
        F.col("_detail").alias("detail"),
        F.to_json(F.struct(*columns)).alias("row_json"),
    )
    for r in RULE_ORDER:
        if counts.get(r):
            log.warning("validation: %d %s rows quarantined by rule %s", counts[r], table, r)
    if counts.get(FILTERED_COUNT):
        log.info("validation: %d %s rows excluded by keep_if", counts[FILTERED_COUNT], table)
    return TableValidation(table, accepted, quarantined, counts, run_date, cached=[flagged])


def validate_table(
    df: DataFrame,
    table: Table,
    cfg: ValidationConfig,
    extra: dict[str, tuple[Column, Column]] | None = None,
) -> TableValidation:
    """Validate a stores, items, events or inventory table (``extra``: its own rules)."""
    return _settle(flag_dimension(df, table, extra), table.name, cfg)


def accepted_run_date(
    sales: DataFrame,
    stores: DataFrame,
    items: DataFrame | None,
    cfg: ValidationConfig,
    grid: Grid = DAILY,
) -> dt.date:
    """The last day with an observed target among rows that pass every rule that does not
    depend on the run date (a row validation would reject never sets it)."""
    flagged = flag_sales(sales, stores, items, cfg, None, grid)
    ok = flagged.where(F.col("_rule").isNull() & F.col("target").isNotNull())
    value = one_row(ok.agg(F.max("date")))[0]
    if value is None:
        raise ValidationError(
            "the sales table has no valid row with a target: cannot infer "
            "the run date (give --run-date or data.run_date)"
        )
    return value


def validate_sales(
    sales: DataFrame,
    stores: DataFrame,
    items: DataFrame,
    cfg: ValidationConfig,
    run_date: dt.date | None = None,
    grid: Grid = DAILY,
) -> TableValidation:
    """Flag, count, fail or quarantine.  ``items`` may be empty: then items come from sales.
    Without ``run_date`` it is the last valid day with a target (:func:`accepted_run_date`)."""
    has_items = len(items.take(1)) > 0
    item_ids = items if has_items else None
    if run_date is None:
        run_date = accepted_run_date(sales, stores, item_ids, cfg, grid)
        log.info("run date not given: using the last day with a valid target, %s", run_date)
    flagged = flag_sales(sales, stores, item_ids, cfg, run_date, grid)
    return _settle(flagged, SALES.name, cfg, run_date)


def validate_inputs(
    tables: dict[str, DataFrame],
    cfg: ValidationConfig,
    run_date: dt.date | None,
    grid: Grid = DAILY,
) -> ValidationResult:
    """Validate every input table: dimensions first, then sales against the accepted ones
    and ``grid``, the sales dates' spacing (:func:`sales_st.data.frequency.resolve_grid`)."""
    out = {t.name: validate_table(tables[t.name], t, cfg) for t in (STORES, ITEMS, EVENTS)}
    sales = validate_sales(
        tables[SALES.name],
        out[STORES.name].accepted,
        out[ITEMS.name].accepted,
        cfg,
        run_date,
        grid,
    )
    out[SALES.name] = sales
    if sales.run_date is None:
        raise RuntimeError("validate_sales returned no run date")
    return ValidationResult(tables=out, run_date=sales.run_date)


def check_accounting(
    table: str, counts: dict[str, int], accepted_out: int, quarantined_out: int
) -> None:
    """Raise unless input = accepted + quarantined + filtered, counted from what was written."""
    filtered = counts.get(FILTERED_COUNT, 0)
    if counts["input"] != accepted_out + quarantined_out + filtered:
        raise ValidationError(
            f"{table}: row accounting does not add up: input {counts['input']} != "
            f"accepted {accepted_out} + quarantined {quarantined_out} + filtered {filtered}"
        )
