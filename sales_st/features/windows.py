"""Training / scoring examples: one row per (series, forecast origin), cut from day arrays.

The arrays' elements are periods of the axis' grid (days, or weeks or months with
``data.frequency``): every "day" below is then a period, the weekly season (7) becomes a
year of weeks or months (52, 12) and the weekday channels are constant.

For an origin day ``o`` (the last day of history) an example holds

* history (``L`` days ``o-L+1 .. o``): the target divided by ``scale`` -- the mean over the
  window's observed days with sales, or over the trailing year when the window has fewer than
  3 such days (a store reopening after a closure), else 1 -- the observed mask,
  open/promo/price-ratio, calendar flags, the spatial lag
  and the region (and item-hierarchy) aggregates, each an array of ``L``;
* known future (``H`` days ``o+1 .. o+H``): open, promo, price ratio, holiday/school flags,
  days to/since a public holiday, weekday and day-of-year, the same-weekday mean of the
  last weeks of history and the level a year earlier (same weekday, +-1 week) for each
  horizon day; one indicator per declared event type, the event distances, the
  same-weekday means over the days whose flag matches the target day's and the configured
  date expressions;
* neighbour context: ``k`` neighbour histories (each scaled by its own window mean),
  their mask, distance and weight;
* scalars: lags, rolling means and standard deviations (7/28/91 by default) ending at ``o``,
  the log scale, the history length; static ids;
* targets: ``y`` (raw, ``H``), ``y_mask``; for scoring origins they may be all masked.

Everything is a native Spark expression over arrays (``slice``, ``transform``,
``aggregate``); element access uses 0-based subscripts, which give NULL out of range, so
early origins need no special casing.  Only days ``<= o`` reach anything but the
known-future block, which is what the leakage test checks.
"""

from __future__ import annotations

import dataclasses
import re

from pyspark.errors import ParseException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sales_st.config import FeaturesConfig
from sales_st.data.contract import SERIES_KEY
from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import ConfigError, DataError
from sales_st.features import names as N
from sales_st.features.calendar import NO_HOLIDAY, Axis
from sales_st.features.splits import OriginRule, origin_candidates

MIN_SALES_DAYS = 3  # fewer days with sales in the window: take the scale from the last year
SCALE_FALLBACK_DAYS = 364  # daily; a weekly or monthly axis looks a year back (Grid.year)


def explode_origins(
    series: DataFrame,
    rules: list[OriginRule],
    cfg: FeaturesConfig,
    windows: dict[str, str] | None = None,
    index: str = "p.o",
) -> DataFrame:
    """Cross every series with its split origins (``split``, ``o``), honouring min_history.

    One explode of an array of (split, origin) pairs, so the (expensive) per-series input is
    read once whatever the number of splits.  With ``splits.train_offsets: series`` the
    training origins of a series are shifted by its own offset within the stride (see
    ``series_offset``): every weekday is a training origin of some series.
    """
    L = cfg.history
    arrays, any_origin = [], False
    for rule in rules:
        horizon = 0 if rule.name == "score" else cfg.horizon
        shifted = rule.name == "train" and cfg.splits.train_offsets == "series"
        if shifted and rule.stride > 1:
            days = origin_candidates(dataclasses.replace(rule, stride=1), horizon, L - 1)
            pairs = shifted_pairs(rule, days)
        else:
            days = origin_candidates(rule, horizon, L - 1)
            pairs = F.array(
                *[F.struct(F.lit(rule.name).alias("split"), F.lit(d).alias("o")) for d in days]
            )
        if days:
            arrays.append(pairs)
            any_origin = True
    if not any_origin:
        raise DataError(
            "no forecast origin fits the configured splits and history length: the data "
            "is shorter than features.history plus the split offsets"
        )
    windows = {c: sql for c, sql in (windows or {}).items() if c in series.columns}
    kept = [c for c in series.columns if c not in windows]
    # ``windows``: columns replaced by their slice for each origin, computed inside the
    # generator (SQL of the origin ``p.o``), so that the explode copies each origin's window
    # and not the series' whole axis-long arrays into every example row
    fields = "".join(f", '{c}', {sql}" for c, sql in windows.items())
    first = f"filter(_pairs, p -> p.o >= first_day + {cfg.min_history - 1})"
    # oi: the origin's index in the own arrays (o, or less where windows cut their start)
    struct = f"named_struct('split', p.split, 'o', p.o, 'oi', {index}{fields})"
    gen = F.expr(f"transform({first}, p -> {struct})")
    out = (
        series.withColumn("_pairs", F.concat(*arrays))
        .select(*kept, F.explode(gen).alias("_so"))
        .select(
            *kept,
            F.col("_so.split").alias("split"),
            F.col("_so.o").alias("o"),
            F.col("_so.oi").alias("oi"),
            *[F.col(f"_so.{c}").alias(c) for c in windows],
        )
    )
    return out


