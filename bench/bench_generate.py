"""Generator throughput at demo and bench scale, with the evidence that it ran in parallel.

    .venv/bin/python bench/bench_generate.py [--presets demo,bench]

For each preset: rows written, seconds, rows/s, Spark tasks, and the summed task time over
the wall time (the average number of task slots busy: > 1 means executors worked in
parallel; local[*] on this machine has 2).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import PeakMemory, config, session, table, task_time

from sales_st.data.synthetic import write_generated


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", default="demo,bench")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(tmp)
        spark = session(cfg, "bench.generate")
        for preset in args.presets.split(","):
            c = config(tmp, f"data.generator.preset={preset}", f"paths.inputs=inputs/{preset}")
            t_ms = time.time() * 1000
            t0 = time.perf_counter()
            with PeakMemory() as mem:
                counts = write_generated(spark, c.data.generator, c.path("inputs"))
            secs = time.perf_counter() - t0
            tasks, busy = task_time(spark, t_ms)
            rows.append(
                {
                    "preset": preset,
                    "sales rows": counts["sales"],
                    "seconds": secs,
                    "rows/s": counts["sales"] / secs,
                    "tasks": tasks,
                    "task-s / wall-s": busy / secs,
                    "peak RSS GiB": mem.peak_total / 2**30,
                }
            )
        print(
            table(
                rows,
                f"Generator throughput (local[*], {spark.sparkContext.defaultParallelism} cores)",
            )
        )
        spark.stop()


if __name__ == "__main__":
    main()
