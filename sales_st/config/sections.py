"""The configuration's sections as frozen dataclasses: the one place every default lives.

``conf/base.yaml`` holds only what differs from these defaults; ``conf/README.md`` is the
reference generated from this module (``python -m sales_st.config.reference``).  Comments on
a field are its documentation there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class PathsConfig:
    """Where things live.  Relative paths are resolved against ``data_dir``, which itself
    is resolved against the repository root (the parent of ``conf/``) when relative."""

    # Base directory (local path or URI) of the entries below; relative: to the repository root.
    data_dir: str = "data"
    # Input tables in contract form (generated Parquet, one folder per table).
    inputs: str = "inputs/demo"
    # Feature spec (feature_spec.json) and the example tables of each split.
    features: str = "features/demo"
    # Model store: one folder per model id, plus aliases.json.
    models: str = "models"
    # Backtest reports, one folder per run date.
    reports: str = "reports/demo"
    # Spark SQL warehouse directory (spark.sql.warehouse.dir) of the managed tables.
    warehouse: str = "warehouse"
    # Embedded Derby metastore database directory.
    metastore: str = "metastore_db"
    # Pipeline state and per-run manifests.
    runs: str = "runs"
    # Spark event logs of every session (spark.eventLog.dir), read by the history server
    # (scripts/history-server.sh); created when local, must exist when a URI.
    spark_events: str = "spark-events"


@dataclass(frozen=True)
class SparkConfig:
    # Spark master URL; a master given to spark-submit (or SPARK_MASTER) wins.
    master: str = "local[*]"
    # Spark application name.
    app_name: str = "sales_st"
    # Extra Spark properties, passed through verbatim (values as strings); an overlay's
    # entries merge into these.
    conf: dict[str, str] = field(
        default_factory=lambda: {
            "spark.sql.shuffle.partitions": "8",
            "spark.driver.memory": "4g",
        }
    )
    # Spark log level (ALL, DEBUG, INFO, WARN, ERROR, OFF).
    log_level: str = "WARN"
    # The driver JVM's log4j2 configuration (relative to the repository root): quiets the
    # metastore's routine notices.  Empty: Spark's own defaults (what --verbose does).
    log_config: str = "conf/log4j2.properties"
    # A Hive metastore service shared by concurrent jobs, e.g. thrift://127.0.0.1:9083
    # (scripts/metastore.sh start); empty: the embedded Derby metastore, one job at a time.
    metastore_uri: str = ""


@dataclass(frozen=True)
class RegionLevel:
    # Name of the level (a label; tables and features use its column).
    name: str
    # Column that holds this level's id: of the stores table (data.hierarchy) or of the
    # items table (data.item_hierarchy).
    column: str


@dataclass(frozen=True)
class GeneratorConfig:
    """Synthetic data (``jobs/generate.py``).  ``preset`` fills sizes; explicit sizes win."""

    # Size preset: tiny (~0.2M rows), demo, bench (~12M rows), m5 (an M5-like catalogue:
    # 1,500 items in 6 stores, 3 categories of 3 departments, ~6.8M rows), or custom (give
    # every size).
    preset: Literal["demo", "bench", "tiny", "m5", "custom"] = "demo"
    # Seed of every random draw; same seed, same data whatever the partitioning.
    seed: int = 7
    # First day of the generated history (YYYY-MM-DD).
    start_date: str = "2022-01-01"
    # Days of history with observed targets (0 = from the preset).
    days: int = 0
    # Number of states (0 = from the preset).
    n_states: int = 0
    # Cities in each state (0 = from the preset).
    cities_per_state: int = 0
    # Stores in each city (0 = from the preset).
    stores_per_city: int = 0
    # Number of items, each sold in every store (0 = from the preset).
    n_items: int = 0
    # Days of future "plan" rows (known promo/open/price, no target) after the last day.
    plan_days: int = 0
    # Product hierarchy, M5-like (0 = from the preset; none in tiny, demo and bench, whose
    # items carry a category drawn from four labels): items spread evenly over this many
    # categories (items column category: C01 ..), each split into departments_per_category
    # departments (column department: C01-D01 ..), with demand shocks shared by the items of
    # a group (group_shocks_per_year); pair it with data.item_hierarchy [department, category].
    categories: int = 0
    # Departments in each category (0 = from the preset, or 1).
    departments_per_category: int = 0
    # Spark partitions of the generated sales table (0 = from the preset).
    partitions: int = 0
    # Structure of the demand (what the model should learn).

    # Demand multipliers by weekday, Monday first (7 values).
    weekday_profile: list[float] = field(
        default_factory=lambda: [0.9, 0.95, 1.0, 1.05, 1.2, 1.4, 0.5]
    )
    # Relative amplitude of the yearly seasonality (item-specific phase).
    yearly_amplitude: float = 0.15
    # Standard deviation of the per-item linear trend (relative change per year).
    trend_sd: float = 0.15
    # Probability that a store-item is on promotion in a given week.
    promo_probability: float = 0.08
    # Demand multiplier during a promotion week.
    promo_lift: float = 1.6
    # Demand multiplier in the week after a promotion.
    promo_dip: float = 0.85
    # Probability that a store-item's price changes in a 4-week period.
    price_change_probability: float = 0.25
    # Standard deviation of the log price multiplier of a price change.
    price_change_sd: float = 0.1
    # Mean price elasticity of demand (per item: 0.5x to 1.5x this).
    elasticity_mean: float = 1.5
    # Relative demand lift on the day before a public holiday (half of it on school holidays).
    holiday_lift: float = 0.3
    # Expected regional public holidays per state and year.
    regional_holidays_per_year: int = 6
    # Fraction of items with intermittent (slow-moving) demand.
    slow_item_fraction: float = 0.25
    # Fraction of stores closed on Sundays.
    sunday_closed_fraction: float = 0.3
    # Probability per store and 30-day block of a two-week refurbishment closure.
    refurbishment_probability: float = 0.02
    # Fraction of stores opened shortly before the last day (short history).
    new_store_fraction: float = 0.1
    # Longest history of a new store, in days (each gets between half and all of it).
    new_store_history_days: int = 120
    # Expected spatially correlated demand shocks per state and year.
    shocks_per_state_per_year: float = 6.0
    # Typical log-effect of a shock at its centre (random sign, scaled by 0.5-1.5).
    shock_amplitude: float = 0.6
    # Distance (km) over which a shock's effect decays by 1/e; none beyond 4 radii.
    shock_radius_km: float = 60.0
    # Duration of a shock, in days (leadlag and none: each lasts 0.5x to 1.5x this).
    shock_days: int = 10
    # Spatial structure of the demand shocks: shock (events with a centre whose effect decays
    # with distance), leadlag (each city's shocks reach one leader store first and the city's
    # other stores a city-specific number of days later: a known lead-lag truth) or none (the
    # same kind of shocks, drawn per store: nothing shared between stores).
    spatial_signal: Literal["shock", "leadlag", "none"] = "shock"
    # leadlag: range [lo, hi] of the days a city's followers lag its leader (one draw per city).
    spatial_lag_days: list[int] = field(default_factory=lambda: [3, 14])
    # leadlag and none: expected shocks per year, per city (leadlag) or per store (none),
    # each with a random sign and a log-effect of 0.5x to 1.5x shock_amplitude.
    signal_shocks_per_year: float = 12.0
    # With categories: expected demand shocks per year of each department in each store, and
    # of each category in every store at once; each lasts shock_days, with a random sign and
    # a log-effect of 0.5x to 1.5x shock_amplitude, shared by the group's items (what the
    # item-hierarchy aggregates can pick up).
    group_shocks_per_year: float = 6.0
    # Coefficient of variation of the log-normal noise on fast items' demand.
    noise_cv: float = 0.12
    # Spacing of the written sales: day, or the daily rows summed into weeks (one row per
    # week, dated on the Sunday that ends it) or calendar months (dated on the 1st); only
    # whole periods are kept.  Events stay daily.  Pair it with data.frequency.
    frequency: Literal["day", "week", "month"] = "day"


@dataclass(frozen=True)
class TableSource:
    """How one contract table is read from an external dataset (the generic loader).

    ``columns`` maps contract column -> source column; ``constants`` fills contract columns
    that the source lacks; ``values`` recodes source values per contract column.
    """

    # File or directory of the source table; relative: to the repository root.
    path: str = ""
    # File format of path (CSV: with a header, types inferred).
    format: Literal["parquet", "csv"] = "parquet"
    # Contract column -> source column name or Spark SQL expression over source columns.
    columns: dict[str, str] = field(default_factory=dict)
    # Contract column -> constant value, for columns the source lacks.
    constants: dict[str, Any] = field(default_factory=dict)
    # Contract column -> {source value: contract value} recoding; unlisted values pass.
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Extra Spark reader options for path (e.g. sep for CSV).
    options: dict[str, str] = field(default_factory=dict)
    # Optional second table joined on a shared key (e.g. Rossmann store -> state).
    join_path: str = ""
    # File format of join_path.
    join_format: Literal["parquet", "csv"] = "csv"
    # Columns the two tables are (left) joined on.
    join_on: list[str] = field(default_factory=list)
    # A SQL boolean expression over contract columns; rows where it is false are dropped
    # with an accounting line (e.g. "event_type <> 'none'" for calendar encodings).
    keep_if: str = ""
    # Melt wide event columns: contract event_type -> source flag column.
    events_from_flags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    # generated: synthetic tables under paths.inputs; tables: external files mapped by the
    # sections data.sales, data.stores, data.items and data.events.
    source: Literal["generated", "tables"] = "generated"
    # Dataset name, shown in logs, the feature spec and reports.
    name: str = "demo"
    # Run date used when the command line gives none (e.g. a standard evaluation origin);
    # otherwise the last day with an observed target.
    run_date: str | None = None
    # Synthetic data settings (data.source = generated).
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    # Sales facts (required for data.source = tables).
    sales: TableSource = field(default_factory=TableSource)
    # Stores with their region columns (required for data.source = tables).
    stores: TableSource = field(default_factory=TableSource)
    # Calendar events (holidays); optional, empty when no path.
    events: TableSource = field(default_factory=TableSource)
    # Item attributes; optional, derived from the sales when no path.
    items: TableSource = field(default_factory=TableSource)
    # Inventory positions per store, item and date (jobs/replenish.py): on_hand, on_order and
    # optionally lead_time_days, review_days, service_level; generated data has one.
    inventory: TableSource = field(default_factory=TableSource)
    # Region hierarchy, bottom (finest) level first; the store itself is implicit.
    hierarchy: list[RegionLevel] = field(
        default_factory=lambda: [
            RegionLevel("city", "city"),
            RegionLevel("state", "state"),
            RegionLevel("country", "country"),
        ]
    )
    # Region -> (latitude, longitude) centroids used when stores carry no coordinates.
    centroids: dict[str, list[float]] = field(default_factory=dict)
    # Hierarchy column whose values key data.centroids (e.g. state).
    centroid_level: str = ""
    # Event types the events table may hold; a row of any other type fails the feature job
    # (declare it here, or drop it with data.events.keep_if).  public_holiday and
    # school_holiday feed the holiday channels; every other type gets its own known-future
    # indicator channel fut_event_<type>.  Names: letters, digits, _.
    event_types: list[str] = field(default_factory=lambda: ["public_holiday", "school_holiday"])
    # Spacing of the sales dates: day, week or month, or auto to infer it from the gaps
    # between dates (logged; ambiguous spacings fail).  History, horizon, lags, rolling
    # windows, strides and split offsets of features.* then count periods of this length.
    frequency: Literal["auto", "day", "week", "month"] = "auto"
    # The grid's anchor: for week, the weekday of every date (Monday .. Sunday); for month,
    # start (every date the 1st) or end (the last day of its month); empty: inferred.  Rows off
    # the grid break the validation rule off_grid.
    anchor: str = ""
    # Which days a weekly date stands for, to count the holidays and events of its week: the
    # 7 days ending on it (end) or starting on it (start).
    week_label: Literal["end", "start"] = "end"

    # Product hierarchy, finest level first (e.g. department then category), each a column of
    # the items table (data.items.columns maps it for external tables); the item itself is
    # implicit.  Each level gets an aggregate history channel (hist_item_agg_<column>: the
    # mean over the same store's items of the group), metrics and totals per group
    # (<column>) and per store and group (store_<column>).  Empty: no product hierarchy.
    item_hierarchy: list[RegionLevel] = field(default_factory=list)

    @property
    def region_columns(self) -> list[str]:
        """The stores-table columns of the hierarchy, finest first."""
        return [lvl.column for lvl in self.hierarchy]

    @property
    def item_columns(self) -> list[str]:
        """The items-table columns of the product hierarchy, finest first."""
        return [lvl.column for lvl in self.item_hierarchy]


RuleAction = Literal["fail", "quarantine"]
# Validation rules of the sales table, in order of precedence (a row is charged to the first
# rule it breaks).
RULES = (
    "malformed",
    "null_key",
    "date_out_of_range",
    "off_grid",
    "unknown_store",
    "unknown_item",
    "non_finite_target",
    "negative_target",
    "null_target",
    "invalid_value",
    "duplicate_key",
)


@dataclass(frozen=True)
class ValidationConfig:
    # Earliest valid sales date (YYYY-MM-DD); earlier rows break date_out_of_range (null: none).
    start_date: str | None = None
    # Latest valid sales date (YYYY-MM-DD); later rows break date_out_of_range (null: none).
    end_date: str | None = None
    # Rows shown in the error of a rule that fails the job.
    max_examples: int = 5
    # Per rule: quarantine the offending rows (counted, kept in the quarantine table) or fail
    # the job.  A rule missing from the mapping fails.
    rules: dict[str, RuleAction] = field(default_factory=lambda: dict.fromkeys(RULES, "quarantine"))


@dataclass(frozen=True)
class SplitsConfig:
    """Origin-date boundaries.  An int is an offset in periods (days, or weeks or months
    with data.frequency week or month, as every count below) from the run date."""

    # Last day of training targets (training origins end a horizon earlier).
    train_end: int | str = -70
    # Last day of validation targets; validation origins lie after train_end.
    val_end: int | str = -42
    # Days between backtest (test) origins, from val_end up to the run date.
    test_stride: int = 7
    # Days between training origins (0: features.stride).  1 puts origins on every weekday
    # of every series; pair it with train.epoch_fraction.  Measured on Rossmann (1 with
    # epoch_fraction 0.143 against 7): RMSPE fused 0.135 -> 0.133, best 0.125 -> 0.122,
    # no loss on the run date's weekday, 7x the training windows (features 132 s -> 849 s).
    train_stride: int = 0
    # Where each series' training origins fall within the stride: "run_date" puts them all
    # on the run date's weekday; "series" shifts them by a per-series offset (a hash of the
    # series key, 0 .. stride - 1), so that with a stride of 7 they cover every weekday at no
    # extra cost.  Measured on Rossmann (one network, two seeds, test origins on each weekday
    # of the week before the run date): "series" costs RMSPE +5% from the run date's weekday
    # (0.119 -> 0.125) and forecasts as well from every other weekday, where "run_date" is
    # 30-70% worse (bench/README.md, "Run-date weekday").  Keep "run_date" when the model is
    # retrained for every run date (the pipeline does); use "series" when a model trained
    # once is forecast from any weekday (a daily forecast job, weekly training).  The
    # forecast job warns when the run date is on a weekday the training origins missed.
    train_offsets: Literal["series", "run_date"] = "run_date"


@dataclass(frozen=True)
class SpatialConfig:
    # Neighbours: knn (k nearest, 1 / (1 + d / bandwidth)), kernel (Gaussian weights) or
    # hierarchy (same finest region, equal weights; used anyway when coordinates are missing).
    method: Literal["knn", "kernel", "hierarchy"] = "knn"
    # Neighbours per store (neighbour histories per example).
    k: int = 6
    # Distance scale (km) of the knn and kernel neighbour weights.
    bandwidth_km: float = 50.0
    # Stores farther than this (km) are never neighbours (knn, kernel).
    max_distance_km: float = 500.0
    # Hierarchy columns whose same-item means (over the region's stores) become context
    # sequences; levels the stores lack are skipped.
    aggregate_levels: list[str] = field(default_factory=lambda: ["city", "state"])


@dataclass(frozen=True)
class FeaturesConfig:
    """Windows count periods: days, or weeks or months with data.frequency week or month
    (the "days" below).  A weekly or monthly history shorter than a year (52 or 12) leaves
    the seasonal naive and MASE without a season."""

    # Days of history in each example window (at least 7).
    history: int = 56
    # Days forecast after each origin.
    horizon: int = 14
    # Days between consecutive training and validation origins.
    stride: int = 7
    # Least days since a series' first row for an origin to be used (1..history).
    min_history: int = 28
    # Trailing windows (days) of the rolling mean and standard deviation features.
    rolling_windows: list[int] = field(default_factory=lambda: [7, 28, 91])
    # Lag features: the target this many days before the origin (1 = the origin day).
    lags: list[int] = field(default_factory=lambda: [1, 7, 14, 28])
    # Weeks of history averaged into the same-weekday mean (fut_sw_mean, weekday_average);
    # weekly or monthly data: years averaged into the same week's or month's mean.
    same_weekday_weeks: int = 4
    # Days to/since a public holiday are counted up to this many days (and scaled by it).
    holiday_window: int = 14
    # Events whose days-until and days-since become known-future channels for every horizon
    # day (fut_days_to_<e>, fut_days_since_<e>): promo, closed (open = 0), holiday, school, or any
    # declared event type.  Planned events only: their future days are known in advance.
    event_distances: list[str] = field(default_factory=lambda: ["promo", "closed", "school"])
    # Days searched either side for those distances; farther events read as "none".
    event_window: int = 14
    # Flags (promo, holiday, school) whose matched same-weekday mean becomes a known-future
    # channel fut_sw_mean_<flag>: the mean of the last matched_weeks same-weekday days before
    # the origin (open, observed) whose flag equals the target day's, / scale; fut_sw_mean
    # where none matched.  Weekly or monthly data: the last matched_weeks periods.
    matched_means: list[str] = field(default_factory=list)
    # Weeks (weekly or monthly data: periods) searched back for the matched means.
    matched_weeks: int = 8
    # Known-future channels computed per horizon day by a SQL expression of `date` (the target
    # day) and the store/item columns, e.g. {"fut_comp_months": "months_between(date,
    # make_date(static_num_comp_year, static_num_comp_month, 1))"}.  Names start with fut_.
    future_expressions: dict[str, str] = field(default_factory=dict)
    # Series whose first row is within this many days of the run date are "new"
    # (the default fine-tuning segment).
    new_series_days: int = 180
    # Split boundaries of the origins.
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    # Neighbours and region aggregates (the spatial context).
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    # Rows per Parquet file of the example tables (Petastorm shards by row group).
    rows_per_file: int = 4096
    # Size of the window data each task of the examples' write sorts and writes (MiB, an
    # upper bound estimated from the layout and the origins): the write runs in at least one
    # task per core, and in more where the windows would exceed this per task, so that each
    # task's sort stays in memory as the data grows.
    write_task_mb: float = 256.0


@dataclass(frozen=True)
class ModelConfig:
    # Sequence encoder: stacked LSTM with attention, or Transformer encoder.
    temporal: Literal["lstm", "transformer"] = "lstm"
    # Width of the hidden representations (d).
    units: int = 48
    # Stacked LSTM or Transformer layers in the temporal encoder.
    layers: int = 1
    # Attention heads (spatial attention, Transformer); must divide units.
    heads: int = 4
    # Dropout rate in the temporal encoder (0 = none).
    dropout: float = 0.1
    # Use the spatial encoder (neighbour and region context); false: temporal-only model.
    spatial: bool = True
    # How temporal and spatio-temporal representations combine: sigmoid gate or dense layer.
    fusion: Literal["gate", "concat"] = "gate"
    # Initial bias of the fusion gate: 0 starts it half open; negative (e.g. -3) starts the
    # model close to its temporal-only twin, the spatial path opening as training finds it
    # useful.
    fusion_gate_bias: float = 0.0
    # How the region context reaches the spatio-temporal representation h_st: "sequence"
    # adds it to every step of the history and runs the sequence encoder a second time over
    # the result (twice the encoder's cost: the bulk of a training step); "pooled" runs the
    # sequence encoder once and combines its output with the attention-pooled context
    # vector in a dense layer.
    spatial_pass: Literal["sequence", "pooled"] = "sequence"
    # "sequence" pass: days of history the second pass of the sequence encoder reads, the
    # latest (0: as many as the first, model.sequence_days); fewer cut its cost in
    # proportion.  The fused model's temporal attention (explanations) is then 0 on the
    # days before.  Below the first pass's days it needs model.temporal: lstm; with
    # "pooled" it must be 0.
    spatial_pass_days: int = 0
    # Size of each static categorical embedding.
    embedding_dim: int = 8
    # Predicted quantile levels, each in (0, 1); must include 0.5.
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    # Width of the two dense layers of the decoder.
    decoder_units: int = 64
    # Dropout rate after each dense layer of the decoder (0 = none).
    decoder_dropout: float = 0.0
    # true: the decoder predicts corrections to the same-weekday mean of recent weeks (a
    # skip connection from the fut_sw_mean input); false: it predicts the level, the mean
    # one input among the others.  The mean is a noisy anchor where recent weeks hold
    # holidays: off, the test error fell on Rossmann (RMSPE -4%) and on the demo panel
    # (-2%, WAPE -4%), two seeds each (bench/README.md, "Network ablations").
    baseline_skip: bool = False
    # Lead-lag path of the spatial encoder (0 = off): the neighbours' histories, shifted by
    # 1..this many days, are correlated with the own history, and the best-matching
    # neighbours' recent values feed the decoder as leading indicators of each horizon day.
    # At most features.history - 14.
    lead_lag_days: int = 0
    # Space the quantile head and the loss work in: "log" learns log(y / scale + c)
    # (c = log_offset), so that errors count relative to the day's level, as RMSPE, WAPE
    # over mixed-size series and sMAPE read them; quantiles map back exactly (a quantile of
    # a monotone transform is the transform of the quantile).  "scaled": y / scale as is.
    target_space: Literal["log", "scaled"] = "log"
    # c of the log space: larger is closer to the scaled space (more weight on big days).
    log_offset: float = 1.0
    # Loss of the middle output (the point forecast): "pinball", its quantile loss (the
    # median); "relative_squared", the squared relative error ((y - p) / y)^2 of the days
    # with sales, which RMSPE averages: the point forecast then aims at RMSPE's best point,
    # a little below the median.  The other quantiles keep their pinball loss.  On Rossmann
    # the fused network lost with it (test RMSPE 0.1143 -> 0.1214: days with small sales
    # pull every forecast down), while LightGBM gained (evaluate.lightgbm_point_loss).
    point_loss: Literal["pinball", "relative_squared"] = "pinball"
    # Days of history the sequence encoders read, the latest (0 = all of features.history).
    # The lags, rolling statistics, same-weekday means and the spatial tokens still cover the
    # whole history; the recurrent or attention encoder, the bulk of a training step, then
    # runs over this many steps only.  The temporal attention (explanations) is 0 on the
    # days before.
    sequence_days: int = 0
    # Seed ensemble inside one model: this many copies of the network, each initialised
    # differently and fitted to its own loss on the same batches; the forecast is the mean
    # of their quantiles.  Training and scoring cost grow about this many times.
    members: int = 1
    # How the scalar inputs -- the known-future channels of each horizon day and the static
    # numeric attributes -- reach the network: "raw" as they are; "periodic": each scalar
    # also through its own learned periodic embedding (sin/cos at learned frequencies, then
    # a small dense layer; Gorishniy et al., "On Embeddings for Numerical Features in
    # Tabular Deep Learning", 2022), which lets the decoder respond to a narrow range of one
    # input -- the day before a holiday, the first promotion day -- as trees do by a split.
    numeric_embedding: Literal["raw", "periodic"] = "raw"
    # Periodic embedding: learned frequencies per scalar.
    numeric_embedding_frequencies: int = 8
    # Periodic embedding: standard deviation of the initial frequencies, in cycles per unit
    # of the input (the known-future channels mostly lie in [0, 1], the static numbers are
    # standardised).
    numeric_embedding_sigma: float = 1.0
    # Periodic embedding: width of each scalar's embedding.
    numeric_embedding_dim: int = 8
    # Known-future channels (names of the feature layout's fut_* columns, e.g. fut_promo)
    # whose effect each series learns for itself: every quantile of day o+h is multiplied by
    # exp(sum_f x_f(o+h) * b_f(s)), b = a linear map of the series' static encoding s that
    # starts at 0.  The decoder's layers can learn such an interaction only by carving it
    # out of a sum; this names it.  Empty: none.
    covariate_effects: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FinetuneConfig:
    # SQL predicate over example columns choosing the target segment,
    # e.g. "is_new_series = 1" or "state = 'BY'"; empty: every series.
    segment: str = "is_new_series = 1"
    # What the parent may differ in.  same_features: nothing -- the same vocabularies and
    # input layout, the parent's scalers (a segment of the data it was trained on).
    # other_data: the parent may come from other data (say a generated catalogue, --from
    # its model directory): each layer whose name and weight shapes match (and, for an
    # embedding, whose vocabulary is the same) starts from the parent's weights, the rest
    # (the inputs whose channels or vocabularies differ) from a fresh initialisation; the
    # features keep their own scalers, and freeze applies to copied layers only.  Either
    # way the architecture (model.*) is the parent's.
    transfer: Literal["same_features", "other_data"] = "same_features"
    # Encoders whose weights stay fixed while fine-tuning.
    freeze: list[Literal["temporal", "spatial", "static", "fusion", "decoder"]] = field(
        default_factory=list
    )
    # Fine-tuning learning rate = train.learning_rate times this.
    learning_rate_factor: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    # Horovod ranks (parallel training processes).
    ranks: int = 2
    # Most epochs to train (early stopping may end sooner).
    epochs: int = 8
    # Examples per batch on each rank.
    batch_size: int = 128
    # Adam learning rate per rank (multiplied by the number of ranks).
    learning_rate: float = 0.002
    # Epochs of linear learning-rate warm-up (Horovod).
    warmup_epochs: int = 1
    # Early stopping: epochs without validation-loss improvement (the best epoch's weights are
    # kept either way).
    patience: int = 3
    # halve the learning rate when the validation loss has not improved for this many epochs
    # (0 = never)
    lr_decay_patience: int = 1
    # Average the weights over the last steps (an exponential moving average whose time
    # constant is this many epochs; 0 = off): validation and the saved model read the
    # average, which forgets the optimiser's step-to-step noise.  Either way the model keeps
    # the weights of its best validation epoch, also when it ran all its epochs.
    weight_average: float = 0.0
    # Seed of weight initialisation and shuffling (shuffling adds the rank).
    seed: int = 11
    # Examples in each rank's shuffle buffer (Petastorm input; memory permutes all).
    shuffle_buffer: int = 2048
    # Cap on steps per epoch (0 = one pass over the rank's shard).
    max_steps_per_epoch: int = 0
    # Fit conformal offsets of the quantile intervals on the validation windows after
    # training, so that the central interval covers its nominal share (serving/calibration).
    calibrate: bool = True
    # Share of the training windows one epoch reads (a different shuffled share each epoch):
    # with train_stride 1, 1/7 keeps an epoch's cost while every weekday is trained on.
    epoch_fraction: float = 1.0
    # Fine-tuning (--mode finetune) settings.
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # Also train a temporal-only twin (model.spatial = false), alias "temporal_only".
    ablation: bool = True
    # Petastorm reader pool: thread (worker threads) or dummy (in the main thread).
    reader_pool: Literal["thread", "dummy"] = "thread"
    # petastorm: stream row groups from Parquet; memory: load each rank's series (every
    # size-th in key order, ordered by series and origin, whatever the files) into tensors and
    # read a fresh permutation of all its windows every epoch (the data must fit: about
    # 3.3 GB peak per rank for Rossmann's 109,020 windows).  On Rossmann, memory trained 24%
    # faster per epoch, with test accuracy within seed noise (bench/README.md).
    input: Literal["petastorm", "memory"] = "petastorm"


@dataclass(frozen=True)
class ForecastConfig:
    # What to publish: "best" = the method that won the validation backtest (a network,
    # LightGBM or their ensemble; written by the evaluation job to <models>/selection.json),
    # or a network's model id or alias (latest, pretrained, finetuned, ...).
    model: str = "best"
    # Rows per Arrow batch fed to the model when scoring (forecast and backtest).
    batch_size: int = 512
    # Series scored per Spark task: the run date's windows go to one task per core, or to
    # ceil(series / this) tasks when that is more (at most the windows' partitions); each
    # task loads the model once in its Python worker.
    series_per_task: int = 5000
    # Add explanations: fusion gate, most-attended history days, spatial sources.
    explain: bool = True
    # Most-attended history days reported per forecast.
    top_steps: int = 3
    # Table (in the database) the forecasts are written to.
    table: str = "forecasts"


@dataclass(frozen=True)
class EvaluateConfig:
    # Baseline forecasters backtested alongside the models.
    baselines: list[Literal["seasonal_naive", "weekday_average", "lightgbm"]] = field(
        default_factory=lambda: ["seasonal_naive", "weekday_average", "lightgbm"]
    )
    # Metrics only over rows matching this SQL predicate (Rossmann: open days with sales).
    metric_filter: str = "observed = 1"
    # Display name -> model id or alias; aliases that do not exist are skipped with a warning.
    models: dict[str, str] = field(
        default_factory=lambda: {"fused": "latest", "temporal_only": "temporal_only"}
    )
    # Boosting rounds of each LightGBM quantile model.
    lightgbm_rounds: int = 300
    # Rounds of the interval quantiles' models (all but the median; 0 = lightgbm_rounds).
    # The point forecast, the metrics and the ensemble weights read the median only, and
    # the intervals are calibrated on the validation residuals afterwards: fewer rounds
    # there cut the baseline's training time by up to two thirds.
    lightgbm_interval_rounds: int = 0
    # Leaves per tree (num_leaves) of the LightGBM models.
    lightgbm_leaves: int = 63
    # Shrinkage (learning rate) of the LightGBM boosting rounds: fewer rounds reach the
    # same fit at a larger rate.
    lightgbm_learning_rate: float = 0.05
    # Most training rows for LightGBM; larger training splits are sampled down.
    lightgbm_max_rows: int = 1_000_000
    # Loss of the LightGBM median (the point forecast): "quantile", its quantile loss;
    # "relative_squared", squared error weighted by 1 / y^2 over the days with sales -- the
    # squared relative error RMSPE averages, as model.point_loss for the networks.
    lightgbm_point_loss: Literal["quantile", "relative_squared"] = "quantile"
    # Series plotted in the report.
    sample_series: int = 6
    # Metric the validation backtest selects the published method and fits the ensemble
    # weights with (weights per horizon week over the networks and LightGBM).
    selection_metric: Literal["wape", "rmspe", "mae"] = "wape"
    # Grid step of the ensemble weights (each weight a multiple of it, summing to 1).
    ensemble_step: float = 0.05
    # Before the weights, each member's forecasts are multiplied by the one factor that
    # minimises the selection metric on the validation windows, kept within 1 +- this
    # (0 = off).  It corrects a member's level bias, and for RMSPE the median's excess:
    # RMSPE's best point lies below the median.  Quantiles get the same factor.
    ensemble_scale: float = 0.1
    # The ensemble is published unless a single method's validation score beats it by more
    # than this fraction.  The ensemble's score is measured on origins it was not fitted on;
    # a network's kept epoch was chosen on these same windows, so its score is optimistic.
    ensemble_margin: float = 0.02
    # Most validation rows (per method) brought to the driver for the selection; more are
    # sampled by series, origin and horizon.
    selection_max_rows: int = 2_000_000


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the tuning search space (``tune.space``)."""

    # float or int: drawn between low and high (inclusive); categorical: one of choices.
    type: Literal["float", "int", "categorical"] = "float"
    # Smallest value (float, int).
    low: float = 0.0
    # Largest value (float, int).
    high: float = 1.0
    # Draw on a log scale (float, int; low must then be above 0).
    log: bool = False
    # The values of a categorical parameter.
    choices: list[bool | int | float | str] = field(default_factory=list)


