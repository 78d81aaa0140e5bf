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

from sales_st import cli
from sales_st.pipeline import STAGES, Pipeline, summary
from sales_st.schema import ContractError
from sales_st.spark import get_spark
from sales_st.validation import ValidationError

log = logging.getLogger("sales_st.jobs.pipeline")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--force", action="store_true", help="run stages even if unchanged")
    job = cli.parse(p, argv)
    stages = [s for s in job.args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        log.error("unknown stage(s) %s; stages are %s", unknown, ", ".join(STAGES))
        return 2
    spark = get_spark(job.cfg, "sales_st.pipeline")
    try:
        pipe = Pipeline(spark, job.cfg, job.run_date, job.args.force)
        results = pipe.run(stages)
        print(summary(job.cfg, results, pipe.run_date), flush=True)
    except (ValidationError, ContractError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
