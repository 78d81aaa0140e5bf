"""Typed configuration: ``conf/base.yaml`` plus overlays, loaded once and validated.

Config is data.  Jobs call :func:`load_config` with the conf directory, one or more overlay
names (``--env local`` or ``--env cluster,rossmann``) and ``key=value`` overrides, and pass
the resulting frozen dataclasses (or plain values taken from them) to library functions.

Every mistake names the key and the file it came from: an unknown key, a wrong type, a
missing overlay file, a value outside its allowed set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message names the key and the file."""


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_config(
    conf_dir: str | os.PathLike,
    envs: str | list[str] | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Load ``base.yaml`` and overlay ``<env>.yaml`` for each env, then ``key=value`` overrides.

    >>> cfg = load_config("conf", "local", ["train.epochs=2"])
    """
    conf_dir = Path(conf_dir)
    base = conf_dir / "base.yaml"
    if not base.is_file():
        raise ConfigError(f"config file not found: {base}")
    if isinstance(envs, str):
        envs = [e for e in envs.split(",") if e]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sources = []
    for file in [base] + [conf_dir / f"{e}.yaml" for e in envs or []]:
        if not file.is_file():
            available = sorted(p.stem for p in conf_dir.glob("*.yaml") if p.stem != "base")
            raise ConfigError(f"config overlay not found: {file} (available: {', '.join(available)})")
        raw = _read_yaml(file)
        _merge(merged, raw, origin, str(file), "")
        sources.append(str(file))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        value = yaml.safe_load(text) if text else ""
        node = merged
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            # a mapping merges into a mapping: spark.conf={"spark.sql.x": "1"}
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
        origin[key] = "command line"
    merged["root"] = str(conf_dir.resolve().parent)
    merged["sources"] = sources
    cfg = _build(Config, merged, "", origin)
    _check_semantics(cfg, origin)
    return cfg


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        with open(file) as fh:
            data = yaml.safe_load(fh) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. a date like 2023-13-01
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping, found {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, origin: dict, file: str, prefix: str) -> None:
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origin, file, dotted + ".")
        else:
            dst[key] = value
        origin[dotted] = file


def _where(origin: dict, key: str) -> str:
    k = key
    while k:
        if k in origin:
            return origin[k]
        k = k.rpartition(".")[0]
    return "defaults"


def _build(cls: type, data: Any, prefix: str, origin: dict) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"'{prefix.rstrip('.') or '<root>'}' in {_where(origin, prefix.rstrip('.'))} "
            f"must be a mapping, found {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown config key '{key}' in {_where(origin, key)} "
            f"(known keys here: {', '.join(sorted(names - {'root', 'sources'}))})"
        )
    kwargs = {}
    for name in names & set(data):
        kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}", origin)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, origin: dict) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"config key '{key}' in {_where(origin, key)} must be {expected}, "
            f"found {value!r} ({type(value).__name__})"
        )

    o = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", origin)
    if o in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key, origin)
            except ConfigError as exc:
                errors.append(exc)
        raise bad(" or ".join(_type_name(a) for a in args))
    if o is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if o is list:
        if not isinstance(value, list):
            raise bad(f"a list of {_type_name(args[0])}")
        return [_coerce(args[0], v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if o is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {
            _coerce(args[0], k, f"{key}", origin): _coerce(args[1], v, f"{key}.{k}", origin)
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dt.date,)):
            return value.isoformat()
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad("a string")
        return str(value)
    raise bad(_type_name(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


KNOWN_RULES = (
    "schema",
    "null_key",
    "null_target",
    "negative_target",
    "non_finite_target",
    "duplicate_key",
    "date_out_of_range",
    "unknown_store",
    "unknown_item",
)


def _check_semantics(cfg: Config, origin: dict) -> None:
    for rule in cfg.validation.rules:
        if rule not in KNOWN_RULES:
            key = f"validation.rules.{rule}"
            raise ConfigError(
                f"unknown validation rule '{rule}' in {_where(origin, key)} "
                f"(known: {', '.join(KNOWN_RULES)})"
            )
    f = cfg.features
    checks = [
        (f.history >= 7, "features.history", "at least 7"),
        (f.horizon >= 1, "features.horizon", "at least 1"),
        (f.stride >= 1, "features.stride", "at least 1"),
        (0 < f.min_history <= f.history, "features.min_history", "between 1 and features.history"),
        (f.spatial.k >= 1, "features.spatial.k", "at least 1"),
        (cfg.train.ranks >= 1, "train.ranks", "at least 1"),
        (cfg.train.batch_size >= 1, "train.batch_size", "at least 1"),
        (
            all(0 < q < 1 for q in cfg.model.quantiles) and 0.5 in cfg.model.quantiles,
            "model.quantiles",
            "values in (0, 1) including 0.5",
        ),
        (cfg.model.units % max(cfg.model.heads, 1) == 0, "model.heads", "a divisor of model.units"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' in {_where(origin, key)} must be {expected}")
    for key in ("train_end", "val_end"):
        value = getattr(f.splits, key)
        if isinstance(value, str):
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                dotted = f"features.splits.{key}"
                raise ConfigError(
                    f"config key '{dotted}' in {_where(origin, dotted)} must be a date "
                    f"(YYYY-MM-DD) or an offset in days from the run date, found {value!r}"
                ) from None


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
