"""The forecast job: rebuild the run date's scoring windows with the feature code (the
model's vocabularies), score them with the stored model, and replace the run date's partition
of the catalog table ``<database>.forecasts``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import SERIES_KEY
from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import DataError
from sales_st.evaluation.baselines import KEYS
from sales_st.evaluation.selection import (
    ENSEMBLE,
    ensemble_id,
    ensemble_rows,
    read_selection,
    selection_path,
)
from sales_st.features.assemble import Wide, build_examples_df
from sales_st.features.job import prepare
from sales_st.features.spec import FeatureSpec
from sales_st.frames import phase
from sales_st.runtime import tracking
from sales_st.serving.aggregates import (
    item_group_levels,
    median_column,
    region_totals,
    scores_for,
    with_item_groups,
    with_lead_time,
)
from sales_st.serving.scoring import (
    FORECASTS_COMMENT,
    REGION_COMMENT,
    forecast_comments,
    forecast_table_ddl,
    method_rows,
    quantile_columns,
    region_comments,
    region_ddl,
    score_examples,
)
from sales_st.storage.catalog import RunSummary, ensure_table, replace_partition
from sales_st.storage.files import json_exists
from sales_st.storage.views import create_forecast_runs
from sales_st.training import store as model_store

log = logging.getLogger(__name__)


@dataclass
class ForecastResult:
    table: str
    rows: int
    series: int
    model_id: str
    run_date: dt.date
    method: str = ""
    summary: RunSummary = field(default_factory=RunSummary)


@dataclass(frozen=True)
class Published:
    """What the forecast job publishes: one network (``members`` empty), or a weighted mix
    of stored models (LightGBM alone is a mix of one)."""

    model_id: str  # the network's id, or the mix's recorded id
    method: str
    members: dict[str, str] = field(default_factory=dict)  # name -> model id
    weights: dict[str, list[float]] = field(default_factory=dict)  # horizon week -> weights
    scales: dict[str, float] = field(default_factory=dict)  # name -> level factor (default 1)


def resolve_published(root: str, ref: str) -> Published:
    """``forecast.model`` -> what to publish; ``best`` reads the evaluation's selection."""
    if ref != "best":
        mid = model_store.resolve(root, ref)
        if model_store.load_meta(root, mid).get("kind") == "lightgbm":
            return Published(mid, "lightgbm", {"lightgbm": mid}, {"0": [1.0]})
        return Published(mid, ref)
    sel = read_selection(root)
    winner, ids = sel["winner"], sel["model_ids"]
    for name, mid in ids.items():
        model_store.resolve(root, mid)  # a clear error when a member was deleted
        if model_store.load_spec(root, mid).features_id != sel["features_id"]:
            raise DataError(
                f"model selection in {root}: member {name} ({mid}) was trained on other "
                "features than the selection; re-run the evaluation job"
            )
    if winner == ENSEMBLE:
        return Published(ensemble_id(sel), winner, ids, sel["weights"], sel.get("scales", {}))
    mid = ids[winner]
    if model_store.load_meta(root, mid).get("kind") == "lightgbm":
        return Published(mid, winner, {winner: mid}, {"0": [1.0]})
    return Published(mid, winner)


def weekday_mismatch(spec: FeatureSpec, run_date: dt.date) -> str | None:
    """What to tell a user who forecasts from another weekday than the one every training
    origin of a daily model fell on (``features.splits.train_offsets: run_date``), else None."""
    days = spec.origin_weekdays
    if not spec.period.daily or not days or len(days) == 7 or run_date.isoweekday() in days:
        return None
    trained = " and ".join(calendar.day_name[d - 1] + "s" for d in days)
    return (
        f"the model's training origins all fall on {trained} (features of {spec.run_date}), "
        f"the run date {run_date} is a {calendar.day_name[run_date.weekday()]}: forecasts "
        "from other weekdays than the training origins' are less accurate (Rossmann: "
        "RMSPE +30% to +70%, bench/README.md). For a daily schedule without daily "
        "retraining, build the features with features.splits.train_offsets: series"
    )