def shifted_pairs(rule: OriginRule, days: list[int]) -> Column:
    """(split, origin) pairs of the days ``d`` with ``anchor - d = offset (mod stride)``, the
    offset being the series' own (an array expression evaluated per series row)."""
    offset = series_offset(rule.stride)
    kept = F.filter(
        F.array(*[F.lit(d) for d in days]),
        lambda d: F.pmod(F.lit(rule.anchor) - d, F.lit(rule.stride)) == offset,
    )
    return F.transform(kept, lambda d: F.struct(F.lit(rule.name).alias("split"), d.alias("o")))


def series_offset(stride: int) -> Column:
    """A series' training-origin offset within the stride: 0 .. stride - 1 from a hash of
    its key (stable across runs, spread evenly over many series)."""
    return F.pmod(F.xxhash64(*[F.col(c).cast("string") for c in SERIES_KEY]), F.lit(stride))


def select_declared(df: DataFrame, exprs: dict[str, Column], declared: dict[str, str]) -> DataFrame:
    """``df`` plus one column per entry of ``declared`` (a table of :mod:`.names`), in its
    order; fails when the expressions built here and the declared names disagree."""
    if list(exprs) != list(declared):
        raise RuntimeError(
            f"feature expressions {list(exprs)} do not match the declared "
            f"names {list(declared)} (sales_st/features/names.py)"
        )
    return df.select("*", *[e.alias(name) for name, e in exprs.items()])


# ---- expression helpers ---------------------------------------------------------------


def _hist(col: str, L: int, o: str = "oi") -> str:
    """SQL for the L-day history slice of array ``col`` ending at o (1-based slice)."""
    return f"slice({col}, {o} - {L - 2}, {L})"


def _fut(col: str, H: int, o: str = "oi") -> str:
    return f"slice({col}, {o} + 2, {H})"


OWN_ARRAYS = ("y", "has_y", "open", "promo", "price", "holiday", "school")


def lookback(cfg: FeaturesConfig, grid: Grid = DAILY) -> int:
    """The most periods before an origin that any example column reads from the own arrays:
    the history, the lags and rolling windows, the scale's fallback year, the same-season
    means and the level a year earlier (a step either side)."""
    fallback = SCALE_FALLBACK_DAYS if grid.daily else grid.year
    step = 7 if grid.daily else 1
    matched = [step * cfg.matched_weeks - 1] if cfg.matched_means else []
    return max(
        cfg.history - 1,
        fallback - 1,
        grid.season * cfg.same_weekday_weeks - 1,
        grid.year + step - 1,
        *[k - 1 for k in cfg.lags],
        *[w - 1 for w in cfg.rolling_windows],
        *matched,
    )


def origin_index(cfg: FeaturesConfig, grid: Grid = DAILY) -> str:
    """SQL of the origin's index ``oi`` in the own arrays cut by :func:`context_windows`."""
    return f"least(p.o, {lookback(cfg, grid)})"


