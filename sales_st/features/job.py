"""The feature job: read and validate the inputs, build the examples, write them with the
feature spec, the neighbour table and the quarantine, and account for every input row.

:func:`prepare` (inputs -> validated -> wide table) is shared with the forecast job, which
rebuilds the run date's scoring windows with the trained model's vocabularies.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import EVENTS, ITEMS, SALES, SERIES_KEY, STORES
from sales_st.data.events import check_declared, reach_counts, scope_levels, warn_about_scopes
from sales_st.data.frequency import resolve_grid
from sales_st.data.sources import load_inputs
from sales_st.data.validation import ValidationResult, check_accounting, validate_inputs
from sales_st.errors import DataError
from sales_st.features.assemble import (
    Wide,
    build_examples_df,
    check_event_settings,
    fit_scalers,
    layout_for,
    wide_table,
    window_counts,
)
from sales_st.features.calendar import make_axis
from sales_st.features.spec import SPLITS, FeatureSpec, SplitInfo, features_id, write_spec
from sales_st.frames import phase
from sales_st.storage.catalog import RunSummary, write_quarantine
from sales_st.storage.files import write_json, write_parquet_atomic

log = logging.getLogger(__name__)


def write_tasks(spark: SparkSession, cfg: Config, wide: Wide) -> int:
    """Tasks of the examples' write: one per core, or more where the windows (an upper bound
    of their count, from the origins, times the bytes of one window's arrays) would exceed
    ``features.write_task_mb`` per task.  Each task sorts its windows by split before writing:
    in two tasks, a large panel's windows spill to disk (2.3 GB for Rossmann at stride 1)."""
    per_window = 4 * sum(math.prod(s) for s in layout_for(cfg, wide).shapes().values()) + 256
    upper = window_counts(
        wide.table.select(*SERIES_KEY, "first_day"),
        cfg.features,
        wide.axis,
        wide.run_date,
        wide.last_target_day,
    )
    windows = sum(upper.values())
    by_size = math.ceil(windows * per_window / (cfg.features.write_task_mb * 2**20))
    tasks = max(2, spark.sparkContext.defaultParallelism, by_size)
    log.info(
        "features: at most %d windows of %.1f KiB -> written by %d tasks",
        windows,
        per_window / 1024,
        tasks,
    )
    return tasks


@dataclass
class Prepared:
    """Validated inputs and the wide table built from them."""

    validation: ValidationResult
    wide: Wide

    @property
    def run_date(self) -> dt.date:
        return self.wide.run_date

    def release(self) -> None:
        self.wide.release()
        self.validation.release()


@dataclass
class FeatureResult:
    run_date: dt.date
    spec: FeatureSpec
    counts: dict[str, int]
    summary: RunSummary = field(default_factory=RunSummary)


def prepare(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date | None,
    vocab: dict[str, list[str]] | None = None,
) -> Prepared:
    """Load and validate inputs, densify, build calendar and region context (cached: call
    :meth:`Prepared.release` when done)."""
    check_event_settings(cfg)
    if run_date is None and cfg.data.run_date:
        run_date = dt.date.fromisoformat(cfg.data.run_date)
    tables = load_inputs(spark, cfg)
    grid = resolve_grid(tables[SALES.name], cfg.data)
    result = validate_inputs(tables, cfg.validation, run_date, grid)
    try:
        check_inputs(cfg, result)
    except DataError:
        result.release()
        raise
    run_date = result.run_date
    stores, events = result.tables[STORES.name].accepted, result.tables[EVENTS.name].accepted
    items = result.tables[ITEMS.name].accepted
    accepted = result.accepted
    if not items.take(1):
        items = (
            accepted.select("item_id")
            .distinct()
            .select(
                "item_id",
                F.lit(None).cast("string").alias("category"),
                F.lit(None).cast("double").alias("base_price"),
            )
        )
    axis = make_axis(accepted, run_date, cfg.features.horizon, grid)
    if cfg.features.history < grid.season:
        log.warning(
            "features.history %d is shorter than a season of the %s sales (%d periods): "
            "the seasonal naive baseline and MASE have no season to look back on",
            cfg.features.history,
            grid.describe(),
            grid.season,
        )
    wide = wide_table(accepted, stores, items, events, cfg, run_date, axis, vocab)
    return Prepared(validation=result, wide=wide)


def check_inputs(cfg: Config, result: ValidationResult) -> None:
    """Stop what would otherwise pass silently: event types ``data.event_types`` does not
    declare; log the events loaded per type, and warn about event scopes that name several
    levels.  (The sales dates' spacing is checked before validation: ``resolve_grid``.)"""
    stores, events = result.tables[STORES.name].accepted, result.tables[EVENTS.name].accepted
    counts = check_declared(events, cfg.data.event_types)
    levels = scope_levels(cfg.data.hierarchy, stores.columns)
    series = result.accepted.select(*SERIES_KEY).distinct()
    reached = reach_counts(stores, events, levels, series)
    log.info(
        "events: %d rows%s",
        sum(counts.values()),
        "".join(
            f"; {t}: {n} rows reaching {reached.get(t, (0, 0))[0]} stores, "
            f"{reached.get(t, (0, 0))[1]} series"
            for t, n in sorted(counts.items())
        ),
    )
    warn_about_scopes(stores, events, levels)


