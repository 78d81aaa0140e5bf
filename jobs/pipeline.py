"""The main job: generate or read inputs -> features -> train -> forecast -> evaluate.

    python jobs/pipeline.py                          # embedded default: demo data, local Spark
    python jobs/pipeline.py --env local,rossmann     # the Rossmann data in ../shared/data
    python jobs/pipeline.py --stages forecast --run-date 2023-12-31
    ./spark-submit.sh pipeline --env cluster

--run-date D means "history is complete through D": features use data up to D (plus
known-future plans after it), the forecast covers D+1 .. D+horizon, and re-running the same
D replaces that run date's forecasts.  Without it, D is the last day with an observed
target.  Stages whose inputs and config did not change since the last successful run are
skipped (--force runs them all).  Exit codes: 0 ok, 1 data/model error, 2 config error.
"""

from __future__ import annotations

import logging
import sys

from pyspark.sql import SparkSession

from sales_st.runtime import jobs as cli
from sales_st.runtime.pipeline import STAGES, Pipeline, summary
from sales_st.storage.catalog import RunRecord


def arguments(p) -> None:
    p.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    p.add_argument("--force", action="store_true", help="run stages even if unchanged")


def body(spark: SparkSession, job: cli.JobArgs, run: RunRecord) -> None:
    pipe = Pipeline(spark, job.cfg, job.run_date, job.args.force)
    pipe.run([s for s in job.args.stages.split(",") if s])
    print(summary(job.cfg, pipe), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    arguments(p)
    unknown = sorted(set(p.parse_args(argv).stages.split(",")) - set(STAGES) - {""})
    if unknown:
        cli.setup_logging()
        logging.getLogger("sales_st.jobs.pipeline").error(
            "unknown stage(s) %s; stages are %s", unknown, ", ".join(STAGES)
        )
        return 2
    # every stage records itself in the run manifest; the pipeline adds no row of its own
    return cli.run_job("pipeline", __doc__.splitlines()[0], body, argv, arguments, record=False)


if __name__ == "__main__":
    sys.exit(main())