def context_windows(
    columns: list[str],
    cfg: FeaturesConfig,
    levels: list[str],
    item_levels: list[str],
    event_types: list[str],
    grid: Grid = DAILY,
) -> dict[str, str]:
    """Each origin's window of the series' arrays, as SQL of the origin ``p.o``, which
    :func:`explode_origins` cuts inside its generator: the neighbours' and the aggregates'
    histories (L days) and the event indicators', event distances' and holiday distances'
    horizons (H days), which the example code then reads whole; and the own arrays (target,
    open, promo, price, holiday and school flags), whose scale, lags and last-year levels
    reach further back than the history, cut to the :func:`lookback` before the origin and
    the horizon after it and read at ``oi``."""
    L, H = cfg.history, cfg.horizon
    B = lookback(cfg, grid)
    nbr = (
        "transform(nbr, n -> named_struct('rank', n.rank, 'weight', n.weight, "
        "'distance_km', n.distance_km, 'neighbour_id', n.neighbour_id, "
        f"'y', {_hist('n.y', L, 'p.o')}, 'has_y', {_hist('n.has_y', L, 'p.o')}))"
    )
    out = {"nbr": nbr}
    for c in ("to_holiday", "since_holiday"):  # the calendar's distances, read for the horizon
        out[c] = _fut(c, H, "p.o")
    for c in OWN_ARRAYS:  # from max(o - B, 0) to o + H: the origin at oi = least(o, B)
        out[c] = f"slice({c}, greatest(p.o - {B}, 0) + 1, {B + H + 1})"
    for source in [f"agg_{lvl}" for lvl in levels] + [f"agg_item_{lvl}" for lvl in item_levels]:
        for part in ("_y", "_has"):
            out[source + part] = _hist(source + part, L, "p.o")
    for t in event_types:
        out[f"event_{t}"] = _fut(f"event_{t}", H, "p.o")
    for e in cfg.event_distances:
        for side in ("to", "since"):
            out[f"_ed_{side}_{e}"] = _fut(f"_ed_{side}_{e}", H, "p.o")
    return {c: sql for c, sql in out.items() if c in columns}


def _masked(values: str, mask: str) -> str:
    return f"zip_with({values}, {mask}, (a, m) -> IF(m = 1, coalesce(a, 0D), 0D))"


def _sum(arr: str, zero: str = "0D") -> str:
    return f"aggregate({arr}, {zero}, (acc, a) -> acc + a)"


def _positive_mean(values: str, mask: str) -> str:
    """SQL for named_struct(s = sum, n = count) of the observed values above zero."""
    return (
        f"aggregate(zip_with({values}, {mask}, (a, m) -> IF(m = 1 AND a > 0, a, 0D)), "
        "named_struct('s', 0D, 'n', 0), (acc, a) -> "
        "named_struct('s', acc.s + a, 'n', acc.n + IF(a > 0, 1, 0)))"
    )


def _open_day_means(
    H: int, day: str, j0: int, j1: int, none: str = "0D", match: str | None = None
) -> str:
    """SQL: for each horizon step h = 1..H, the mean of ``y`` over the days ``day`` (an
    expression of h and j, for j = j0..j1) that were observed and open, divided by ``scale``;
    0 when those that were not missing were all closed (a closed day says nothing about an
    open one's level), ``none`` when they were all missing (no sales row, not known closed).
    ``match``: an own array whose flag on a day must equal the target day's (o + h) for the
    day to count at all."""
    skip = ""
    if match is not None:
        on = "coalesce({a}[{i}], 0) > 0"
        skip = f"WHEN ({on.format(a=match, i=day)}) <> ({on.format(a=match, i='oi + h')}) THEN acc "
    return (
        f"transform(sequence(1, {H}), h -> aggregate(sequence({j0}, {j1}), "
        "named_struct('s', 0D, 'n', 0, 'c', 0), "
        f"(acc, j) -> CASE {skip}WHEN coalesce(open[{day}], 1) = 0 "
        "THEN named_struct('s', acc.s, 'n', acc.n, 'c', acc.c + 1) "
        f"WHEN has_y[{day}] = 1 "
        f"THEN named_struct('s', acc.s + y[{day}], 'n', acc.n + 1, 'c', acc.c) ELSE acc END, "
        f"acc -> CASE WHEN acc.n > 0 THEN acc.s / acc.n / scale WHEN acc.c > 0 THEN 0D "
        f"ELSE {none} END))"
    )


