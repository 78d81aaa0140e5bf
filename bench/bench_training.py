"""Training throughput: Petastorm input vs in-memory tensors, 1 vs 2 Horovod ranks.

    .venv/bin/python bench/bench_training.py [--steps 60] [--epochs 3]

On the demo panel's training split, the same model and batch size are trained through
horovod.spark.run four ways.  samples/s = steps x batch x ranks / median epoch time
(first epoch excluded: graph tracing).  Peak RSS is each rank's own maximum resident set
(getrusage).  On a machine with GPUs the ranks pin one GPU each; rows then say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

from common import config, session, table

from sales_st.data.synthetic import write_generated
from sales_st.features.job import run_features
from sales_st.training.driver import run_training


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = config(
            tmp,
            "train.ablation=false",
            f"train.epochs={args.epochs}",
            f"train.max_steps_per_epoch={args.steps}",
            f"train.batch_size={args.batch}",
            "train.patience=100",
        )
        spark = session(base, "bench.training")
        write_generated(spark, base.data.generator, base.path("inputs"))
        run_features(spark, base, None)
        rows = []
        for ranks in (1, 2):
            for mode in ("petastorm", "memory"):
                cfg = dataclasses.replace(
                    base,
                    train=dataclasses.replace(base.train, ranks=ranks, input=mode),
                    paths=dataclasses.replace(base.paths, models=f"models/{mode}-{ranks}"),
                )
                out = run_training(spark, cfg, "pretrain", force=True)
                res = out.results
                epoch_s = statistics.median(
                    statistics.median(r["epoch_seconds"][1:] or r["epoch_seconds"]) for r in res
                )
                steps, batch = res[0]["steps_per_epoch"], res[0]["batch_size"]
                rows.append(
                    {
                        "input": mode,
                        "ranks": ranks,
                        "device": res[0]["device"],
                        "steps/epoch": steps,
                        "samples/s": steps * batch * ranks / epoch_s,
                        "peak RSS MB/rank": max(r["peak_rss_mb"] for r in res),
                    }
                )
        ref = {r["ranks"]: r["samples/s"] for r in rows if r["input"] == "memory"}
        one = {r["input"]: r["samples/s"] for r in rows if r["ranks"] == 1}
        for r in rows:
            r["vs memory"] = r["samples/s"] / ref[r["ranks"]]
            r["vs 1 rank"] = r["samples/s"] / one[r["input"]]
        print(
            table(
                rows,
                f"Training throughput (demo panel, batch {args.batch}, "
                f"{spark.sparkContext.defaultParallelism} CPU cores)",
            )
        )
        spark.stop()


if __name__ == "__main__":
    main()
