"""Baselines on the same windows as the model, and the long truth table they are scored on.

* ``seasonal_naive``: the last observed value of the same season (the value 7, 14, ...
  days before the target day that lies in the history window; 52 weeks or 12 months
  on a weekly or monthly axis: :attr:`sales_st.data.frequency.Grid.season`);
* ``weekday_average``: the mean of the last ``same_weekday_weeks`` observed values of the
  same weekday (or week or month of the year: the ``fut_sw_mean`` feature times the scale;
  the series' mean level where none of them was observed);
* ``lightgbm``: a global gradient-boosted model (one row per example and horizon step: lags,
  rolling statistics, static and known-future features of that day), one quantile model
  per quantile, trained on the training split.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import EvaluateConfig
from sales_st.data.contract import SERIES_KEY
from sales_st.data.frequency import DAILY, Grid
from sales_st.features import names as N
from sales_st.features.spec import FeatureSpec
from sales_st.frames import to_pandas
from sales_st.storage.files import read_json, write_json

log = logging.getLogger(__name__)

KEYS = [*SERIES_KEY, "origin"]


def truth_rows(
    examples: DataFrame, history: int, region_columns: list[str], grid: Grid = DAILY
) -> DataFrame:
    """One row per (example, horizon step): actual, observed, open, MASE scale (the mean
    absolute seasonal difference of the history, the season that of ``grid``), region keys."""
    L, P = history, grid.season
    mase = (
        f"aggregate(sequence({P}, {L - 1}), named_struct('s', 0D, 'n', 0), "
        f"(acc, t) -> IF(hist_observed[t] = 1 AND hist_observed[t - {P}] = 1, "
        f"named_struct('s', acc.s + abs(hist_y[t] - hist_y[t - {P}]), 'n', acc.n + 1), acc), "
        "acc -> IF(acc.n > 0, acc.s / acc.n * scale, CAST(NULL AS DOUBLE)))"
    )
    regions = [c for c in region_columns if c in examples.columns]
    ex = examples.withColumn("mase_scale", F.expr(mase))
    return ex.select(
        *KEYS,
        *regions,
        "mase_scale",
        F.posexplode(F.arrays_zip("y", "y_mask", "fut_open")).alias("h0", "z"),
    ).select(
        *KEYS,
        *regions,
        "mase_scale",
        (F.col("h0") + 1).alias("horizon"),
        F.expr(grid.shift_sql("origin", "h0 + 1")).alias("target_date"),
        F.col("z.y").cast("double").alias("actual"),
        F.col("z.y_mask").cast("int").alias("observed"),
        F.col("z.fut_open").cast("int").alias("open"),
    )


def simple_baselines(
    examples: DataFrame, history: int, horizon: int, grid: Grid = DAILY
) -> DataFrame:
    """``method, store_id, item_id, origin, horizon, point`` for the two naive baselines.

    Like every method here, they forecast 0 on days known to be closed (``fut_open = 0``).
    The seasonal naive needs a history of at least one season of ``grid``.
    """
    L, H, P = history, horizon, grid.season
    naive = (
        f"transform(sequence(1, {H}), h -> "
        f"hist_y[{L - 1} + h - {P} * CAST(ceil(h / {P}) AS INT)] * scale * fut_open[h - 1])"
    )
    wavg = "zip_with(fut_sw_mean, fut_open, (v, o) -> v * scale * o)"
    parts = []
    for name, expr in (("seasonal_naive", naive), ("weekday_average", wavg)):
        parts.append(
            examples.select(*KEYS, F.posexplode(F.expr(expr)).alias("h0", "point")).select(
                F.lit(name).alias("method"),
                *KEYS,
                (F.col("h0") + 1).alias("horizon"),
                F.col("point").cast("double").alias("point"),
            )
        )
    return parts[0].unionByName(parts[1])


# ---- LightGBM ------------------------------------------------------------------------------


def horizon_rows(examples: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Examples exploded per horizon step with the known-future features of that day."""
    lay = spec.layout
    per_step = lay.fut + [N.FUT_DOW, "y", "y_mask"]
    flat = lay.numeric + lay.categorical
    return examples.select(
        *KEYS, "scale", *flat, F.posexplode(F.arrays_zip(*per_step)).alias("h0", "z")
    ).select(
        *KEYS,
        "scale",
        *flat,
        (F.col("h0") + 1).alias("horizon"),
        *[F.col(f"z.{c}").alias(c) for c in per_step],
    )


