"""Forecast job: score the run date's windows and write them to the forecasts table.

    python jobs/forecast.py --env local [--run-date 2023-12-31] [forecast.model=latest]
    ./spark-submit.sh forecast --env cluster --run-date 2023-12-31

Replaces exactly the run date's partition of <database>.forecasts (a killed run leaves the
previous partition readable) and appends a row to <database>.run_manifest.
"""

from __future__ import annotations

import logging
import sys

from sales_st import cli
from sales_st.forecast import run_forecast
from sales_st.schema import ContractError
from sales_st.spark import get_spark
from sales_st.validation import ValidationError
from sales_st.warehouse import recorded_run

log = logging.getLogger("sales_st.jobs.forecast")


def main(argv: list[str] | None = None) -> int:
    job = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    spark = get_spark(job.cfg, "sales_st.forecast")
    try:
        with recorded_run(spark, job.cfg.database, "forecast", job.run_date) as rec:
            run_forecast(spark, job.cfg, job.run_date, rec)
    except (ValidationError, ContractError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
