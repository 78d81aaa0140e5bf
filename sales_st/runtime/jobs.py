"""The job runner: the command line every job shares (``--conf``, ``--env``, ``--run-date``,
``key=value`` overrides) and :func:`run_job`, which wires a job's body to a Spark session,
the run manifest and the exit codes.  Only ``jobs/`` call into this module."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from sales_st.config import Config, load_config
from sales_st.errors import ConfigError, DataError
from sales_st.runtime import tracking
from sales_st.storage.catalog import RunRecord, RunSummary, recorded_run

# sales_st/runtime/jobs.py -> the checkout's root
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_conf_dir() -> str:
    """$SALES_ST_CONF, else the checkout's conf/, else ./conf, else the working directory when
    the YAML files were shipped there (spark-submit --files)."""
    candidates = [
        os.environ.get("SALES_ST_CONF", ""),
        os.path.join(REPO_ROOT, "conf"),
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
    p.add_argument(
        "--conf",
        default=os.environ.get("SALES_ST_CONF", DEFAULT_CONF),
        help="configuration directory holding base.yaml and overlays",
    )
    p.add_argument(
        "--env",
        default=os.environ.get("SALES_ST_ENV", "local"),
        help="overlay(s) applied over base.yaml, comma separated (local, cluster, rossmann)",
    )
    p.add_argument(
        "--run-date",
        type=dt.date.fromisoformat,
        default=None,
        help="forecast origin: the last day of history (YYYY-MM-DD); "
        "default: the last day with observed sales",
    )
    p.add_argument("--log-level", default=os.environ.get("SALES_ST_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--verbose",
        action="store_true",
        help="everything the libraries log (Spark's default log4j2 setup, Spark INFO)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2"
    )
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None) -> JobArgs:
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    overrides = list(args.overrides)
    if args.verbose:
        overrides += ["spark.log_config=", "spark.log_level=INFO"]
    try:
        cfg = load_config(args.conf, args.env, overrides)
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


# Exit codes: what the person who ran the job must do.
EXIT_OK, EXIT_DATA, EXIT_CONFIG, EXIT_BUG = 0, 1, 2, 3

Body = Callable[[SparkSession, JobArgs, RunRecord], RunSummary | None]


def run_job(
    name: str,
    description: str,
    body: Body,
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    record: bool = True,
) -> int:
    """Parse arguments, start Spark, run ``body(spark, job, run_record)``, stop Spark.

    The body returns what the run manifest should say about the run (or None).  Exit codes:
    0 success; 1 a data error (:class:`DataError`: bad or missing input, one clear line);
    2 a configuration error; 3 anything else -- a bug, logged with its traceback.
    With ``record`` the run is appended to the run-manifest table, failed or not.  The job
    is an MLflow run (``tracking``), its stages' and models' runs nested under it.
    """
    from sales_st.runtime.session import get_spark

    p = parser(description)
    if add_arguments:
        add_arguments(p)
    job = parse(p, argv)
    log = logging.getLogger(f"sales_st.jobs.{name}")
    spark = None
    try:
        spark = get_spark(job.cfg, f"sales_st.{name}")
        with tracking.tracked_job(job.cfg, name, job.run_date) as tracked:
            if record:
                with recorded_run(spark, job.cfg.database, name, job.run_date) as rec:
                    summary = body(spark, job, rec)
                    if summary is not None:
                        rec.update(summary)
                tracking.log_record(tracked, rec)
            else:
                body(spark, job, RunRecord(job=name, run_date=job.run_date))
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except DataError as exc:
        log.error("%s", exc)
        return EXIT_DATA
    except Exception:
        log.exception(
            "%s failed with an unexpected error (a bug: please report it with this traceback)", name
        )
        return EXIT_BUG
    finally:
        if spark is not None:
            spark.stop()
    return EXIT_OK
