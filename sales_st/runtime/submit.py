"""Arguments for spark-submit derived from the configuration (used by ./spark-submit.sh).

    python -m sales_st.runtime.submit --env cluster      # prints one argument per line

Prints ``--master`` (``SPARK_MASTER`` from the environment wins over ``spark.master``) and a
``--conf key=value`` pair for every Spark property of the config, so that the driver, the
executors and the catalog see the same settings as a job started with ``python jobs/x.py``.

On a config error it prints nothing to stdout, one line to stderr and exits 2 (the wrapper
scripts capture the output first and stop there).
"""

from __future__ import annotations

import argparse
import os
import sys

from sales_st.config import ConfigError, load_config
from sales_st.runtime.jobs import DEFAULT_CONF
from sales_st.runtime.session import spark_properties


def submit_args(conf: str, env: str, overrides: list[str]) -> list[str]:
    cfg = load_config(conf, env, overrides)
    master = os.environ.get("SPARK_MASTER") or cfg.spark.master
    args = ["--master", master, "--name", cfg.spark.app_name]
    for key, value in spark_properties(cfg).items():
        args += ["--conf", f"{key}={value}"]
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--conf", default=DEFAULT_CONF)
    p.add_argument("--env", default="local")
    p.add_argument("overrides", nargs="*")
    a, _ = p.parse_known_args(argv)
    try:
        args = submit_args(a.conf, a.env, [o for o in a.overrides if "=" in o])
    except ConfigError as exc:
        # one line (a YAML error spans several), exit 2: the wrappers capture stdout and stop
        print("config error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    print("\n".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
