"""Training job: Horovod on Spark, fed from the example Parquet by Petastorm.

    python jobs/train.py --env local [--mode pretrain]
    python jobs/train.py --env local --mode finetune --from pretrained \
        train.finetune.freeze='[temporal]'
    ./spark-submit.sh train --env cluster

Writes a versioned model directory under <models>/ and moves the aliases (latest,
pretrained / finetuned; temporal_only for the ablation twin).  Re-running a failed run
resumes after its last checkpoint; re-running a finished one is a no-op (--force trains
it again from the first epoch, its checkpoints discarded).
"""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import SparkSession

from sales_st.runtime import jobs as cli
from sales_st.storage.catalog import RunRecord, RunSummary
from sales_st.training.driver import run_pretraining, run_training


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument(
        "--from",
        dest="parent",
        default=None,
        help="model id or alias to fine-tune, or the directory of a model in another store "
        "(with train.finetune.transfer=other_data: a model trained on other data)",
    )
    p.add_argument("--force", action="store_true", help="train even if this model exists")


def body(spark: SparkSession, job: cli.JobArgs, run: RunRecord) -> RunSummary:
    a = job.args
    if a.mode == "pretrain":
        return run_pretraining(spark, job.cfg, a.force)[0].summary
    return run_training(spark, job.cfg, "finetune", a.parent, a.force).summary


def main(argv: list[str] | None = None) -> int:
    return cli.run_job("train", __doc__.splitlines()[0], body, argv, arguments)


if __name__ == "__main__":
    sys.exit(main())
