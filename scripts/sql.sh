#!/usr/bin/env bash
# Run SQL against the project's catalog (spark-sql over the same warehouse and metastore).
#   scripts/sql.sh "SELECT * FROM sales_st.forecasts LIMIT 10"
#   scripts/sql.sh --env local,rossmann "SELECT * FROM sales_st.metrics WHERE level = 'overall'"
#   scripts/sql.sh "SELECT ..." paths.data_dir=/other/data      (config overrides after the SQL)
# The embedded Derby metastore admits one process at a time: run it when no job is running,
# or query through the Thrift server (scripts/thrift-server.sh) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
env_arg=local
if [ "${1:-}" = "--env" ]; then env_arg=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [--env ENV] \"SQL\" [key=value ...]" >&2; exit 2; }
sql=$1; shift
scripts/setup.sh
SPARK_HOME=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
mapfile -t submit < <(.venv/bin/python -m sales_st.runtime.submit --env "$env_arg" "$@")
submit[1]="local[*]"
exec .venv/bin/spark-sql "${submit[@]}" --conf spark.ui.enabled=false -S -e "$sql"
