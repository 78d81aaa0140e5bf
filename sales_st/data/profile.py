"""The profile of a dataset as the feature job would see it, computed without writing
anything: what ``jobs/check.py`` prints for a new overlay.

:func:`profile_inputs` reads the inputs through the feature job's own loader
(:func:`sales_st.data.sources.load_inputs`) and validation, with every rule set to
quarantine so that all of them are counted (a rule configured to fail becomes a problem of
the profile, not an exception), and measures the sales, the events and what the feature
settings would cut from them.  :class:`DataProfile` renders as text and as JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.config.sections import RULES
from sales_st.data.contract import (
    EVENTS,
    ITEMS,
    SALES,
    SERIES_KEY,
    STORES,
    TABLES,
    extra_static_columns,
)
from sales_st.data.events import (
    ambiguous_scopes,
    reach_counts,
    scope_levels,
    undeclared,
    undeclared_message,
    unknown_scope_levels,
)
from sales_st.data.frequency import DAILY, Frequency, Grid, infer_frequency, resolve_grid
from sales_st.data.sources import load_inputs
from sales_st.data.validation import FILTERED_COUNT, ValidationResult, validate_inputs
from sales_st.errors import ConfigError, DataError
from sales_st.frames import one_row

WINDOWS_NOTE = (
    "origins per split that honour features.min_history; train, val and test are upper "
    "bounds: the feature job also drops windows with no observed target in the horizon, no "
    "observed history day or no sales day within a year"
)
WIDTH = 100  # of the rendered text
PROFILED_TABLES = (SALES.name, STORES.name, ITEMS.name, EVENTS.name)


@dataclass(frozen=True)
class TableCheck:
    """One input table's row accounting: input = accepted + filtered + quarantined."""

    input: int
    accepted: int
    filtered: int = 0  # excluded by the table's keep_if
    quarantined: dict[str, int] = field(default_factory=dict)  # rule -> rows, rules with rows


@dataclass(frozen=True)
class EventTypeCheck:
    """One event type: its accepted rows, their distinct dates, and the stores and series
    (store x item of the sales) its rows reach once scopes are matched."""

    event_type: str
    declared: bool
    rows: int
    dates: int
    stores: int
    series: int


