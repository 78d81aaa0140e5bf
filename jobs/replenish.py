"""Replenishment job: order-up-to levels and orders from the forecasts' lead-time quantiles.

    python jobs/replenish.py --env local [--run-date 2023-12-31] [replenish.service_level=0.99]
    ./spark-submit.sh replenish --env cluster --run-date 2023-12-31

Reads the run date's forecasts (default: the latest) and the inventory positions
(data.inventory; generated data has one), quarantines bad inventory rows, and replaces the run
date's partition of <database>.replenishment: per store and item the protection interval,
demand p50 and the service-level quantile over it, the order-up-to level, on hand, on order,
the recommended order and the stock-out risk.
"""

from __future__ import annotations

import sys

from sales_st.decisions.job import run_replenish
from sales_st.runtime import jobs as cli


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        "replenish",
        __doc__.splitlines()[0],
        lambda spark, job, run: run_replenish(spark, job.cfg, job.run_date, run.run_id).summary,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
