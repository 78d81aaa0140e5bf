"""The backtest's transforms: every method's predictions on the test windows in one long
table, joined to the truth, and the grouping levels the metrics are computed at.

Models and baselines are scored on exactly the same examples.  The models were trained only
on targets up to ``val_end``; each test origin's windows use history up to that origin.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import SERIES_KEY
from sales_st.errors import DataError, MissingInputError
from sales_st.evaluation.baselines import (
    KEYS,
    predict_lightgbm,
    simple_baselines,
    truth_rows,
)
from sales_st.features.spec import FeatureSpec
from sales_st.serving.scoring import method_rows, quantile_columns, score_examples
from sales_st.training import store as model_store

log = logging.getLogger(__name__)


def model_predictions(
    test: DataFrame,
    spec: FeatureSpec,
    cfg: Config,
    run_date: dt.date,
    quantiles: list[float],
    warn_missing: bool = True,
) -> tuple[list[DataFrame], dict[str, str]]:
    """Scored test windows for every configured model that exists (a missing one is a
    warning with ``warn_missing``) and was trained on this build of the features.

    A model trained with other feature settings is an error.  One trained with the same
    settings on another build (``features_id``: other code, data or run date) is skipped,
    also with a warning with ``warn_missing``: a stale alias, such as a temporal-only twin
    left by an earlier run, is neither scored nor offered to the selection, whose members
    the forecast job would refuse.
    """
    root = cfg.path("models")
    out, ids = [], {}
    for name, ref in cfg.evaluate.models.items():
        try:
            mid = model_store.resolve(root, ref)
        except MissingInputError:
            if warn_missing:
                log.warning("evaluate: model '%s' (%s) not found: skipped", name, ref)
            continue
        trained_on = model_store.load_spec(root, mid)
        if trained_on.features_config != spec.features_config:
            raise DataError(
                f"model {mid} was trained on other features than "
                f"{cfg.path('features')}; re-run the feature job and retrain, or "
                "pick another model"
            )
        if trained_on.features_id != spec.features_id:
            # the same settings, another build (other code, data or run date): the forecast
            # job would refuse to publish it, so it is not backtested or selected either
            if warn_missing:
                log.warning(
                    "evaluate: model '%s' (%s) was trained on another build of the features "
                    "(%s, now %s): skipped; retrain it to backtest it",
                    name,
                    mid,
                    trained_on.features_id,
                    spec.features_id,
                )
            continue
        mq = model_store.load_meta(root, mid)["model_config"]["quantiles"]
        if sorted(mq) != sorted(quantiles):
            raise DataError(f"model {mid} predicts quantiles {mq}, expected {quantiles}")
        scored = score_examples(
            test,
            root,
            mid,
            quantiles,
            cfg.data.region_columns,
            run_date,
            explain=False,
            top_steps=0,
        )
        out.append(method_rows(scored, name, quantiles, spec.period))
        ids[name] = mid
    return out, ids


def all_predictions(
    spark: SparkSession,
    test: DataFrame,
    spec: FeatureSpec,
    cfg: Config,
    run_date: dt.date,
    lightgbm: dict[float, Any] | None,
    baselines: bool = True,
    warn_missing: bool = True,
) -> tuple[DataFrame, dict[str, str]]:
    """``method, KEYS, horizon, point, quantile columns`` for every method (the simple
    baselines only when ``baselines``); the networks' model ids."""
    quantiles = sorted(cfg.model.quantiles)
    qcols = quantile_columns(quantiles)
    preds = []
    if baselines:
        preds.append(
            simple_baselines(test, spec.history, spec.horizon, spec.period).select(
                "*", *[F.lit(None).cast("double").alias(c) for c in qcols]
            )
        )
    models, model_ids = model_predictions(test, spec, cfg, run_date, quantiles, warn_missing)
    preds += models
    if lightgbm is not None:
        preds.append(predict_lightgbm(spark, lightgbm, test, spec, qcols))
    if not preds:
        raise MissingInputError("evaluate: no method to backtest (no model and no baseline)")
    wanted = sorted(set(cfg.evaluate.baselines) | set(model_ids))
    cols = ["method", *KEYS, "horizon", "point", *qcols]
    out = preds[0].select(*cols)
    for p in preds[1:]:
        out = out.unionByName(p.select(*cols))
    return out.where(F.col("method").isin(wanted)), model_ids


def scored_rows(
    test: DataFrame,
    predictions: DataFrame,
    spec: FeatureSpec,
    region_columns: list[str],
    qcols: list[str],
) -> DataFrame:
    """Predictions joined to the truth, with the central interval as ``p_lo``/``p_hi``."""
    truth = truth_rows(test, spec.history, region_columns, spec.period)
    return (
        truth.join(predictions, KEYS + ["horizon"], "inner")
        .withColumn("p_lo", F.col(qcols[0]))
        .withColumn("p_hi", F.col(qcols[-1]))
    )


def metric_levels(
    rows: DataFrame, region_columns: list[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Grouping levels of the metrics table, and the region levels that have values."""
    regions = [
        c
        for c in region_columns
        if c in rows.columns and rows.where(F.col(c).isNotNull()).limit(1).count()
    ]
    levels = {
        "overall": [],
        "horizon": ["horizon"],
        "origin": ["origin"],
        "series": list(SERIES_KEY),
    }
    levels.update({r: [r] for r in regions})
    return levels, regions
