"""Every example column the model reads, declared once: its name, its group and its meaning.

The window code builds exactly these columns (``windows.select_declared`` fails when an
expression and this table disagree), the feature spec lists them in this order, and the
model's input tensors stack them in this order.  Pure Python: the Horovod ranks import it
without Spark.
"""

from __future__ import annotations

# The series' own history, ``L`` days ending at the origin o.
OWN_HISTORY: dict[str, str] = {
    "hist_y": "target / scale (0 where not observed)",
    "hist_observed": "1 where the target was observed",
    "hist_open": "1 where the store was open (0 when unknown)",
    "hist_promo": "1 on promotion days",
    "hist_price": "price / the window's mean price (1 when unknown)",
    "hist_holiday": "1 on public holidays in the store's regions",
    "hist_school": "1 on school holidays in the store's regions",
}
# Region context sequences over the same L days; one aggregate channel per hierarchy level.
SPATIAL_LAG = "hist_spatial_lag"
CONTEXT_HISTORY: dict[str, str] = {
    SPATIAL_LAG: "weighted mean of the neighbours' scaled histories (same item)",
}
AGGREGATE_PREFIX = "hist_agg_"
# One per level of the product hierarchy (data.item_hierarchy): the mean of the same store's
# items of the series' group, scaled by its own window mean.
ITEM_AGGREGATE_PREFIX = "hist_item_agg_"
# Known future, ``H`` days o+1 .. o+H.  On a weekly or monthly axis (data.frequency) every
# "day" is a period: the holiday flags count the holiday days of the period, fut_doy is the
# week of year / 53 or the month / 12, the same-weekday means look 52 weeks or 12 months back.
FUTURE: dict[str, str] = {
    "fut_open": "planned open flag (1 when unknown)",
    "fut_promo": "planned promotion flag",
    "fut_price": "planned price / the history window's mean price",
    "fut_holiday": "public holiday flag",
    "fut_school": "school holiday flag",
    "fut_to_holiday": "days to the next public holiday / holiday_window (1 beyond)",
    "fut_since_holiday": "days since the last public holiday / holiday_window (1 beyond)",
    "fut_doy": "day of year / 366",
    # the position in the month (paydays, month-end shopping): of the period's first day on
    # a weekly axis, 0 on a monthly one
    "fut_dom": "(day of month - 1) / 30",
    "fut_to_month_end": "days to the last day of the month / 30",
    "fut_sw_mean": "mean of the last same_weekday_weeks open same-weekday days / scale "
    "(1, the series' mean level, when none was observed)",
    "fut_last_year": "mean level 52 weeks earlier (same weekday, +-1 week) / scale",
}
SW_MEAN = "fut_sw_mean"
# Weekday (0 = Monday) of every history and future day: embedded, not scaled (0 for weekly
# and monthly periods).
HIST_DOW = "hist_dow"
FUT_DOW = "fut_dow"
# The k nearest neighbours carrying the same item.
NEIGHBOUR: dict[str, str] = {
    "nbr_y": "k x L neighbour histories, each scaled by its own window mean",
    "nbr_mask": "1 for a neighbour with a usable history",
    "nbr_dist": "distance in km",
    "nbr_weight": "normalised spatial weight",
}
TARGETS: dict[str, str] = {
    "y": "the target over the horizon (raw units)",
    "y_mask": "1 where the target was observed",
    "scale": "the example's scale (mean of the history's days with sales)",
}
# Every example's key: its series (data.contract.SERIES_KEY) and its origin.  The training
# ranks split the examples by series and order them by this key, whatever the files.
SERIES = ("store_id", "item_id")
ORIGIN = "origin"
# Scalars ending at the origin, in target / scale units.
LOG_SCALE, OBS_FRAC, LOG_AGE = "log_scale", "obs_frac", "log_age"
# Numeric static attributes always present (others come from static_num_* columns).
STATIC_NUMERIC = ("size", "base_price")


# Day arrays an event distance reads (1 on the event's days): the series' own plans and the
# store's calendar (the built-in holiday types also by their event type); any other name is a
# type declared in data.event_types.
EVENT_SOURCES = {
    "promo": "coalesce(promo[{i}], 0) = 1",
    "closed": "coalesce(open[{i}], 1) = 0",
    "holiday": "coalesce(holiday[{i}], 0) = 1",
    "school": "coalesce(school[{i}], 0) = 1",
    "public_holiday": "coalesce(holiday[{i}], 0) = 1",
    "school_holiday": "coalesce(school[{i}], 0) = 1",
}
# Known-future indicator of a declared event type (beyond the built-in holiday types): 1 on
# the horizon days the event reaches the store.
EVENT_INDICATOR_PREFIX = "fut_event_"


# Flags a matched same-weekday mean (features.matched_means) can match the target day on.
MATCHED_FLAGS = ("promo", "holiday", "school")


def matched_mean(flag: str) -> str:
    """fut_sw_mean_<flag>: the same-weekday mean over the days with the target day's flag."""
    return f"{SW_MEAN}_{flag}"


def event_indicator(event_type: str) -> str:
    return f"{EVENT_INDICATOR_PREFIX}{event_type}"


def event_channels(events: list[str]) -> list[str]:
    """fut_days_to_<e>, fut_days_since_<e> per event: to the next one / since the last one."""
    return [event_channel(side, e) for e in events for side in ("to", "since")]


def event_channel(side: str, event: str) -> str:
    return f"fut_days_{side}_{event}"


def aggregate_channel(level: str) -> str:
    return f"{AGGREGATE_PREFIX}{level}"


def item_aggregate_channel(level: str) -> str:
    return f"{ITEM_AGGREGATE_PREFIX}{level}"


def lag(k: int) -> str:
    return f"lag_{k}"


def rolling_mean(w: int) -> str:
    return f"roll_mean_{w}"


def rolling_std(w: int) -> str:
    return f"roll_std_{w}"


def scalar_names(lags: list[int], rolling_windows: list[int]) -> list[str]:
    names = [lag(k) for k in lags]
    for w in rolling_windows:
        names += [rolling_mean(w), rolling_std(w)]
    return names + [LOG_SCALE, OBS_FRAC, LOG_AGE]


def index_column(vocab_name: str) -> str:
    """The integer column of a categorical vocabulary (1-based, 0 = unknown)."""
    return f"{vocab_name}_idx"


def vocab_name(index_col: str) -> str:
    """The vocabulary of an :func:`index_column`."""
    return index_col.removesuffix("_idx")
