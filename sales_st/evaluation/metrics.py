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
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sales_st.data.contract import SERIES_KEY

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


def sum_metrics(
    rows: DataFrame,
    regions: list[str],
    qcols: list[str],
    quantiles: list[float],
    fitted: dict[str, Any] | None,
) -> DataFrame:
    """Metrics of sums, per method (see ``sales_st.serving.aggregates``):

    * ``lead_time`` and ``lead_time_horizon`` (group_key h): the demand over days 1..h of a
      series from each origin against its lead-time quantiles;
    * ``<region>_total`` (group_key the region): each region's total per origin and day
      against the quantiles of the total (p50: the sum of its series' medians).

    Every observed day counts (not only the rows under ``evaluate.metric_filter``: a sum
    needs all its days); a sum missing an actual is left out.  The intervals use the scores
    fitted on the validation windows (``fitted``; normal quantiles without); methods without
    quantiles get point metrics only.  MASE is not defined for sums."""
    from sales_st.serving import aggregates as A

    qmap = dict(zip(qcols, quantiles))
    median = qcols[sorted(quantiles).index(0.5)]
    by_method = ("method", "horizon")

    def metric_rows(df: DataFrame, point: str, names: list[str]) -> DataFrame:
        return df.select(
            "method",
            *[c for c in ("horizon", *regions) if c in df.columns],
            F.col("actual"),
            F.col(point).alias("point"),
            *[F.col(n).alias(q) for n, q in zip(names, qcols)],
            F.col(names[0]).alias("p_lo"),
            F.col(names[-1]).alias("p_hi"),
            F.lit(None).cast("double").alias("mase_scale"),
        )

    keys = ["method", *SERIES_KEY, "origin"]
    lead = A.with_lead_time(
        rows, keys, qcols, quantiles, (fitted or {}).get("lead_time"), groups=by_method
    )
    cum = [f"cum_{c}" for c in qcols]
    lead = lead.where(F.col("cum_actual").isNotNull()).withColumn("actual", F.col("cum_actual"))
    parts = [
        compute_metrics(
            metric_rows(lead, f"cum_{median}", cum),
            {"lead_time": [], "lead_time_horizon": ["horizon"]},
            qmap,
        )
    ]
    if regions:
        totals = A.region_totals(
            rows,
            regions,
            ["method", "origin", "target_date", "horizon"],
            qcols,
            quantiles,
            (fitted or {}).get("regions", {}),
            groups=by_method,
        ).where(F.col("actual").isNotNull())
        for r in regions:
            level = totals.where(F.col("level") == r).withColumnRenamed("region", r)
            parts.append(
                compute_metrics(metric_rows(level, "point", qcols), {f"{r}_total": [r]}, qmap)
            )
    return functools.reduce(DataFrame.unionByName, parts)
