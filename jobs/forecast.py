"""Forecast job: score the run date's windows and write them to the forecasts table.

    python jobs/forecast.py --env local [--run-date 2023-12-31] [forecast.model=latest]
    ./spark-submit.sh forecast --env cluster --run-date 2023-12-31

Replaces exactly the run date's partition of <database>.forecasts (a killed run leaves the
previous partition readable) and appends a row to <database>.run_manifest.
"""

from __future__ import annotations

import sys

from sales_st.runtime import jobs as cli
from sales_st.serving.job import run_forecast


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        "forecast",
        __doc__.splitlines()[0],
        lambda spark, job, run: run_forecast(spark, job.cfg, job.run_date).summary,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
