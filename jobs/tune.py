"""Hyper-parameter search job: Optuna (TPE) over tune.space, each trial a Horovod training.

    python jobs/tune.py --env local [tune.trials=20]
    python jobs/tune.py --env local 'tune.space={model.dropout: {low: 0.0, high: 0.3}}'
    ./spark-submit.sh tune --env cluster tune.storage=/srv/sales_st/tune/study.db

Needs the features (jobs/features.py).  The study is kept in a SQLite file (tune.storage,
default <runs>/tune/study.db): re-running a killed search keeps its finished trials, runs the
trial it was killed in again and then only the missing ones.  The best parameters are
written to conf/tuned.yaml (tune.overlay): commit it and train with --env local,tuned.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from sales_st.runtime import jobs as cli
from sales_st.storage.catalog import RunRecord, RunSummary
from sales_st.training.tune import run_tuning


def body(spark: SparkSession, job: cli.JobArgs, run: RunRecord) -> RunSummary:
    return run_tuning(spark, job.cfg).summary


def main(argv: list[str] | None = None) -> int:
    return cli.run_job("tune", __doc__.splitlines()[0], body, argv)


if __name__ == "__main__":
    sys.exit(main())
