"""Generate synthetic contract tables with Spark (parallel on executors, deterministic by seed).

    python jobs/generate.py --env local data.generator.preset=demo
    ./spark-submit.sh generate --env cluster data.generator.preset=bench
"""

from __future__ import annotations

import logging
import time

from sales_st import cli
from sales_st.generate import expected_rows, write_generated
from sales_st.spark import get_spark

log = logging.getLogger("sales_st.jobs.generate")


def main(argv: list[str] | None = None) -> int:
    job = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    cfg = job.cfg
    spark = get_spark(cfg, "sales_st.generate")
    try:
        t0 = time.perf_counter()
        counts = write_generated(spark, cfg.data.generator, cfg.path("inputs"))
        secs = time.perf_counter() - t0
        log.info(
            "generated %d sales rows (<= %d planned) in %.1fs: %.0f rows/s on %d cores",
            counts["sales"], expected_rows(cfg.data.generator), secs, counts["sales"] / secs,
            spark.sparkContext.defaultParallelism,
        )
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
