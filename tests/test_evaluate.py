"""Metrics and baselines checked by hand; the evaluation job end to end on the tiny panel."""

from __future__ import annotations

import datetime as dt
import math
import os
import re

import numpy as np
import pytest
from pyspark.sql import functions as F

from sales_st.evaluation.baselines import simple_baselines, truth_rows
from sales_st.evaluation.metrics import compute_metrics, sum_metrics

ORIGIN = dt.date(2024, 3, 1)


def two_series(spark):
    # series A: actual 10, 20 ; point 12, 18 ; p10/p90 8..14, 15..25 ; MASE scale 4
    # series B: actual 0, 5  ; point 1, 5   ; p10/p90 0..2, 6..9   ; MASE scale 2
    rows = [
        ("m", "A", "x", "S1", ORIGIN, 1, 10.0, 12.0, 8.0, 14.0, 4.0),
        ("m", "A", "x", "S1", ORIGIN, 2, 20.0, 18.0, 15.0, 25.0, 4.0),
        ("m", "B", "x", "S1", ORIGIN, 1, 0.0, 1.0, 0.0, 2.0, 2.0),
        ("m", "B", "x", "S1", ORIGIN, 2, 5.0, 5.0, 6.0, 9.0, 2.0),
    ]
    return (
        spark.createDataFrame(
            rows,
            "method string, store_id string, item_id string, state string, origin date, "
            "horizon int, actual double, point double, p10 double, p90 double, mase_scale double",
        )
        .withColumn("p_lo", F.col("p10"))
        .withColumn("p_hi", F.col("p90"))
    )


def test_metrics_by_hand(spark):
    m = compute_metrics(
        two_series(spark), {"overall": [], "series": ["store_id"]}, {"p10": 0.1, "p90": 0.9}
    ).toPandas()
    o = m[m.level == "overall"].iloc[0]
    e = np.array([10 - 12, 20 - 18, 0 - 1, 5 - 5], float)
    y = np.array([10, 20, 0, 5], float)
    p = np.array([12, 18, 1, 5], float)
    assert o.n == 4
    assert o.mse == pytest.approx((4 + 4 + 1 + 0) / 4)
    assert o.rmse == pytest.approx(math.sqrt(9 / 4))
    assert o.mae == pytest.approx(5 / 4)
    assert o.wape == pytest.approx(5 / 35)
    assert o.smape == pytest.approx(np.mean(2 * np.abs(e) / (np.abs(y) + np.abs(p))))
    assert o.rmspe == pytest.approx(
        math.sqrt(((2 / 10) ** 2 + (2 / 20) ** 2 + 0) / 3)
    )  # y=0 skipped
    assert o.mase == pytest.approx(np.mean([2 / 4, 2 / 4, 1 / 2, 0 / 2]))
    lo = np.array([8, 15, 0, 6], float)
    hi = np.array([14, 25, 2, 9], float)
    pin = (
        np.maximum(0.1 * (y - lo), -0.9 * (y - lo)) + np.maximum(0.9 * (y - hi), -0.1 * (y - hi))
    ) / 2
    assert o.pinball == pytest.approx(pin.mean())
    assert o.coverage == pytest.approx(3 / 4)  # B at h=2: 5 < 6
    b = m[(m.level == "series") & (m.group_key == "B")].iloc[0]
    assert b.wape == pytest.approx(1 / 5) and b.rmspe == pytest.approx(0.0)


def test_sum_metrics_by_hand(spark):
    rows = (
        two_series(spark)
        .withColumn("target_date", F.date_add("origin", F.col("horizon")))
        .withColumn("observed", F.lit(1))
        .withColumn("p50", F.col("point"))
    )
    q, qcols = [0.1, 0.5, 0.9], ["p10", "p50", "p90"]
    # lead time with narrow fitted scores (+-0.1 sd); region totals with normal quantiles
    fitted = {"lead_time": {"scores": {"m|1": [-0.1, 0, 0.1], "m|2": [-0.1, 0, 0.1]}}}
    m = sum_metrics(rows, ["state"], qcols, q, fitted).toPandas().set_index(["level", "group_key"])
    # demand through day h: A 10, 30 vs 12, 30; B 0, 5 vs 1, 6
    lead = m.loc[("lead_time", "all")]
    assert lead.n == 4 and lead.mae == pytest.approx(4 / 4) and lead.wape == pytest.approx(4 / 45)
    # +-0.1 sd covers only A's 30 at its median 30
    assert lead.coverage == pytest.approx(1 / 4)
    assert m.loc[("lead_time_horizon", "2")].coverage == pytest.approx(1 / 2)
    # the state's total: 10, 25 vs 13, 23; spreads sqrt(6^2 + 2^2) and sqrt(10^2 + 3^2) over
    # z90 - z10 = 2.563: the normal p10..p90 are +-3.16 and +-5.22, both cover
    total = m.loc[("state_total", "S1")]
    assert total.n == 2 and total.mae == pytest.approx((3 + 2) / 2)
    assert total.coverage == pytest.approx(1.0) and np.isnan(total.mase)


