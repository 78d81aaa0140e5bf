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
from typing import Any, Literal, Optional


@dataclass(frozen=True)
class PathsConfig:
    """Where things live.  Relative paths are resolved against ``data_dir``, which itself
    is resolved against the repository root (the parent of ``conf/``) when relative."""

    data_dir: str = "data"
    inputs: str = "inputs/demo"
    features: str = "features"
    models: str = "models"
    reports: str = "reports"
    warehouse: str = "warehouse"
    metastore: str = "metastore_db"
    runs: str = "runs"


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "sales_st"
    # Extra Spark properties, passed through verbatim (values as strings).
    conf: dict[str, str] = field(default_factory=dict)
    log_level: str = "WARN"


@dataclass(frozen=True)
class RegionLevel:
    name: str
    # Column of the stores table that holds this level's id.
    column: str


@dataclass(frozen=True)
class GeneratorConfig:
    """Synthetic data (``jobs/generate.py``).  ``preset`` fills sizes; explicit sizes win."""

    preset: Literal["demo", "bench", "tiny", "custom"] = "demo"
    seed: int = 7
    start_date: str = "2022-01-01"
    days: int = 0
    n_states: int = 0
    cities_per_state: int = 0
    stores_per_city: int = 0
    n_items: int = 0
    # Days of future "plan" rows (known promo/open/price, no target) after the last day.
    plan_days: int = 0
    partitions: int = 0
    # Structure of the demand (what the model should learn).
    weekday_profile: list[float] = field(
        default_factory=lambda: [0.9, 0.95, 1.0, 1.05, 1.2, 1.4, 0.5]
    )
    yearly_amplitude: float = 0.15
    trend_sd: float = 0.15
    promo_probability: float = 0.08
    promo_lift: float = 1.6
    promo_dip: float = 0.85
    price_change_probability: float = 0.25
    price_change_sd: float = 0.1
    elasticity_mean: float = 1.5
    holiday_lift: float = 0.3
    regional_holidays_per_year: int = 6
    slow_item_fraction: float = 0.25
    sunday_closed_fraction: float = 0.3
    refurbishment_probability: float = 0.02
    new_store_fraction: float = 0.1
    new_store_history_days: int = 120
    shocks_per_state_per_year: float = 6.0
    shock_amplitude: float = 0.6
    shock_radius_km: float = 60.0
    shock_days: int = 10
    noise_cv: float = 0.12


@dataclass(frozen=True)
class TableSource:
    """How one contract table is read from an external dataset (the generic loader).

    ``columns`` maps contract column -> source column; ``constants`` fills contract columns
    that the source lacks; ``values`` recodes source values per contract column.
    """

    path: str = ""
    format: Literal["parquet", "csv"] = "parquet"
    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    # Optional second table joined on a shared key (e.g. Rossmann store -> state).
    join_path: str = ""
    join_format: Literal["parquet", "csv"] = "csv"
    join_on: list[str] = field(default_factory=list)
    # A SQL boolean expression over contract columns; rows where it is false are dropped
    # with an accounting line (e.g. "event_type <> 'none'" for calendar encodings).
    keep_if: str = ""
    # Melt wide event columns: contract event_type -> source flag column.
    events_from_flags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    source: Literal["generated", "tables"] = "generated"
    name: str = "demo"
    # Run date used when the command line gives none (e.g. a standard evaluation origin);
    # otherwise the last day with an observed target.
    run_date: Optional[str] = None
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sales: TableSource = field(default_factory=TableSource)
    stores: TableSource = field(default_factory=TableSource)
    events: TableSource = field(default_factory=TableSource)
    items: TableSource = field(default_factory=TableSource)
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
    centroid_level: str = ""

    @property
    def region_columns(self) -> list[str]:
        """The stores-table columns of the hierarchy, finest first."""
        return [lvl.column for lvl in self.hierarchy]


RuleAction = Literal["fail", "quarantine"]


