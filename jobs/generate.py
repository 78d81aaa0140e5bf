"""Generate synthetic contract tables with Spark (parallel on executors, deterministic by seed).

python jobs/generate.py --env local data.generator.preset=demo
./spark-submit.sh generate --env cluster data.generator.preset=bench
"""

from __future__ import annotations

import logging
import sys
import time

from pyspark.sql import SparkSession

from sales_st.data.synthetic import expected_rows, write_generated
from sales_st.runtime import jobs as cli
from sales_st.storage.catalog import RunRecord, RunSummary

log = logging.getLogger("sales_st.jobs.generate")


def body(spark: SparkSession, job: cli.JobArgs, run: RunRecord) -> RunSummary:
    cfg = job.cfg
    t0 = time.perf_counter()
    counts = write_generated(spark, cfg.data.generator, cfg.path("inputs"))
    secs = time.perf_counter() - t0
    log.info(
        "generated %d sales rows (<= %d planned) in %.1fs: %.0f rows/s on %d task slots",
        counts["sales"],
        expected_rows(cfg.data.generator),
        secs,
        counts["sales"] / secs,
        spark.sparkContext.defaultParallelism,
    )
    return RunSummary(rows_out=counts["sales"], details=counts)


def main(argv: list[str] | None = None) -> int:
    return cli.run_job("generate", __doc__.splitlines()[0], body, argv)


if __name__ == "__main__":
    sys.exit(main())
