"""Conformal calibration of the quantile intervals (conformalized quantile regression).

Quantile heads are rarely calibrated out of the box: on Rossmann the nominal 80% interval
p10-p90 covered 71-74% of test days.  After training, the model scores its validation
windows; for each central interval (q, 1 - q) and horizon step h the nonconformity score of
a day is ``E = max(lo - y, y - hi)`` in the example's scaled units, and the offset is the
``ceil((n + 1)(1 - 2q)) / n`` empirical quantile of E (Romano et al., 2019).  Scoring widens
(or, for a negative offset, narrows) each interval by its offset: ``lo - Q_h``,
``hi + Q_h``, never crossing the median.  Only validation windows are used, so the test
backtest measures the calibrated coverage honestly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

CALIBRATION_FILE = "calibration.json"


def central_pairs(quantiles: list[float]) -> list[tuple[int, int]]:
    """Index pairs (lo, hi) of symmetric quantiles around the median, e.g. (0.1, 0.9)."""
    qs = sorted(quantiles)
    pairs = []
    for i, q in enumerate(qs):
        j = next((j for j, p in enumerate(qs) if abs(p - (1 - q)) < 1e-9), None)
        if j is not None and i < j:
            pairs.append((i, j))
    return pairs


def conformal_offsets(rows: DataFrame, quantiles: list[float], horizon: int) -> dict[str, Any]:
    """Offsets per central interval and horizon step from scored validation rows.

    ``rows``: ``horizon`` (1..H), ``y`` (the actual, scaled) and ``q0 .. q{Q-1}`` (the
    predicted quantiles, scaled, in increasing order), one row per observed open day.  The
    k-th smallest score, k = ceil((n + 1) * level) (at most n), is found with a window over
    each horizon step: only H rows reach the driver."""
    qs = sorted(quantiles)
    out: dict[str, Any] = {"quantiles": qs, "offsets": {}}
    by_h = Window.partitionBy("horizon")
    for lo, hi in central_pairs(qs):
        level = qs[hi] - qs[lo]
        e = F.greatest(F.col(f"q{lo}") - F.col("y"), F.col("y") - F.col(f"q{hi}"))
        ranked = rows.select("horizon", e.alias("e")).select(
            "horizon",
            "e",
            F.row_number().over(by_h.orderBy("e")).alias("rank"),
            F.count(F.lit(1)).over(by_h).alias("n"),
        )
        k = F.least(F.col("n"), F.ceil((F.col("n") + 1) * F.lit(level)))
        picked = {r["horizon"]: float(r["e"]) for r in ranked.where(F.col("rank") == k).collect()}
        out["offsets"][f"{qs[lo]}|{qs[hi]}"] = [picked.get(h, 0.0) for h in range(1, horizon + 1)]
    return out


def apply(q: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Calibrated quantiles ``[B, H, Q]`` (scaled units, increasing along the last axis)."""
    if not calibration:
        return q
    qs = calibration["quantiles"]
    mid = qs.index(0.5) if 0.5 in qs else None
    out = q.copy()
    for key, offsets in calibration["offsets"].items():
        lo_q, hi_q = (float(x) for x in key.split("|"))
        lo, hi = qs.index(lo_q), qs.index(hi_q)
        off = np.asarray(offsets, dtype=q.dtype)[None, : q.shape[1]]
        out[..., lo] = q[..., lo] - off
        out[..., hi] = q[..., hi] + off
        if mid is not None:
            out[..., lo] = np.minimum(out[..., lo], q[..., mid])
            out[..., hi] = np.maximum(out[..., hi], q[..., mid])
    # nested intervals stay nested
    return np.sort(out, axis=-1)


def fit_calibration(
    examples: DataFrame,
    root: str,
    mid: str,
    quantiles: list[float],
    region_columns: list[str],
    run_date: Any,
    horizon: int,
    history: int,
    grid: Any = None,
) -> dict[str, Any]:
    """Score ``examples`` (the validation windows) uncalibrated and fit the offsets."""
    from sales_st.evaluation.baselines import KEYS, truth_rows
    from sales_st.serving.scoring import quantile_columns, score_examples

    qcols = quantile_columns(quantiles)
    scored = score_examples(
        examples,
        root,
        mid,
        quantiles,
        region_columns,
        run_date,
        explain=False,
        top_steps=0,
        calibrated=False,
    )
    from sales_st.data.frequency import DAILY

    grid = grid or DAILY
    preds = scored.select(
        *KEYS[:-1],
        F.expr(grid.shift_sql("target_date", "-horizon")).alias("origin"),
        "horizon",
        *qcols,
    )
    truth = truth_rows(examples, history, [], grid).where("observed = 1 AND open = 1")
    scales = examples.select(*KEYS, "scale")
    rows = (
        truth.join(preds, KEYS + ["horizon"])
        .join(scales, KEYS)
        .select(
            "horizon",
            (F.col("actual") / F.col("scale")).alias("y"),
            *[(F.col(c) / F.col("scale")).alias(f"q{i}") for i, c in enumerate(qcols)],
        )
    )
    return conformal_offsets(rows, quantiles, horizon)
