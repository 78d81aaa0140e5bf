"""Evaluation job: backtest the models and baselines on the test windows; metrics and report.

    python jobs/evaluate.py --env local
    python jobs/evaluate.py --env local,rossmann
    ./spark-submit.sh evaluate --env cluster

Writes the run date's partition of <database>.metrics, <reports>/<run date>/predictions and
<reports>/<run date>/report.html.
"""

from __future__ import annotations

import logging
import sys

from sales_st import cli
from sales_st.evaluate import run_evaluate
from sales_st.spark import get_spark
from sales_st.warehouse import recorded_run

log = logging.getLogger("sales_st.jobs.evaluate")


def main(argv: list[str] | None = None) -> int:
    job = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    spark = get_spark(job.cfg, "sales_st.evaluate")
    try:
        with recorded_run(spark, job.cfg.database, "evaluate", job.run_date) as rec:
            run_evaluate(spark, job.cfg, job.run_date, rec)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
