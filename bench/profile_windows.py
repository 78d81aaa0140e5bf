"""Where the feature job's window stage spends its time, expression by expression.

    .venv/bin/python bench/profile_windows.py --env local,rossmann [--name N] [key=value ...]

The example windows are one long chain of projections over the exploded (series, origin)
rows, so Spark's stage metrics give one number for all of them.  This script reads and
validates the inputs as the feature job does (``prepare``), then times each part of
``windows.build_examples`` on its own over the same rows:

* the per-series event-distance arrays and the explode that cuts every origin's windows,
  materialised once (a local checkpoint) as the base of the rest;
* then, step by step (history, weekdays, future, scalars, neighbours, aggregates), every
  column the step adds, computed alone from the step's input, checkpointed, with Spark's
  ``noop`` sink (every row evaluated, nothing written).

A column's time includes the columns of the same step it reads, each computed once: the
per-column selects run with Catalyst's ``CollapseProject`` rule off, which would otherwise
inline a helper column read once into the lambda reading it (``ref_price`` into
``hist_price``'s ``transform``: once per day instead of once per row) and time something the
job never runs.  The per-column figures then overlap where columns share helpers; the step
row computes all of its columns together with the optimizer as the job runs it, and the
``(read the input)`` row is the floor every select of the step pays (reading the checkpoint).
Figures: bench/results/<name>.json (default ``profile_windows``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from common import ROOT, session, table, write_results
from pyspark.sql import DataFrame

from sales_st.config import load_config
from sales_st.features.assemble import indicator_types
from sales_st.features.job import prepare
from sales_st.features.splits import origin_rules
from sales_st.features.windows import (
    _weekday,
    context_windows,
    explode_origins,
    origin_index,
    with_aggregates,
    with_event_distance_arrays,
    with_future,
    with_history,
    with_neighbours,
    with_scalars,
)

SPLITS = ("train", "val", "test", "score")


def noop_seconds(df: DataFrame) -> float:
    """Seconds to evaluate every row of ``df`` (Spark's ``noop`` sink: nothing written)."""
    t0 = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="local")
    ap.add_argument("--name", default="profile_windows")
    ap.add_argument("--repeats", type=int, default=1, help="time each column this many times")
    ap.add_argument(
        "--steps", default="", help="comma-separated steps to time per column (default: all)"
    )
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(ROOT / "conf", args.env, args.overrides)
    spark = session(cfg, "bench.profile_windows")
    from pyspark.sql import functions as F

    f = cfg.features
    t0 = time.perf_counter()
    prep = prepare(spark, cfg, None)
    wide = prep.wide
    axis, grid = wide.axis, wide.axis.grid
    rules = origin_rules(f, axis, wide.run_date, wide.last_target_day, SPLITS)
    base_wide = wide.table.localCheckpoint(eager=True)
    n_series = base_wide.count()
    prepare_s = time.perf_counter() - t0
    print(f"prepared {n_series} series in {prepare_s:.1f}s", flush=True)

    rows: list[dict[str, object]] = []

    def add(step: str, column: str, seconds: float, **extra: object) -> None:
        rows.append({"step": step, "column": column, "seconds": round(seconds, 2), **extra})
        print(f"  {step:11s} {column:28s} {seconds:7.2f}s", flush=True)

    # the per-series event-distance arrays, alone (one row per series)
    w_ed = with_event_distance_arrays(base_wide, f, axis)
    ed_cols = [c for c in w_ed.columns if c not in base_wide.columns]
    for c in ed_cols:
        add("per series", c, noop_seconds(w_ed.select(c)))
    w_ed = w_ed.localCheckpoint(eager=True)
    event_types = indicator_types(cfg.data.event_types)
    windows = context_windows(w_ed.columns, f, wide.levels, wide.item_levels, event_types, grid)
    exploded = explode_origins(w_ed, rules, f, windows, origin_index(f, grid))
    t1 = time.perf_counter()
    df = exploded.localCheckpoint(eager=True)
    add("explode", "(every origin's windows cut)", time.perf_counter() - t1)
    n = df.count()
    print(f"{n} example rows", flush=True)

    H = f.history
    steps: list[tuple[str, Callable]] = [
        ("history", lambda d: with_history(d, f, grid)),
        (
            "weekdays",
            lambda d: d.withColumn(
                "hist_dow",
                F.expr(f"transform(sequence(o - {H - 1}, o), d -> {_weekday('d', axis)})"),
            ),
        ),
        ("future", lambda d: with_future(d, f, axis, event_types)),
        ("scalars", lambda d: with_scalars(d, f)),
        ("neighbours", lambda d: with_neighbours(d, f)),
        ("aggregates", lambda d: with_aggregates(d, f, wide.levels, wide.item_levels)),
    ]
    collapse = "spark.sql.optimizer.excludedRules"
    rule = "org.apache.spark.sql.catalyst.optimizer.CollapseProject"
    total = 0.0
    only = {s for s in args.steps.split(",") if s}
    for step, fn in steps:
        new = fn(df)
        added = [c for c in new.columns if c not in df.columns]
        if only and step not in only:  # built (the next steps read it), not timed
            df = new.localCheckpoint(eager=True)
            continue
        add(step, "(read the input)", noop_seconds(df.select("o")))
        spark.conf.set(collapse, rule)
        for c in added:
            secs = min(noop_seconds(new.select(c)) for _ in range(args.repeats))
            add(step, c, secs)
        spark.conf.unset(collapse)
        secs = noop_seconds(new.select(*added))
        add(step, "(all of the step)", secs)
        total += secs
        df = new.localCheckpoint(eager=True)
    add("all steps", "(sum of the step rows)", total)
    print(table(rows, f"Window stage by expression ({n:,} example rows, {n_series:,} series)"))
    record = {
        "env": args.env,
        "steps": sorted(only) or [s for s, _ in steps],
        "overrides": args.overrides,
        "series": n_series,
        "examples": n,
        "prepare_seconds": prepare_s,
        "rows": rows,
    }
    print(f"written to {write_results(args.name, record)}")
    prep.release()
    spark.stop()


if __name__ == "__main__":
    main()