@dataclass(frozen=True)
class TuneConfig:
    """Hyper-parameter search (``jobs/tune.py``): Optuna's TPE sampler over ``space``, each
    trial a Horovod training on the built features, scored by its best validation loss.  The
    study lives in a SQLite file, so a killed search resumes where it stopped."""

    # Finished (complete or pruned) trials the study should hold; a re-run runs only the
    # missing ones, and raising this extends a finished study.
    trials: int = 20
    # Study name (one storage file can hold several studies).
    study: str = "sales_st"
    # SQLite file of the study (a local path); relative: to paths.data_dir; empty:
    # <paths.runs>/tune/study.db.  The trials' models and the study summary go beside it.
    storage: str = ""
    # Seed of the TPE sampler.
    seed: int = 42
    # Trials drawn at random before TPE models the results.
    startup_trials: int = 5
    # The search space, replaced whole when given: dotted model.* or train.* key ->
    # {type: float, int or categorical, low, high, log, choices}.
    space: dict[str, SearchParam] = field(
        default_factory=lambda: {
            "model.units": SearchParam("categorical", choices=[16, 32, 48, 64]),
            "model.dropout": SearchParam("float", 0.0, 0.3),
            "model.embedding_dim": SearchParam("categorical", choices=[4, 8, 16]),
            "train.learning_rate": SearchParam("float", 3e-4, 1e-2, log=True),
            "train.batch_size": SearchParam("categorical", choices=[64, 128, 256]),
        }
    )
    # Prune trials whose validation loss at some epoch is worse than the median of earlier
    # trials at that epoch (Optuna's MedianPruner), stopping its training after that epoch;
    # a pruned trial is never chosen as best.
    prune: bool = True
    # Complete trials before any trial is pruned.
    prune_startup_trials: int = 3
    # First epochs of a trial that are never judged by the pruner.
    prune_warmup_epochs: int = 1
    # YAML overlay the best parameters are written to (relative: to the repository root);
    # commit it and select it with --env, e.g. --env local,tuned.
    overlay: str = "conf/tuned.yaml"


