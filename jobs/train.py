"""Training job: Horovod on Spark, fed from the example Parquet by Petastorm.

    python jobs/train.py --env local [--mode pretrain]
    python jobs/train.py --env local --mode finetune --from pretrained train.finetune.freeze='[temporal]'
    ./spark-submit.sh train --env cluster

Writes a versioned model directory under <models>/ and moves the aliases (latest,
pretrained / finetuned).  Re-running a failed run resumes after its last checkpoint;
re-running a finished one is a no-op (use --force to train again).
"""

from __future__ import annotations

import logging
import sys

from sales_st import cli
from sales_st.spark import get_spark
from sales_st.training import run_pretraining, run_training
from sales_st.warehouse import recorded_run

log = logging.getLogger("sales_st.jobs.train")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--from", dest="parent", default=None, help="model id or alias to fine-tune")
    p.add_argument("--force", action="store_true", help="train even if this model exists")
    job = cli.parse(p, argv)
    spark = get_spark(job.cfg, "sales_st.train")
    try:
        with recorded_run(spark, job.cfg.database, "train", job.run_date) as rec:
            if job.args.mode == "pretrain":
                run_pretraining(spark, job.cfg, job.args.force, rec)
            else:
                run_training(spark, job.cfg, "finetune", job.args.parent, job.args.force, rec)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