def _same_season_day(P: int) -> str:
    """SQL of the j-th day before the origin in the same season position (weekday) as the
    target day oi + h: oi + h - P * ceil(h / P), then P, 2P, ... periods earlier."""
    return f"oi + h - {P} * CAST(ceil(h / {P}) AS INT) - {P} * j"


def _periodic(first: str, H: int, P: int) -> str:
    """SQL: the H-step array repeating ``first``, the values of the steps 1..min(H, P) of a
    quantity periodic in the step with period P (the same-season days of o + h and of
    o + h + P are the same days): computed for one season, not for every horizon step."""
    if H <= P:
        return first
    return f"slice(flatten(array_repeat({first}, {-(-H // P)})), 1, {H})"


def _trail(col: str, w: int) -> str:
    """Trailing window of w days ending at o, clipped at the start of the axis."""
    return f"slice({col}, greatest(oi - {w - 2}, 1), least({w}, oi + 1))"


def with_history(df: DataFrame, cfg: FeaturesConfig, grid: Grid = DAILY) -> DataFrame:
    L = cfg.history
    fallback = SCALE_FALLBACK_DAYS if grid.daily else grid.year
    df = df.withColumn("hh", F.expr(_hist("has_y", L))).withColumn(
        "hym", F.expr(_masked(_hist("y", L), "hh"))
    )
    df = df.withColumn("n_obs", F.expr(_sum("hh", "0")))
    df = df.withColumn("_pos", F.expr(_positive_mean("hym", "hh")))
    longer = _positive_mean(
        _masked(_trail("y", fallback), _trail("has_y", fallback)),
        _trail("has_y", fallback),
    )
    df = df.withColumn(
        "_long", F.expr(f"IF(_pos.n >= {MIN_SALES_DAYS}, named_struct('s', 0D, 'n', 0), {longer})")
    )
    # has_scale = 0: no day with sales in the window nor the year before it (a store closed
    # for a year); such windows cannot be scaled and are kept out of training and tests.
    df = df.withColumn("has_scale", F.expr("IF(_pos.n > 0 OR _long.n > 0, 1, 0)"))
    df = df.withColumn(
        "scale",
        F.expr(
            f"CASE WHEN _pos.n >= {MIN_SALES_DAYS} THEN _pos.s / _pos.n "
            "WHEN _long.n > 0 THEN _long.s / _long.n "
            "WHEN _pos.n > 0 THEN _pos.s / _pos.n ELSE 1D END"
        ),
    ).drop("_pos", "_long")
    hist_price = _hist("price", L)
    mean_price = (
        f"aggregate(filter({hist_price}, p -> p IS NOT NULL), named_struct('s', 0D, 'n', 0), "
        "(acc, p) -> named_struct('s', acc.s + p, 'n', acc.n + 1), "
        "acc -> IF(acc.n > 0, acc.s / acc.n, NULL))"
    )
    df = df.withColumn("ref_price", F.expr(mean_price))
    return select_declared(
        df,
        {
            "hist_y": F.expr("transform(hym, a -> a / scale)"),
            "hist_observed": F.col("hh"),
            "hist_open": F.expr(f"transform({_hist('open', L)}, v -> coalesce(v, 0))"),
            "hist_promo": F.expr(f"transform({_hist('promo', L)}, v -> coalesce(v, 0))"),
            "hist_price": F.expr(f"transform({hist_price}, p -> coalesce(p / ref_price, 1D))"),
            "hist_holiday": F.expr(_hist("holiday", L)),
            "hist_school": F.expr(_hist("school", L)),
        },
        N.OWN_HISTORY,
    )


