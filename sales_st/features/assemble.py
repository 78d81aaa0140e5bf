"""Pure transforms of the feature stage: validated tables -> the wide per-series table ->
examples.  No storage here: :mod:`sales_st.features.job` reads, validates and writes.

The forecast and evaluation jobs rebuild scoring windows with the same functions and the
vocabularies of the trained model's feature spec.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config, FeaturesConfig
from sales_st.data.contract import (
    SERIES_KEY,
    STATIC_CAT_PREFIX,
    STATIC_NUM_PREFIX,
    extra_static_columns,
)
from sales_st.data.events import indicator_types, scope_levels
from sales_st.errors import ConfigError
from sales_st.features import names as N
from sales_st.features.calendar import Axis, series_arrays, store_calendar
from sales_st.features.items import item_aggregates
from sales_st.features.spatial import neighbour_arrays, neighbour_table, region_aggregates
from sales_st.features.spec import Layout, make_layout
from sales_st.features.splits import origin_rules
from sales_st.features.windows import build_examples, explode_origins, float_arrays, needs_target
from sales_st.frames import checkpointed, one_row, release

# Columns carried on every example besides the model's inputs (keys, segment, explanations).
EXAMPLE_META = ["split", *SERIES_KEY, "origin", "series_start", "is_new_series", "nbr_ids"]


@dataclass
class Wide:
    """The wide per-series table examples are cut from, and what it was built with."""

    table: DataFrame
    neighbours: DataFrame
    axis: Axis
    run_date: dt.date
    last_target_day: int
    region_columns: list[str]  # hierarchy columns present on the stores
    levels: list[str]  # hierarchy levels with aggregate channels
    vocab: dict[str, list[str]]
    cached: list[DataFrame] = field(default_factory=list)
    item_levels: list[str] = field(default_factory=list)  # product hierarchy columns

    def release(self) -> None:
        """Free what building this table held on the executors (call when the job is done)."""
        for df in self.cached:
            release(df)
        self.cached.clear()


def hierarchy_columns(cfg: Config, stores: DataFrame) -> list[str]:
    return [lvl.column for lvl in cfg.data.hierarchy if lvl.column in stores.columns]


def static_categoricals(
    stores: DataFrame, items: DataFrame, levels: list[str], item_levels: list[str] | None = None
) -> dict[str, str]:
    """Vocabulary name -> column, for ids and categorical attributes (the levels of both
    hierarchies among them)."""
    cats = {c: c for c in SERIES_KEY}
    cats.update({c: c for c in levels})
    cats["store_type"] = "store_type"
    cats["category"] = "category"
    cats.update({c: c for c in item_levels or []})
    for c in extra_static_columns(stores.columns) + extra_static_columns(items.columns):
        if c.startswith(STATIC_CAT_PREFIX):
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
    idx = N.index_column(col)
    lookup = spark.createDataFrame(
        [(v, i + 1) for i, v in enumerate(values)] or [("", 0)],
        f"{col}__v string, {idx} int",
    )
    return (
        df.join(F.broadcast(lookup), df[col].cast("string") == lookup[f"{col}__v"], "left")
        .drop(f"{col}__v")
        .fillna(0, [idx])
    )


def wide_table(
    accepted: DataFrame,
    stores: DataFrame,
    items: DataFrame,
    events: DataFrame,
    cfg: Config,
    run_date: dt.date,
    axis: Axis,
    vocab: dict[str, list[str]] | None = None,
) -> Wide:
    """Dense day arrays, calendar, neighbours and region aggregates joined per series."""
    spark = accepted.sparkSession
    f = cfg.features
    last_target = one_row(accepted.where(F.col("target").isNotNull()).agg(F.max("date")))[0]
    region_columns = hierarchy_columns(cfg, stores)
    agg_levels = [lvl for lvl in f.spatial.aggregate_levels if lvl in region_columns]
    item_levels = cfg.data.item_columns  # the contract made sure the items carry them

    series = series_arrays(accepted, axis).persist()
    calendar = store_calendar(
        stores,
        events,
        axis,
        scope_levels(cfg.data.hierarchy, stores.columns),
        f.holiday_window,
        calendar_event_types(cfg),
    )
    neighbours = neighbour_table(stores, f.spatial, region_columns).persist()
    nbr = neighbour_arrays(series, neighbours, f.spatial.k)

    cats = static_categoricals(stores, items, region_columns, item_levels)
    if vocab is None:
        vocab = fit_vocab(stores, items, cats)
    store_cols = ["store_id", *region_columns, "store_type", "size", "latitude", "longitude"]
    store_cols += extra_static_columns(stores.columns)
    item_cols = ["item_id", "category", "base_price", *item_levels]
    item_cols += extra_static_columns(items.columns)
    wide = (
        series.join(stores.select(*dict.fromkeys(store_cols)), "store_id", "left")
        .join(items.select(*dict.fromkeys(item_cols)), "item_id", "left")
        .join(calendar, "store_id", "left")
        .join(nbr, SERIES_KEY, "left")
    )
    for level in agg_levels:
        agg = (
            region_aggregates(series, stores, level, axis)
            .withColumnRenamed("agg_y", f"agg_{level}_y")
            .withColumnRenamed("agg_has", f"agg_{level}_has")
        )
        wide = wide.join(agg, [level, "item_id"], "left")
    for level in item_levels:
        agg = (
            item_aggregates(series, items, level, axis)
            .withColumnRenamed("agg_y", f"agg_item_{level}_y")
            .withColumnRenamed("agg_has", f"agg_item_{level}_has")
        )
        wide = wide.join(agg, ["store_id", level], "left")
    for name, col in cats.items():
        wide = with_index(wide, col, vocab.get(name, []), spark)
    # checkpointed, not persisted: every example table is cut from it, and each step of
    # that would otherwise be analysed again over the whole input lineage above
    wide = checkpointed(wide)
    return Wide(
        table=wide,
        neighbours=neighbours,
        axis=axis,
        run_date=run_date,
        last_target_day=axis.day(last_target),
        region_columns=region_columns,
        levels=agg_levels,
        vocab=vocab,
        cached=[wide, neighbours, series],
        item_levels=list(item_levels),
    )


def static_numeric(wide: DataFrame) -> list[str]:
    return list(N.STATIC_NUMERIC) + [c for c in wide.columns if c.startswith(STATIC_NUM_PREFIX)]


def layout_for(cfg: Config, wide: Wide) -> Layout:
    f = cfg.features
    return make_layout(
        f.history,
        f.horizon,
        f.spatial.k,
        f.lags,
        f.rolling_windows,
        wide.levels,
        list(wide.vocab),
        static_numeric(wide.table),
        extra_future(cfg),
        wide.item_levels,
    )


def check_event_settings(cfg: Config) -> None:
    """``data.event_types`` must be names (they become column names), every event of
    ``features.event_distances`` a built-in source or a declared type, and no date expression
    may take an indicator channel's name."""
    for t in cfg.data.event_types:
        if not t.isidentifier():
            raise ConfigError(
                f"config key 'data.event_types': event type {t!r} must be a name (letters, "
                "digits, _); recode it with data.events.values.event_type"
            )
    for e in cfg.features.event_distances:
        if e not in N.EVENT_SOURCES and e not in cfg.data.event_types:
            raise ConfigError(
                f"config key 'features.event_distances': {e!r} is neither one of "
                f"{', '.join(N.EVENT_SOURCES)} nor a type declared in data.event_types "
                f"({', '.join(cfg.data.event_types)})"
            )
    indicators = {N.event_indicator(t) for t in indicator_types(cfg.data.event_types)}
    for name in cfg.features.future_expressions:
        if name in indicators:
            raise ConfigError(
                f"config key 'features.future_expressions.{name}': '{name}' is the indicator "
                "channel of a type in data.event_types; choose another name"
            )


