"""The job entry-point layer: the command line every job shares (``--conf``, ``--env``,
``--run-date``, ``key=value`` overrides) and :func:`run_job`, which wires a job's body to a
Spark session, the run manifest and the exit codes.  Only ``jobs/`` call into this module."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from sales_st.config import Config, ConfigError, load_config


def default_conf_dir() -> str:
    """$SALES_ST_CONF, else the checkout's conf/, else ./conf, else the working directory when
    the YAML files were shipped there (spark-submit --files)."""
    candidates = [
        os.environ.get("SALES_ST_CONF", ""),
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf"),
        os.path.join(os.getcwd(), "conf"),
        os.getcwd(),
    ]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "base.yaml")):
            return c
    return candidates[1]


DEFAULT_CONF = default_conf_dir()


@dataclass(frozen=True)
class JobArgs:
    cfg: Config
    run_date: dt.date | None
    args: argparse.Namespace


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--conf", default=os.environ.get("SALES_ST_CONF", DEFAULT_CONF),
                   help="configuration directory holding base.yaml and overlays")
    p.add_argument("--env", default=os.environ.get("SALES_ST_ENV", "local"),
                   help="overlay(s) applied over base.yaml, comma separated (local, cluster, rossmann)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=None,
                   help="forecast origin: the last day of history (YYYY-MM-DD); "
                        "default: the last day with observed sales")
    p.add_argument("--log-level", default=os.environ.get("SALES_ST_LOG_LEVEL", "INFO"))
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.epochs=2")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None) -> JobArgs:
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load_config(args.conf, args.env, args.overrides)
    except ConfigError as exc:
        logging.getLogger("sales_st").error("%s", exc)
        sys.exit(2)
    return JobArgs(cfg=cfg, run_date=args.run_date, args=args)


def setup_logging(level: str = "INFO") -> None:
    # TensorFlow's C++ banner in every process (Python workers inherit the environment).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Our loggers at the requested level; libraries (Horovod logs through the root logger,
    # Petastorm, py4j) at WARNING.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("sales_st").setLevel(getattr(logging, level.upper(), logging.INFO))


# Errors a job reports with exit code 1 and one clear line (data, inputs, models, settings
# that only show up against the data); anything else is a bug and keeps its traceback.
def _data_errors() -> tuple[type[BaseException], ...]:
    from sales_st.schema import ContractError
    from sales_st.validation import ValidationError

    return (ValidationError, ContractError, FileNotFoundError, ValueError)


def run_job(name: str, description: str, body: Callable[[Any, JobArgs, Any], Any],
            argv: list[str] | None = None,
            add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
            record: bool = True) -> int:
    """Parse arguments, start Spark, run ``body(spark, job, run_record)``, stop Spark.

    Exit codes: 0 success, 1 data/model error, 2 configuration error (from :func:`parse`).
    With ``record`` the run is appended to the run-manifest table, failed or not.
    """
    from contextlib import nullcontext

    from sales_st.spark import get_spark
    from sales_st.warehouse import recorded_run

    p = parser(description)
    if add_arguments:
        add_arguments(p)
    job = parse(p, argv)
    log = logging.getLogger(f"sales_st.jobs.{name}")
    spark = get_spark(job.cfg, f"sales_st.{name}")
    try:
        ctx = recorded_run(spark, job.cfg.database, name, job.run_date) if record else nullcontext()
        with ctx as rec:
            body(spark, job, rec)
    except _data_errors() as exc:
        log.error("%s", exc)
        return 1
    finally:
        spark.stop()
    return 0
