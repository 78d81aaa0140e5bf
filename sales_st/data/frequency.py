"""The spacing of the sales dates: daily, weekly (and its weekday), monthly or ambiguous,
and the period grid the features are built on.

A weekly table read as daily would sit on one day in seven, the other six unobserved, and
train a model of nothing.  :func:`infer_frequency` measures the gaps between consecutive
dates of each series in one aggregation (over a sample of whole series when the table is
large); :func:`resolve_grid` turns what it found and ``data.frequency`` / ``data.anchor`` into
a :class:`Grid` (or an error when the data is ambiguous), and :class:`Grid` is the one place
that converts between dates and period numbers, in Python and in Spark SQL.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sales_st.data.contract import SERIES_KEY
from sales_st.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sales_st.config import DataConfig

log = logging.getLogger(__name__)

Kind = Literal["day", "week", "month", "ambiguous"]
# A spacing is detected when at least this share of the gaps has it.
DOMINANT = 0.6
# Rows measured at most; larger tables are sampled by series (whole series, by a key hash).
MAX_ROWS = 5_000_000
MONTH_GAPS = range(28, 32)
MONTH_START, MONTH_END = "month start", "month end"


@dataclass(frozen=True)
class Frequency:
    """What the gaps between consecutive dates of each series say (counts, not shares, so
    that results compare exactly)."""

    kind: Kind
    gaps: int  # gaps measured (consecutive distinct dates of a series)
    daily: int  # gaps of 1 day
    weekly: int  # gaps of 7 days
    monthly: int  # gaps of 28 to 31 days
    dates: int  # dates measured (one per series and day)
    anchor: str = ""  # week: the modal weekday; month: month start / month end; else ""
    anchored: int = 0  # dates on the anchor
    sampled: bool = False  # measured on a sample of the series

    def share(self, count: int, of: int | None = None) -> float:
        total = self.gaps if of is None else of
        return count / total if total else 0.0

    def describe(self) -> str:
        """E.g. ``weekly (anchored on Friday: 98% of gaps are 7 days)``."""
        pct = self._pct
        if self.kind == "day":
            return f"daily ({pct(self.daily)} of gaps are 1 day)"
        if self.kind == "week":
            return (
                f"weekly (anchored on {self.anchor}: {pct(self.weekly)} of gaps are 7 days, "
                f"{pct(self.anchored, self.dates)} of dates are {self.anchor}s)"
            )
        if self.kind == "month":
            where = (
                f", {pct(self.anchored, self.dates)} of dates on the {self.anchor}"
                if self.anchor
                else ""
            )
            return f"monthly ({pct(self.monthly)} of gaps are 28-31 days{where})"
        if not self.gaps:
            return "ambiguous (no series has two dates)"
        return (
            f"ambiguous (gaps of 1 day: {pct(self.daily)}, 7 days: {pct(self.weekly)}, "
            f"28-31 days: {pct(self.monthly)})"
        )

    def _pct(self, count: int, of: int | None = None) -> str:
        return f"{100 * self.share(count, of):.0f}%"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.describe(),
            "gaps": self.gaps,
            "daily": self.daily,
            "weekly": self.weekly,
            "monthly": self.monthly,
            "dates": self.dates,
            "anchor": self.anchor,
            "anchored": self.anchored,
            "sampled": self.sampled,
        }


def infer_frequency(
    sales: DataFrame, rows: int | None = None, max_rows: int = MAX_ROWS
) -> Frequency:
    """The spacing of ``sales``' dates (contract columns; every row counts, targets or not).

    ``rows`` (the table's row count, when known) above ``max_rows`` samples whole series by a
    hash of their key, so that the gaps stay those of a series."""
    df = sales.where(F.col("date").isNotNull()).select(*SERIES_KEY, "date")
    sampled = rows is not None and rows > max_rows
    if sampled and rows is not None:
        every = math.ceil(rows / max_rows)
        key = F.xxhash64(*[F.col(c).cast("string") for c in SERIES_KEY])
        df = df.where(F.pmod(key, F.lit(every)) == 0)
    by_series = Window.partitionBy(*SERIES_KEY).orderBy("date")
    dom = F.dayofmonth("date")
    edge = (
        F.when(dom == 1, F.lit(MONTH_START))
        .when(F.col("date") == F.last_day("date"), F.lit(MONTH_END))
        .otherwise(F.lit(""))
    )
    gaps = (
        df.distinct()
        .select(
            F.datediff("date", F.lag("date").over(by_series)).alias("gap"),
            F.dayofweek("date").alias("dow"),  # 1 = Sunday
            edge.alias("edge"),
        )
        .groupBy("gap", "dow", "edge")
        .count()
        .collect()  # at most a few thousand rows
    )
    return classify(
        [(r["gap"], int(r["dow"]), str(r["edge"]), int(r["count"])) for r in gaps], sampled
    )


def classify(counts: list[tuple[int | None, int, str, int]], sampled: bool = False) -> Frequency:
    """A :class:`Frequency` from (gap or None for a series' first date, Spark weekday 1 =
    Sunday, month edge, rows) counts."""
    dates = sum(n for _, _, _, n in counts)
    measured = [(g, n) for g, _, _, n in counts if g is not None]
    total = sum(n for _, n in measured)
    daily = sum(n for g, n in measured if g == 1)
    weekly = sum(n for g, n in measured if g == 7)
    monthly = sum(n for g, n in measured if g in MONTH_GAPS)
    base = Frequency("ambiguous", total, daily, weekly, monthly, dates, sampled=sampled)
    if total and daily >= DOMINANT * total:
        return dataclasses.replace(base, kind="day")
    if total and weekly >= DOMINANT * total:
        per_day: dict[int, int] = {}
        for _, dow, _, n in counts:
            per_day[dow] = per_day.get(dow, 0) + n
        dow, n = max(per_day.items(), key=lambda kv: kv[1])
        name = calendar.day_name[(dow - 2) % 7]  # Spark 1 = Sunday; Python 0 = Monday
        return dataclasses.replace(base, kind="week", anchor=name, anchored=n)
    if total and monthly >= DOMINANT * total:
        per_edge: dict[str, int] = {}
        for _, _, edge, n in counts:
            per_edge[edge] = per_edge.get(edge, 0) + n
        edge, n = max(per_edge.items(), key=lambda kv: kv[1])
        if not edge or n < DOMINANT * dates:
            edge, n = "", 0
        return dataclasses.replace(base, kind="month", anchor=edge, anchored=n)
    return base


GridKind = Literal["day", "week", "month"]
WEEKDAYS = [d.lower() for d in calendar.day_name]  # Python order: Monday = 0
MONTH_ANCHORS = {"start": MONTH_START, "end": MONTH_END}
# Periods between a period and the same one a season later (seasonal naive, MASE, the
# same-season means) and a year later (the level a year earlier, the scale's fallback).
SEASON = {"day": 7, "week": 52, "month": 12}
YEAR = {"day": 364, "week": 52, "month": 12}
# Most of the rows off the declared grid: the frequency, not the rows, is wrong.
OFF_GRID_FAIL = 0.5


@dataclass(frozen=True)
class Grid:
    """The dates sales may fall on: every day, every week on one weekday, or every month on
    its first or last day.  Period numbers count grid steps from an origin date ``t0`` (a
    grid date), so that history, horizon, lags and strides count periods.

    ``anchor``: week, the weekday (``friday``); month, ``start`` or ``end``; day, empty.
    ``week_label``: a weekly date stands for the 7 days ending (``end``) or starting on it."""

    kind: GridKind = "day"
    anchor: str = ""
    week_label: str = "end"

    @property
    def season(self) -> int:
        return SEASON[self.kind]

    @property
    def year(self) -> int:
        return YEAR[self.kind]

    @property
    def daily(self) -> bool:
        return self.kind == "day"

    def describe(self) -> str:
        if self.kind == "week":
            return f"weekly on {self.anchor.capitalize()}s"
        if self.kind == "month":
            return f"monthly on the month {self.anchor}"
        return "daily"

    # ---- Python ------------------------------------------------------------------------

    def on_grid(self, date: dt.date) -> bool:
        if self.kind == "week":
            return WEEKDAYS[date.weekday()] == self.anchor
        if self.kind == "month":
            return date == self._month_date(date.year, date.month)
        return True

    def periods(self, t0: dt.date, date: dt.date) -> int:
        """Grid steps from ``t0`` to ``date`` (both on the grid; floored otherwise)."""
        if self.kind == "week":
            return (date - t0).days // 7
        if self.kind == "month":
            return (date.year - t0.year) * 12 + date.month - t0.month
        return (date - t0).days

    def shift(self, date: dt.date, k: int) -> dt.date:
        """The grid date ``k`` periods after ``date`` (a grid date)."""
        if self.kind == "week":
            return date + dt.timedelta(days=7 * k)
        if self.kind == "month":
            m = date.year * 12 + date.month - 1 + k
            return self._month_date(m // 12, m % 12 + 1)
        return date + dt.timedelta(days=k)

    def _month_date(self, year: int, month: int) -> dt.date:
        if self.anchor == "end":
            return dt.date(year, month, calendar.monthrange(year, month)[1])
        return dt.date(year, month, 1)

    # ---- Spark SQL ---------------------------------------------------------------------

    def on_grid_sql(self, date: str) -> str:
        """SQL: whether ``date`` (an expression) lies on the grid."""
        if self.kind == "week":
            return f"weekday({date}) = {WEEKDAYS.index(self.anchor)}"  # Monday = 0 as in Python
        if self.kind == "month":
            return f"{date} = last_day({date})" if self.anchor == "end" else f"day({date}) = 1"
        return "true"

    def periods_sql(self, t0: dt.date, date: str) -> str:
        """SQL: the period number of ``date`` (a grid date) on an axis starting at ``t0``."""
        lit = f"DATE'{t0.isoformat()}'"
        if self.kind == "week":
            return f"CAST(floor(datediff({date}, {lit}) / 7) AS INT)"
        if self.kind == "month":
            return f"((year({date}) - {t0.year}) * 12 + month({date}) - {t0.month})"
        return f"datediff({date}, {lit})"

    def between_sql(self, first: str, last: str) -> str:
        """SQL: the periods from the grid date ``first`` to the grid date ``last``."""
        if self.kind == "week":
            return f"CAST(floor(datediff({last}, {first}) / 7) AS INT)"
        if self.kind == "month":
            return f"((year({last}) - year({first})) * 12 + month({last}) - month({first}))"
        return f"datediff({last}, {first})"

    def period_of_day_sql(self, t0: dt.date, date: str) -> str:
        """SQL: the number of the period whose days include the day ``date`` (any day):
        what a holiday or an event on that day counts towards."""
        if self.kind == "week":
            lit = f"DATE'{t0.isoformat()}'"
            rounding = "ceil" if self.week_label == "end" else "floor"
            return f"CAST({rounding}(datediff({date}, {lit}) / 7) AS INT)"
        return self.periods_sql(t0, date)

    def date_sql(self, t0: dt.date, k: str) -> str:
        """SQL: the grid date ``k`` (an integer expression) periods after ``t0``."""
        lit = f"DATE'{t0.isoformat()}'"
        if self.kind == "week":
            return f"date_add({lit}, 7 * ({k}))"
        if self.kind == "month":
            moved = f"add_months({lit}, {k})"  # keeps the day, clipped to the month's end
            return f"last_day({moved})" if self.anchor == "end" else moved
        return f"date_add({lit}, {k})"

    def shift_sql(self, date: str, k: str) -> str:
        """SQL: the grid date ``k`` periods after the grid date ``date``."""
        if self.kind == "week":
            return f"date_add({date}, 7 * ({k}))"
        if self.kind == "month":
            moved = f"add_months({date}, {k})"
            return f"last_day({moved})" if self.anchor == "end" else moved
        return f"date_add({date}, {k})"

    def shift_col(self, date: Column, k: Column) -> Column:
        """The grid date ``k`` periods after the grid date ``date`` (columns)."""
        if self.kind == "week":
            return F.date_add(date, k * 7)
        if self.kind == "month":
            moved = F.add_months(date, k)
            return F.last_day(moved) if self.anchor == "end" else moved
        return F.date_add(date, k)

    def shift_np(self, dates: Any, k: Any) -> Any:
        """The grid dates ``k`` periods after ``dates`` (numpy datetime64[D] and int arrays)."""
        import numpy as np

        dates = np.asarray(dates).astype("datetime64[D]")
        k = np.asarray(k)
        if self.kind == "week":
            return dates + (7 * k).astype("timedelta64[D]")
        if self.kind == "month":
            month = dates.astype("datetime64[M]") + k.astype("timedelta64[M]")
            if self.anchor == "end":
                return (month + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(
                    1, "D"
                )
            return month.astype("datetime64[D]")
        return dates + k.astype("timedelta64[D]")

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "anchor": self.anchor, "week_label": self.week_label}

    @classmethod
    def from_dict(cls, d: dict[str, str] | None) -> Grid:
        if not d:
            return cls()
        kind: GridKind = (
            "week" if d["kind"] == "week" else "month" if d["kind"] == "month" else "day"
        )
        return cls(kind, d.get("anchor", ""), d.get("week_label", "end"))


DAILY = Grid()


def resolve_grid(sales: DataFrame, data: DataConfig) -> Grid:
    """The grid of ``sales`` (contract columns, before validation) from ``data.frequency``,
    ``data.anchor`` and ``data.week_label`` (a :class:`~sales_st.config.DataConfig`), the
    frequency inferred from the dates when they leave it open.  Logs what was inferred; fails
    when the data is ambiguous, and when most dates are off the declared grid (the frequency,
    not the rows, is then wrong)."""
    dated = sales.where(F.col("date").isNotNull())
    rows = dated.count()
    freq = infer_frequency(dated, rows=rows)
    grid = grid_for(freq, data.frequency, data.anchor, data.week_label)
    if data.frequency == "auto" or not data.anchor:
        log.info("sales dates: %s; features built %s", freq.describe(), grid.describe())
    if not grid.daily and rows:
        off = dated.where(~F.expr(grid.on_grid_sql("date"))).count()
        if off > OFF_GRID_FAIL * rows:
            raise ConfigError(
                f"config key 'data.frequency': {off:,} of {rows:,} sales dates are off the "
                f"declared grid ({grid.describe()}; data.frequency: {data.frequency}, "
                f"data.anchor: {data.anchor or '(inferred)'}), the dates look {freq.describe()}: "
                "fix data.frequency / data.anchor"
            )
    return grid


def grid_for(freq: Frequency, declared: str, anchor: str = "", week_label: str = "end") -> Grid:
    """The grid ``data.frequency`` (``declared``) and ``data.anchor`` ask for, completed from
    the inferred ``freq``: an explicit anchor wins, else the inferred one; ``auto`` takes
    the inferred kind and refuses an ambiguous spacing."""
    what = freq.describe()
    kind = freq.kind if declared == "auto" else declared
    if kind == "ambiguous":
        if not freq.gaps:  # no series has two dates: nothing to measure, nothing contradicts
            log.warning("the sales dates: %s; daily windows are built", what)
            return DAILY
        raise DataError(
            f"cannot tell the spacing of the sales dates: {what}; set data.frequency (day, "
            "week or month) and, for week or month, data.anchor"
        )
    if kind == "day":
        if freq.kind != "day" and freq.gaps:
            log.warning(
                "the sales dates do not look daily: %s; data.frequency is day: daily "
                "windows are built anyway",
                what,
            )
        return DAILY
    anchor = anchor.lower()
    if kind == "week":
        if not anchor and freq.kind == "week":
            anchor = freq.anchor.lower()
        if anchor not in WEEKDAYS:
            raise ConfigError(
                f"config key 'data.anchor': weekly data needs the weekday of its dates "
                f"(one of {', '.join(WEEKDAYS)}), found {anchor or 'none'}; the dates look {what}"
            )
        return Grid("week", anchor, week_label)
    if not anchor and freq.kind == "month":
        anchor = {v: k for k, v in MONTH_ANCHORS.items()}.get(freq.anchor, "")
    if anchor not in MONTH_ANCHORS:
        raise ConfigError(
            "config key 'data.anchor': monthly data needs its dates on the month start or "
            f"end (start or end), found {anchor or 'none'}; the dates look {what}"
        )
    return Grid("month", anchor, week_label)