def calendar_event_types(cfg: Config) -> list[str]:
    """Event types the calendar builds an ``event_<type>`` day array for: the declared ones
    beyond the built-in holidays (indicator channels), and the event distances' others."""
    distances = [e for e in cfg.features.event_distances if e not in N.EVENT_SOURCES]
    return list(dict.fromkeys(indicator_types(cfg.data.event_types) + distances))


def extra_future(cfg: Config) -> list[str]:
    """Config-declared known-future channels, in the order the windows build them: one
    indicator per declared event type, the event distances, the matched same-weekday means,
    the date expressions."""
    f = cfg.features
    return (
        [N.event_indicator(t) for t in indicator_types(cfg.data.event_types)]
        + N.event_channels(f.event_distances)
        + [N.matched_mean(flag) for flag in f.matched_means]
        + list(f.future_expressions)
    )


def build_examples_df(wide: Wide, cfg: Config, splits: tuple[str, ...]) -> DataFrame:
    """Examples for ``splits`` with the columns the feature spec describes."""
    rules = origin_rules(cfg.features, wide.axis, wide.run_date, wide.last_target_day, splits)
    ex = build_examples(
        wide.table,
        rules,
        cfg.features,
        wide.axis,
        wide.levels,
        indicator_types(cfg.data.event_types),
        wide.item_levels,
    )
    ex = needs_target(ex, rules)
    layout = layout_for(cfg, wide)
    axis = wide.axis
    # new_series_days counts days whatever the grid
    new_cut = axis.day(wide.run_date - dt.timedelta(days=cfg.features.new_series_days))
    ex = ex.withColumn("origin", F.expr(axis.date_sql("o")))
    ex = ex.withColumn("is_new_series", (F.col("first_day") > new_cut).cast("int"))
    ex = ex.withColumn("series_start", F.expr(axis.date_sql("first_day")))
    groups = wide.region_columns + wide.item_levels
    meta = EXAMPLE_META + [c for c in groups if c in ex.columns]
    cols = list(dict.fromkeys(meta + layout.all_columns()))
    return float_arrays(ex.select(*cols), layout.float_columns())


def window_counts(
    series: DataFrame, cfg: FeaturesConfig, axis: Axis, run_date: dt.date, last_target_day: int
) -> dict[str, int]:
    """Examples per split the feature job would cut from ``series`` (one row per series with
    its ``first_day`` on ``axis``), without building them: the origins of each split's rule
    that honour ``min_history``.  An upper bound for train, val and test: the feature job
    also drops windows without an observed target in the horizon, an observed history day
    or a day with sales in the last year (:func:`needs_target`)."""
    rules = origin_rules(cfg, axis, run_date, last_target_day)
    rows = explode_origins(series, rules, cfg).groupBy("split").count().collect()
    found = {r["split"]: int(r["count"]) for r in rows}
    return {rule.name: found.get(rule.name, 0) for rule in rules}


def fit_scalers(examples: DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Mean and standard deviation of scalar features over the given (training) examples."""
    aggs = []
    for c in columns:
        aggs += [F.mean(c).alias(f"{c}__m"), F.stddev_pop(c).alias(f"{c}__s")]
    row = one_row(examples.agg(*aggs))
    out = {}
    for c in columns:
        m, s = row[f"{c}__m"], row[f"{c}__s"]
        out[c] = [float(m or 0.0), float(s) if s and s > 1e-9 else 1.0]
    return out