@dataclass(frozen=True)
class DataProfile:
    """What the feature job would find in the inputs (accepted rows unless said)."""

    dataset: str
    run_date: dt.date
    tables: dict[str, TableCheck]
    rows: int  # accepted sales rows
    series: int  # store x item
    stores: int  # stores with sales
    items: int  # items with sales
    first_date: dt.date | None
    last_date: dt.date | None
    last_target_date: dt.date | None
    frequency: Frequency
    declared_frequency: str
    targets: int  # rows with a target
    zero_targets: int
    null_targets: int  # rows without a target (plans after the run date)
    span_days: int  # per series, periods (days) from its first to its last target, summed
    missing_days: int  # periods of those spans without a row with a target
    series_with_gaps: int
    hierarchy: dict[str, int]  # level name -> distinct regions among the accepted stores
    events: list[EventTypeCheck]
    ambiguous_scopes: dict[str, list[str]]  # scope without scope_level -> levels naming it
    unknown_scope_levels: dict[str, int]  # scope_level -> rows (reaching no store)
    static_columns: dict[str, list[str]]  # stores / items -> static_cat_* and static_num_*
    optional_columns: dict[str, dict[str, int]]  # table -> optional column -> non-null rows
    windows: dict[str, int]  # split -> examples (see WINDOWS_NOTE)
    problems: list[str]  # what would make the feature job fail
    # product hierarchy level name -> distinct groups among the accepted items
    # (data.item_hierarchy; empty when none is configured)
    item_hierarchy: dict[str, int] = field(default_factory=dict)

    def share(self, count: int, total: int) -> float:
        return count / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["frequency"] = self.frequency.to_dict()
        for key in ("run_date", "first_date", "last_date", "last_target_date"):
            value = getattr(self, key)
            out[key] = value.isoformat() if value else None
        out["windows_note"] = WINDOWS_NOTE
        return out

    def render(self) -> str:
        """The profile as text, one topic per block."""
        n = "{:,}".format
        pct = self._pct
        lines = [f"Dataset {self.dataset}, run date {self.run_date}", ""]
        sales = self.tables[SALES.name]
        lines += [
            f"Sales       {n(sales.input)} rows read, {n(self.rows)} accepted; "
            f"{n(self.series)} series ({n(self.stores)} stores x {n(self.items)} items)",
            f"Dates       {self.first_date} .. {self.last_date} "
            f"(last target {self.last_target_date})",
            f"Frequency   detected {self.frequency.describe()}"
            f"{' [sampled]' if self.frequency.sampled else ''}; "
            f"declared data.frequency: {self.declared_frequency}",
            f"Gaps        {n(self.series_with_gaps)} of {n(self.series)} series miss days "
            f"inside their span: {n(self.missing_days)} of {n(self.span_days)} days "
            f"({pct(self.missing_days, self.span_days)})",
            f"Targets     zero: {pct(self.zero_targets, self.targets)} of {n(self.targets)} "
            f"observed; null: {pct(self.null_targets, self.rows)} of rows "
            "(plans after the run date)",
            "Hierarchy   "
            + (", ".join(f"{k} {n(v)}" for k, v in self.hierarchy.items()) or "none")
            + f" (stores table: {n(self.tables[STORES.name].accepted)} stores)",
            *(
                [
                    "            item hierarchy: "
                    + ", ".join(f"{k} {n(v)}" for k, v in self.item_hierarchy.items())
                    + f" (items table: {n(self.tables[ITEMS.name].accepted)} items)"
                ]
                if self.item_hierarchy
                else []
            ),
            "",
            "Events      type                 declared        rows   dates  stores  series",
        ]
        for e in self.events:
            lines.append(
                f"            {e.event_type:<20} {'yes' if e.declared else 'NO':<8} "
                f"{e.rows:>11,} {e.dates:>7,} {e.stores:>7,} {e.series:>7,}"
            )
        if not self.events:
            lines.append("            (no events)")
        for scope, levels in self.ambiguous_scopes.items():
            lines.append(f"            scope {scope!r} (no scope_level) names: {', '.join(levels)}")
        for level, rows in self.unknown_scope_levels.items():
            lines.append(f"            scope_level {level!r} ({rows} rows) is no store level")
        optional = {
            t: [f"{c} {pct(v, self._accepted(t))}" for c, v in cols.items()]
            for t, cols in self.optional_columns.items()
        }
        lines += ["", *_block("Static", self.static_columns)]
        lines += _block("Optional", optional, " (share of rows with a value)")
        lines += ["", "Rows        table         input    accepted  filtered  quarantined"]
        for name, t in self.tables.items():
            rules = ", ".join(f"{r} {n(c)}" for r, c in t.quarantined.items())
            lines.append(
                f"            {name:<8} {t.input:>11,} {t.accepted:>11,} {t.filtered:>9,} "
                f"{sum(t.quarantined.values()):>12,}{f' ({rules})' if rules else ''}"
            )
        lines += [
            "",
            "Windows     " + ("  ".join(f"{k} {n(v)}" for k, v in self.windows.items()) or "none"),
            *textwrap.wrap(
                f"({WINDOWS_NOTE})", WIDTH, initial_indent=" " * 12, subsequent_indent=" " * 13
            ),
            "",
        ]
        if self.problems:
            lines.append(f"Problems    {len(self.problems)}: the feature job would fail")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("Problems    none")
        return "\n".join(lines) + "\n"

    def _pct(self, count: int, total: int) -> str:
        return f"{100 * self.share(count, total):.1f}%"

    def _accepted(self, table: str) -> int:
        return self.rows if table == SALES.name else self.tables[table].accepted


def _block(title: str, by_table: dict[str, list[str]], note: str = "") -> list[str]:
    """``title`` then one wrapped line group per table with columns."""
    parts = [f"{t}: {', '.join(cols)}" for t, cols in by_table.items() if cols] or ["none"]
    parts[-1] += note
    lines = []
    for i, part in enumerate(parts):
        head = f"{title:<12}" if i == 0 else " " * 12
        lines += textwrap.wrap(part, WIDTH, initial_indent=head, subsequent_indent=" " * 14)
    return lines


