#!/usr/bin/env bash
# Start/stop a Hive metastore service (Thrift, on 127.0.0.1) over the project's Derby
# metastore database and warehouse, so that several jobs can use the catalog at once:
#
#   scripts/metastore.sh start [--env ENV] [--port 9083] [key=value ...]
#   .venv/bin/python jobs/forecast.py --run-date 2023-12-24 spark.metastore_uri=thrift://127.0.0.1:9083 &
#   .venv/bin/python jobs/forecast.py --run-date 2023-12-31 spark.metastore_uri=thrift://127.0.0.1:9083
#   scripts/metastore.sh stop [--port 9083]
#
# Without it, the embedded Derby metastore admits one job at a time (a second one stops at
# once, naming the lock).  The service is Hive's own metastore handler from the jars pyspark
# ships, started by a small launcher (scripts/metastore/LoopbackMetaStore.java, compiled once
# with javac) because Hive 2.3's launcher can only listen on every interface.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cmd=${1:-}; shift || true
env_arg=local; port=9083; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env_arg=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "metastore.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py="$root/.venv/bin/python"
case "$cmd" in
  start)
    scripts/setup.sh
    # data dir, metastore database and warehouse from the configuration (exit 2 if it is wrong)
    paths=$("$py" - "$env_arg" "${overrides[@]+"${overrides[@]}"}" <<'PY'
import sys
from sales_st.config import ConfigError, load_config
from sales_st.runtime.jobs import DEFAULT_CONF
try:
    cfg = load_config(DEFAULT_CONF, sys.argv[1], sys.argv[2:])
except ConfigError as exc:
    print(f"metastore.sh: {exc}", file=sys.stderr)
    sys.exit(2)
print(cfg.data_dir, cfg.path("metastore"), cfg.path("warehouse"), sep="\n")
PY
) || exit $?
    mapfile -t p <<<"$paths"
    data_dir=${p[0]}; metastore=${p[1]}; warehouse=${p[2]}
    run_dir="$data_dir/run"; logs="$data_dir/logs"; mkdir -p "$run_dir" "$logs"
    pidfile="$run_dir/metastore-$port.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "metastore service already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0
    fi
    jars="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')/jars"
    classes="$root/data/dist/metastore-classes"
    src=scripts/metastore/LoopbackMetaStore.java
    if [ ! -f "$classes/LoopbackMetaStore.class" ] || [ "$src" -nt "$classes/LoopbackMetaStore.class" ]; then
      command -v javac >/dev/null 2>&1 || { echo "metastore.sh: javac (a JDK 17) is needed once to build the launcher: apt-get install -y openjdk-17-jdk-headless" >&2; exit 1; }
      mkdir -p "$classes"
      javac -nowarn -d "$classes" -cp "$jars/*" "$src"
    fi
    log="$logs/metastore-$port.log"
    nohup java -Xmx1g -cp "$classes:$jars/*" \
      -Dderby.system.home="$data_dir" -Dhive.async.log.enabled=false \
      "-Djavax.jdo.option.ConnectionURL=jdbc:derby:;databaseName=$metastore;create=true" \
      -Dhive.metastore.warehouse.dir="$warehouse" -Ddatanucleus.schema.autoCreateAll=true \
      -Dhive.metastore.schema.verification=false \
      LoopbackMetaStore 127.0.0.1 "$port" > "$log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 120); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "metastore service on thrift://127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"
        echo "run jobs with: spark.metastore_uri=thrift://127.0.0.1:$port"
        exit 0
      fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$log" >&2; echo "metastore.sh: the service exited; see $log" >&2; exit 1; }
      sleep 1
    done
    echo "metastore.sh: no answer on port $port in 120 s; see $log" >&2
    exit 1 ;;
  stop)
    data_dir=$("$py" -c "from sales_st.config import load_config; from sales_st.runtime.jobs import DEFAULT_CONF; import sys; print(load_config(DEFAULT_CONF, sys.argv[1], sys.argv[2:]).data_dir)" "$env_arg" "${overrides[@]+"${overrides[@]}"}") || exit $?
    pidfile="$data_dir/run/metastore-$port.pid"
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
      echo "metastore service on port $port stopped"
    fi ;;
  *) echo "usage: $0 start|stop [--env ENV] [--port P] [key=value ...]" >&2; exit 2 ;;
esac