def run_features(
    spark: SparkSession, cfg: Config, run_date: dt.date | None, run_id: str = "adhoc"
) -> FeatureResult:
    """Build and write every split, the neighbour table, the quarantine and the spec."""
    with phase(spark, "features: read, validate and densify the inputs"):
        prep = prepare(spark, cfg, run_date)
    try:
        return _write_features(spark, cfg, prep, run_id)
    finally:
        prep.release()


def write_quarantine_and_account(
    spark: SparkSession, cfg: Config, validation: ValidationResult, run_id: str
) -> dict[str, int]:
    """Write the quarantined rows of every table, then check per table that input = accepted
    + quarantined + filtered, counting what was written; returns the counts."""
    run_date = validation.run_date
    write_quarantine(validation.quarantined, cfg.database, "features", run_id, run_date)
    written_q = {
        r["table_name"]: int(r["count"])
        for r in spark.table(f"{cfg.database}.quarantine")
        .where((F.col("run_date") == F.lit(run_date)) & (F.col("run_id") == run_id))
        .groupBy("table_name")
        .count()
        .collect()  # one row per table
    }
    counts = validation.counts
    for name, table in validation.tables.items():
        accepted_n = table.accepted.count()
        check_accounting(name, table.counts, accepted_n, written_q.get(name, 0))
        prefix = "" if name == SALES.name else f"{name}_"
        counts[f"{prefix}accepted_written"] = accepted_n
        counts[f"{prefix}quarantined_written"] = written_q.get(name, 0)
    counts["quarantined_total_written"] = sum(written_q.values())
    return counts


def iso_weekday(column: str):
    """The ISO weekday (1 = Monday .. 7 = Sunday) of a date column."""
    return F.weekday(column) + 1


def _write_features(spark: SparkSession, cfg: Config, prep: Prepared, run_id: str) -> FeatureResult:
    out_dir = cfg.path("features")
    with phase(spark, "features: quarantine and accounting"):
        counts = write_quarantine_and_account(spark, cfg, prep.validation, run_id)
    quarantined_out = counts["quarantined_total_written"]

    with phase(spark, "features: neighbour table"):
        neighbours = write_parquet_atomic(prep.wide.neighbours.coalesce(1), f"{out_dir}/neighbours")
    examples = build_examples_df(prep.wide, cfg, SPLITS)
    with phase(spark, "features: example windows"):
        examples_dir = write_parquet_atomic(
            examples.repartition(write_tasks(spark, cfg, prep.wide), "store_id", "item_id"),
            f"{out_dir}/examples",
            partition_by=["split"],
            max_records_per_file=cfg.features.rows_per_file,
        )
    written = spark.read.parquet(examples_dir)
    with phase(spark, "features: split counts and scalers"):
        by_split = (
            written.groupBy("split")
            .agg(F.count("*").alias("count"), F.collect_set(iso_weekday("origin")).alias("days"))
            .collect()
        )
        split_rows = {r["split"]: int(r["count"]) for r in by_split}
        train_days = next((sorted(r["days"]) for r in by_split if r["split"] == "train"), [])
    if not split_rows.get("train") or not split_rows.get("val"):
        raise DataError(
            f"run date {prep.run_date}: no training ({split_rows.get('train', 0)}) or "
            f"validation ({split_rows.get('val', 0)}) examples; the accepted data ends "
            f"{prep.wide.axis.date(prep.wide.last_target_day)} -- check the run date and "
            "features.splits"
        )
    layout = layout_for(cfg, prep.wide)
    with phase(spark, "features: split counts and scalers"):
        scalers = fit_scalers(written.where(F.col("split") == "train"), layout.numeric)
    settings = cfg.fingerprint("features", "data", "validation")
    spec = FeatureSpec(
        layout=layout,
        dataset=cfg.data.name,
        run_date=prep.run_date,
        t0=prep.wide.axis.t0,
        n_days=prep.wide.axis.n_days,
        grid=prep.wide.axis.grid.to_dict(),
        aggregate_levels=prep.wide.levels,
        item_levels=prep.wide.item_levels,
        vocab=prep.wide.vocab,
        scalers=scalers,
        splits={s: SplitInfo(f"{examples_dir}/split={s}", split_rows.get(s, 0)) for s in SPLITS},
        neighbours=neighbours,
        features_config=settings,
        features_id=features_id(settings, split_rows, prep.run_date),
        origin_weekdays=train_days,
    )
    write_spec(out_dir, spec)
    counts.update({f"examples_{k}": v for k, v in split_rows.items()})
    counts["series"] = prep.wide.table.count()
    write_json(
        f"{cfg.path('runs')}/features/{prep.run_date}/manifest.json",
        {"run_id": run_id, "run_date": prep.run_date, "counts": counts, "inputs": _lineage(cfg)},
    )
    log.info("features: %s", counts)
    summary = RunSummary(
        run_date=prep.run_date,
        rows_in=counts["input"],
        rows_out=sum(split_rows.values()),
        rows_quarantined=quarantined_out,
        details=dict(counts),
    )
    return FeatureResult(run_date=prep.run_date, spec=spec, counts=counts, summary=summary)


def _lineage(cfg: Config) -> dict[str, Any]:
    if cfg.data.source == "generated":
        return {
            "source": "generated",
            "path": cfg.path("inputs"),
            "generator": cfg.fingerprint("data"),
        }
    return {"source": "tables", "sales": cfg.data.sales.path, "stores": cfg.data.stores.path}
