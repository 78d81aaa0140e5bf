#!/usr/bin/env bash
# Start/stop the Spark History Server over the project's event logs (paths.spark_events, where
# every job's session writes one), listening on 127.0.0.1: the web UI of finished jobs.
#   scripts/history-server.sh start [--env ENV] [--port 18080] [key=value ...]
#   open http://127.0.0.1:18080   (or curl http://127.0.0.1:18080/api/v1/applications)
#   scripts/history-server.sh status [--port 18080]     (exit 3 when not running)
#   scripts/history-server.sh stop [--port 18080]
# The port defaults to $SALES_ST_HISTORY_PORT, else 18080.  The server is Spark's own
# (org.apache.spark.deploy.history.HistoryServer from the jars pyspark ships); its pid file and
# log live under <data_dir>/run and <data_dir>/logs (./data when the data dir is a URI).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cmd=${1:-}; shift || true
env_arg=local; port=${SALES_ST_HISTORY_PORT:-18080}; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env_arg=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "history-server.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$cmd" in start|stop|status) ;; *)
  echo "usage: $0 start|stop|status [--env ENV] [--port P] [key=value ...]" >&2; exit 2 ;;
esac
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "history-server.sh: no $py; run scripts/setup.sh first" >&2; exit 2; }
# data dir and event-log directory from the configuration (exit 2 if it is wrong), the same
# spark.eventLog.dir every job writes to (created when local)
paths=$("$py" - "$env_arg" "${overrides[@]+"${overrides[@]}"}" <<'PY'
import sys
from sales_st.config import ConfigError, load_config
from sales_st.runtime.jobs import DEFAULT_CONF
from sales_st.runtime.session import spark_properties
try:
    cfg = load_config(DEFAULT_CONF, sys.argv[1], sys.argv[2:])
except ConfigError as exc:
    print("history-server.sh: config error: " + " ".join(str(exc).split()), file=sys.stderr)
    sys.exit(2)
print(cfg.data_dir, spark_properties(cfg)["spark.eventLog.dir"], sep="\n")
PY
) || exit $?
mapfile -t p <<<"$paths"
data_dir=${p[0]}; events=${p[1]}
# pid file and log on local disk: the data dir, or ./data when the data dir is shared storage
[[ "$data_dir" != *://* ]] || data_dir="$root/data"
run_dir="$data_dir/run"; logs="$data_dir/logs"; mkdir -p "$run_dir" "$logs"
pidfile="$run_dir/history-$port.pid"
props="$run_dir/history-$port.conf"
log="$logs/history-$port.log"
url="http://127.0.0.1:$port"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$cmd" in
  start)
    if running; then
      echo "history server already running at $url (pid $(cat "$pidfile"))"; exit 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "history-server.sh: port $port is taken by another process; use --port" >&2; exit 1
    fi
    command -v java >/dev/null 2>&1 || { echo "history-server.sh: java (17) not found on PATH" >&2; exit 1; }
    SPARK_HOME=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    export SPARK_HOME
    # the web UI binds to SPARK_LOCAL_IP (else every interface): loopback only
    export SPARK_LOCAL_IP=127.0.0.1
    # maxRetries 0: the port asked for or a failure, never silently the next one
    cat > "$props" <<EOF
spark.history.fs.logDirectory $events
spark.history.ui.port $port
spark.history.fs.update.interval 2s
spark.port.maxRetries 0
EOF
    (cd "$run_dir" && exec nohup "$SPARK_HOME/bin/spark-class" \
      org.apache.spark.deploy.history.HistoryServer --properties-file "$props" > "$log" 2>&1) &
    echo $! > "$pidfile"
    for _ in $(seq 1 60); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "history server at $url (pid $(cat "$pidfile"), event logs $events, log $log)"
        exit 0
      fi
      running || { tail -5 "$log" >&2; rm -f "$pidfile"; echo "history-server.sh: the server exited; see $log" >&2; exit 1; }
      sleep 1
    done
    echo "history-server.sh: no answer on port $port in 60 s; see $log" >&2
    exit 1 ;;
  status)
    if running; then
      echo "history server running at $url (pid $(cat "$pidfile"), event logs $events)"
    else
      echo "history server not running on port $port"; exit 3
    fi ;;
  stop)
    if ! running; then
      rm -f "$pidfile" "$props"; echo "history server not running on port $port"; exit 0
    fi
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile" "$props"; echo "history server on port $port stopped"; exit 0; }
      sleep 0.5
    done
    echo "history-server.sh: pid $pid did not stop in 15 s" >&2; exit 1 ;;
esac
