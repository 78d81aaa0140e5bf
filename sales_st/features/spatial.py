"""Region (spatial) structure: neighbour table, neighbour sequences, hierarchy aggregates.

Neighbours come from coordinates (``knn``: the k nearest, weights proportional to
1 / (1 + d / bandwidth); ``kernel``: the k nearest within ``max_distance_km``, Gaussian
weights exp(-(d / bandwidth)^2)) or, when stores have no coordinates or ``method:
hierarchy``, from the hierarchy (other stores of the same finest region, equal weights).
Ties are broken by a hash of the pair, not by id, so that stores sharing a centroid do not
all pick the same few neighbours.  Weights are normalised to sum to 1 per store.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sales_st.config import SpatialConfig
from sales_st.data.contract import SERIES_KEY
from sales_st.data.geo import haversine_km
from sales_st.errors import DataError
from sales_st.features.calendar import Axis

log = logging.getLogger(__name__)


def neighbour_table(
    stores: DataFrame, cfg: SpatialConfig, hierarchy_columns: list[str]
) -> DataFrame:
    """(store_id, neighbour_id, rank, distance_km, weight) with ``rank`` 1..k."""
    method = cfg.method
    if method != "hierarchy":
        missing = stores.where(F.col("latitude").isNull() | F.col("longitude").isNull()).count()
        if missing:
            log.warning(
                "spatial: %d stores lack coordinates; neighbours from the hierarchy", missing
            )
            method = "hierarchy"
    a = stores.select(
        "store_id", "latitude", "longitude", *[F.col(c).alias(f"a_{c}") for c in hierarchy_columns]
    )
    b = stores.select(
        F.col("store_id").alias("neighbour_id"),
        F.col("latitude").alias("n_lat"),
        F.col("longitude").alias("n_lon"),
        *[F.col(c).alias(f"b_{c}") for c in hierarchy_columns],
    )
    pairs = a.crossJoin(b).where(F.col("store_id") != F.col("neighbour_id"))
    tie = F.xxhash64("store_id", "neighbour_id")
    if method == "hierarchy":
        level = next(
            (c for c in hierarchy_columns if stores.where(F.col(c).isNotNull()).limit(1).count()),
            None,
        )
        if level is None:
            raise DataError("spatial: stores have neither coordinates nor hierarchy columns")
        pairs = pairs.where(F.col(f"a_{level}") == F.col(f"b_{level}")).withColumn(
            "distance_km",
            F.coalesce(
                haversine_km(F.col("latitude"), F.col("longitude"), F.col("n_lat"), F.col("n_lon")),
                F.lit(0.0),
            ),
        )
        raw = F.lit(1.0)
        order = [tie]
    else:
        pairs = pairs.withColumn(
            "distance_km",
            haversine_km(F.col("latitude"), F.col("longitude"), F.col("n_lat"), F.col("n_lon")),
        ).where(F.col("distance_km") <= cfg.max_distance_km)
        d = F.col("distance_km") / cfg.bandwidth_km
        raw = 1.0 / (1.0 + d) if method == "knn" else F.exp(-(d * d))
        order = [F.col("distance_km"), tie]
    ranked = pairs.withColumn(
        "rank", F.row_number().over(Window.partitionBy("store_id").orderBy(*order))
    )
    top = ranked.where(F.col("rank") <= cfg.k).withColumn("raw", raw)
    total = F.sum("raw").over(Window.partitionBy("store_id"))
    return top.select(
        "store_id",
        "neighbour_id",
        F.col("rank").cast("int").alias("rank"),
        F.round("distance_km", 3).alias("distance_km"),
        (F.col("raw") / total).alias("weight"),
    )


def neighbour_arrays(series: DataFrame, neighbours: DataFrame, k: int) -> DataFrame:
    """Per series, the same item's arrays at its k neighbours, ordered by rank.

    Returns ``store_id, item_id, nbr`` where ``nbr`` is an array of k structs
    (rank, weight, distance_km, neighbour_id, y, has_y); a neighbour that does not carry the
    item has null arrays.
    """
    nb = series.select(
        F.col("store_id").alias("neighbour_id"),
        "item_id",
        F.col("y").alias("n_y"),
        F.col("has_y").alias("n_has"),
    )
    pairs = (
        series.select(*SERIES_KEY)
        .join(neighbours, "store_id")
        .join(nb, ["neighbour_id", "item_id"], "left")
    )
    grouped = pairs.groupBy(*SERIES_KEY).agg(
        F.array_sort(
            F.collect_list(
                F.struct(
                    "rank",
                    "weight",
                    "distance_km",
                    "neighbour_id",
                    F.col("n_y").alias("y"),
                    F.col("n_has").alias("has_y"),
                )
            )
        ).alias("nbr")
    )
    return grouped


def region_aggregates(series: DataFrame, stores: DataFrame, level: str, axis: Axis) -> DataFrame:
    """Per (region, item): mean target over the series observed that day, and whether any was.

    A mean per observed store (not a raw total) so that stores opening or missing days do
    not make the aggregate jump.  Returns ``<level>, item_id, agg_y, agg_has``.
    """
    s = series.join(stores.select("store_id", level), "store_id").where(F.col(level).isNotNull())
    return group_means(s, [level, "item_id"], axis)


def group_means(series: DataFrame, keys: list[str], axis: Axis) -> DataFrame:
    """Per group of ``keys``: ``agg_y``, for each day of the axis the mean target over the
    group's series observed that day (0 when none was), and ``agg_has`` (1 when any was)."""
    zero = f"array_repeat(0D, {axis.n_days})"
    masked = F.expr("zip_with(y, has_y, (a, m) -> IF(m = 1, a, 0D))")
    grouped = series.groupBy(*keys).agg(
        F.collect_list(masked).alias("ys"), F.collect_list("has_y").alias("hs")
    )
    total = F.expr(f"aggregate(ys, {zero}, (acc, a) -> zip_with(acc, a, (p, q) -> p + q))")
    count = F.expr(
        f"aggregate(hs, {zero}, (acc, a) -> zip_with(acc, a, (p, q) -> p + CAST(q AS DOUBLE)))"
    )
    return grouped.select(*keys, total.alias("tot"), count.alias("cnt")).select(
        *keys,
        F.expr("zip_with(tot, cnt, (t, c) -> IF(c > 0, t / c, 0D))").alias("agg_y"),
        F.expr("transform(cnt, c -> IF(c > 0, 1, 0))").alias("agg_has"),
    )