def with_future(
    df: DataFrame, cfg: FeaturesConfig, axis: Axis, event_types: list[str] | None = None
) -> DataFrame:
    """Known-future channels; ``event_types`` are the declared types with an indicator
    channel each (read from the calendar's ``event_<type>`` arrays)."""
    H, W = cfg.horizon, cfg.same_weekday_weeks
    grid = axis.grid
    # The season: a week of days, a year of weeks or months (Grid.season).
    P, year, step = grid.season, grid.year, (7 if grid.daily else 1)
    fut_price = _fut("price", H)
    window = float(cfg.holiday_window)
    # Same season as o+h in history: o + h - P*ceil(h/P), then P, 2P, ... periods earlier.
    # Where none of those periods was observed (a gap in the data: a store's missing year,
    # a refit), the series' mean level instead, 1 in scale units: the decoder forecasts
    # corrections to this value (model.baseline_skip), and 0 would read as "no sales".
    sw = _periodic(_open_day_means(min(H, P), _same_season_day(P), 0, W - 1, none="1D"), H, P)
    # A year earlier: o + h - 364 days (same weekday) and the weeks either side; on a weekly
    # or monthly axis, 52 weeks or 12 months and the periods either side.
    last_year = _open_day_means(H, f"oi + h - {year} + {step} * j", -1, 1)
    if grid.kind == "week":
        season_position = f"weekofyear({axis.date_sql('d')}) / 53D"
    elif grid.kind == "month":
        season_position = f"month({axis.date_sql('d')}) / 12D"
    else:
        season_position = f"dayofyear({axis.date_sql('d')}) / 366D"
    if grid.kind == "month":
        day_of_month = to_month_end = "0D"
    else:
        day_of_month = f"(dayofmonth({axis.date_sql('d')}) - 1) / 30D"
        to_month_end = f"datediff(last_day({axis.date_sql('d')}), {axis.date_sql('d')}) / 30D"
    days_to = f"transform({{col}}, v -> IF(v = {NO_HOLIDAY}, 1D, v / {window}))"
    df = select_declared(
        df,
        {
            "fut_open": F.expr(f"transform({_fut('open', H)}, v -> coalesce(v, 1))"),
            "fut_promo": F.expr(f"transform({_fut('promo', H)}, v -> coalesce(v, 0))"),
            "fut_price": F.expr(f"transform({fut_price}, p -> coalesce(p / ref_price, 1D))"),
            "fut_holiday": F.expr(_fut("holiday", H)),
            "fut_school": F.expr(_fut("school", H)),
            # the horizon's windows (context_windows)
            "fut_to_holiday": F.expr(days_to.format(col="to_holiday")),
            "fut_since_holiday": F.expr(days_to.format(col="since_holiday")),
            "fut_doy": F.expr(f"transform(sequence(o + 1, o + {H}), d -> {season_position})"),
            "fut_dom": F.expr(f"transform(sequence(o + 1, o + {H}), d -> {day_of_month})"),
            "fut_to_month_end": F.expr(f"transform(sequence(o + 1, o + {H}), d -> {to_month_end})"),
            "fut_sw_mean": F.expr(sw),
            "fut_last_year": F.expr(last_year),
        },
        N.FUTURE,
    )
    df = with_event_indicators(df, event_types or [], H)
    df = with_event_distances(df, cfg)
    df = with_matched_means(df, cfg, grid)
    df = with_future_expressions(df, cfg, axis)
    return df.select(
        "*",
        F.expr(f"transform(sequence(o + 1, o + {H}), d -> {_weekday('d', axis)})").alias(N.FUT_DOW),
        F.expr(_masked(_fut("y", H), _fut("has_y", H))).alias("y_fut"),
        F.expr(_fut("has_y", H)).alias("y_mask"),
    )


def _weekday(day: str, axis: Axis) -> str:
    """SQL: the weekday (Monday = 0) of period ``day``; 0 on a weekly or monthly axis, whose
    periods have no weekday (the weekday channels are then constant)."""
    return f"({day} + {axis.t0.weekday()}) % 7" if axis.grid.daily else "0"


def with_event_indicators(df: DataFrame, event_types: list[str], horizon: int) -> DataFrame:
    """fut_event_<type> per declared type: 1 on the horizon days the event reaches the store
    (``event_<type>``: the horizon's window, see :func:`context_windows`)."""
    cols = [
        F.expr(f"transform(event_{t}, v -> coalesce(v, 0))").alias(N.event_indicator(t))
        for t in event_types
    ]
    return df.select("*", *cols) if cols else df


