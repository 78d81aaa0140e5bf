"""The feature job's logic: validated inputs -> day arrays -> region context -> examples.

``run_features`` is what ``jobs/features.py`` calls; ``build_examples_df`` is shared with
the forecast and evaluation jobs, which rebuild scoring/test windows with exactly the same
code and the vocabularies of the trained model's feature spec.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st import spec as specs
from sales_st.config import Config
from sales_st.io import read_json, write_json, write_parquet_atomic
from sales_st.loader import load_inputs
from sales_st.panel import Axis, make_axis, series_arrays, store_calendar
from sales_st.schema import extra_static_columns
from sales_st.spatial import neighbour_arrays, neighbour_table, region_aggregates
from sales_st.validation import (
    ValidationResult,
    check_accounting,
    default_run_date,
    validate_sales,
    validate_stores,
)
from sales_st.windows import OriginRule, build_examples, float_arrays, needs_target

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "score")


@dataclass
class Prepared:
    """Validated inputs and everything derived from them that examples are cut from."""

    validation: ValidationResult
    stores: DataFrame
    items: DataFrame
    axis: Axis
    run_date: dt.date
    last_target_day: int
    wide: DataFrame
    neighbours: DataFrame
    levels: list[str]
    vocab: dict[str, list[str]]


def resolve_boundary(value: int | str, run_date: dt.date) -> dt.date:
    if isinstance(value, int):
        return run_date + dt.timedelta(days=value)
    return dt.date.fromisoformat(value)


def origin_rules(cfg: Config, axis: Axis, run_date: dt.date, last_target_day: int,
                 splits: tuple[str, ...] = SPLITS) -> list[OriginRule]:
    f = cfg.features
    r = axis.day(run_date)
    train_end = axis.day(resolve_boundary(f.splits.train_end, run_date))
    val_end = axis.day(resolve_boundary(f.splits.val_end, run_date))
    if not train_end <= val_end <= r:
        raise ValueError(
            f"features.splits: need train_end <= val_end <= run date, found "
            f"{axis.date(train_end)}, {axis.date(val_end)}, {run_date}"
        )
    big = axis.n_days + f.horizon
    all_rules = {
        "train": OriginRule("train", r, f.stride, 0, train_end, train_end, True),
        "val": OriginRule("val", r, f.stride, train_end, val_end, val_end, True),
        "test": OriginRule("test", r, f.splits.test_stride, val_end, r, last_target_day, True),
        "score": OriginRule("score", r, 1, r, r, big, False),
    }
    return [all_rules[s] for s in splits]


def hierarchy_columns(cfg: Config, stores: DataFrame) -> list[str]:
    return [lvl.column for lvl in cfg.data.hierarchy if lvl.column in stores.columns]


def static_categoricals(stores: DataFrame, items: DataFrame, levels: list[str]) -> dict[str, str]:
    """Vocabulary name -> column, for ids and categorical attributes."""
    cats = {"store_id": "store_id", "item_id": "item_id"}
    cats.update({c: c for c in levels})
    cats["store_type"] = "store_type"
    cats["category"] = "category"
    for c in extra_static_columns(stores.columns) + extra_static_columns(items.columns):
        if c.startswith("static_cat_"):
            cats[c] = c
    return cats


def fit_vocab(stores: DataFrame, items: DataFrame, cats: dict[str, str]) -> dict[str, list[str]]:
    """Sorted distinct values per categorical column (dimension tables: small)."""
    vocab = {}
    for name, col in cats.items():
        src = stores if col in stores.columns else items
        values = [r[0] for r in src.select(col).where(F.col(col).isNotNull()).distinct().collect()]
        vocab[name] = sorted(str(v) for v in values)
    return vocab


def with_index(df: DataFrame, col: str, values: list[str], spark: SparkSession) -> DataFrame:
    """``<col>_idx``: 1-based position in the vocabulary, 0 for unknown or null."""
    lookup = spark.createDataFrame(
        [(v, i + 1) for i, v in enumerate(values)] or [("", 0)],
        f"{col}__v string, {col}_idx int",
    )
    return df.join(F.broadcast(lookup), df[col].cast("string") == lookup[f"{col}__v"], "left").drop(
        f"{col}__v"
    ).fillna(0, [f"{col}_idx"])


def prepare(spark: SparkSession, cfg: Config, run_date: dt.date | None,
            vocab: dict[str, list[str]] | None = None) -> Prepared:
    """Load and validate inputs, densify, build calendar and region context."""
    inputs = load_inputs(spark, cfg)
    stores, items, events, sales = inputs["stores"], inputs["items"], inputs["events"], inputs["sales"]
    validate_stores(stores)
    if run_date is None and cfg.data.run_date:
        run_date = dt.date.fromisoformat(cfg.data.run_date)
    if run_date is None:
        run_date = default_run_date(sales)
        log.info("run date not given: using the last day with an observed target, %s", run_date)
    result = validate_sales(sales, stores, items, cfg.validation, run_date)
    accepted = result.accepted
    if not items.take(1):
        items = accepted.select("item_id").distinct().select(
            "item_id", F.lit(None).cast("string").alias("category"),
            F.lit(None).cast("double").alias("base_price"),
        )
    f = cfg.features
    axis = make_axis(accepted, run_date, f.horizon)
    last_target = accepted.where(F.col("target").isNotNull()).agg(F.max("date")).first()[0]
    levels = hierarchy_columns(cfg, stores)
    agg_levels = [lvl for lvl in f.spatial.aggregate_levels if lvl in levels]

    series = series_arrays(accepted, axis).persist()
    calendar = store_calendar(stores, events, axis, levels, f.holiday_window)
    neighbours = neighbour_table(stores, f.spatial, levels).persist()
    nbr = neighbour_arrays(series, neighbours, f.spatial.k)

    cats = static_categoricals(stores, items, levels)
    if vocab is None:
        vocab = fit_vocab(stores, items, cats)
    store_cols = ["store_id", *levels, "store_type", "size", "latitude", "longitude"]
    store_cols += extra_static_columns(stores.columns)
    item_cols = ["item_id", "category", "base_price", *extra_static_columns(items.columns)]
    wide = (
        series.join(stores.select(*dict.fromkeys(store_cols)), "store_id", "left")
        .join(items.select(*dict.fromkeys(item_cols)), "item_id", "left")
        .join(calendar, "store_id", "left")
        .join(nbr, ["store_id", "item_id"], "left")
    )
    for level in agg_levels:
        agg = region_aggregates(series, stores, level, axis).withColumnRenamed(
            "agg_y", f"agg_{level}_y"
        ).withColumnRenamed("agg_has", f"agg_{level}_has")
        wide = wide.join(agg, [level, "item_id"], "left")
    for name, col in cats.items():
        wide = with_index(wide, col, vocab.get(name, []), spark)
    wide = wide.persist()
    return Prepared(
        validation=result, stores=stores, items=items, axis=axis, run_date=run_date,
        last_target_day=axis.day(last_target), wide=wide, neighbours=neighbours,
        levels=agg_levels, vocab=vocab,
    )


def build_examples_df(prep: Prepared, cfg: Config, splits: tuple[str, ...]) -> DataFrame:
    """Examples for ``splits`` with the columns the feature spec describes."""
    rules = origin_rules(cfg, prep.axis, prep.run_date, prep.last_target_day, splits)
    ex = build_examples(prep.wide, rules, cfg.features, prep.axis, prep.levels)
    ex = needs_target(ex, rules)
    layout = specs.layout(cfg, prep.levels, list(prep.vocab), _static_numeric(prep))
    new_cut = prep.axis.day(prep.run_date) - cfg.features.new_series_days
    ex = ex.withColumn("origin", F.expr(f"date_add(DATE'{prep.axis.t0.isoformat()}', o)"))
    ex = ex.withColumn("is_new_series", (F.col("first_day") > new_cut).cast("int"))
    ex = ex.withColumn("series_start", F.expr(f"date_add(DATE'{prep.axis.t0.isoformat()}', first_day)"))
    meta = ["split", "store_id", "item_id", "origin", "series_start", "is_new_series", "nbr_ids",
            *[c for c in specs.REGION_META if c in ex.columns]]
    cols = list(dict.fromkeys(meta + layout.all_columns()))
    return float_arrays(ex.select(*cols), layout.float_columns())


def _static_numeric(prep: Prepared) -> list[str]:
    cols = ["size", "base_price"]
    cols += [c for c in prep.wide.columns if c.startswith("static_num_")]
    return cols


def fit_scalers(examples: DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Mean and standard deviation of scalar features over the given (training) examples."""
    aggs = []
    for c in columns:
        aggs += [F.mean(c).alias(f"{c}__m"), F.stddev_pop(c).alias(f"{c}__s")]
    row = examples.agg(*aggs).first()
    out = {}
    for c in columns:
        m, s = row[f"{c}__m"], row[f"{c}__s"]
        out[c] = [float(m or 0.0), float(s) if s and s > 1e-9 else 1.0]
    return out