def test_baselines_by_hand(spark):
    L, H = 14, 9
    hist = [float(i) for i in range(L)]  # scaled history 0..13 (day L-1 = the origin)
    obs = [1] * L
    fut_open = [1, 1, 1, 0, 1, 1, 1, 1, 1]
    sw = [0.5] * H
    ex = spark.createDataFrame(
        [("s", "i", ORIGIN, hist, obs, 2.0, sw, fut_open, [3.0] * H, [1] * H)],
        "store_id string, item_id string, origin date, hist_y array<double>, "
        "hist_observed array<int>, scale double, fut_sw_mean array<double>, "
        "fut_open array<int>, y array<double>, y_mask array<int>",
    )
    b = simple_baselines(ex, L, H).toPandas()
    naive = b[b.method == "seasonal_naive"].sort_values("horizon").point.tolist()
    # same weekday as o+h: index 13 + h - 7*ceil(h/7): h=1 -> 7, ..., h=7 -> 13, h=8 -> 7
    expected = [(13 + h - 7 * math.ceil(h / 7)) * 2.0 * fut_open[h - 1] for h in range(1, H + 1)]
    assert naive == expected
    wavg = b[b.method == "weekday_average"].sort_values("horizon").point.tolist()
    assert wavg == [0.5 * 2.0 * o for o in fut_open]
    t = truth_rows(ex, L, ["state"]).orderBy("horizon").toPandas()
    assert t.actual.tolist() == [3.0] * H and t.open.tolist() == fut_open
    # MASE scale: mean |y_t - y_{t-7}| over the history = 7 (scaled) x scale 2
    assert t.mase_scale.iloc[0] == pytest.approx(14.0)
    assert t.target_date.tolist() == [ORIGIN + dt.timedelta(days=h) for h in range(1, H + 1)]


@pytest.mark.slow
def test_evaluation_job_on_the_tiny_panel(spark, tiny_cfg, tiny_evaluation):
    out = tiny_evaluation
    overall = out.overall.set_index("method")
    assert {"fused", "seasonal_naive", "weekday_average", "lightgbm"} <= set(overall.index)
    n = overall["n"]
    assert n.nunique() == 1 and n.iloc[0] > 0  # every method scored on the same rows
    assert overall.loc["fused", "coverage"] > 0 and math.isnan(
        overall.loc["seasonal_naive", "pinball"]
    )
    levels = set(spark.table(out.metrics_table).select("level").distinct().toPandas().level)
    assert {"overall", "horizon", "origin", "series", "state", "city", "state_total"} <= levels
    html = open(out.report).read()
    assert len(re.findall(r"data:image/png;base64,", html)) >= 4
    assert os.path.isdir(out.predictions)


@pytest.mark.slow
def test_a_model_from_another_build_of_the_features_is_not_backtested(
    spark, tiny_cfg, tiny_model, tmp_path, caplog
):
    """A stale alias -- the same feature settings, another build (here: a temporal-only twin
    left by an earlier run) -- is skipped with a warning, so the selection cannot offer it to
    the forecast job, which refuses such members; other feature settings are an error."""
    import dataclasses
    import json
    import logging
    import shutil

    from sales_st.errors import DataError
    from sales_st.evaluation.backtest import model_predictions
    from sales_st.features.spec import read_spec
    from sales_st.training import store as model_store

    root = tmp_path / "models"
    mid, stale = tiny_model.model_id, "pretrain-stale"
    shutil.copytree(model_store.model_dir(tiny_cfg.path("models"), mid), root / mid)
    shutil.copytree(root / mid, root / stale)
    spec_file = root / stale / "feature_spec.json"
    stored = json.loads(spec_file.read_text())
    stored["features_id"] = "another-build"
    spec_file.write_text(json.dumps(stored))
    model_store.set_aliases(str(root), mid, ["latest"])
    model_store.set_aliases(str(root), stale, ["temporal_only"])
    cfg = dataclasses.replace(tiny_cfg, paths=dataclasses.replace(tiny_cfg.paths, models=str(root)))
    spec = read_spec(cfg.path("features"))
    test = spark.read.parquet(spec.split_path("test"))
    quantiles = sorted(cfg.model.quantiles)
    assert cfg.evaluate.models == {"fused": "latest", "temporal_only": "temporal_only"}

    with caplog.at_level(logging.WARNING, logger="sales_st.evaluation.backtest"):
        scored, ids = model_predictions(test, spec, cfg, spec.run_date, quantiles)
    assert ids == {"fused": mid} and len(scored) == 1
    assert scored[0].select("method").distinct().toPandas().method.tolist() == ["fused"]
    warned = [r.getMessage() for r in caplog.records if stale in r.getMessage()]
    assert len(warned) == 1 and "another build of the features" in warned[0]
    assert "another-build" in warned[0] and spec.features_id in warned[0]

    stored["features_config"] = "other settings"
    spec_file.write_text(json.dumps(stored))
    with pytest.raises(DataError, match=f"model {stale} was trained on other features"):
        model_predictions(test, spec, cfg, spec.run_date, quantiles)