def event_distance(event: str, side: str, n_days: int, window: int) -> str:
    """SQL: for every day i of the axis, the days to the next (``side`` = to) or since the
    last (since) day of ``event`` within ``window`` days, over window + 1; 1 when there is
    none.  Computed once per series on the whole axis and sliced per example: it reads both
    sides of an origin, so only planned events (promotions, closures, holidays) may be used."""
    sign = "+" if side == "to" else "-"
    hit = N.EVENT_SOURCES.get(event, f"coalesce(event_{event}[{{i}}], 0) = 1").format(
        i=f"i {sign} k"
    )
    first = f"element_at(filter(sequence(0, {window}), k -> {hit}), 1)"
    return (
        f"transform(sequence(0, {n_days - 1}), i -> "
        f"CAST(coalesce({first} / {float(window + 1)}, 1D) AS FLOAT))"
    )


def with_event_distance_arrays(wide: DataFrame, cfg: FeaturesConfig, axis: Axis) -> DataFrame:
    """Per series, one axis-long array per event and side (``_ed_<side>_<event>``)."""
    cols = [
        F.expr(event_distance(e, side, axis.n_days, cfg.event_window)).alias(f"_ed_{side}_{e}")
        for e in cfg.event_distances
        for side in ("to", "since")
    ]
    return wide.select("*", *cols) if cols else wide


def with_event_distances(df: DataFrame, cfg: FeaturesConfig) -> DataFrame:
    """fut_days_to_<e> / fut_days_since_<e> for every event of ``features.event_distances``:
    the horizon days' slice of the series' distance arrays (cut by :func:`context_windows`)."""
    cols = [
        F.expr(f"transform(_ed_{side}_{e}, v -> CAST(v AS DOUBLE))").alias(N.event_channel(side, e))
        for e in cfg.event_distances
        for side in ("to", "since")
    ]
    return df.select("*", *cols) if cols else df


def with_matched_means(df: DataFrame, cfg: FeaturesConfig, grid: Grid) -> DataFrame:
    """fut_sw_mean_<flag> for every flag of ``features.matched_means``: the mean level of the
    last ``matched_weeks`` days before the origin on the target day's weekday (weekly or
    monthly data: the last periods) whose flag equals the target day's, / scale; the plain
    same-weekday mean (fut_sw_mean) where none of them was observed.  A promotion Monday is
    then read against past promotion Mondays, a school-holiday week against past ones."""
    day = _same_season_day(grid.season) if grid.daily else "oi - j"
    cols = []
    for flag in cfg.matched_means:
        means = _open_day_means(
            cfg.horizon, day, 0, cfg.matched_weeks - 1, none="CAST(NULL AS DOUBLE)", match=flag
        )
        sql = f"zip_with({means}, {N.SW_MEAN}, (m, s) -> coalesce(m, s))"
        cols.append(F.expr(sql).alias(N.matched_mean(flag)))
    return df.select("*", *cols) if cols else df


def with_future_expressions(df: DataFrame, cfg: FeaturesConfig, axis: Axis) -> DataFrame:
    """One channel per ``features.future_expressions`` entry: the expression evaluated for
    every horizon day, ``date`` standing for that day."""
    cols = []
    for name, expr in cfg.future_expressions.items():
        day = axis.date_sql("d")
        body = re.sub(r"\bdate\b", day, expr)
        sql = f"transform(sequence(o + 1, o + {cfg.horizon}), d -> CAST(({body}) AS DOUBLE))"
        try:
            cols.append(F.expr(sql).alias(name))
        except ParseException as exc:
            raise ConfigError(
                f"config key 'features.future_expressions.{name}': invalid SQL "
                f"{expr!r}: {str(exc).splitlines()[0]}"
            ) from None
    return df.select("*", *cols) if cols else df


