"""Product hierarchy (``data.item_hierarchy``): the context an item's group gives its series.

For each level (e.g. department, category) and each series, the mean target of the same
store's items of the same group, day by day over the whole axis: the store-side aggregates
(:func:`sales_st.features.spatial.region_aggregates`) turned around, a mean over items
instead of over stores.  The series itself is one of its group's items, as a store is one of
its region's.  The windows slice these arrays like any history (days up to the origin only)
and scale each window by its own mean (``hist_item_agg_<column>``).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_st.features.calendar import Axis
from sales_st.features.spatial import group_means


def item_aggregates(series: DataFrame, items: DataFrame, level: str, axis: Axis) -> DataFrame:
    """Per (store, group of ``level``): the mean target over the store's items of the group
    observed that day, and whether any was.  Returns ``store_id, <level>, agg_y, agg_has``;
    items without a group (null) are left out."""
    s = series.join(items.select("item_id", level), "item_id").where(F.col(level).isNotNull())
    return group_means(s, ["store_id", level], axis)
