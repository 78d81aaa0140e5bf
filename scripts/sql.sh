#!/usr/bin/env bash
# Run SQL against the project's catalog (spark-sql over the same warehouse and metastore).
#   scripts/sql.sh "SELECT * FROM sales_st.forecasts LIMIT 10"
#   scripts/sql.sh --env local,rossmann "SELECT * FROM sales_st.metrics WHERE level = 'overall'"
#   scripts/sql.sh "SELECT ..." paths.data_dir=/other/data      (config overrides after the SQL)
# The embedded Derby metastore admits one process at a time: run it when no job is running,
# or query through the Thrift server (scripts/thrift-server.sh) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_arg=local
if [ "${1:-}" = "--env" ]; then env_arg=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [--env ENV] \"SQL\" [key=value ...]" >&2; exit 2; }
sql=$1; shift
scripts/setup.sh
SPARK_HOME=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
# Captured first: a config error (one line on stderr, exit 2) stops here, before anything starts.
out=$(.venv/bin/python -m sales_st.runtime.submit --env "$env_arg" "$@") || exit $?
mapfile -t submit <<<"$out"
[ "${submit[0]:-}" = "--master" ] && [ ${#submit[@]} -ge 2 ] \
  || { echo "sql.sh: no spark-submit arguments from sales_st.runtime.submit" >&2; exit 2; }
submit[1]="local[*]"
# a local driver listens on loopback only (unless the caller chose an address)
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
# The catalog is the configured one (absolute warehouse and metastore paths, derby.system.home
# in the data dir); run from a git-ignored scratch directory so that nothing Hive or Derby might
# create relative to the working directory ever lands in the repository root.
work="$root/data/run/sql"
mkdir -p "$work"
cd "$work"
exec "$root/.venv/bin/spark-sql" "${submit[@]}" --conf spark.ui.enabled=false -S -e "$sql"
