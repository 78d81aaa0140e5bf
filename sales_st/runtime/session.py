"""The one SparkSession factory.  Call it only from ``jobs/`` (and test fixtures).

Locally it starts ``local[*]`` with Hive support, a warehouse directory and an embedded
Derby metastore under the git-ignored data directory, so that the tables one job writes are
visible to the next job, to ``spark-sql`` and to the Thrift server started over the same
directories.  On a cluster, ``conf/cluster.yaml`` points the warehouse and metastore at
shared storage (or a metastore service) and the master comes from ``spark-submit``.
"""

from __future__ import annotations

import logging
import os
import sys
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from sales_st.config import Config
from sales_st.runtime.metastore import hold_embedded_lock

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def metastore_properties(cfg: Config) -> dict[str, str]:
    """A metastore service when one is configured, else the embedded Derby database."""
    if cfg.spark.metastore_uri:
        return {"spark.hadoop.hive.metastore.uris": cfg.spark.metastore_uri}
    return {
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={cfg.path('metastore')};create=true"
        )
    }


def _log_config(cfg: Config) -> list[str]:
    if not cfg.spark.log_config:
        return []
    path = os.path.join(cfg.root, cfg.spark.log_config) if cfg.root else cfg.spark.log_config
    return (
        [f"-Dlog4j2.configurationFile=file:{os.path.abspath(path)}"] if os.path.isfile(path) else []
    )


def _make_local_dir(path: str) -> None:
    """Create ``path`` when it is a local directory (a plain path or a file: URI); shared
    storage (hdfs://, s3a://) is left to whoever provisions it."""
    if path.startswith("file:"):
        path = urlparse(path).path
    if path and ":" not in path.split("/", 1)[0]:
        os.makedirs(path, exist_ok=True)


def spark_properties(cfg: Config) -> dict[str, str]:
    """All Spark properties the project sets, as plain strings (also used by spark-submit.sh
    and the Thrift-server launcher so that every process sees the same catalog).

    Event logs are on (in ``paths.spark_events``, created when local), so that a finished
    job can be looked at in the history server as if its web UI were still up."""
    props = {
        "spark.sql.warehouse.dir": cfg.path("warehouse"),
        "spark.sql.catalogImplementation": "hive",
        **metastore_properties(cfg),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        # a progress bar for people at a terminal, not in log files
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
        # every application's event log, for the history server (scripts/history-server.sh)
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": cfg.path("spark_events"),
        "spark.eventLog.compress": "true",
        # The feature job's plans are wide (hundreds of array columns): their text, logged
        # with every query and adaptive re-plan, would take the driver's heap (the event-log
        # listener's OutOfMemoryError); cap it, and keep fewer finished queries in memory.
        "spark.sql.maxPlanStringLength": "65536",
        "spark.sql.ui.retainedExecutions": "100",
        "spark.driver.extraJavaOptions": " ".join(
            [f"-Dderby.system.home={cfg.data_dir}", *_log_config(cfg)]
        ),
    }
    props.update(cfg.spark.conf)
    if props["spark.eventLog.enabled"].lower() == "true" and props.get("spark.eventLog.dir"):
        # Spark refuses to start when the event-log directory does not exist
        _make_local_dir(props["spark.eventLog.dir"])
    return props


def get_spark(cfg: Config, app_name: str | None = None) -> SparkSession:
    """Return the session for this process, creating it from ``cfg`` if needed.

    When launched by ``spark-submit`` the master given there wins over ``spark.master``.
    """
    if "://" not in cfg.data_dir:
        os.makedirs(cfg.data_dir, exist_ok=True)
    hold_embedded_lock(cfg)  # fail fast, in one line, when another job holds the metastore
    builder = SparkSession.builder.appName(app_name or cfg.spark.app_name)
    props = spark_properties(cfg)
    # Under spark-submit the JVM (which started this Python, handing it the gateway port)
    # already carries --master; only a plain `python jobs/x.py` takes it from config.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.spark.master)
        # Python workers (UDFs, Horovod tasks) must run this interpreter -- the project's
        # venv -- not whatever `python3` is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if cfg.spark.master.startswith("local"):
            # An embedded run serves nobody else: the driver, the block manager and the web
            # UI listen on loopback only.  The UI binds to SPARK_LOCAL_IP, else to every
            # interface, and the JVM reads it once at start (an address already set in the
            # environment wins); the driver's properties yield to any the config sets.
            os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
            for key in ("spark.driver.host", "spark.driver.bindAddress"):
                props.setdefault(key, LOOPBACK)
    for key, value in props.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")
    except Exception:
        # another job (on a shared metastore) created it in the same instant
        if not spark.catalog.databaseExists(cfg.database):
            raise
    log.info(
        "Spark %s master=%s warehouse=%s",
        spark.version,
        spark.sparkContext.master,
        spark.conf.get("spark.sql.warehouse.dir"),
    )
    return spark
