"""Input validation with row accounting: every input row is accepted or quarantined.

Each rule flags rows; a row that breaks several rules is charged to the first in
:data:`RULE_ORDER`, so ``input = accepted + quarantined`` holds exactly.  Per rule, config
chooses ``fail`` (raise :class:`ValidationError` with the count and a few example rows) or
``quarantine`` (the row goes to the quarantine table with the rule and a detail).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sales_st.config import ValidationConfig
from sales_st.config.sections import RULES
from sales_st.data.contract import SALES
from sales_st.errors import DataError
from sales_st.frames import one_row

log = logging.getLogger(__name__)

RULE_ORDER = RULES  # a row is charged to the first rule it breaks
KEY = list(SALES.key)


class ValidationError(DataError):
    """Input rows broke a rule configured to fail the job."""


@dataclass
class ValidationResult:
    accepted: DataFrame
    quarantined: DataFrame  # table_name, rule, detail, row_json
    counts: dict[str, int] = field(default_factory=dict)  # input, accepted, per rule
    run_date: dt.date | None = None
    cached: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()
        self.cached.clear()

    @property
    def quarantined_total(self) -> int:
        return sum(v for k, v in self.counts.items() if k in RULE_ORDER)


def _finite(c: Column) -> Column:
    return ~(F.isnan(c) | c.isin(float("inf"), float("-inf")))


def flag_sales(
    sales: DataFrame,
    store_ids: DataFrame,
    item_ids: DataFrame | None,
    cfg: ValidationConfig,
    run_date: dt.date,
) -> DataFrame:
    """Add ``_rule`` (first broken rule or null) and ``_detail`` to every sales row."""
    stores = store_ids.select(F.col("store_id").alias("_store_ok")).distinct()
    df = sales.join(F.broadcast(stores), sales.store_id == stores._store_ok, "left")
    if item_ids is not None:
        items = item_ids.select(F.col("item_id").alias("_item_ok")).distinct()
        df = df.join(F.broadcast(items), df.item_id == items._item_ok, "left")
    else:
        df = df.withColumn("_item_ok", F.col("item_id"))
    key_null = F.col("store_id").isNull() | F.col("item_id").isNull() | F.col("date").isNull()
    # Duplicates: exact copies keep their first copy; conflicting copies are all quarantined.
    by_key = Window.partitionBy(*KEY)
    value_hash = F.xxhash64(*[F.col(c) for c in sales.columns])
    df = (
        df.withColumn("_n", F.count(F.lit(1)).over(by_key))
        .withColumn("_variants", F.size(F.collect_set(value_hash).over(by_key)))
        .withColumn(
            "_copy", F.row_number().over(by_key.orderBy(*[F.col(c).asc_nulls_first() for c in sales.columns]))
        )
    )
    out_of_range = F.lit(False)
    if cfg.start_date:
        out_of_range = out_of_range | (F.col("date") < F.lit(cfg.start_date).cast("date"))
    if cfg.end_date:
        out_of_range = out_of_range | (F.col("date") > F.lit(cfg.end_date).cast("date"))
    t = F.col("target")
    checks: dict[str, tuple[Column, Column]] = {
        "null_key": (key_null, F.lit("store_id, item_id and date must be set")),
        "date_out_of_range": (
            out_of_range,
            F.concat(F.lit("date "), F.col("date").cast("string"),
                     F.lit(f" outside [{cfg.start_date or '-inf'}, {cfg.end_date or '+inf'}]")),
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
        "null_target": (
            t.isNull() & (F.col("date") <= F.lit(run_date)),
            F.lit(f"target is null on or before the run date {run_date}"),
        ),
        "duplicate_key": (
            (F.col("_n") > 1) & ((F.col("_variants") > 1) | (F.col("_copy") > 1)),
            F.when(F.col("_variants") > 1, F.concat(F.col("_n").cast("string"),
                                                      F.lit(" rows with conflicting values")))
            .otherwise(F.lit("exact copy of an earlier row")),
        ),
    }
    rule = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for name in reversed(RULE_ORDER):
        cond, text = checks[name]
        rule = F.when(cond, F.lit(name)).otherwise(rule)
        detail = F.when(cond, text).otherwise(detail)
    return df.select(*sales.columns, rule.alias("_rule"), detail.alias("_detail"))


def validate_sales(
    sales: DataFrame,
    stores: DataFrame,
    items: DataFrame,
    cfg: ValidationConfig,
    run_date: dt.date,
) -> ValidationResult:
    """Flag, count, fail or quarantine.  ``items`` may be empty: then items come from sales."""
    has_items = len(items.take(1)) > 0
    flagged = flag_sales(sales, stores, items if has_items else None, cfg, run_date)
    flagged = flagged.persist()
    rows = flagged.groupBy("_rule").count().collect()  # one row per rule: small
    counts = {r["_rule"] or "accepted": int(r["count"]) for r in rows}
    counts["input"] = sum(int(r["count"]) for r in rows)
    counts.setdefault("accepted", 0)
    failing = [r for r in RULE_ORDER if counts.get(r) and cfg.rules.get(r, "fail") == "fail"]
    if failing:
        examples = (
            flagged.where(F.col("_rule").isin(failing))
            .limit(cfg.max_examples)
            .select(F.to_json(F.struct(*sales.columns)).alias("row"), "_rule", "_detail")
            .collect()
        )
        shown = "\n  ".join(f"[{e['_rule']}] {e['_detail']}: {e['row']}" for e in examples)
        flagged.unpersist()
        raise ValidationError(
            "sales input breaks rules configured to fail: "
            + ", ".join(f"{r} ({counts[r]} rows)" for r in failing)
            + f" of {counts['input']} rows. Examples:\n  {shown}\n"
            "Fix the input, or set validation.rules.<rule>: quarantine to set such rows aside."
        )
    accepted = flagged.where(F.col("_rule").isNull()).select(*sales.columns)
    quarantined = flagged.where(F.col("_rule").isNotNull()).select(
        F.lit("sales").alias("table_name"),
        F.col("_rule").alias("rule"),
        F.col("_detail").alias("detail"),
        F.to_json(F.struct(*sales.columns)).alias("row_json"),
    )
    for r in RULE_ORDER:
        if counts.get(r):
            log.warning("validation: %d sales rows quarantined by rule %s", counts[r], r)
    return ValidationResult(accepted=accepted, quarantined=quarantined, counts=counts,
                            run_date=run_date, cached=[flagged])


def check_accounting(counts: dict[str, int], accepted_out: int, quarantined_out: int) -> None:
    """Raise unless input = accepted + quarantined, with counts taken from what was written."""
    if counts["input"] != accepted_out + quarantined_out:
        raise ValidationError(
            f"row accounting does not add up: input {counts['input']} != "
            f"accepted {accepted_out} + quarantined {quarantined_out}"
        )


def validate_stores(stores: DataFrame) -> None:
    """The store dimension must have unique, non-null ids (it keys everything)."""
    bad = stores.groupBy("store_id").count().where(
        F.col("store_id").isNull() | (F.col("count") > 1)
    )
    examples = bad.limit(5).collect()
    if examples:
        raise ValidationError(
            "stores table: store_id must be unique and non-null; offending ids: "
            + ", ".join(f"{e['store_id']!r} x{e['count']}" for e in examples)
        )


def default_run_date(sales: DataFrame) -> dt.date:
    """The last day with an observed (non-null) target."""
    value = one_row(sales.where(F.col("target").isNotNull()).agg(F.max("date")))[0]
    if value is None:
        raise ValidationError("sales table has no row with a target: cannot infer the run date")
    return value