def lightgbm_training_rows(spark, cfg):
    """The tiny panel's spec, training split and its LightGBM feature rows."""
    from sales_st.evaluation.baselines import horizon_rows, lgbm_features
    from sales_st.features.spec import read_spec

    spec = read_spec(cfg.path("features"))
    train = spark.read.parquet(spec.split_path("train"))
    feats, cats = lgbm_features(spec)
    X = horizon_rows(train, spec).toPandas()[feats].astype(dict.fromkeys(cats, "int32"))
    return spec, train, X


@pytest.mark.slow
def test_lightgbm_learning_rate_scales_each_round(spark, tiny_cfg, tiny_features):
    """``evaluate.lightgbm_learning_rate`` reaches the boosters: after one round the
    forecast is the initial quantile plus the rate times the first tree's leaf, so the
    rates 0.1, 0.2, 0.3 give forecasts equally spaced; the rate is part of the model's id."""
    import dataclasses

    from sales_st.evaluation.baselines import lightgbm_params, train_lightgbm

    spec, train, X = lightgbm_training_rows(spark, tiny_cfg)
    p = []
    for lr in (0.1, 0.2, 0.3):
        models = train_lightgbm(
            spark, train, spec, [0.5], rounds=1, leaves=7, max_rows=10**6, learning_rate=lr
        )
        assert models[0.5].params["learning_rate"] == lr
        p.append(models[0.5].predict(X))
    step = p[1] - p[0]
    assert np.abs(step).max() > 1e-6
    np.testing.assert_allclose(p[2] - p[1], step, rtol=1e-6, atol=1e-9)
    faster = dataclasses.replace(tiny_cfg.evaluate, lightgbm_learning_rate=0.1)
    assert lightgbm_params(faster, [0.5]) != lightgbm_params(tiny_cfg.evaluate, [0.5])


def test_lightgbm_interval_rounds_shorten_only_the_interval_quantiles(
    spark, tiny_cfg, tiny_features
):
    """``evaluate.lightgbm_interval_rounds`` boosts p10 / p90 for fewer rounds; the median
    (the point forecast) is the same booster as without it; the setting is in the model id."""
    import dataclasses

    from sales_st.evaluation.baselines import lightgbm_params, train_lightgbm

    spec, train, X = lightgbm_training_rows(spark, tiny_cfg)
    qs = [0.1, 0.5, 0.9]
    full = train_lightgbm(spark, train, spec, qs, rounds=12, leaves=7, max_rows=10**6)
    short = train_lightgbm(
        spark, train, spec, qs, rounds=12, leaves=7, max_rows=10**6, interval_rounds=4
    )
    assert {q: m.current_iteration() for q, m in full.items()} == {0.1: 12, 0.5: 12, 0.9: 12}
    assert {q: m.current_iteration() for q, m in short.items()} == {0.1: 4, 0.5: 12, 0.9: 4}
    np.testing.assert_array_equal(short[0.5].predict(X), full[0.5].predict(X))
    # p10 after 4 rounds is p10 after 12 cut at 4: the rounds are the same rounds
    np.testing.assert_allclose(
        short[0.1].predict(X), full[0.1].predict(X, num_iteration=4), rtol=1e-9, atol=1e-12
    )
    assert np.abs(short[0.9].predict(X) - full[0.9].predict(X)).max() > 1e-6
    cut = dataclasses.replace(tiny_cfg.evaluate, lightgbm_interval_rounds=4)
    assert lightgbm_params(cut, qs) != lightgbm_params(tiny_cfg.evaluate, qs)
    same = dataclasses.replace(
        tiny_cfg.evaluate, lightgbm_interval_rounds=tiny_cfg.evaluate.lightgbm_rounds
    )
    assert lightgbm_params(same, qs) == lightgbm_params(tiny_cfg.evaluate, qs)


