#!/usr/bin/env bash
# Submit jobs/<name>.py to Spark with the package and the Python environment shipped.
#
#   ./spark-submit.sh <job> [--env ENV] [--run-date D] [key=value ...]
#   SPARK_MASTER=spark://host:7077 ./spark-submit.sh pipeline --env cluster
#
# The master comes from SPARK_MASTER, else from the config (spark.master; local[*] by
# default).  On a cluster master the project is built as a wheel (--py-files), the venv is
# packed with venv-pack (--archives ...#environment, executors run ./environment/bin/python;
# venv-pack keeps the interpreter as a link to the base Python, which must exist at the
# same path on every node),
# and conf/*.yaml travel with --files.  Every Spark property comes from the config; this
# script holds no business parameters.  Extra spark-submit options: SPARK_SUBMIT_OPTS_EXTRA.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cd "$root"
[ $# -ge 1 ] || { echo "usage: $0 <job> [job args]   (jobs: $(ls jobs | sed 's/\.py$//' | tr '\n' ' '))" >&2; exit 2; }
job=$1; shift
[ -f "jobs/$job.py" ] || { echo "spark-submit.sh: no job jobs/$job.py" >&2; exit 2; }

scripts/setup.sh
py="$root/.venv/bin/python"
export PYSPARK_DRIVER_PYTHON="$py"
export SALES_ST_CONF=${SALES_ST_CONF:-$root/conf}
# Spark's launch scripts look for SPARK_HOME with whatever python3 is on PATH: point them at
# the pinned pyspark in the venv.
SPARK_HOME=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME

env_arg=local
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --env) env_arg=${args[$((i + 1))]} ;;
    --env=*) env_arg=${args[$i]#--env=} ;;
  esac
done
overrides=()
for a in "$@"; do [[ "$a" == *=* && "$a" != --* ]] && overrides+=("$a"); done

# Captured first: a config error (one line on stderr, exit 2) stops here, before anything starts.
out=$("$py" -m sales_st.runtime.submit --env "$env_arg" "${overrides[@]+"${overrides[@]}"}") \
  || exit $?
mapfile -t submit <<<"$out"
[ "${submit[0]:-}" = "--master" ] && [ ${#submit[@]} -ge 2 ] \
  || { echo "spark-submit.sh: no spark-submit arguments from sales_st.runtime.submit" >&2; exit 2; }
master=${submit[1]}

ship=()
if [[ "$master" != local* ]]; then
  dist="$root/data/dist"
  mkdir -p "$dist"
  stamp=$(cat "$root/.venv/.sales_st_stamp")
  src=$( (cat pyproject.toml; find sales_st -name '*.py' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
  # a wheel is a zip; named .zip because PySpark puts only .zip/.egg/.jar py-files on the
  # executors' Python path
  wheel="$dist/sales_st-$src.zip"
  if [ ! -f "$wheel" ]; then
    rm -rf "$dist/wheel" && "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dist/wheel" . >&2
    cp "$dist"/wheel/sales_st-*.whl "$wheel"
  fi
  # Left out of the executors' copy: the editable install of this project (the wheel replaces
  # it), pyspark (Spark brings its own), and what only builds or checks code: TensorFlow's C++
  # headers, libclang, mypy and ruff (about 330 MB of 2.2 GB).
  site=lib/python3.11/site-packages
  excludes=('*__editable__*' "$site/pyspark/*" "$site/pyspark-*" "$site/tensorflow/include/*"
            "$site/clang/*" "$site/mypy/*" "$site/mypyc/*" "$site/*__mypyc.*.so" "bin/ruff")
  pack=$(printf '%s\n' "${excludes[@]}" | sha256sum | cut -c1-8)
  # .tar.gz: Spark unpacks it with the system tar, which keeps the interpreter symlink
  archive="$dist/venv-$stamp-$pack.tar.gz"
  if [ ! -f "$archive" ]; then
    echo "spark-submit.sh: packing the venv for the executors (once per environment version)" >&2
    rm -f "$dist"/venv-*.tar* "$dist"/partial.tar*
    exclude_args=()
    for x in "${excludes[@]}"; do exclude_args+=(--exclude "$x"); done
    "$root/.venv/bin/venv-pack" -p "$root/.venv" -o "$dist/partial.tar.gz" -q --compress-level 1 \
      "${exclude_args[@]}" >&2
    mv "$dist/partial.tar.gz" "$archive"
  fi
  conf_files=$(ls "$root"/conf/*.yaml | paste -sd, -)
  ship=(--py-files "$wheel" --archives "$archive#environment" --files "$conf_files"
        --conf spark.pyspark.python=./environment/bin/python
        --conf "spark.pyspark.driver.python=$py"
        --conf spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2)
  # Horovod starts the ranks with this interpreter, relative to each executor's directory.
  export SALES_ST_EXECUTOR_PYTHON=./environment/bin/python
else
  export PYSPARK_PYTHON="$py"
  # a local master serves nobody else: driver, block manager and UI on loopback only
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
fi

spark_submit="$root/.venv/bin/spark-submit"
cmd=("$spark_submit" "${submit[@]}" "${ship[@]+"${ship[@]}"}" ${SPARK_SUBMIT_OPTS_EXTRA:-} "jobs/$job.py" "$@")
echo "spark-submit.sh: ${cmd[*]}" >&2
exec "${cmd[@]}"
