"""Evaluation job: backtest the models and baselines on the test windows; metrics and report.

    python jobs/evaluate.py --env local
    python jobs/evaluate.py --env local,rossmann
    ./spark-submit.sh evaluate --env cluster

Writes the run date's partition of <database>.metrics, <reports>/<run date>/predictions and
<reports>/<run date>/report.html.
"""

from __future__ import annotations

import sys

from sales_st.evaluation.job import run_evaluate
from sales_st.runtime import jobs as cli


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        "evaluate",
        __doc__.splitlines()[0],
        lambda spark, job, run: run_evaluate(spark, job.cfg, job.run_date).summary,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
