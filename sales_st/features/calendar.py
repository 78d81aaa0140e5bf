"""Dense per-series arrays on one global period axis (calendar densification).

Every series becomes one row holding arrays indexed by period number (``day = date - t0``
in days for daily data, in weeks or months for weekly or monthly data: see
:class:`~sales_st.data.frequency.Grid`), so that all series, their neighbours and their
region aggregates line up element by element.  The arrays call their element a "day"
whatever the period.  Missing periods are explicit: ``has_y = 0`` (unobserved),
open/promo/price null.  Closed days are explicit too (``open = 0``).  Built with one
shuffle (group by series) and native higher-order functions: the sparse rows are merged
with a placeholder for every day and
de-duplicated, which avoids a join against a series x day grid.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_st.data.contract import PUBLIC_HOLIDAY, SCHOOL_HOLIDAY, SERIES_KEY
from sales_st.data.events import reach
from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import ConfigError
from sales_st.frames import one_row

# Fields carried per day, with their SQL type.
DAY_FIELDS = {
    "y": "double",
    "has_y": "int",
    "open": "int",
    "promo": "int",
    "price": "double",
}
NO_HOLIDAY = 999  # "days to/since holiday" when none is in reach


@dataclass(frozen=True)
class Axis:
    """The global period axis: period 0 is ``t0``, period k the grid date k steps later;
    arrays have ``n_days`` elements (periods, whatever the grid)."""

    t0: dt.date
    n_days: int
    grid: Grid = DAILY

    def day(self, date: dt.date) -> int:
        if self.grid.daily:
            return (date - self.t0).days
        return self.grid.periods(self.t0, date)

    def date(self, day: int) -> dt.date:
        if self.grid.daily:
            return self.t0 + dt.timedelta(days=day)
        return self.grid.shift(self.t0, day)

    def index_col(self, date: str) -> F.Column:
        """The period number of the column ``date`` (grid dates)."""
        if self.grid.daily:
            return F.datediff(F.col(date), F.lit(self.t0))
        return F.expr(self.grid.periods_sql(self.t0, date))

    def date_sql(self, day: str) -> str:
        """SQL: the date of period ``day`` (an integer expression)."""
        return self.grid.date_sql(self.t0, day)


def make_axis(sales: DataFrame, run_date: dt.date, horizon: int, grid: Grid = DAILY) -> Axis:
    """The axis from the first sales date to the later of the last one and the run date's
    horizon; ``run_date`` must lie on ``grid``."""
    if not grid.on_grid(run_date):
        raise ConfigError(
            f"the run date {run_date} is not on the sales dates' grid ({grid.describe()}): "
            "give a run date on it (--run-date or data.run_date)"
        )
    row = one_row(sales.agg(F.min("date").alias("lo"), F.max("date").alias("hi")))
    t0 = row["lo"]
    if grid.daily:
        end = max(row["hi"], run_date + dt.timedelta(days=horizon))
        return Axis(t0=t0, n_days=(end - t0).days + 1)
    end = max(row["hi"], grid.shift(run_date, horizon))
    return Axis(t0=t0, n_days=grid.periods(t0, end) + 1, grid=grid)


def series_arrays(sales: DataFrame, axis: Axis) -> DataFrame:
    """One row per series: ``store_id, item_id, first_day`` and one array per DAY_FIELDS."""
    day = axis.index_col("date")
    sparse = sales.select(
        *SERIES_KEY,
        F.struct(
            day.alias("day"),
            F.lit(0).alias("ph"),
            F.col("target").cast("double").alias("y"),
            F.col("target").isNotNull().cast("int").alias("has_y"),
            F.col("open").cast("int").alias("open"),
            F.col("promo").cast("int").alias("promo"),
            F.col("price").cast("double").alias("price"),
        ).alias("r"),
    )
    grouped = sparse.groupBy(*SERIES_KEY).agg(
        F.collect_list("r").alias("rows"), F.min("r.day").alias("first_day")
    )
    placeholders = (
        f"transform(sequence(0, {axis.n_days - 1}), i -> named_struct("
        f"'day', i, 'ph', 1, "
        + ", ".join(
            f"'{k}', " + (f"CAST(NULL AS {t})" if k != "has_y" else "0")
            for k, t in DAY_FIELDS.items()
        )
        + "))"
    )
    merged = F.expr(f"array_sort(concat(rows, {placeholders}))")
    dense = F.expr("filter(merged, (x, i) -> i = 0 OR merged[i - 1].day != x.day)")
    out = grouped.select(*SERIES_KEY, "first_day", merged.alias("merged")).select(
        *SERIES_KEY, "first_day", dense.alias("d")
    )
    return out.select(
        *SERIES_KEY,
        "first_day",
        *[F.expr(f"transform(d, x -> x.{k})").alias(k) for k in DAY_FIELDS],
    )


def store_calendar(
    stores: DataFrame,
    events: DataFrame,
    axis: Axis,
    levels: dict[str, str],
    window: int,
    event_types: list[str] | None = None,
) -> DataFrame:
    """Per store, dense arrays: ``holiday`` and ``school`` flags, one ``event_<type>`` flag
    array per type of ``event_types``, and the days to the next / since the last public
    holiday (clipped at ``window``, NO_HOLIDAY beyond).

    ``levels`` maps each ``scope_level`` value to its stores column
    (:func:`sales_st.data.events.scope_levels`): an event reaches a store when its scope is
    global, or names the store's region at the event's ``scope_level`` (at any level when the
    event has none); see :func:`sales_st.data.events.reach`.

    On a weekly or monthly axis the flags count the event's days in each period (a week
    with two public holidays reads 2) and the distances count periods."""
    # A period's days may start before t0 or end after the last grid date (a week labelled
    # by its last day): the events of the month either side are read, then cut to the axis.
    margin = dt.timedelta(days=0 if axis.grid.daily else 31)
    ev = events.where(
        (F.col("date") >= F.lit(axis.t0 - margin))
        & (F.col("date") <= F.lit(axis.date(axis.n_days - 1) + margin))
    )
    reached = reach(stores, ev, levels).select(
        "store_id", F.datediff("date", F.lit(axis.t0)).alias("day"), "event_type"
    )

    def days_of(event_type: str) -> F.Column:
        return F.array_sort(F.collect_set(F.when(F.col("event_type") == event_type, F.col("day"))))

    extra = [
        t for t in dict.fromkeys(event_types or []) if t not in (PUBLIC_HOLIDAY, SCHOOL_HOLIDAY)
    ]
    lists = reached.groupBy("store_id").agg(
        days_of(PUBLIC_HOLIDAY).alias("hol_days"),
        days_of(SCHOOL_HOLIDAY).alias("school_days"),
        *[days_of(t).alias(f"days_{t}") for t in extra],
    )
    if not axis.grid.daily:
        lists = lists.select(
            "store_id",
            *[F.expr(_periods_of_days(c, axis)).alias(c) for c in lists.columns[1:]],
        )
    cal = stores.select("store_id").join(lists, "store_id", "left")
    empty = "CAST(array() AS array<int>)"
    seq = f"sequence(0, {axis.n_days - 1})"

    def flags(col: str) -> F.Column:
        if not axis.grid.daily:  # days of the event in the period
            return F.expr(
                f"transform({seq}, i -> size(filter(coalesce({col}, {empty}), p -> p = i)))"
            )
        return F.expr(
            f"transform({seq}, i -> IF(array_contains(coalesce({col}, {empty}), i), 1, 0))"
        )

    to_next = F.expr(
        f"transform({seq}, i -> aggregate(coalesce(hol_days, {empty}), {NO_HOLIDAY}, "
        f"(acc, d) -> IF(d >= i AND d - i <= {window}, least(acc, d - i), acc)))"
    )
    since_last = F.expr(
        f"transform({seq}, i -> aggregate(coalesce(hol_days, {empty}), {NO_HOLIDAY}, "
        f"(acc, d) -> IF(d <= i AND i - d <= {window}, least(acc, i - d), acc)))"
    )
    return cal.select(
        "store_id",
        flags("hol_days").alias("holiday"),
        flags("school_days").alias("school"),
        *[flags(f"days_{t}").alias(f"event_{t}") for t in extra],
        to_next.alias("to_holiday"),
        since_last.alias("since_holiday"),
    )


def _periods_of_days(col: str, axis: Axis) -> str:
    """SQL: the day offsets (from t0) of array ``col`` mapped to their periods, one element
    per day (a period with two event days holds it twice), those off the axis dropped."""
    day = f"date_add(DATE'{axis.t0.isoformat()}', x)"
    period = axis.grid.period_of_day_sql(axis.t0, day)
    return f"filter(transform({col}, x -> {period}), p -> p >= 0 AND p < {axis.n_days})"
