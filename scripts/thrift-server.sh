#!/usr/bin/env bash
# Start/stop the Spark Thrift server (JDBC/ODBC, HiveServer2 protocol) over the project's
# warehouse and metastore, listening on 127.0.0.1.
#   scripts/thrift-server.sh start [--env ENV] [--port 10000] [key=value ...]
#   .venv/bin/beeline -u jdbc:hive2://127.0.0.1:10000 -e "SELECT count(*) FROM sales_st.forecasts"
#   scripts/thrift-server.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cmd=${1:-}; shift || true
env_arg=local; port=10000; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env_arg=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
run_dir="$root/data/run"; log_dir="$root/data/logs"; mkdir -p "$run_dir" "$log_dir"
pidfile="$run_dir/thrift-$port.pid"
log="$log_dir/thrift-$port.log"
case "$cmd" in
  start)
    scripts/setup.sh
    SPARK_HOME=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    export SPARK_HOME
    # Captured first: a config error (one line on stderr, exit 2) stops here, before anything
    # starts.
    out=$(.venv/bin/python -m sales_st.runtime.submit --env "$env_arg" \
      "${overrides[@]+"${overrides[@]}"}") || exit $?
    mapfile -t submit <<<"$out"
    [ "${submit[0]:-}" = "--master" ] && [ ${#submit[@]} -ge 2 ] \
      || { echo "thrift-server.sh: no arguments from sales_st.runtime.submit" >&2; exit 2; }
    # the server runs its own local[*] Spark; only the catalog settings matter here
    submit[1]="local[*]"
    # its driver listens on loopback only, like the JDBC port (unless the caller chose one)
    export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
    # The catalog is the configured one (absolute warehouse and metastore paths,
    # derby.system.home in the data dir); the server runs from a git-ignored scratch directory
    # so that nothing Hive or Derby might create relative to it lands in the repository root.
    work="$run_dir/thrift"
    mkdir -p "$work"
    (cd "$work" && exec nohup "$root/.venv/bin/spark-submit" "${submit[@]}" \
      --conf spark.ui.enabled=false \
      --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2 spark-internal \
      --hiveconf hive.server2.thrift.bind.host=127.0.0.1 \
      --hiveconf hive.server2.thrift.port="$port" > "$log" 2>&1) &
    echo $! > "$pidfile"
    for _ in $(seq 1 120); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "thrift server on 127.0.0.1:$port (pid $(cat "$pidfile"), log data/logs/thrift-$port.log)"
        exit 0
      fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$log" >&2; exit 1; }
      sleep 1
    done
    echo "thrift server did not open port $port in 120 s; see data/logs/thrift-$port.log" >&2
    exit 1 ;;
  stop)
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile" ;;
  *) echo "usage: $0 start|stop [--env ENV] [--port P]" >&2; exit 2 ;;
esac
