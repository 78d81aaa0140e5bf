"""Typed configuration: the sections (every default, :mod:`.sections`) and their loader.

Jobs call :func:`load_config` with the conf directory, one or more overlay names and
``key=value`` overrides, and pass the resulting frozen dataclasses (or plain values taken from
them) to library functions.
"""

from sales_st.config.loader import load_config
from sales_st.config.sections import (
    Config,
    DataConfig,
    EvaluateConfig,
    FeaturesConfig,
    FinetuneConfig,
    ForecastConfig,
    GeneratorConfig,
    ModelConfig,
    PathsConfig,
    RegionLevel,
    SparkConfig,
    SpatialConfig,
    SplitsConfig,
    TableSource,
    TrainConfig,
    ValidationConfig,
    resolve_path,
    to_dict,
)
from sales_st.errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "FinetuneConfig",
    "ForecastConfig",
    "GeneratorConfig",
    "ModelConfig",
    "PathsConfig",
    "RegionLevel",
    "SpatialConfig",
    "SparkConfig",
    "SplitsConfig",
    "TableSource",
    "TrainConfig",
    "ValidationConfig",
    "load_config",
    "resolve_path",
    "to_dict",
]
