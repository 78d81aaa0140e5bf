"""Model selection and ensembles, fitted on the validation origins only.

Every publishable method (the trained networks and the LightGBM baseline) scores the
validation windows.  On those rows, and on no others:

* each member's level is first corrected by one factor (``evaluate.ensemble_scale``): the
  factor by which its forecasts, multiplied, minimise the selection metric (closed form
  for RMSPE, a weighted median for WAPE and MAE), bounded to 1 +- ensemble_scale.  A
  forecaster of the median is not the best point under a relative metric: RMSPE rewards
  forecasts below the median where the spread is wide, and a member biased on these
  windows is put back on level before the mix.
* ``ensemble`` weights are fitted per horizon week: non-negative weights summing to one over
  the members' (level-corrected) forecasts, found by an exhaustive search over a simplex
  grid (step ``evaluate.ensemble_step``) that minimises the selection metric.  Quantile
  columns are combined with the same factors and weights (averaging quantiles,
  "Vincentization"), then re-sorted.
* every method gets a validation score; the ensemble's is measured leave-one-origin-out
  (weights fitted on the other validation origins), so that it is not graded on the rows
  it was fitted on.  The method with the lowest score is the ``winner``, except that the
  ensemble wins unless a single method beats it by more than ``evaluate.ensemble_margin``
  (a fraction of the ensemble's score): a network's kept epoch was chosen on these same
  windows, so its score is optimistic, and a mix is the safer pick between near-equals.
  ``forecast.model: best`` publishes the winner.

The selection is written to ``<models>/selection.json``: members and their model ids,
level factors, weights per horizon week, validation scores, the margin and the winner.
Test actuals never reach it.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_st.errors import MissingInputError
from sales_st.storage.files import json_exists, read_json, write_json

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
ENSEMBLE = "ensemble"
WEEK = 7


def week_of(horizon: np.ndarray | pd.Series) -> np.ndarray:
    """Horizon week (0-based) of 1-based horizon steps."""
    return (np.asarray(horizon, dtype=np.int64) - 1) // WEEK


def score(actual: np.ndarray, pred: np.ndarray, metric: str) -> np.ndarray:
    """The metric of each column of ``pred`` ([n] or [n, c]) against ``actual`` [n]."""
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    e = y[:, None] - p
    if metric == "wape":
        return np.abs(e).sum(axis=0) / max(float(np.abs(y).sum()), 1e-12)
    if metric == "rmspe":
        nz = y != 0
        if not nz.any():
            return np.full(p.shape[1], np.nan)
        return np.sqrt(np.mean((e[nz] / y[nz, None]) ** 2, axis=0))
    if metric == "mae":
        return np.abs(e).mean(axis=0)
    raise ValueError(f"unknown selection metric {metric!r}")


def best_scale(actual: np.ndarray, pred: np.ndarray, metric: str, bound: float) -> float:
    """The factor ``s`` minimising ``metric(actual, s * pred)``, clipped to 1 +- ``bound``.

    RMSPE: sum((y - s p) / y)^2 is least at s = sum(r) / sum(r^2) with r = p / y (rows with
    y != 0).  WAPE and MAE: sum|y - s p| = sum |p| |y / p - s| is least at the median of
    y / p weighted by |p| (rows with p != 0); the lower weighted median when it is a tie."""
    if bound <= 0:
        return 1.0
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if metric == "rmspe":
        nz = y != 0
        r = p[nz] / y[nz]
        den = float((r * r).sum())
        s = float(r.sum()) / den if den > 0 else 1.0
    elif metric in ("wape", "mae"):
        nz = p != 0
        if not nz.any():
            return 1.0
        ratio, w = y[nz] / p[nz], np.abs(p[nz])
        order = np.argsort(ratio, kind="stable")
        cum = np.cumsum(w[order])
        s = float(ratio[order][np.searchsorted(cum, 0.5 * cum[-1])])
    else:
        raise ValueError(f"unknown selection metric {metric!r}")
    return float(np.clip(s, 1.0 - bound, 1.0 + bound))


def fit_scales(
    frame: pd.DataFrame, members: list[str], metric: str, bound: float
) -> dict[str, float]:
    """Each member's level factor over ``frame``'s rows (see ``best_scale``)."""
    y = frame["actual"].to_numpy(dtype=np.float64)
    return {m: best_scale(y, frame[m].to_numpy(dtype=np.float64), metric, bound) for m in members}


def scaled(frame: pd.DataFrame, scales: dict[str, float]) -> pd.DataFrame:
    """``frame`` with each member's column multiplied by its factor."""
    out = frame.copy()
    for m, s in scales.items():
        out[m] = out[m] * s
    return out


