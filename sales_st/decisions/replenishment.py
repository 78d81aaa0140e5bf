"""Replenishment: order-up-to levels and orders from the lead-time demand quantiles.

For each store x item with an inventory position on the run date (a periodic-review,
order-up-to policy):

* the protection interval is ``P = lead_time_days + review_days``: what is ordered now
  arrives after the lead time and must last until the next order arrives, one review
  period later;
* the demand over P is read off the forecasts' lead-time quantiles at ``horizon = P``
  (``cum_p10/cum_p50/cum_p90``: quantiles of the sum over days 1..P, not sums of daily
  quantiles);
* the order-up-to level S is the demand quantile at the target service level (cycle service
  level: the probability of no stock-out before the next order can arrive);
* the inventory position is on hand + on order, and the order ``max(0, S - position)``,
  rounded up to the order multiple;
* the stock-out risk is the probability that the demand over P exceeds the position: after
  the recommended order and, for comparison, without ordering.

Quantiles beyond the forecast's outermost ones (a 0.95 or 0.99 service level) come from a
two-piece normal through p10, p50 and p90: its upper half has the spread
``(p90 - p50) / z(0.9)``, its lower half ``(p50 - p10) / z(0.9)``, so the skew of the
forecast is kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_st.data.contract import SERIES_KEY

Z90 = 1.2815515655446004  # the standard normal's 0.9 quantile


def upper_quantile(p50: np.ndarray, p90: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The ``level`` (>= 0.5) quantile of the two-piece normal through p50 and p90."""
    from scipy.special import ndtri

    sigma = np.maximum(p90 - p50, 0.0) / Z90
    return p50 + ndtri(level) * sigma


def exceedance(x: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """P(demand > x) under the two-piece normal through p10, p50 and p90 (a step where a
    half has no spread)."""
    from scipy.special import ndtr

    hi = np.maximum(p90 - p50, 0.0) / Z90
    lo = np.maximum(p50 - p10, 0.0) / Z90
    sigma = np.where(x >= p50, hi, lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, (x - p50) / np.where(sigma > 0, sigma, 1.0), 0.0)
        risk = 1.0 - ndtr(z)
    return np.where(sigma > 0, risk, np.where(x >= p50, 0.0, 1.0))


PLAN_COLUMNS = [
    *SERIES_KEY,
    "lead_time_days",
    "review_days",
    "protection_days",
    "service_level",
    "demand_p50",
    "demand_at_service_level",
    "order_up_to",
    "on_hand",
    "on_order",
    "position",
    "order_qty",
    "stockout_risk",
    "stockout_risk_no_order",
]
PLAN_SCHEMA = (
    "store_id string, item_id string, lead_time_days int, review_days int, "
    "protection_days int, service_level double, demand_p50 double, "
    "demand_at_service_level double, order_up_to double, on_hand double, on_order double, "
    "position double, order_qty double, stockout_risk double, stockout_risk_no_order double"
)


def order_plan(frame: pd.DataFrame, order_multiple: float) -> pd.DataFrame:
    """The plan of each row of ``frame``: series keys, ``lead_time_days``, ``review_days``,
    ``service_level``, ``on_hand``, ``on_order`` and the lead-time quantiles over the
    protection interval, ``cum_p10``, ``cum_p50``, ``cum_p90``."""
    p10, p50, p90 = (frame[c].to_numpy(float) for c in ("cum_p10", "cum_p50", "cum_p90"))
    level = frame["service_level"].to_numpy(float)
    s = np.maximum(upper_quantile(p50, p90, np.maximum(level, 0.5)), 0.0)
    on_hand = frame["on_hand"].to_numpy(float)
    on_order = frame["on_order"].to_numpy(float)
    position = on_hand + on_order
    need = np.maximum(s - position, 0.0)
    m = float(order_multiple)
    qty = np.ceil(need / m - 1e-9) * m if m > 0 else need
    out = pd.DataFrame(
        {
            **{k: frame[k] for k in SERIES_KEY},
            "lead_time_days": frame["lead_time_days"].astype("int32"),
            "review_days": frame["review_days"].astype("int32"),
            "protection_days": (frame["lead_time_days"] + frame["review_days"]).astype("int32"),
            "service_level": level,
            "demand_p50": p50,
            "demand_at_service_level": s,
            "order_up_to": s,
            "on_hand": on_hand,
            "on_order": on_order,
            "position": position,
            "order_qty": qty,
            "stockout_risk": exceedance(position + qty, p10, p50, p90),
            "stockout_risk_no_order": exceedance(position, p10, p50, p90),
        }
    )
    return out[PLAN_COLUMNS]


def plan_orders(forecasts: DataFrame, positions: DataFrame, order_multiple: float) -> DataFrame:
    """The replenishment plan: ``positions`` (series keys, on hand, on order, lead time,
    review period, service level; one row per series) joined to the forecasts' lead-time
    quantiles at their protection interval (rows without a forecast that far are left out:
    see :func:`beyond_horizon`)."""
    lead = forecasts.select(
        *SERIES_KEY,
        F.col("horizon").alias("protection_days"),
        "cum_p10",
        "cum_p50",
        "cum_p90",
    )
    joined = positions.withColumn(
        "protection_days", F.col("lead_time_days") + F.col("review_days")
    ).join(lead, [*SERIES_KEY, "protection_days"], "inner")
    cols = [
        *SERIES_KEY,
        "lead_time_days",
        "review_days",
        "service_level",
        "on_hand",
        "on_order",
        "cum_p10",
        "cum_p50",
        "cum_p90",
    ]

    def plan(batches):
        for pdf in batches:
            yield order_plan(pdf, order_multiple)

    return joined.select(*cols).mapInPandas(plan, PLAN_SCHEMA)