def lgbm_features(spec: FeatureSpec) -> tuple[list[str], list[str]]:
    lay = spec.layout
    cats = lay.categorical + [N.FUT_DOW]
    nums = lay.numeric + lay.fut + ["horizon"]
    return nums + cats, cats


def train_lightgbm(
    spark: SparkSession,
    train: DataFrame,
    spec: FeatureSpec,
    quantiles: list[float],
    rounds: int,
    leaves: int,
    max_rows: int,
    seed: int = 5,
    learning_rate: float = 0.05,
    interval_rounds: int = 0,
    point_loss: str = "quantile",
) -> dict[float, Any]:
    """One LightGBM quantile model per quantile, on (a sample of) the training split: the
    median's for ``rounds``, the others' for ``interval_rounds`` (0 = ``rounds``); with
    ``point_loss`` relative_squared the median's is a 1 / y^2-weighted squared-error model."""
    import lightgbm as lgb

    rows = horizon_rows(train, spec).where(F.col("y_mask") == 1)
    total = rows.count()
    if total > max_rows:
        rows = rows.sample(fraction=max_rows / total, seed=seed)
    feats, cats = lgbm_features(spec)
    pdf = to_pandas(rows.select(*feats, (F.col("y") / F.col("scale")).alias("target")))
    X = pdf[feats].copy()
    for c in cats:
        X[c] = X[c].astype("int32")
    log.info("lightgbm: training on %d of %d rows, %d features", len(pdf), total, len(feats))
    # binned once: the quantile models differ in objective only, not in dataset parameters
    ds = lgb.Dataset(X, label=pdf["target"], categorical_feature=cats, free_raw_data=False)
    models = {}
    for q in sorted(quantiles):
        n = quantile_rounds(q, rounds, interval_rounds)
        log.info("lightgbm: quantile %g, %d rounds", q, n)
        w = point_weights(q, point_loss, pdf["target"].to_numpy())
        data = ds if w is None else lgb.Dataset(X, label=pdf["target"], weight=w, reference=ds)
        params = booster_params(q, leaves, seed, learning_rate, point_loss)
        models[q] = lgb.train(params, data, num_boost_round=n)
    return models


def point_weights(q: float, point_loss: str, target: np.ndarray) -> np.ndarray | None:
    """Row weights of the quantile ``q`` model: 1 / y^2 (0 where y <= 0) for the median
    under ``relative_squared``, so that its squared error is RMSPE's; else None."""
    if q != 0.5 or point_loss != "relative_squared":
        return None
    y = np.asarray(target, dtype="float64")
    return np.where(y > 0, 1.0 / np.maximum(y, 1e-12) ** 2, 0.0)


def quantile_rounds(q: float, rounds: int, interval_rounds: int) -> int:
    """Boosting rounds of the quantile ``q`` model: ``rounds`` for the median (the point
    forecast), ``interval_rounds`` for the interval quantiles when it is set."""
    return rounds if q == 0.5 or interval_rounds <= 0 else interval_rounds


def booster_params(
    q: float, leaves: int, seed: int, learning_rate: float = 0.05, point_loss: str = "quantile"
) -> dict[str, Any]:
    """LightGBM's settings for the quantile ``q`` model (also used by ``bench/``)."""
    squared = q == 0.5 and point_loss == "relative_squared"
    return dict(
        objective="regression" if squared else "quantile",
        alpha=q,
        num_leaves=leaves,
        learning_rate=learning_rate,
        min_data_in_leaf=50,
        feature_fraction=0.8,
        bagging_fraction=0.8,
        bagging_freq=1,
        seed=seed,
        verbose=-1,
        num_threads=0,
    )


LIGHTGBM_FILE = "lightgbm.json"


def lightgbm_params(cfg: EvaluateConfig, quantiles: list[float]) -> dict[str, Any]:
    return {
        "quantiles": sorted(quantiles),
        "rounds": cfg.lightgbm_rounds,
        "interval_rounds": cfg.lightgbm_interval_rounds or cfg.lightgbm_rounds,
        "leaves": cfg.lightgbm_leaves,
        "max_rows": cfg.lightgbm_max_rows,
        "learning_rate": cfg.lightgbm_learning_rate,
        "point_loss": cfg.lightgbm_point_loss,
    }