@dataclass(frozen=True)
class ReplenishConfig:
    """Replenishment orders (``jobs/replenish.py``): a periodic-review, order-up-to policy on
    the forecasts' lead-time demand quantiles.  The inventory table's columns override the
    defaults per store and item."""

    # Days from placing an order to its arrival.
    lead_time_days: int = 2
    # Days between two orders (the review period).
    review_days: int = 7
    # Target cycle service level: the probability of no stock-out before the next order
    # arrives (0.5-1, exclusive).
    service_level: float = 0.95
    # Orders are rounded up to a multiple of this (units; 0: not rounded).
    order_multiple: float = 1.0
    # Table (in the database) the plan is written to, partitioned by run date.
    table: str = "replenishment"
    # The evaluation job replays the backtest's test period with the policy (orders at the
    # test origins, lead_time_days, lost sales) against a weekday-average baseline, at
    # these target service levels and on a curve around them (sales_st.decisions.simulation).
    simulate_levels: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.99])
    # Table (in the database) of the replay, partitioned by run date; "" turns it off.
    simulate_table: str = "policy_backtest"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking and model registry (``sales_st.runtime.tracking``).  A job whose
    tracking store cannot be reached still runs, and says so once."""

    # Record runs (params, per-epoch metrics, artifacts) and register the models.
    enabled: bool = True
    # Tracking URI: a server (http://host:5000) or a database; empty: the SQLite file
    # <paths.data_dir>/mlflow.db, its artifacts under <paths.data_dir>/mlartifacts.
    uri: str = ""
    # Registry URI; empty: the tracking URI.
    registry_uri: str = ""
    # Experiment of the runs; empty: sales_st-<data.name>.
    experiment: str = ""
    # Registered model holding every network, LightGBM and ensemble version, with aliases
    # mirroring the model store's; empty: sales_st-<data.name>.
    registered_model: str = ""
    # Seconds a tracking server has to answer before a job gives up tracking.
    timeout_s: int = 10


@dataclass(frozen=True)
class Config:
    # Where things live.
    paths: PathsConfig = field(default_factory=PathsConfig)
    # The Spark session.
    spark: SparkConfig = field(default_factory=SparkConfig)
    # The input dataset.
    data: DataConfig = field(default_factory=DataConfig)
    # Validation of the sales table.
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # Examples and features.
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # The network.
    model: ModelConfig = field(default_factory=ModelConfig)
    # Distributed training.
    train: TrainConfig = field(default_factory=TrainConfig)
    # Scoring.
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    # The backtest.
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # Hyper-parameter search.
    tune: TuneConfig = field(default_factory=TuneConfig)
    # Replenishment orders.
    replenish: ReplenishConfig = field(default_factory=ReplenishConfig)
    # MLflow tracking and registry.
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Spark SQL (Hive) database of every table (forecasts, metrics, run manifest).
    database: str = "sales_st"
    # Where the config came from; filled by the loader, not by YAML.
    # Repository root (the parent of conf/).
    root: str = ""
    # The YAML files merged, in order; filled by the loader, not by YAML.
    sources: list[str] = field(default_factory=list)

    # ---- derived paths -------------------------------------------------------------
    def path(self, name: str) -> str:
        """Absolute path (or URI) of one of ``paths``' entries."""
        value = getattr(self.paths, name)
        return resolve_path(value, self.data_dir)

    @property
    def data_dir(self) -> str:
        return resolve_path(self.paths.data_dir, self.root or os.getcwd())

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the named sections (all when none): what a stage depends on."""
        payload = to_dict(self)
        payload.pop("root", None)
        payload.pop("sources", None)
        if sections:
            payload = {s: payload[s] for s in sections}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def resolve_path(value: str, base: str) -> str:
    if "://" in value or os.path.isabs(value):
        return value
    return str(Path(base, value).resolve()) if "://" not in base else f"{base.rstrip('/')}/{value}"


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
