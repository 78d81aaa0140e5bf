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
import sys
import tempfile
import time

from common import config, session, table, write_results

from sales_st.data.synthetic import write_generated
from sales_st.features.job import run_features
from sales_st.training.driver import run_training


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    p.add_argument(
        "--petastorm-variant",
        action="append",
        default=[],
        help="name=key=value,...: another Petastorm row with these train settings",
    )
    p.add_argument("--name", default="", help="also write bench/results/<name>.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = [
            "train.ablation=false",
            f"train.epochs={args.epochs}",
            f"train.max_steps_per_epoch={args.steps}",
            f"train.batch_size={args.batch}",
            "train.patience=100",
        ]
        base = config(tmp, *settings)
        spark = session(base, "bench.training")
        write_generated(spark, base.data.generator, base.path("inputs"))
        run_features(spark, base, None)
        rows = []
        variants = [("petastorm", base), ("memory", base)]
        for text in args.petastorm_variant:  # name=key=value,...: the config's own overrides
            label, _, rest = text.partition("=")
            variants.append((label, config(tmp, *settings, *filter(None, rest.split(",")))))
        for ranks in map(int, args.ranks.split(",")):
            for label, variant in variants:
                mode = "memory" if label == "memory" else "petastorm"
                cfg = dataclasses.replace(
                    variant,
                    train=dataclasses.replace(variant.train, ranks=ranks, input=mode),
                    paths=dataclasses.replace(base.paths, models=f"models/{label}-{ranks}"),
                )
                t0 = time.perf_counter()
                out = run_training(spark, cfg, "pretrain", force=True)
                job_s = time.perf_counter() - t0
                res = out.results
                epoch_s = statistics.median(
                    statistics.median(r["epoch_seconds"][1:] or r["epoch_seconds"]) for r in res
                )
                steps, batch = res[0]["steps_per_epoch"], res[0]["batch_size"]
                rows.append(
                    {
                        "input": label,
                        "ranks": ranks,
                        "device": res[0]["device"],
                        "steps/epoch": steps,
                        "samples/s": steps * batch * ranks / epoch_s,
                        "peak RSS MB/rank": max(r["peak_rss_mb"] for r in res),
                        # the first epoch traces the train and test steps: a fixed cost
                        "first epoch s": statistics.median(r["epoch_seconds"][0] for r in res),
                        "training job s": job_s,
                    }
                )
        ref = {r["ranks"]: r["samples/s"] for r in rows if r["input"] == "memory"}
        one = {r["input"]: r["samples/s"] for r in rows if r["ranks"] == 1}
        for r in rows:
            r["vs memory"] = r["samples/s"] / ref[r["ranks"]]
            if one:
                r["vs 1 rank"] = r["samples/s"] / one[r["input"]]
        print(
            table(
                rows,
                f"Training throughput (demo panel, batch {args.batch}, "
                f"{spark.sparkContext.defaultParallelism} CPU cores)",
            )
        )
        spark.stop()
        if args.name:
            write_results(args.name, {"command": " ".join(sys.argv[1:]), "rows": rows})


if __name__ == "__main__":
    main()