@dataclass(frozen=True)
class ValidationConfig:
    start_date: Optional[str] = None
    end_date: Optional[str] = None
    max_examples: int = 5
    rules: dict[str, RuleAction] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitsConfig:
    """Origin-date boundaries.  An int is an offset in days from the run date."""

    train_end: int | str = -70
    val_end: int | str = -42
    test_stride: int = 7


@dataclass(frozen=True)
class SpatialConfig:
    method: Literal["knn", "kernel", "hierarchy"] = "knn"
    k: int = 6
    bandwidth_km: float = 50.0
    max_distance_km: float = 500.0
    # Hierarchy levels whose same-item totals become context sequences.
    aggregate_levels: list[str] = field(default_factory=lambda: ["city", "state"])


@dataclass(frozen=True)
class FeaturesConfig:
    history: int = 56
    horizon: int = 14
    stride: int = 7
    min_history: int = 28
    rolling_windows: list[int] = field(default_factory=lambda: [7, 28, 91])
    lags: list[int] = field(default_factory=lambda: [1, 7, 14, 28])
    same_weekday_weeks: int = 4
    holiday_window: int = 14
    # Series whose first row is within this many days of the run date are "new"
    # (the default fine-tuning segment).
    new_series_days: int = 180
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    # Rows per Parquet file of the example tables (Petastorm shards by row group).
    rows_per_file: int = 4096


@dataclass(frozen=True)
class ModelConfig:
    temporal: Literal["lstm", "transformer"] = "lstm"
    units: int = 48
    layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    spatial: bool = True
    fusion: Literal["gate", "concat"] = "gate"
    embedding_dim: int = 8
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    decoder_units: int = 64
    # The decoder predicts corrections to the same-weekday mean of recent weeks (a skip
    # connection from the fut_sw_mean input), not levels from scratch.
    baseline_skip: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    # SQL predicate over example columns choosing the target segment,
    # e.g. "is_new_series = 1" or "state = 'BY'".
    segment: str = "is_new_series = 1"
    freeze: list[Literal["temporal", "spatial", "static", "fusion", "decoder"]] = field(
        default_factory=list
    )
    learning_rate_factor: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    ranks: int = 2
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 0.002
    warmup_epochs: int = 1
    patience: int = 3
    # halve the learning rate when the validation loss has not improved for this many epochs
    # (0 = never)
    lr_decay_patience: int = 1
    seed: int = 11
    shuffle_buffer: int = 2048
    # Cap on steps per epoch (0 = one pass over the rank's shard).
    max_steps_per_epoch: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # Also train a temporal-only twin (model.spatial = false), alias "temporal_only".
    ablation: bool = True
    reader_pool: Literal["thread", "dummy"] = "thread"
    # petastorm: stream row groups from Parquet; memory: load each rank's files into tensors
    input: Literal["petastorm", "memory"] = "petastorm"


@dataclass(frozen=True)
class ForecastConfig:
    model: str = "latest"
    batch_size: int = 512
    explain: bool = True
    top_steps: int = 3
    table: str = "forecasts"


@dataclass(frozen=True)
class EvaluateConfig:
    baselines: list[Literal["seasonal_naive", "weekday_average", "lightgbm"]] = field(
        default_factory=lambda: ["seasonal_naive", "weekday_average", "lightgbm"]
    )
    # Metrics only over rows matching this SQL predicate (Rossmann: open days with sales).
    metric_filter: str = "observed = 1"
    # Display name -> model id or alias; aliases that do not exist are skipped with a warning.
    models: dict[str, str] = field(
        default_factory=lambda: {"fused": "latest", "temporal_only": "temporal_only"}
    )
    lightgbm_rounds: int = 300
    lightgbm_leaves: int = 63
    lightgbm_max_rows: int = 1_000_000
    sample_series: int = 6


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    database: str = "sales_st"
    # Where the config came from; filled by the loader, not by YAML.
    root: str = ""
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
