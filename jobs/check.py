"""Check job: profile a dataset as the feature job would read it, writing nothing.

    python jobs/check.py --env local,rossmann [--run-date 2015-06-19] [--json profile.json]
    ./spark-submit.sh check --env cluster,mydata

The first command to run on a new dataset.  Reads and validates the inputs with the feature
job's code (every rule counted, none failing), and prints rows, series, stores, items, the
date span, the detected frequency against data.frequency, gaps, zero and null targets, the
hierarchy, the events per type and the stores and series they reach, the static and optional
columns found, the rows each validation rule would quarantine, the windows each split would
get, and the problems the feature job would fail on.  No table, file, quarantine row, run
manifest row, MLflow run or Spark event log is written (only --json PATH, when given).
Exit code 0 when the feature job would accept the data, 1 on a data problem (listed), 2 on
a configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from sales_st.data.profile import profile_inputs
from sales_st.errors import DataError
from sales_st.runtime import jobs as cli
from sales_st.storage.catalog import RunRecord

# A dry run leaves no trace: no MLflow run, no Spark event log.  Put before the command
# line's own overrides, which may turn them back on.
QUIET = ["tracking.enabled=false", 'spark.conf={"spark.eventLog.enabled": "false"}']


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", help="also write the profile as JSON to PATH")
    parse_args = p.parse_args

    def parse_quietly(args: Any = None, namespace: Any = None) -> argparse.Namespace:
        ns = parse_args(args, namespace)
        ns.overrides = [*QUIET, *ns.overrides]
        return ns

    p.parse_args = parse_quietly  # type: ignore[method-assign]


def body(spark: SparkSession, job: cli.JobArgs, run: RunRecord) -> None:
    profile = profile_inputs(spark, job.cfg, job.run_date)
    sys.stdout.write(profile.render())
    sys.stdout.flush()
    if job.args.json:
        Path(job.args.json).write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
    if profile.problems:
        raise DataError(
            f"{len(profile.problems)} problem(s) the feature job would fail on (listed above)"
        )


def main(argv: list[str] | None = None) -> int:
    return cli.run_job("check", __doc__.splitlines()[0], body, argv, arguments, record=False)


if __name__ == "__main__":
    sys.exit(main())