def lightgbm_model(
    spark: SparkSession,
    train: DataFrame,
    spec: FeatureSpec,
    cfg: EvaluateConfig,
    quantiles: list[float],
    root: str,
) -> tuple[str, dict[float, Any]]:
    """The LightGBM baseline for these features and settings, from the model store when it
    was trained before, else trained and stored (``lightgbm-<run date>-<hash>``, alias
    ``lightgbm``) so that the forecast job can publish it."""
    from sales_st.features.spec import write_spec
    from sales_st.training import store as model_store

    params = lightgbm_params(cfg, quantiles)
    mid = model_store.model_id(
        "lightgbm", spec.run_date.isoformat(), {"features": spec.features_id, **params}
    )
    if model_store.is_complete(root, mid):
        log.info("lightgbm: model %s is already trained with these features: loaded", mid)
        return mid, load_lightgbm(root, mid)
    models = train_lightgbm(
        spark,
        train,
        spec,
        quantiles,
        cfg.lightgbm_rounds,
        cfg.lightgbm_leaves,
        cfg.lightgbm_max_rows,
        learning_rate=cfg.lightgbm_learning_rate,
        interval_rounds=cfg.lightgbm_interval_rounds,
        point_loss=cfg.lightgbm_point_loss,
    )
    d = model_store.model_dir(root, mid)
    write_spec(d, spec)
    write_json(f"{d}/{LIGHTGBM_FILE}", {str(q): m.model_to_string() for q, m in models.items()})
    write_json(
        f"{d}/model.json",
        {
            "kind": "lightgbm",
            "status": "complete",
            "model_config": {"quantiles": sorted(quantiles)},
            "params": params,
            "features_id": spec.features_id,
        },
    )
    model_store.set_aliases(root, mid, ["lightgbm"])
    return mid, models


def load_lightgbm(root: str, mid: str) -> dict[float, Any]:
    import lightgbm as lgb

    from sales_st.training import store as model_store

    texts = read_json(f"{model_store.model_dir(root, mid)}/{LIGHTGBM_FILE}")
    return {float(q): lgb.Booster(model_str=t) for q, t in texts.items()}


def predict_lightgbm(
    spark: SparkSession,
    models: dict[float, Any],
    test: DataFrame,
    spec: FeatureSpec,
    qcols: list[str],
) -> DataFrame:
    """``method, store_id, item_id, origin, horizon, point`` and quantile columns.

    Scored on the executors (``mapInPandas``): the boosters travel as model strings in a
    broadcast, and no test row passes through the driver.
    """
    feats, cats = lgbm_features(spec)
    qs = sorted(models)
    texts = spark.sparkContext.broadcast([models[q].model_to_string() for q in qs])
    rows = horizon_rows(test, spec).select(*KEYS, "scale", *feats)
    types = dict(rows.dtypes)
    schema = ", ".join(
        ["method string"]
        + [f"{k} {types[k]}" for k in KEYS]
        + ["horizon int"]
        + [f"{c} double" for c in qcols]
        + ["point double"]
    )
    median = qs.index(0.5) if 0.5 in qs else None

    def score(batches):
        import lightgbm as lgb

        boosters = [lgb.Booster(model_str=t) for t in texts.value]
        for pdf in batches:
            if pdf.empty:
                continue
            X = pdf[feats].copy()
            for c in cats:
                X[c] = X[c].astype("int32")
            preds = np.stack([b.predict(X) for b in boosters], axis=1)
            preds = preds * pdf["scale"].to_numpy(dtype=np.float64)[:, None]
            open_ = pdf["fut_open"].to_numpy(dtype=np.float64)[:, None]
            preds = np.maximum(np.sort(preds, axis=1), 0.0) * open_  # independent models may cross
            out = pd.DataFrame({k: pdf[k] for k in KEYS})
            out.insert(0, "method", "lightgbm")
            out["horizon"] = pdf["horizon"].astype("int32")
            for i, c in enumerate(qcols):
                out[c] = preds[:, i]
            out["point"] = preds[:, median] if median is not None else preds.mean(axis=1)
            yield out

    return rows.mapInPandas(score, schema)