def profile_inputs(spark: SparkSession, cfg: Config, run_date: dt.date | None) -> DataProfile:
    """Load, map and validate the inputs as the feature job does, and profile them; writes
    nothing.  ``run_date`` None: ``data.run_date``, else the last day with a valid target."""
    from sales_st.features.assemble import check_event_settings

    check_event_settings(cfg)
    if run_date is None and cfg.data.run_date:
        run_date = dt.date.fromisoformat(cfg.data.run_date)
    counting = dataclasses.replace(cfg.validation, rules=dict.fromkeys(RULES, "quarantine"))
    tables = load_inputs(spark, cfg)
    grid, grid_problem = DAILY, ""
    try:
        grid = resolve_grid(tables[SALES.name], cfg.data)
    except (DataError, ConfigError) as exc:
        grid_problem = str(exc)
    result = validate_inputs(tables, counting, run_date, grid)
    try:
        return _profile(cfg, result, grid, grid_problem)
    finally:
        result.release()


def _profile(
    cfg: Config, result: ValidationResult, grid: Grid = DAILY, grid_problem: str = ""
) -> DataProfile:
    from sales_st.features.assemble import window_counts
    from sales_st.features.calendar import make_axis

    run_date = result.run_date
    problems: list[str] = []
    tables = {name: _table_check(result, name) for name in PROFILED_TABLES}
    for name, check in tables.items():
        for rule, rows in check.quarantined.items():
            if cfg.validation.rules.get(rule, "fail") == "fail":
                problems.append(
                    f"{name}: {rows:,} rows break {rule}, which validation.rules sets to fail"
                )
    accepted = result.accepted
    stores = result.tables[STORES.name].accepted
    items = result.tables[ITEMS.name].accepted
    events = result.tables[EVENTS.name].accepted

    freq = infer_frequency(accepted, rows=tables[SALES.name].accepted)
    if grid_problem:
        problems.append(grid_problem)

    per_series = _per_series(accepted).persist()
    try:
        totals = one_row(_sales_totals(per_series, grid))
        windows: dict[str, int] = {}
        if totals["last_obs"] is None:
            problems.append("the sales table has no accepted row with a target")
        else:
            axis = make_axis(accepted, run_date, cfg.features.horizon, grid)
            first_days = per_series.select(*SERIES_KEY, axis.index_col("first").alias("first_day"))
            try:
                windows = window_counts(
                    first_days, cfg.features, axis, run_date, axis.day(totals["last_obs"])
                )
            except DataError as exc:
                problems.append(str(exc))
            if windows and not (windows.get("train") and windows.get("val")):
                problems.append(
                    f"no training ({windows.get('train', 0)}) or validation "
                    f"({windows.get('val', 0)}) windows: check the run date and features.splits"
                )
        levels = scope_levels(cfg.data.hierarchy, stores.columns)
        event_checks = _event_checks(events, stores, per_series, levels, cfg.data.event_types)
    finally:
        per_series.unpersist()
    found = undeclared({e.event_type: e.rows for e in event_checks}, cfg.data.event_types)
    if found:
        problems.append(undeclared_message(found, cfg.data.event_types))
    return DataProfile(
        dataset=cfg.data.name,
        run_date=run_date,
        tables=tables,
        rows=int(totals["rows"] or 0),
        series=int(totals["series"]),
        stores=int(totals["stores"]),
        items=int(totals["items"]),
        first_date=totals["first"],
        last_date=totals["last"],
        last_target_date=totals["last_obs"],
        frequency=freq,
        declared_frequency=cfg.data.frequency,
        targets=int(totals["targets"] or 0),
        zero_targets=int(totals["zeros"] or 0),
        null_targets=int((totals["rows"] or 0) - (totals["targets"] or 0)),
        span_days=int(totals["span"] or 0),
        missing_days=int(totals["missing"] or 0),
        series_with_gaps=int(totals["gapped"] or 0),
        hierarchy=_hierarchy(stores, cfg),
        item_hierarchy=_item_hierarchy(items, cfg),
        events=event_checks,
        ambiguous_scopes=ambiguous_scopes(stores, events, levels),
        unknown_scope_levels=unknown_scope_levels(events, levels),
        static_columns={
            STORES.name: extra_static_columns(stores.columns),
            ITEMS.name: extra_static_columns(items.columns),
        },
        optional_columns={
            SALES.name: _present(totals, SALES.name),
            **{
                name: _present(one_row(_non_null(result, name)), name)
                for name in (STORES.name, ITEMS.name, EVENTS.name)
            },
        },
        windows=windows,
        problems=problems,
    )


def _table_check(result: ValidationResult, name: str) -> TableCheck:
    c = result.tables[name].counts
    return TableCheck(
        input=c.get("input", 0),
        accepted=c.get("accepted", 0),
        filtered=c.get(FILTERED_COUNT, 0),
        quarantined={r: c[r] for r in RULES if c.get(r)},
    )


