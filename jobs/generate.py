"""Generate synthetic contract tables with Spark (parallel on executors, deterministic by seed).

    python jobs/generate.py --env local data.generator.preset=demo
    ./spark-submit.sh generate --env cluster data.generator.preset=bench
"""

from __future__ import annotations

import logging
import sys
import time

from sales_st import cli
from sales_st.generate import expected_rows, write_generated

log = logging.getLogger("sales_st.jobs.generate")


def body(spark, job: cli.JobArgs, rec) -> None:
    cfg = job.cfg
    t0 = time.perf_counter()
    counts = write_generated(spark, cfg.data.generator, cfg.path("inputs"))
    secs = time.perf_counter() - t0
    rec.rows_out = counts["sales"]
    log.info("generated %d sales rows (<= %d planned) in %.1fs: %.0f rows/s on %d task slots",
             counts["sales"], expected_rows(cfg.data.generator), secs, counts["sales"] / secs,
             spark.sparkContext.defaultParallelism)


def main(argv: list[str] | None = None) -> int:
    return cli.run_job("generate", __doc__.splitlines()[0], body, argv)


if __name__ == "__main__":
    sys.exit(main())
