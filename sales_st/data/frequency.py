"""The spacing of the sales dates: daily, weekly (and its weekday), monthly or ambiguous.

The features are daily: a weekly table loaded as is would sit on one day in seven, the other
six unobserved, and train a model of nothing.  :func:`infer_frequency` measures the gaps
between consecutive dates of each series in one aggregation (over a sample of whole series
when the table is large); :func:`guard_frequency` turns what it found and
``data.frequency`` into an error or a warning.
"""

from __future__ import annotations

import calendar
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sales_st.data.contract import SERIES_KEY
from sales_st.errors import DataError

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


def guard_frequency(freq: Frequency, declared: str) -> None:
    """Refuse weekly or monthly sales when ``data.frequency`` is auto; warn when the dates do
    not look daily and ``data.frequency: day`` insists (or when auto cannot tell)."""
    what = freq.describe()
    if declared == "auto" and freq.kind in ("week", "month"):
        raise DataError(
            f"the sales table is {what}; weekly and monthly data are not supported yet (the "
            "features are daily): provide daily rows (one per store, item and day, e.g. the "
            "totals spread by a daily profile), or set data.frequency: day to build daily "
            "windows anyway (each row then sits on one day, the days between it and the next "
            "unobserved)"
        )
    if freq.kind != "day":
        hint = (
            "data.frequency is day: daily windows are built anyway"
            if declared == "day"
            else "daily windows are built; set data.frequency: day if that is intended"
        )
        log.warning("the sales dates do not look daily: %s; %s", what, hint)
