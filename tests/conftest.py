"""Shared fixtures: one real local SparkSession (Hive catalog, Derby metastore, warehouse in a
temporary directory) for the whole session, and a tiny generated panel with its features."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sales_st.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
ROSSMANN = ROOT.parent / "shared" / "data" / "rossmann"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A panel small enough to train on in seconds: 8 stores x 2 items x 300 days.
TINY = [
    "data.generator.preset=custom",
    "data.generator.days=300",
    "data.generator.n_states=2",
    "data.generator.cities_per_state=2",
    "data.generator.stores_per_city=2",
    "data.generator.n_items=2",
    "data.generator.plan_days=14",
    "data.generator.partitions=2",
    "data.generator.slow_item_fraction=0.0",
    "data.generator.new_store_fraction=0.25",
    "data.generator.new_store_history_days=90",
    "features.history=28",
    "features.horizon=7",
    "features.stride=7",
    "features.min_history=14",
    "features.rolling_windows=[7,28]",
    "features.lags=[1,7]",
    "features.spatial.k=3",
    "features.splits.train_end=-35",
    "features.splits.val_end=-14",
    "features.new_series_days=120",
    "features.rows_per_file=128",
    "model.units=16",
    "model.heads=2",
    "model.decoder_units=16",
    "train.epochs=3",
    "train.batch_size=32",
    "train.warmup_epochs=0",
    "train.patience=5",
    "train.ablation=false",
    "evaluate.lightgbm_rounds=30",
    "evaluate.sample_series=2",
    "forecast.model=latest",  # the forecast tests run without an evaluation; see test_selection
]


def make_config(data_dir: Path | str, *overrides: str, env: str = "local") -> Config:
    return load_config(
        CONF,
        env,
        [
            f"paths.data_dir={data_dir}",
            'spark.conf={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "3g", '
            '"spark.ui.enabled": "false"}',
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sales_st_data")


@pytest.fixture(scope="session")
def spark(data_root):
    from sales_st.runtime.session import get_spark

    session = get_spark(make_config(data_root), "sales_st-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_cfg(data_root) -> Config:
    return make_config(
        data_root,
        *TINY,
        "paths.inputs=inputs/tiny",
        "paths.features=features/tiny",
        "paths.models=models/tiny",
        "paths.reports=reports/tiny",
    )


@pytest.fixture(scope="session")
def tiny_features(spark, tiny_cfg):
    """Generated tiny panel + its feature tables (built once per test session)."""
    from sales_st.data.synthetic import write_generated
    from sales_st.features.job import run_features

    write_generated(spark, tiny_cfg.data.generator, tiny_cfg.path("inputs"))
    return run_features(spark, tiny_cfg, None)


@pytest.fixture(scope="session")
def tiny_model(spark, tiny_cfg, tiny_features):
    """A model pre-trained on the tiny panel (trained once; later calls find it complete)."""
    from sales_st.training.driver import run_training

    return run_training(spark, tiny_cfg, "pretrain")


@pytest.fixture(scope="session")
def tiny_forecast(spark, tiny_cfg, tiny_model):
    """The forecast job run once on the tiny panel (its run date's partition; later tests may
    write that partition again)."""
    from sales_st.serving.job import run_forecast

    return run_forecast(spark, tiny_cfg, None)


@pytest.fixture(scope="session")
def tiny_evaluation(spark, tiny_cfg, tiny_model):
    """The evaluation job run once on the tiny panel (backtest, selection, report)."""
    from sales_st.evaluation.job import run_evaluate

    return run_evaluate(spark, tiny_cfg)


def rossmann_available() -> bool:
    return (ROSSMANN / "train_clean.parquet").exists()


requires_rossmann = pytest.mark.skipif(
    not rossmann_available(),
    reason=f"Rossmann data not found at {ROSSMANN} (see ../shared/data/README.md)",
)
