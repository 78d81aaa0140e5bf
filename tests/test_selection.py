"""Ensemble weights and model selection: checked by hand, fitted on validation rows only, and
published by the forecast job (``forecast.model: best``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from sales_st.evaluation.selection import (
    ENSEMBLE,
    best_scale,
    ensemble_rows,
    fit_weights,
    leave_one_origin_out,
    score,
    select,
    selection_path,
    simplex_grid,
    write_selection,
)

O1, O2 = dt.date(2024, 3, 1), dt.date(2024, 3, 8)


def test_simplex_grid_covers_the_simplex():
    g = simplex_grid(3, 0.25)
    assert len(g) == 15  # C(4 + 2, 2)
    np.testing.assert_allclose(g.sum(axis=1), 1.0)
    assert {tuple(r) for r in g} >= {(1.0, 0.0, 0.0), (0.25, 0.5, 0.25), (0.0, 0.0, 1.0)}


def test_weights_by_hand():
    # week 0: actual 10, a = 8, b = 14: WAPE is |10 - 8w - 14(1 - w)| / 10, zero at w = 2/3;
    #   on the 0.05 grid w = 0.65 gives 10.1 (error 0.1), w = 0.70 gives 9.8 (0.2).
    # week 1: a is exact, b is not: all weight on a.
    frame = pd.DataFrame(
        {
            "horizon": [1, 8],
            "actual": [10.0, 20.0],
            "a": [8.0, 20.0],
            "b": [14.0, 30.0],
        }
    )
    w = fit_weights(frame, ["a", "b"], "wape", 0.05)
    assert w[0] == pytest.approx([0.65, 0.35])
    assert w[1] == pytest.approx([1.0, 0.0])


def test_rmspe_weights_differ_from_wape_weights_by_hand():
    # two rows in one week: actuals 1 and 100; a under-forecasts the small one, b the big one.
    frame = pd.DataFrame(
        {"horizon": [1, 2], "actual": [1.0, 100.0], "a": [0.5, 100.0], "b": [1.0, 60.0]}
    )
    # WAPE of weight w on a: (0.5 w + 40 (1 - w)) / 101 -> minimal at w = 1
    assert fit_weights(frame, ["a", "b"], "wape", 0.5)[0] == [1.0, 0.0]
    # RMSPE: w = 1 -> sqrt((0.25 + 0) / 2) = 0.354; w = 0.5 -> sqrt((0.0625 + 0.04) / 2) = 0.226;
    # w = 0 -> sqrt((0 + 0.16) / 2) = 0.283
    assert fit_weights(frame, ["a", "b"], "rmspe", 0.5)[0] == [0.5, 0.5]
    assert score(frame["actual"], 0.5 * frame["a"] + 0.5 * frame["b"], "rmspe")[0] == (
        pytest.approx(np.sqrt((0.25**2 + 0.2**2) / 2))
    )


def test_level_factors_by_hand():
    y = np.array([10.0, 20.0, 40.0])
    p = np.array([11.0, 20.0, 36.0])
    # RMSPE: r = p / y = 1.1, 1.0, 0.9 -> s = 3.0 / (1.21 + 1 + 0.81) = 3 / 3.02
    assert best_scale(y, p, "rmspe", 0.5) == pytest.approx(3 / 3.02)
    s = 3 / 3.02
    assert score(y, s * p, "rmspe")[0] < min(
        score(y, (s - 0.01) * p, "rmspe")[0], score(y, (s + 0.01) * p, "rmspe")[0]
    )
    # WAPE: y / p = 0.909, 1.0, 1.111 weighted 11, 20, 36 (total 67): the weight reaches
    # half (33.5) at the third ratio, 40 / 36
    assert best_scale(y, p, "wape", 0.5) == pytest.approx(40 / 36)
    assert best_scale(y, p, "mae", 0.5) == pytest.approx(40 / 36)
    # bounded, and off at 0
    assert best_scale(y, p, "wape", 0.05) == pytest.approx(1.05)
    assert best_scale(y, p, "rmspe", 0.0) == 1.0


def test_ensemble_mixes_level_corrected_members():
    # a forecasts twice the truth, b 0.8 of it: corrected by 1/2 and 1.25 (within 1 +- 0.5)
    # both are exact, and the ensemble is exact on an origin it was not fitted on
    frame = pd.DataFrame(
        {
            "origin": [O1, O1, O2, O2],
            "horizon": [1, 2, 1, 2],
            "actual": [10.0, 30.0, 20.0, 5.0],
        }
    )
    frame["a"] = 2 * frame["actual"]
    frame["b"] = 0.8 * frame["actual"]
    sel = select(frame, ["a", "b"], "wape", 0.5, bound=0.5)
    assert sel["scales"] == pytest.approx({"a": 0.5, "b": 1.25})
    assert sel["validation"][ENSEMBLE] == pytest.approx(0.0)
    assert sel["validation"]["a"] == pytest.approx(1.0) and sel["winner"] == ENSEMBLE
    # a bias both members share: no mix removes it, the factors do (up to their bound)
    frame["b"] = 2 * frame["actual"]
    assert select(frame, ["a", "b"], "wape", 0.5)["validation"][ENSEMBLE] == pytest.approx(1.0)
    assert select(frame, ["a", "b"], "wape", 0.5, bound=0.4)["validation"][
        ENSEMBLE
    ] == pytest.approx(0.2)  # 2 * 0.6 = 1.2 times the truth at the bound


def test_ensemble_is_graded_on_origins_it_was_not_fitted_on():
    # origin 1 wants all of a, origin 2 all of b: each held-out origin gets the other's weights
    frame = pd.DataFrame(
        {
            "origin": [O1, O2],
            "horizon": [1, 1],
            "actual": [10.0, 10.0],
            "a": [10.0, 0.0],
            "b": [20.0, 10.0],
        }
    )
    # fitted on O2 alone -> b (error 10 on O1); on O1 alone -> a (error 10 on O2)
    assert leave_one_origin_out(frame, ["a", "b"], "wape", 0.5) == pytest.approx(20 / 20)
    sel = select(frame, ["a", "b"], "wape", 0.5)
    assert sel["validation"] == pytest.approx({"a": 0.5, "b": 0.5, ENSEMBLE: 1.0})
    assert sel["winner"] == "a" and sel["validation_origins"] == 2
    # a margin of half the ensemble's score: a's 0.5 is not below 1.0 by more than 0.5
    assert select(frame, ["a", "b"], "wape", 0.5, margin=0.5)["winner"] == ENSEMBLE
    assert select(frame, ["a", "b"], "wape", 0.5, margin=0.49)["winner"] == "a"


def test_ensemble_rows_mix_members_per_horizon_week(spark):
    rows = [
        ("m1", "A", "x", O1, 1, 10.0, 8.0, 12.0),
        ("m2", "A", "x", O1, 1, 20.0, 18.0, 30.0),
        ("m1", "A", "x", O1, 8, 10.0, 9.0, 11.0),
        ("m2", "A", "x", O1, 8, 30.0, 20.0, 40.0),
        ("m1", "B", "x", O1, 1, 5.0, 4.0, 6.0),  # m2 has no forecast for B: no ensemble row
    ]
    preds = spark.createDataFrame(
        rows,
        "method string, store_id string, item_id string, origin date, horizon int, "
        "point double, p10 double, p90 double",
    )
    sel = {"members": ["m1", "m2"], "weights": {"0": [0.75, 0.25], "1": [0.5, 0.5]}}
    got = ensemble_rows(preds, sel, ["p10", "p90"]).orderBy("horizon").toPandas()
    # level factors multiply each member's columns before the weights
    sel2 = {**sel, "scales": {"m1": 1.0, "m2": 0.5}}
    got2 = ensemble_rows(preds, sel2, ["p10", "p90"]).orderBy("horizon").toPandas()
    np.testing.assert_allclose(got2.point, [0.75 * 10 + 0.25 * 10, 0.5 * 10 + 0.5 * 15])
    np.testing.assert_allclose(got2.p90, [0.75 * 12 + 0.25 * 15, 0.5 * 11 + 0.5 * 20])
    assert list(got.columns) == [
        "method",
        "store_id",
        "item_id",
        "origin",
        "horizon",
        "point",
        "p10",
        "p90",
    ]
    assert (got.method == ENSEMBLE).all() and got.store_id.tolist() == ["A", "A"]
    np.testing.assert_allclose(got.point, [0.75 * 10 + 0.25 * 20, 0.5 * 10 + 0.5 * 30])
    np.testing.assert_allclose(got.p10, [0.75 * 8 + 0.25 * 18, 0.5 * 9 + 0.5 * 20])
    np.testing.assert_allclose(got.p90, [0.75 * 12 + 0.25 * 30, 0.5 * 11 + 0.5 * 40])


# ---- end to end on the tiny panel -----------------------------------------------------------


@pytest.mark.slow
def test_selection_sees_validation_rows_only(spark, tiny_cfg, tiny_evaluation, data_root):
    """Tripling every test actual changes the test metrics and nothing in the selection."""
    from sales_st.evaluation.job import run_evaluate
    from sales_st.features.spec import SplitInfo, read_spec, write_spec

    first = tiny_evaluation
    sel = json.load(open(selection_path(tiny_cfg.path("models"))))
    assert sel == first.selection
    assert sel["members"] == ["fused", "lightgbm"]  # temporal_only is not trained here
    assert sel["winner"] == min(sel["validation"], key=sel["validation"].get)
    overall = first.overall.set_index("method")
    assert {ENSEMBLE, "best"} <= set(overall.index)
    assert overall.loc["best", "wape"] == pytest.approx(overall.loc[sel["winner"], "wape"])

    spec = read_spec(tiny_cfg.path("features"))
    tripled = f"{data_root}/features/tripled"
    test = spark.read.parquet(spec.split_path("test"))
    test.withColumn("y", F.expr("transform(y, v -> v * 3)")).write.mode("overwrite").parquet(
        f"{tripled}/test"
    )
    splits = {**spec.splits, "test": SplitInfo(f"{tripled}/test", spec.splits["test"].rows)}
    write_spec(tripled, spec.replace(splits=splits))
    cfg = dataclasses.replace(
        tiny_cfg,
        paths=dataclasses.replace(tiny_cfg.paths, features="features/tripled", reports="rep3"),
    )
    second = run_evaluate(spark, cfg)
    assert second.selection == sel
    wapes = second.overall.set_index("method")["wape"]
    assert wapes["fused"] != pytest.approx(overall.loc["fused", "wape"])


@pytest.mark.slow
def test_best_publishes_the_weighted_mix_of_its_members(spark, tiny_cfg, tiny_evaluation):
    """A hand-written selection (ensemble winner, weights 0.25 / 0.75, level factors 0.9 /
    1.1): the published quantiles are that mix of what the fused model and LightGBM publish
    on their own."""
    from sales_st.serving.job import run_forecast

    root = tiny_cfg.path("models")
    sel = tiny_evaluation.selection
    table = "sales_st.forecasts"
    cols = ["store_id", "item_id", "target_date", "p10", "p50", "p90"]

    def publish(model: str) -> pd.DataFrame:
        cfg = dataclasses.replace(
            tiny_cfg, forecast=dataclasses.replace(tiny_cfg.forecast, model=model)
        )
        out = run_forecast(spark, cfg, None)
        got = spark.table(table).where(F.col("run_date") == F.lit(out.run_date))
        return got.toPandas().sort_values(cols[:3]).reset_index(drop=True)

    try:
        write_selection(
            root,
            {
                **sel,
                "winner": ENSEMBLE,
                "weights": {"0": [0.25, 0.75]},
                "scales": {"fused": 0.9, "lightgbm": 1.1},
            },
        )
        mixed = publish("best")
        fused = publish("latest")
        lgbm = publish("lightgbm")
    finally:
        write_selection(root, sel)
    assert len(mixed) == len(fused) == len(lgbm) > 0
    ids = sel["model_ids"]
    assert mixed.model_id.iloc[0] == f"ensemble({ids['fused']},{ids['lightgbm']})"
    assert (mixed[cols[:3]] == fused[cols[:3]]).all().all()
    for c in ("p10", "p50", "p90"):
        want = 0.25 * 0.9 * fused[c] + 0.75 * 1.1 * lgbm[c]
        np.testing.assert_allclose(mixed[c], want, rtol=1e-9)
    # explanations come from the network; LightGBM alone has none
    assert mixed.gate.notna().all() and lgbm.gate.isna().all()
    assert lgbm.model_id.iloc[0] == sel["model_ids"]["lightgbm"]