def run_forecast(spark: SparkSession, cfg: Config, run_date: dt.date | None) -> ForecastResult:
    root = cfg.path("models")
    pub = resolve_published(root, cfg.forecast.model)
    first = next(iter(pub.members.values()), pub.model_id)
    meta = model_store.load_meta(root, first)
    spec = model_store.load_spec(root, first)
    log.info("forecast: publishing %s (%s)", pub.method, pub.model_id)
    networks = [
        m
        for m in pub.members.values() or [pub.model_id]
        if model_store.load_meta(root, m).get("kind") != "lightgbm"
    ]
    with phase(spark, "forecast: read, validate and densify the inputs"):
        prep = prepare(spark, cfg, run_date, vocab=spec.vocab)
    warning = weekday_mismatch(spec, prep.run_date) if networks else None
    if warning:
        log.warning("forecast: %s", warning)
    cached: list[DataFrame] = []
    try:
        check_compatible(spec, cfg, prep.wide.levels, prep.wide.item_levels)
        with phase(spark, "forecast: series count"):
            total_series = prep.wide.table.count()
        examples = scoring_tasks(build_examples_df(prep.wide, cfg, ("score",)), total_series, cfg)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.forecast.batch_size))
        quantiles = meta["model_config"]["quantiles"]
        regions = cfg.data.region_columns
        scored = score_published(
            spark, cfg, pub, examples, quantiles, prep.run_date, cached, grid=spec.period
        )
        scored = scored.persist()  # scored once: the daily rows, lead time and region totals
        cached.append(scored)
        lead, by_region = published_scores(root, pub, spec)
        qcols = quantile_columns(quantiles)
        median = median_column(qcols, quantiles)
        rows = with_lead_time(scored, list(SERIES_KEY), qcols, quantiles, lead, median=median)
        table = f"{cfg.database}.{cfg.forecast.table}"
        ensure_table(
            spark,
            table,
            forecast_table_ddl(quantiles, regions),
            ["run_date"],
            FORECASTS_COMMENT,
            forecast_comments(quantiles, regions),
        )
        with phase(spark, "forecast: score and write the forecasts"):
            replace_partition(rows, table, {"run_date": prep.run_date})
        grouped = with_item_groups(with_items(scored, prep.wide), prep.wide.item_levels)
        with phase(spark, "forecast: region totals"):
            write_region_totals(spark, cfg, grouped, pub, quantiles, by_region, prep.run_date)
        create_forecast_runs(spark, cfg.database, cfg.forecast.table)
    finally:
        prep.release()
        for df in cached:
            df.unpersist()
    written = spark.table(table).where(F.col("run_date") == F.lit(prep.run_date))
    with phase(spark, "forecast: check what was written"):
        n_rows = written.count()
        n_series = written.select(*SERIES_KEY).distinct().count()
    if n_series < total_series:
        log.warning(
            "forecast: %d of %d series have no scoring window (too little history)",
            total_series - n_series,
            total_series,
        )
    log.info(
        "forecast: %d rows for %d series, run date %s, model %s -> %s",
        n_rows,
        n_series,
        prep.run_date,
        pub.model_id,
        table,
    )
    tracking.current(cfg).set_tags(
        {"sales_st.method": pub.method, "sales_st.table": table, "sales_st.model_id": pub.model_id}
    )
    summary = RunSummary(
        run_date=prep.run_date,
        model_id=pub.model_id,
        rows_in=total_series,
        rows_out=n_rows,
        details={
            "method": pub.method,
            "series_forecast": n_series,
            "series_total": total_series,
            "series_without_forecast": total_series - n_series,
        },
    )
    return ForecastResult(
        table=table,
        rows=n_rows,
        series=n_series,
        model_id=pub.model_id,
        method=pub.method,
        run_date=prep.run_date,
        summary=summary,
    )