def test_lightgbm_relative_squared_median_starts_at_rmspes_best_constant(
    spark, tiny_cfg, tiny_features
):
    """``evaluate.lightgbm_point_loss=relative_squared``: the median is a squared-error model
    weighted by 1 / y^2 (closed and zero days weigh nothing), so before its trees count (a
    learning rate of 1e-9) it forecasts the constant with the least squared relative error
    over the training days, sum(1/y) / sum(1/y^2), by hand; p10 / p90 stay quantile models;
    the setting is in the model id."""
    import dataclasses

    from pyspark.sql import functions as F

    from sales_st.evaluation.baselines import horizon_rows, lightgbm_params, train_lightgbm

    spec, train, X = lightgbm_training_rows(spark, tiny_cfg)
    qs = [0.1, 0.5, 0.9]
    models = train_lightgbm(
        spark,
        train,
        spec,
        qs,
        rounds=1,
        leaves=7,
        max_rows=10**6,
        learning_rate=1e-9,
        point_loss="relative_squared",
    )
    t = (
        horizon_rows(train, spec)
        .where(F.col("y_mask") == 1)
        .select((F.col("y") / F.col("scale")).alias("t"))
        .toPandas()["t"]
        .to_numpy()
    )
    t = t[t > 0]
    best = np.sum(1 / t) / np.sum(1 / t**2)
    assert best < np.median(t) * 0.99  # a different point from the median's
    np.testing.assert_allclose(models[0.5].predict(X), best, rtol=1e-5)
    assert models[0.5].params["objective"] == "regression"
    assert {models[q].params["objective"] for q in (0.1, 0.9)} == {"quantile"}
    plain = train_lightgbm(
        spark, train, spec, [0.5], rounds=1, leaves=7, max_rows=10**6, learning_rate=1e-9
    )
    assert abs(float(np.mean(plain[0.5].predict(X))) - best) > 1e-3
    rel = dataclasses.replace(tiny_cfg.evaluate, lightgbm_point_loss="relative_squared")
    assert lightgbm_params(rel, qs) != lightgbm_params(tiny_cfg.evaluate, qs)


def test_lightgbm_scores_on_the_executors_as_the_boosters_do(spark, tiny_cfg, tiny_features):
    from sales_st.evaluation.baselines import (
        horizon_rows,
        lgbm_features,
        predict_lightgbm,
        train_lightgbm,
    )
    from sales_st.features.spec import read_spec

    spec = read_spec(tiny_cfg.path("features"))
    train = spark.read.parquet(spec.split_path("train"))
    test = spark.read.parquet(spec.split_path("test"))
    qs = [0.1, 0.5, 0.9]
    models = train_lightgbm(spark, train, spec, qs, rounds=20, leaves=7, max_rows=10**6)
    got = predict_lightgbm(spark, models, test, spec, ["p10", "p50", "p90"]).toPandas()
    # the same rows scored here, by the boosters themselves
    feats, cats = lgbm_features(spec)
    rows = horizon_rows(test, spec).toPandas()
    X = rows[feats].astype(dict.fromkeys(cats, "int32"))
    raw = np.stack([models[q].predict(X) for q in qs], axis=1) * rows.scale.to_numpy()[:, None]
    want = np.maximum(np.sort(raw, axis=1), 0) * rows.fut_open.to_numpy()[:, None]
    keys = ["store_id", "item_id", "origin", "horizon"]
    merged = (
        rows[keys]
        .assign(w10=want[:, 0], w50=want[:, 1], w90=want[:, 2])
        .merge(got, on=keys, how="outer", validate="1:1", indicator=True)
    )
    assert len(got) == len(rows) > 0 and (merged._merge == "both").all()
    assert (got.method == "lightgbm").all()
    for w, g in (("w10", "p10"), ("w50", "p50"), ("w90", "p90")):
        np.testing.assert_allclose(merged[g], merged[w], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(merged.point, merged.p50)
    assert (merged.p10 <= merged.p50).all() and (merged.p50 <= merged.p90).all()
    closed = rows.fut_open.to_numpy() == 0
    assert closed.any() and (want[closed] == 0).all()