def _optional(table: str) -> list[str]:
    return [c.name for c in TABLES[table].columns if not c.required]


def _per_series(accepted: DataFrame) -> DataFrame:
    """One row per series: rows, targets, zeros, first/last date, first/last target date,
    days with a target, and the non-null rows of each optional sales column."""
    obs = F.col("target").isNotNull()
    return accepted.groupBy(*SERIES_KEY).agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("target").alias("targets"),
        F.count(F.when(F.col("target") == 0, 1)).alias("zeros"),
        F.min("date").alias("first"),
        F.max("date").alias("last"),
        F.min(F.when(obs, F.col("date"))).alias("first_obs"),
        F.max(F.when(obs, F.col("date"))).alias("last_obs"),
        F.countDistinct(F.when(obs, F.col("date"))).alias("obs_days"),
        *[F.count(c).alias(f"nn_{c}") for c in _optional(SALES.name)],
    )


def _sales_totals(per_series: DataFrame, grid: Grid = DAILY) -> DataFrame:
    """Totals over the series; spans count periods of ``grid`` (a weekly series has no
    missing days between its weeks)."""
    if grid.daily:
        span = F.datediff("last_obs", "first_obs") + 1
    else:
        span = F.expr(grid.between_sql("first_obs", "last_obs")) + 1
    return per_series.agg(
        F.count(F.lit(1)).alias("series"),
        F.countDistinct("store_id").alias("stores"),
        F.countDistinct("item_id").alias("items"),
        F.sum("rows").alias("rows"),
        F.sum("targets").alias("targets"),
        F.sum("zeros").alias("zeros"),
        F.min("first").alias("first"),
        F.max("last").alias("last"),
        F.max("last_obs").alias("last_obs"),
        F.sum(span).alias("span"),
        F.sum(span - F.col("obs_days")).alias("missing"),
        F.count(F.when(span > F.col("obs_days"), 1)).alias("gapped"),
        *[F.sum(f"nn_{c}").alias(f"nn_{c}") for c in _optional(SALES.name)],
    )


def _non_null(result: ValidationResult, name: str) -> DataFrame:
    accepted = result.tables[name].accepted
    return accepted.agg(*[F.count(c).alias(f"nn_{c}") for c in _optional(name)])


def _present(row: Any, table: str) -> dict[str, int]:
    """Optional contract columns with at least one value: their non-null rows."""
    out = {}
    for c in _optional(table):
        value = int(row[f"nn_{c}"] or 0)
        if value:
            out[c] = value
    return out


def _hierarchy(stores: DataFrame, cfg: Config) -> dict[str, int]:
    levels = [lvl for lvl in cfg.data.hierarchy if lvl.column in stores.columns]
    if not levels:
        return {}
    row = one_row(stores.agg(*[F.countDistinct(lvl.column).alias(lvl.name) for lvl in levels]))
    return {lvl.name: int(row[lvl.name]) for lvl in levels}


def _item_hierarchy(items: DataFrame, cfg: Config) -> dict[str, int]:
    """Groups per level of ``data.item_hierarchy`` (the contract made sure the items carry
    its columns)."""
    levels = cfg.data.item_hierarchy
    if not levels:
        return {}
    row = one_row(items.agg(*[F.countDistinct(lvl.column).alias(lvl.name) for lvl in levels]))
    return {lvl.name: int(row[lvl.name]) for lvl in levels}


def _event_checks(
    events: DataFrame,
    stores: DataFrame,
    per_series: DataFrame,
    levels: dict[str, str],
    declared: list[str],
) -> list[EventTypeCheck]:
    """Per event type (declared ones first, then any other found): rows, dates, and the
    stores and series its rows reach."""
    sizes = {
        r["event_type"]: (int(r["rows"]), int(r["dates"]))
        for r in events.groupBy("event_type")
        .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("date").alias("dates"))
        .collect()  # one row per type
    }
    reached = reach_counts(stores, events, levels, per_series)
    types = list(dict.fromkeys([*declared, *sorted(sizes)]))
    return [
        EventTypeCheck(
            event_type=t,
            declared=t in declared,
            rows=sizes.get(t, (0, 0))[0],
            dates=sizes.get(t, (0, 0))[1],
            stores=reached.get(t, (0, 0))[0],
            series=reached.get(t, (0, 0))[1],
        )
        for t in types
    ]