def scoring_tasks(examples: DataFrame, series: int, cfg: Config) -> DataFrame:
    """``examples`` in as many partitions as the cluster has cores, or more where there are
    over ``forecast.series_per_task`` series per core (never more than they have): every
    scoring task loads the model once in its Python worker, so a small run date's windows
    are not scored by one task per shuffle partition, and no core waits."""
    cores = examples.sparkSession.sparkContext.defaultParallelism
    tasks = max(cores, math.ceil(series / max(1, cfg.forecast.series_per_task)))
    # coalesce never adds partitions: with fewer partitions than tasks it changes nothing
    return examples.coalesce(tasks)


def score_published(
    spark: SparkSession,
    cfg: Config,
    pub: Published,
    examples: DataFrame,
    quantiles: list[float],
    run_date: dt.date,
    cached: list[DataFrame] | None = None,
    explain: bool | None = None,
    grid: Grid = DAILY,
) -> DataFrame:
    """Forecast rows (the forecasts table's columns) of the published method on
    ``examples`` (windows on ``grid``); ``explain`` defaults to ``forecast.explain``."""
    root, regions = cfg.path("models"), cfg.data.region_columns
    explain = cfg.forecast.explain if explain is None else explain
    if pub.members:
        return mixed_rows(
            spark, examples, root, pub, quantiles, regions, run_date, cfg, cached, grid, explain
        )
    return score_examples(
        examples,
        root,
        pub.model_id,
        quantiles,
        regions,
        run_date,
        explain,
        cfg.forecast.top_steps,
    )


EXPLANATIONS = [
    "gate",
    "top_history_dates",
    "top_history_weights",
    "spatial_sources",
    "spatial_weights",
]


