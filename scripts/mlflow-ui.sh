#!/usr/bin/env bash
# The MLflow UI over the project's tracking store, on 127.0.0.1: runs of every job (params,
# per-epoch metrics, artifacts) and the registered models with their aliases.
#   scripts/mlflow-ui.sh                         # http://127.0.0.1:5000
#   MLFLOW_PORT=5050 scripts/mlflow-ui.sh --env local,rossmann
#   scripts/mlflow-ui.sh paths.data_dir=/other/data      (config overrides)
# With tracking.uri pointing at a tracking server, open that server's UI instead.
set -euo pipefail
cd "$(dirname "$0")/.."
env_arg=local
if [ "${1:-}" = "--env" ]; then env_arg=$2; shift 2; fi
scripts/setup.sh
out=$(.venv/bin/python -m sales_st.runtime.tracking --env "$env_arg" "$@") || exit $?
mapfile -t store <<<"$out"
uri=${store[0]}
case "$uri" in
  http://*|https://*) echo "mlflow-ui.sh: runs are tracked by the server at $uri: open its UI" >&2; exit 0 ;;
esac
artifacts=${store[1]:-}
port=${MLFLOW_PORT:-5000}
echo "mlflow-ui.sh: $uri on http://127.0.0.1:$port" >&2
args=(--backend-store-uri "$uri" --host 127.0.0.1 --port "$port")
[ -n "$artifacts" ] && args+=(--default-artifact-root "file://$artifacts")
exec .venv/bin/mlflow ui "${args[@]}"
