"""Scenario job: promotion and price what-if with the published model.

    python jobs/scenario.py --env local --plan plan.csv [--scenario-id summer_push]
    python jobs/scenario.py --env local --uplift-check [--run-date 2015-06-19]
    ./spark-submit.sh scenario --env cluster --plan hdfs:///plans/summer_push.csv

--plan FILE: a CSV (with a header) or Parquet table of overrides to known-future inputs:
store_id, item_id (empty: every item of the store), date (one of the forecast days after the
run date) and any of promo (0/1), price (> 0), open (0/1); an empty value keeps the plan.  The
run date's windows of the plan's series are scored as planned and with the overrides, by the
published model (forecast.model), and the (run date, scenario) partition of
<database>.scenarios is replaced: both forecasts' quantiles, the uplift, the days overridden.
A plan with rows that cannot be applied is refused whole, its bad rows listed.

--uplift-check: at a backtest origin (--run-date, default the first test origin) every planned
promotion is turned off; per series, the model's implied uplift is compared with the uplift
in the series' history (the year before) -> <database>.uplift_check.
"""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import SparkSession

from sales_st.decisions.scenario import run_scenario, run_uplift_check
from sales_st.errors import ConfigError
from sales_st.runtime import jobs as cli
from sales_st.storage.catalog import RunRecord, RunSummary


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--plan", help="the plan of overrides (CSV with a header, or Parquet)")
    what.add_argument(
        "--uplift-check",
        action="store_true",
        help="compare the model's promotion uplift with the history's at a backtest origin",
    )
    p.add_argument("--scenario-id", help="name of the scenario (default: the plan file's name)")


def body(spark: SparkSession, job: cli.JobArgs, run: RunRecord) -> RunSummary:
    a = job.args
    if a.uplift_check:
        return run_uplift_check(spark, job.cfg, job.run_date).summary
    if not a.plan:
        raise ConfigError("scenario: give --plan FILE or --uplift-check")
    return run_scenario(spark, job.cfg, a.plan, a.scenario_id, job.run_date).summary


def main(argv: list[str] | None = None) -> int:
    return cli.run_job("scenario", __doc__.splitlines()[0], body, argv, add_arguments=add_arguments)


if __name__ == "__main__":
    sys.exit(main())
