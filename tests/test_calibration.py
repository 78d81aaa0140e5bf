"""Conformal calibration of the intervals: offsets by hand, and their application."""

from __future__ import annotations

import numpy as np
import pytest

from sales_st.serving.calibration import apply, central_pairs, conformal_offsets


def test_central_pairs():
    assert central_pairs([0.1, 0.5, 0.9]) == [(0, 2)]
    assert central_pairs([0.05, 0.25, 0.5, 0.75, 0.95]) == [(0, 4), (1, 3)]
    assert central_pairs([0.5]) == []


def test_offsets_by_hand(spark):
    # horizon 1: five days, interval [0, 2] around the median 1; scores max(lo - y, y - hi):
    #   y = 1 -> -1;  y = 3 -> 1;  y = -1 -> 1;  y = 2.5 -> 0.5;  y = 0.5 -> -0.5
    # level 0.8: k = ceil((5 + 1) * 0.8) = 5 -> the largest score, 1.0
    # horizon 2: three days, y = 1, 1.5, 4 -> -1, -0.5, 2; k = min(3, ceil(4 * 0.8)) = 3 -> 2.0
    rows = [(1, y, 0.0, 1.0, 2.0) for y in (1.0, 3.0, -1.0, 2.5, 0.5)]
    rows += [(2, y, 0.0, 1.0, 2.0) for y in (1.0, 1.5, 4.0)]
    df = spark.createDataFrame(rows, "horizon int, y double, q0 double, q1 double, q2 double")
    out = conformal_offsets(df, [0.1, 0.5, 0.9], horizon=3)
    assert out["quantiles"] == [0.1, 0.5, 0.9]
    assert out["offsets"] == {"0.1|0.9": [1.0, 2.0, 0.0]}  # no row at horizon 3: no change


def test_apply_widens_and_narrows_without_crossing():
    q = np.array([[[0.0, 1.0, 2.0], [0.5, 1.0, 1.5]]])  # [B=1, H=2, Q=3]
    cal = {"quantiles": [0.1, 0.5, 0.9], "offsets": {"0.1|0.9": [1.0, -2.0]}}
    out = apply(q, cal)
    np.testing.assert_allclose(out[0, 0], [-1.0, 1.0, 3.0])  # widened by 1
    np.testing.assert_allclose(out[0, 1], [1.0, 1.0, 1.0])  # narrowed, clamped at the median
    assert apply(q, None) is q


@pytest.mark.slow
def test_trained_model_carries_offsets_from_validation_only(tiny_model, tiny_cfg):
    from sales_st.training import store as model_store

    cal = model_store.load_calibration(tiny_cfg.path("models"), tiny_model.model_id)
    assert cal is not None and set(cal["offsets"]) == {"0.1|0.9"}
    assert len(cal["offsets"]["0.1|0.9"]) == tiny_cfg.features.horizon
    meta = model_store.load_meta(tiny_cfg.path("models"), tiny_model.model_id)
    assert meta["calibration"] == cal
