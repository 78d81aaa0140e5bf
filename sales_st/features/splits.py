"""Which forecast origins form each split: train, validation, test (the backtest) and score.

Boundaries come from ``features.splits`` as dates or as offsets in periods (days, weeks or
months: the axis' grid) from the run date.  Origins are counted back from the run date in
steps of the split's stride, so the score origin (the run date itself) and the backtest
origins share their weekday.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sales_st.config import FeaturesConfig
from sales_st.data.frequency import DAILY, Grid
from sales_st.errors import ConfigError
from sales_st.features.calendar import Axis
from sales_st.features.spec import SPLITS


@dataclass(frozen=True)
class OriginRule:
    """Which origin days form a split (all bounds inclusive, days on the global axis)."""

    name: str
    anchor: int  # origins are anchor - k * stride
    stride: int
    lo: int
    hi: int
    target_end: int  # o + horizon must be <= this
    need_target: bool  # drop examples with no observed target


def origin_candidates(rule: OriginRule, horizon: int, min_start: int) -> list[int]:
    hi = min(rule.hi, rule.target_end - horizon)
    lo = max(rule.lo, min_start)
    if hi < lo:
        return []
    first = rule.anchor - ((rule.anchor - hi + rule.stride - 1) // rule.stride) * rule.stride
    if first > hi:
        first -= rule.stride
    return list(range(first, lo - 1, -rule.stride))[::-1]


def resolve_boundary(value: int | str, run_date: dt.date, grid: Grid = DAILY) -> dt.date:
    """A boundary's date: ``value`` periods of ``grid`` from the run date, or a date."""
    if isinstance(value, int):
        return grid.shift(run_date, value)
    return dt.date.fromisoformat(value)


def origin_rules(
    cfg: FeaturesConfig,
    axis: Axis,
    run_date: dt.date,
    last_target_day: int,
    splits: tuple[str, ...] = SPLITS,
) -> list[OriginRule]:
    r = axis.day(run_date)
    train_end = axis.day(resolve_boundary(cfg.splits.train_end, run_date, axis.grid))
    val_end = axis.day(resolve_boundary(cfg.splits.val_end, run_date, axis.grid))
    if not train_end <= val_end <= r:
        raise ConfigError(
            f"features.splits: need train_end <= val_end <= run date, found "
            f"{axis.date(train_end)}, {axis.date(val_end)}, {run_date}"
        )
    big = axis.n_days + cfg.horizon
    all_rules = {
        "train": OriginRule(
            "train", r, cfg.splits.train_stride or cfg.stride, 0, train_end, train_end, True
        ),
        "val": OriginRule("val", r, cfg.stride, train_end, val_end, val_end, True),
        "test": OriginRule("test", r, cfg.splits.test_stride, val_end, r, last_target_day, True),
        "score": OriginRule("score", r, 1, r, r, big, False),
    }
    return [all_rules[s] for s in splits]