def with_scalars(df: DataFrame, cfg: FeaturesConfig) -> DataFrame:
    """Lags and rolling statistics ending at o, scaled by the example's scale."""
    cols: list[Column] = []
    for k in cfg.lags:
        idx = f"oi - {k - 1}"
        cols.append(F.expr(f"IF(has_y[{idx}] = 1, y[{idx}] / scale, 0D)").alias(N.lag(k)))
    tmp = []
    for w in cfg.rolling_windows:
        m, v = f"_m{w}", f"_v{w}"
        df = df.withColumn(m, F.expr(_trail("has_y", w)))
        df = df.withColumn(v, F.expr(_masked(_trail("y", w), m)))
        df = df.withColumn(f"_n{w}", F.expr(f"greatest({_sum(m, '0')}, 1)"))
        df = df.withColumn(f"_mean{w}", F.expr(f"{_sum(v)} / _n{w}"))
        var = (
            f"aggregate(zip_with({v}, {m}, "
            f"(a, b) -> IF(b = 1, (a - _mean{w}) * (a - _mean{w}), 0D)), "
            f"0D, (acc, a) -> acc + a) / _n{w}"
        )
        cols.append(F.expr(f"_mean{w} / scale").alias(N.rolling_mean(w)))
        cols.append(F.expr(f"sqrt({var}) / scale").alias(N.rolling_std(w)))
        tmp += [m, v, f"_n{w}", f"_mean{w}"]
    cols.append(F.log1p("scale").alias(N.LOG_SCALE))
    cols.append((F.col("n_obs") / cfg.history).alias(N.OBS_FRAC))
    cols.append(F.log1p(F.col("o") - F.col("first_day") + 1).alias(N.LOG_AGE))
    return df.select("*", *cols).drop(*tmp)


def with_neighbours(df: DataFrame, cfg: FeaturesConfig) -> DataFrame:
    """Neighbour histories (k x L, each scaled by its own window mean) and the spatial lag;
    ``nbr`` holds the history windows (:func:`context_windows`)."""
    L, K = cfg.history, cfg.spatial.k
    empty = (
        "named_struct('rank', 0, 'weight', 0D, 'distance_km', 0D, 'neighbour_id', "
        "CAST(NULL AS STRING), 'y', CAST(NULL AS ARRAY<DOUBLE>), 'has_y', CAST(NULL AS ARRAY<INT>))"
    )
    padded = f"slice(concat(coalesce(nbr, array()), array_repeat({empty}, {K})), 1, {K})"
    per = (
        f"transform({padded}, n -> named_struct("
        f"'id', n.neighbour_id, 'w', n.weight, 'd', n.distance_km, "
        f"'m', coalesce(n.has_y, array_repeat(0, {L})), "
        f"'v', coalesce(n.y, array_repeat(CAST(NULL AS DOUBLE), {L}))))"
    )
    df = df.withColumn("_nb", F.expr(per))
    scaled = (
        "transform(_nb, n -> named_struct('id', n.id, 'w', n.w, 'd', n.d, 'm', n.m, "
        f"'z', {_masked('n.v', 'n.m')}))"
    )
    df = df.withColumn("_nb", F.expr(scaled))
    normed = (
        "transform(_nb, n -> named_struct('id', n.id, 'w', n.w, 'd', n.d, 'm', n.m, "
        f"'s', {_sum('n.m', '0')}, 'z', n.z, 't', {_sum('n.z')}))"
    )
    df = df.withColumn("_nb", F.expr(normed))
    df = df.withColumn(
        "_nb",
        F.expr(
            "transform(_nb, n -> named_struct('id', n.id, 'w', n.w, 'd', n.d, 'm', n.m, "
            "'ok', IF(n.s > 0 AND n.t > 0, 1, 0), "
            "'z', transform(n.z, a -> IF(n.s > 0 AND n.t > 0, a / (n.t / n.s), 0D))))"
        ),
    )
    # The weighted mean of the usable neighbours observed on each day: one pass over the
    # neighbours adding their days into two L-day sums (``_nb`` read once per row, outside
    # any per-day lambda, which Catalyst could otherwise inline it into: once per day).
    lag = (
        f"aggregate(_nb, named_struct('num', array_repeat(0D, {L}), 'den', array_repeat(0D, {L})), "
        "(acc, n) -> IF(n.ok = 1, named_struct("
        "'num', zip_with(acc.num, zip_with(n.z, n.m, (z, m) -> IF(m = 1, n.w * z, 0D)), "
        "(a, b) -> a + b), "
        "'den', zip_with(acc.den, n.m, (a, m) -> a + IF(m = 1, n.w, 0D))), acc), "
        "acc -> zip_with(acc.num, acc.den, (a, d) -> IF(d > 0, a / d, 0D)))"
    )
    return df.select(
        "*",
        F.expr("flatten(transform(_nb, n -> n.z))").alias("nbr_y"),
        F.expr("transform(_nb, n -> n.ok)").alias("nbr_mask"),
        F.expr("transform(_nb, n -> n.id)").alias("nbr_ids"),
        F.expr("transform(_nb, n -> coalesce(n.d, 0D))").alias("nbr_dist"),
        F.expr("transform(_nb, n -> coalesce(n.w, 0D))").alias("nbr_weight"),
        F.expr(lag).alias(N.SPATIAL_LAG),
    ).drop("_nb")