def simplex_grid(members: int, step: float) -> np.ndarray:
    """Every weight vector on the simplex with coordinates in multiples of ``step``: [c, m]."""
    n = int(round(1.0 / step))
    rows = [
        [c / n for c in combo]
        for combo in itertools.product(range(n + 1), repeat=members)
        if sum(combo) == n
    ]
    return np.asarray(rows, dtype=np.float64)


def fit_weights(
    frame: pd.DataFrame, members: list[str], metric: str, step: float
) -> dict[int, list[float]]:
    """Weights per horizon week minimising ``metric`` over ``frame``'s rows.

    ``frame``: ``horizon``, ``actual`` and one point-forecast column per member.  A week
    with no rows gets equal weights.  Ties go to the first grid point in order, which puts
    weight on the earlier members."""
    grid = simplex_grid(len(members), step)
    weeks = week_of(frame["horizon"])
    X = frame[members].to_numpy(dtype=np.float64)
    y = frame["actual"].to_numpy(dtype=np.float64)
    out: dict[int, list[float]] = {}
    for w in range(int(weeks.max()) + 1 if len(frame) else 0):
        sel = weeks == w
        if not sel.any():
            out[w] = [1.0 / len(members)] * len(members)
            continue
        errs = score(y[sel], X[sel] @ grid.T, metric)
        out[w] = [float(v) for v in grid[int(np.nanargmin(errs))]]
    return out


def combine_points(frame: pd.DataFrame, members: list[str], weights: dict[int, list[float]]):
    """The weighted point forecast of each row of ``frame`` (see ``fit_weights``)."""
    weeks = week_of(frame["horizon"])
    W = np.asarray([weights.get(int(w), weights[max(weights)]) for w in weeks])
    return (frame[members].to_numpy(dtype=np.float64) * W).sum(axis=1)


def fit_ensemble(
    frame: pd.DataFrame, members: list[str], metric: str, step: float, bound: float
) -> tuple[dict[str, float], dict[int, list[float]]]:
    """The members' level factors, then the weights per horizon week over the corrected
    forecasts, both fitted on ``frame``'s rows."""
    scales = fit_scales(frame, members, metric, bound)
    return scales, fit_weights(scaled(frame, scales), members, metric, step)


def leave_one_origin_out(
    frame: pd.DataFrame, members: list[str], metric: str, step: float, bound: float = 0.0
) -> float:
    """The ensemble's score with each origin predicted by factors and weights fitted on the
    others (in-sample when there is a single origin)."""
    origins = sorted(frame["origin"].unique())
    if len(origins) < 2:
        s, w = fit_ensemble(frame, members, metric, step, bound)
        pred = combine_points(scaled(frame, s), members, w)
        return float(score(frame["actual"], pred, metric)[0])
    preds = np.empty(len(frame))
    for o in origins:
        held = (frame["origin"] == o).to_numpy()
        s, w = fit_ensemble(frame[~held], members, metric, step, bound)
        preds[held] = combine_points(scaled(frame[held], s), members, w)
    return float(score(frame["actual"], preds, metric)[0])