def published_scores(
    root: str, pub: Published, spec: FeatureSpec
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The validation-fitted scores of the published method's sums (lead time; region totals
    per level), from the evaluation's selection on the same features; without them (None,
    {}) and a warning: the intervals of sums then assume independent errors."""
    sel = read_selection(root) if json_exists(selection_path(root)) else {}
    sums = sel.get("sums") if sel.get("features_id") == spec.features_id else None
    name = pub.method
    if sums and not scores_for(sums["lead_time"], name):
        # a network published by id or alias: the name it was evaluated under
        name = next((m for m, i in sel.get("model_ids", {}).items() if i == pub.model_id), name)
    lead = scores_for(sums["lead_time"], name) if sums else None
    if lead is None or sums is None:
        log.warning(
            "forecast: no validation-fitted scores of sums for %s (run the evaluation job on "
            "these features): lead-time and region intervals assume independent errors",
            pub.method,
        )
        return None, {}
    regions = {lvl: scores_for(f, name) for lvl, f in sums.get("regions", {}).items()}
    return lead, regions


def write_region_totals(
    spark: SparkSession,
    cfg: Config,
    scored: DataFrame,
    pub: Published,
    quantiles: list[float],
    fitted: dict[str, Any],
    run_date: dt.date,
) -> None:
    """``<database>.forecasts_region``: every hierarchy level's region totals per day, and
    the item groups' (``data.item_hierarchy``; ``scored`` then carries their columns, see
    :func:`with_items`)."""
    groups = cfg.data.region_columns + item_group_levels(cfg.data.item_columns)
    levels = [c for c in groups if c in scored.columns]
    if not levels:
        return
    qcols = quantile_columns(quantiles)
    totals = region_totals(
        scored,
        levels,
        ["target_date", "horizon"],
        qcols,
        quantiles,
        fitted,
        median=median_column(qcols, quantiles),
    ).select(
        "level",
        "region",
        "target_date",
        "horizon",
        F.col("series").cast("bigint"),
        *qcols,
        F.lit(pub.model_id).alias("model_id"),
        F.lit(pub.method).alias("method"),
        F.lit(run_date).cast("date").alias("run_date"),
    )
    table = f"{cfg.database}.{cfg.forecast.table}_region"
    ensure_table(
        spark,
        table,
        region_ddl(quantiles),
        ["run_date"],
        REGION_COMMENT,
        region_comments(quantiles),
    )
    replace_partition(totals, table, {"run_date": run_date})
    log.info("forecast: region totals for %s -> %s", ", ".join(levels), table)


def with_items(scored: DataFrame, wide: Wide) -> DataFrame:
    """The forecast rows with their series' product-hierarchy columns (from the wide table;
    the forecasts table itself does not carry them)."""
    if not wide.item_levels:
        return scored
    groups = wide.table.select(*SERIES_KEY, *wide.item_levels)
    return scored.join(groups, SERIES_KEY, "left")


def mixed_rows(
    spark: SparkSession,
    examples: DataFrame,
    root: str,
    pub: Published,
    quantiles: list[float],
    regions: list[str],
    run_date: dt.date,
    cfg: Config,
    cached: list[DataFrame] | None = None,
    grid: Grid = DAILY,
    explain: bool | None = None,
) -> DataFrame:
    """Forecast rows of a weighted mix of stored models (see ``evaluation.selection``); the
    explanations come from the first network among the members, if any.  The networks'
    scored rows are persisted (scored once, read twice) and added to ``cached``."""
    from sales_st.evaluation.baselines import load_lightgbm, predict_lightgbm

    qcols = quantile_columns(quantiles)
    parts, explained = [], None
    for name, mid in pub.members.items():
        if model_store.load_meta(root, mid).get("kind") == "lightgbm":
            lgbm = load_lightgbm(root, mid)
            part = predict_lightgbm(spark, lgbm, examples, model_store.load_spec(root, mid), qcols)
            part = part.withColumn("method", F.lit(name))
        else:
            scored = score_examples(
                examples,
                root,
                mid,
                quantiles,
                regions,
                run_date,
                cfg.forecast.explain if explain is None else explain,
                cfg.forecast.top_steps,
            ).persist()
            if cached is not None:  # the caller unpersists it when done
                cached.append(scored)
            explained = scored if explained is None else explained
            part = method_rows(scored, name, quantiles, grid)
        parts.append(part.select("method", *KEYS, "horizon", "point", *qcols))
    preds = functools.reduce(DataFrame.unionByName, parts)
    mixed = ensemble_rows(
        preds, {"members": list(pub.members), "weights": pub.weights, "scales": pub.scales}, qcols
    ).withColumn("target_date", F.expr(grid.shift_sql("origin", "horizon")))
    if explained is not None:
        extra = explained.select(*SERIES_KEY, *regions, "target_date", *EXPLANATIONS)
        out = mixed.join(extra, [*SERIES_KEY, "target_date"], "left")
    else:
        present = [c for c in regions if c in examples.columns]
        keys = examples.select(*SERIES_KEY, *present).dropDuplicates(SERIES_KEY)
        out = mixed.join(keys, SERIES_KEY, "left")
        out = out.select(
            "*",
            *[F.lit(None).cast("string").alias(c) for c in regions if c not in present],
            F.lit(None).cast("double").alias("gate"),
            F.lit(None).cast("array<date>").alias("top_history_dates"),
            F.lit(None).cast("array<double>").alias("top_history_weights"),
            F.lit(None).cast("array<string>").alias("spatial_sources"),
            F.lit(None).cast("array<double>").alias("spatial_weights"),
        )
    return out.select(
        *SERIES_KEY,
        *regions,
        "target_date",
        F.col("horizon").cast("int").alias("horizon"),
        *qcols,
        F.lit(pub.model_id).alias("model_id"),
        *EXPLANATIONS,
        F.lit(run_date).cast("date").alias("run_date"),
    )


def check_compatible(
    spec: FeatureSpec, cfg: Config, levels: list[str], item_levels: list[str] | None = None
) -> None:
    f = cfg.features
    want = {
        "history": f.history,
        "horizon": f.horizon,
        "k": f.spatial.k,
        "aggregate_levels": levels,
        "item_levels": list(item_levels or []),
    }
    have = {
        "history": spec.history,
        "horizon": spec.horizon,
        "k": spec.k,
        "aggregate_levels": spec.aggregate_levels,
        "item_levels": spec.item_levels,
    }
    if want != have:
        raise DataError(
            f"the model was trained with features {have} but the config asks for "
            f"{want}; forecast with the same feature settings or retrain"
        )