def with_aggregates(
    df: DataFrame, cfg: FeaturesConfig, levels: list[str], item_levels: list[str] | None = None
) -> DataFrame:
    """Region aggregates over the history, then the item-hierarchy aggregates (see
    ``features.items``), each scaled by its own window mean."""
    channels = [(f"agg_{lvl}", N.aggregate_channel(lvl)) for lvl in levels]
    channels += [(f"agg_item_{lvl}", N.item_aggregate_channel(lvl)) for lvl in item_levels or []]
    for source, name in channels:
        m = f"{source}_has"  # the history windows (context_windows)
        df = df.withColumn("_av", F.expr(_masked(f"{source}_y", m)))
        df = df.withColumn("_am", F.expr(f"{_sum('_av')} / greatest({_sum(m, '0')}, 1)"))
        df = df.withColumn(name, F.expr("transform(_av, a -> IF(_am > 0, a / _am, 0D))")).drop(
            "_av", "_am"
        )
    return df


def float_arrays(df: DataFrame, names: list[str]) -> DataFrame:
    """Cast feature arrays to float32 (half the size; what the model consumes)."""
    out = []
    for f in df.schema.fields:
        if f.name in names:
            if f.dataType.typeName() == "array":
                out.append(F.col(f.name).cast("array<float>").alias(f.name))
            else:
                out.append(F.col(f.name).cast("float").alias(f.name))
        else:
            out.append(F.col(f.name))
    return df.select(*out)


def build_examples(
    wide: DataFrame,
    rules: list[OriginRule],
    cfg: FeaturesConfig,
    axis: Axis,
    levels: list[str],
    event_types: list[str] | None = None,
    item_levels: list[str] | None = None,
) -> DataFrame:
    """All examples for ``rules`` from the wide per-series table (arrays + context);
    ``event_types``: the declared types with an indicator channel; ``item_levels``: the
    product hierarchy's columns with an aggregate channel."""
    wide = with_event_distance_arrays(wide, cfg, axis)
    windows = context_windows(
        wide.columns, cfg, levels, item_levels or [], event_types or [], axis.grid
    )
    df = explode_origins(wide, rules, cfg, windows, origin_index(cfg, axis.grid))
    df = with_history(df, cfg, axis.grid)
    # weekday of the history (needs the axis' first weekday)
    df = df.withColumn(
        N.HIST_DOW,
        F.expr(f"transform(sequence(o - {cfg.history - 1}, o), d -> {_weekday('d', axis)})"),
    )
    df = with_future(df, cfg, axis, event_types)
    df = with_scalars(df, cfg)
    df = with_neighbours(df, cfg)
    df = with_aggregates(df, cfg, levels, item_levels)
    # The per-series day arrays have served; the future target takes the name ``y``.
    return df.drop("y", "oi").withColumnRenamed("y_fut", "y")


def needs_target(df: DataFrame, rules: list[OriginRule]) -> DataFrame:
    """Drop examples of splits that need a target but have no observed one, no history, or
    no scale (see ``has_scale``)."""
    need = [r.name for r in rules if r.need_target]
    has_target = F.expr(_sum("y_mask", "0")) > 0
    usable = has_target & (F.col("n_obs") > 0) & (F.col("has_scale") == 1)
    return df.where(~F.col("split").isin(need) | usable)