def select(
    frame: pd.DataFrame,
    members: list[str],
    metric: str,
    step: float,
    bound: float = 0.0,
    margin: float = 0.0,
) -> dict[str, Any]:
    """Validation scores of every member and of the ensemble, the ensemble's level factors
    (within 1 +- ``bound``) and weights, and the winner (the ensemble unless a member's
    score is below the ensemble's by more than ``margin`` of it).  ``frame``: ``origin,
    horizon, actual`` and a column per member (rows where any member is missing are
    dropped)."""
    frame = frame.dropna(subset=[*members, "actual"])
    if frame.empty:
        raise MissingInputError("model selection: no validation rows with every method's forecast")
    scores = {m: float(score(frame["actual"], frame[m], metric)[0]) for m in members}
    weights: dict[int, list[float]] = {}
    scales = dict.fromkeys(members, 1.0)
    if len(members) > 1:
        scales, weights = fit_ensemble(frame, members, metric, step, bound)
        scores[ENSEMBLE] = leave_one_origin_out(frame, members, metric, step, bound)
    winner = min(scores, key=lambda m: (scores[m], m != ENSEMBLE))
    if ENSEMBLE in scores and scores[winner] >= scores[ENSEMBLE] * (1 - margin):
        winner = ENSEMBLE
    return {
        "metric": metric,
        "members": members,
        "scales": scales,
        "weights": {str(k): v for k, v in weights.items()},
        "validation": scores,
        "validation_rows": int(len(frame)),
        "validation_origins": int(frame["origin"].nunique()),
        "ensemble_margin": margin,
        "winner": winner,
    }


def ensemble_rows(preds: DataFrame, selection: dict[str, Any], qcols: list[str]) -> DataFrame:
    """The ensemble's long rows (``method = 'ensemble'``) from its members' rows in ``preds``
    (``method, <keys>, horizon, point, <qcols>``); a row needs every member's forecast."""
    members = selection["members"]
    weights = {int(k): v for k, v in selection["weights"].items()}
    # selections written before the level factors have none: factor 1
    scales = [float(selection.get("scales", {}).get(m, 1.0)) for m in members]
    last = max(weights)
    keys = [c for c in preds.columns if c not in ("method", "point", *qcols)]
    week = F.floor((F.col("horizon") - 1) / WEEK).cast("int")
    wide = (
        preds.where(F.col("method").isin(members))
        .groupBy(*keys)
        .pivot("method", members)
        .agg(*[F.first(c).alias(c) for c in ["point", *qcols]])
    )

    def weight(i: int):
        expr = F.lit(weights[last][i] * scales[i])
        for w in sorted(weights, reverse=True):
            expr = F.when(week == w, F.lit(weights[w][i] * scales[i])).otherwise(expr)
        return expr

    def mix(col: str):
        parts = [F.col(f"{m}_{col}") * weight(i) for i, m in enumerate(members)]
        return sum(parts[1:], parts[0])

    complete = F.lit(True)
    for m in members:
        complete = complete & F.col(f"{m}_point").isNotNull()
    mixed = wide.where(complete).select(
        *keys, mix("point").alias("point"), *[mix(c).alias(c) for c in qcols]
    )
    if len(qcols) > 1:  # quantile averages stay ordered for ordered inputs; sort anyway
        ordered = F.array_sort(F.array(*[F.col(c) for c in qcols]))
        mixed = mixed.select(
            *keys, "point", *[ordered.getItem(i).alias(c) for i, c in enumerate(qcols)]
        )
    return mixed.select(F.lit(ENSEMBLE).alias("method"), *keys, "point", *qcols)


def ensemble_id(selection: dict[str, Any]) -> str:
    """The ``model_id`` recorded for ensemble forecasts: its members' ids."""
    ids = selection["model_ids"]
    return "ensemble(" + ",".join(ids[m] for m in selection["members"]) + ")"


def selection_path(models_root: str) -> str:
    return f"{models_root.rstrip('/')}/{SELECTION_FILE}"


def write_selection(models_root: str, selection: dict[str, Any]) -> None:
    write_json(selection_path(models_root), selection)


def read_selection(models_root: str) -> dict[str, Any]:
    path = selection_path(models_root)
    if not json_exists(path):
        raise MissingInputError(
            f"forecast.model is 'best' but {path} does not exist: run the evaluation job "
            "first (jobs/evaluate.py, or the pipeline), or set forecast.model to a model "
            "id or alias"
        )
    return read_json(path)
