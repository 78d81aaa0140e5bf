"""Forecast-error metrics as Spark aggregations over a long table of predictions.

Input rows (one per method, series, origin, horizon step):
``method, actual, point, p_lo, p_hi, quantile columns, mase_scale`` plus grouping keys.

* MSE, RMSE, MAE over the rows;
* WAPE = sum |e| / sum |y|;
* sMAPE = mean 2|e| / (|y| + |yhat|), a row with y = yhat = 0 counting 0;
* RMSPE = sqrt(mean (e / y)^2) over rows with y != 0 (the Kaggle Rossmann metric);
* MASE = mean |e| / d, d = the series' in-sample mean absolute weekly-seasonal difference
  over its history window (rows with d = 0 are left out);
* pinball = mean over rows and quantiles of max(q e, (q - 1) e), e = y - q-forecast;
* coverage = share of rows with p_lo <= y <= p_hi (the central interval).
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

METRICS = ["n", "mse", "rmse", "mae", "wape", "smape", "rmspe", "mase", "pinball", "coverage"]


def metric_aggs(quantile_cols: dict[str, float]) -> list[Column]:
    y, p = F.col("actual"), F.col("point")
    e = y - p
    ae = F.abs(e)
    denom = F.abs(y) + F.abs(p)
    pins = [
        F.greatest(F.lit(q) * (y - F.col(c)), F.lit(q - 1.0) * (y - F.col(c)))
        for c, q in quantile_cols.items()
    ]
    pinball = sum(pins[1:], pins[0]) / len(pins) if pins else F.lit(None).cast("double")
    covered = (y >= F.col("p_lo")) & (y <= F.col("p_hi"))
    return [
        F.count(F.lit(1)).alias("n"),
        F.avg(e * e).alias("mse"),
        F.sqrt(F.avg(e * e)).alias("rmse"),
        F.avg(ae).alias("mae"),
        (F.sum(ae) / F.sum(F.abs(y))).alias("wape"),
        F.avg(F.when(denom > 0, 2 * ae / denom).otherwise(0.0)).alias("smape"),
        F.sqrt(F.avg(F.when(y != 0, (e / y) * (e / y)))).alias("rmspe"),
        F.avg(F.when(F.col("mase_scale") > 0, ae / F.col("mase_scale"))).alias("mase"),
        F.avg(pinball).alias("pinball"),
        F.avg(F.when(F.col("p_lo").isNotNull(), covered.cast("double"))).alias("coverage"),
    ]


def compute_metrics(
    rows: DataFrame, levels: dict[str, list[str]], quantile_cols: dict[str, float]
) -> DataFrame:
    """Metrics per method for every grouping level.

    ``levels`` maps a level name to its grouping columns ([] for overall).  Returns
    ``method, level, group_key`` and the metric columns, group_key joining the group values
    with '|' ('all' for overall).
    """
    parts = []
    for level, cols in levels.items():
        key = F.concat_ws("|", *[F.col(c).cast("string") for c in cols]) if cols else F.lit("all")
        part = (
            rows.withColumn("group_key", key)
            .groupBy("method", "group_key")
            .agg(*metric_aggs(quantile_cols))
            .withColumn("level", F.lit(level))
        )
        parts.append(part)
    out = functools.reduce(DataFrame.unionByName, parts)
    return out.select("method", "level", "group_key", *METRICS)


def bottom_up(rows: DataFrame, level: str) -> DataFrame:
    """Sum point forecasts and actuals of the series in each region (per method, origin, day).

    Quantiles of a sum are not sums of quantiles, and the series' MASE scales do not add up
    to the region's, so only the other point metrics are defined at region level.
    """
    agg = (
        rows.where(F.col(level).isNotNull())
        .groupBy("method", level, "origin", "horizon")
        .agg(
            F.sum("actual").alias("actual"),
            F.sum("point").alias("point"),
        )
    )
    return agg.select(
        "method",
        level,
        "origin",
        "horizon",
        "actual",
        "point",
        F.lit(None).cast("double").alias("mase_scale"),
        F.lit(None).cast("double").alias("p_lo"),
        F.lit(None).cast("double").alias("p_hi"),
    )
