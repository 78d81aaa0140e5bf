"""The fixed cost of the jobs: a small panel, where what a run costs is planning, not data.

    .venv/bin/python bench/bench_jobs.py [--repeats 3]

On the tests' panel (``TINY`` of tests/conftest.py: 16 series x 300 days) the feature job,
the forecast job and a what-if run (``run_scenario``, a plan that sets one series' planned
values) are each run ``--repeats`` times per mode after a warm-up run, in one Spark session, the
two modes below alternating.
Per job: the median wall time, how much of it was spent inside Spark jobs (from the status
tracker's stage times), and the analyzer/optimizer rule time (Catalyst's own metrics), with
``DeduplicateRelations`` apart -- the rule that re-walks the whole plan at every DataFrame
step.

Reference in the same run: the wide table *persisted* as before commit 0cefae3 (its lineage
kept, so every step of the example tables is analysed over all the inputs again), against
the current code, where it is *checkpointed* (the examples are planned over a scan of it).
Figures: bench/results/jobs.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time

from common import config, session, table, write_results

from sales_st.data.synthetic import write_generated
from sales_st.decisions.scenario import run_scenario
from sales_st.features import assemble
from sales_st.features.job import run_features
from sales_st.serving.job import run_forecast
from sales_st.training.driver import run_training
from tests.conftest import TINY

# the tests' panel (tests/conftest.py), one training epoch: the model only has to exist
PANEL = [
    *TINY,
    "train.epochs=1",
    'spark.conf={"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"}',
]

MODES = {
    "persisted (lineage kept, before)": lambda df: df.persist(),
    "checkpointed (now)": assemble.checkpointed,
}


def rule_seconds(spark) -> tuple[float, float]:
    """(all analyzer/optimizer rules, DeduplicateRelations) seconds since the last reset."""
    text = spark._jvm.org.apache.spark.sql.catalyst.rules.RuleExecutor.dumpTimeSpent()
    total = dedup = 0.0
    for line in text.splitlines():
        parts = line.split()  # rule, effective ns, "/", total ns, effective runs, "/", runs
        if line.startswith("Total time:"):
            total = float(parts[2])
        elif parts and parts[0].endswith(".DeduplicateRelations"):
            dedup = int(parts[3]) / 1e9
    return total, dedup


def in_jobs_seconds(spark, since_ms: float) -> float:
    """Wall seconds covered by the Spark jobs submitted after ``since_ms`` (overlaps merged)."""
    jobs = spark._jsc.sc().statusStore().jobsList(None)
    spans = []
    for i in range(jobs.size()):
        job = jobs.apply(i)
        sub, end = job.submissionTime(), job.completionTime()
        if sub.isDefined() and end.isDefined() and sub.get().getTime() >= since_ms:
            spans.append((sub.get().getTime(), end.get().getTime()))
    total, start, stop = 0.0, None, None
    for s, e in sorted(spans):
        if stop is None or s > stop:
            total += 0 if stop is None else stop - start
            start, stop = s, e
        else:
            stop = max(stop, e)
    total += 0 if stop is None else stop - start
    return total / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(tmp, *PANEL)
        spark = session(cfg, "bench.jobs")
        write_generated(spark, cfg.data.generator, cfg.path("inputs"))
        feats = run_features(spark, cfg, None)
        run_training(spark, cfg, "pretrain")
        rd = feats.run_date
        sales = spark.read.parquet(f"{cfg.path('inputs')}/sales")
        first = sales.where(sales.date == rd + dt.timedelta(days=1)).orderBy("store_id").first()
        assert first is not None
        plan = f"{tmp}/plan.csv"
        days = [rd + dt.timedelta(days=h) for h in range(1, cfg.features.horizon + 1)]
        with open(plan, "w") as f:
            f.write("store_id,item_id,date,promo\n")
            f.writelines(f"{first['store_id']},{first['item_id']},{d},1\n" for d in days)
        jobs = {
            "features": lambda: run_features(spark, cfg, None),
            "forecast": lambda: run_forecast(spark, cfg, None),
            "what-if": lambda: run_scenario(spark, cfg, plan, "bench", rd),
        }
        RE = spark._jvm.org.apache.spark.sql.catalyst.rules.RuleExecutor
        for name, run in jobs.items():
            for keep in MODES.values():  # warm-up: Python workers, JIT, the model cache
                assemble.checkpointed = keep  # what wide_table calls on the finished table
                run()
            runs: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in MODES}
            for _ in range(args.repeats):  # the two modes alternate: neither runs warmer
                for mode, keep in MODES.items():
                    assemble.checkpointed = keep
                    RE.resetMetrics()
                    since = time.time() * 1000
                    t0 = time.perf_counter()
                    run()
                    wall = time.perf_counter() - t0
                    runs[mode].append((wall, in_jobs_seconds(spark, since), *rule_seconds(spark)))
            for mode, got in runs.items():
                row = {
                    "job": name,
                    "wide table": mode,
                    "wall s": statistics.median(r[0] for r in got),
                    "in Spark jobs s": statistics.median(r[1] for r in got),
                    "rules s": statistics.median(r[2] for r in got),
                    "DeduplicateRelations s": statistics.median(r[3] for r in got),
                }
                rows.append(row)
                figures.setdefault(name, {})[mode] = {**row, "walls_s": [r[0] for r in got]}
            print(table(rows[-2:], name), flush=True)
        assemble.checkpointed = MODES["checkpointed (now)"]
        spark.stop()  # before the temporary directory (its event log) goes
    for name in jobs:
        before = figures[name]["persisted (lineage kept, before)"]["wall s"]
        now = figures[name]["checkpointed (now)"]["wall s"]
        figures[name]["speedup"] = before / now
    print(table(rows, f"Jobs on a 16-series panel, median of {args.repeats} runs"))
    print(
        table(
            [{"job": n, "persisted / checkpointed wall": figures[n]["speedup"]} for n in jobs],
            "Ratio in this run",
        )
    )
    out = write_results(
        "jobs",
        {
            "command": f"bench/bench_jobs.py --repeats {args.repeats}",
            "panel": "16 series x 300 days (the tests' tiny panel)",
            "rows": rows,
            "jobs": figures,
        },
    )
    print(f"\nfigures: {out}")


if __name__ == "__main__":
    main()
