"""Great-circle distance as a Spark column expression (neighbours, generated shocks)."""

from __future__ import annotations

import math

from pyspark.sql import Column
from pyspark.sql import functions as F

EARTH_RADIUS_KM = 6371.0


def haversine_km(lat1: Column, lon1: Column, lat2: Column, lon2: Column) -> Column:
    rad = math.pi / 180.0
    dlat = (lat2 - lat1) * rad / 2
    dlon = (lon2 - lon1) * rad / 2
    a = F.sin(dlat) ** 2 + F.cos(lat1 * rad) * F.cos(lat2 * rad) * F.sin(dlon) ** 2
    return 2 * EARTH_RADIUS_KM * F.asin(F.sqrt(F.least(F.lit(1.0), a)))