def run_features(spark: SparkSession, cfg: Config, run_date: dt.date | None,
                 record: Any = None) -> dict[str, Any]:
    """Build and write every split, the neighbour table, the quarantine and the spec."""
    from sales_st.warehouse import write_quarantine

    prep = prepare(spark, cfg, run_date)
    out_dir = cfg.path("features")
    counts = dict(prep.validation.counts)
    job = "features"
    run_id = record.run_id if record is not None else "adhoc"
    write_quarantine(prep.validation.quarantined, cfg.database, job, run_id, prep.run_date)
    quarantined_out = (
        spark.table(f"{cfg.database}.quarantine")
        .where((F.col("run_date") == F.lit(prep.run_date)) & (F.col("run_id") == run_id))
        .count()
    )
    accepted_out = prep.validation.accepted.count()
    check_accounting(counts, accepted_out, quarantined_out)

    write_parquet_atomic(prep.neighbours.coalesce(1), f"{out_dir}/neighbours")
    examples = build_examples_df(prep, cfg, SPLITS)
    write_parquet_atomic(
        examples.repartition(max(2, spark.sparkContext.defaultParallelism), "store_id", "item_id"),
        f"{out_dir}/examples",
        partition_by=["split"],
        max_records_per_file=cfg.features.rows_per_file,
    )
    written = spark.read.parquet(f"{out_dir}/examples")
    split_rows = {r["split"]: int(r["count"]) for r in written.groupBy("split").count().collect()}
    layout = specs.layout(cfg, prep.levels, list(prep.vocab), _static_numeric(prep))
    scalers = fit_scalers(written.where(F.col("split") == "train"), layout.scaled_columns())
    spec = specs.make_spec(cfg, layout, prep, scalers, split_rows, out_dir)
    write_json(f"{out_dir}/feature_spec.json", spec)
    counts.update({f"examples_{k}": v for k, v in split_rows.items()})
    counts["accepted_written"] = accepted_out
    counts["quarantined_written"] = quarantined_out
    counts["series"] = prep.wide.count()
    write_json(f"{cfg.path('runs')}/features/{prep.run_date}/manifest.json",
               {"run_id": run_id, "run_date": prep.run_date, "counts": counts,
                "inputs": _lineage(cfg)})
    if record is not None:
        record.run_date = prep.run_date
        record.rows_in = counts["input"]
        record.rows_out = sum(split_rows.values())
        record.rows_quarantined = quarantined_out
        record.details = counts
    prep.validation.accepted.unpersist()
    log.info("features: %s", counts)
    return {"counts": counts, "spec": spec, "run_date": prep.run_date}


def _lineage(cfg: Config) -> dict[str, Any]:
    if cfg.data.source == "generated":
        return {"source": "generated", "path": cfg.path("inputs"),
                "generator": cfg.fingerprint("data")}
    return {"source": "tables", "sales": cfg.data.sales.path, "stores": cfg.data.stores.path}


def load_spec(cfg: Config) -> dict[str, Any]:
    return read_json(f"{cfg.path('features')}/feature_spec.json")
