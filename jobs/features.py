"""Feature job: validate inputs, build time windows and region features, write examples.

    python jobs/features.py --env local [--run-date 2023-12-31] [key=value ...]
    ./spark-submit.sh features --env cluster --run-date 2023-12-31

Writes <features>/examples/split={train,val,test,score}, <features>/neighbours,
<features>/feature_spec.json, quarantined rows to the `quarantine` table and a row to the
`run_manifest` table.  Exit code 0 on success, 1 on a data error (message says which rule),
2 on a configuration error.
"""

from __future__ import annotations

import logging
import sys

from sales_st import cli
from sales_st.features import run_features
from sales_st.schema import ContractError
from sales_st.spark import get_spark
from sales_st.validation import ValidationError
from sales_st.warehouse import recorded_run

log = logging.getLogger("sales_st.jobs.features")


def main(argv: list[str] | None = None) -> int:
    job = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    spark = get_spark(job.cfg, "sales_st.features")
    try:
        with recorded_run(spark, job.cfg.database, "features", job.run_date) as rec:
            run_features(spark, job.cfg, job.run_date, rec)
    except (ValidationError, ContractError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
