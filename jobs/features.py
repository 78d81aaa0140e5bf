"""Feature job: validate inputs, build time windows and region features, write examples.

    python jobs/features.py --env local [--run-date 2023-12-31] [key=value ...]
    ./spark-submit.sh features --env cluster --run-date 2023-12-31

Writes <features>/examples/split={train,val,test,score}, <features>/neighbours,
<features>/feature_spec.json, quarantined rows to the `quarantine` table and a row to the
`run_manifest` table.  Exit code 0 on success, 1 on a data error (the message names the rule),
2 on a configuration error.
"""

from __future__ import annotations

import sys

from sales_st.features.job import run_features
from sales_st.runtime import jobs as cli


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        "features",
        __doc__.splitlines()[0],
        lambda spark, job, run: run_features(spark, job.cfg, job.run_date, run.run_id).summary,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
