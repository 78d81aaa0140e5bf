#!/usr/bin/env bash
# Creates or refreshes .venv with the pinned stack; a quick no-op when it is already current.
#
#   scripts/setup.sh            # install / verify
#   SALES_ST_PYTHON=python3.11 scripts/setup.sh
#
# Order matters: tensorflow-cpu first, then Horovod compiled against it (no build isolation,
# so its build sees the installed TF), then pip upgraded to its patched version, then the rest
# of the project.  Everything is pinned by pyproject.toml plus constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"

die() { echo "setup: $*" >&2; exit 2; }
log() { echo "setup: $*" >&2; }

py=${SALES_ST_PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      py=$cand; break
    fi
  done
fi
[ -n "$py" ] || die "Python 3.11 is required (tensorflow-cpu 2.15 and horovod 0.28.1 are pinned for it). Install it (e.g. 'apt-get install python3.11 python3.11-venv python3.11-dev' or 'pyenv install 3.11') or point SALES_ST_PYTHON at it."

command -v java >/dev/null 2>&1 || die "Java 17 is required by Spark 3.5 and was not found on PATH. Install it: 'apt-get install -y openjdk-17-jre-headless' (or set JAVA_HOME and add \$JAVA_HOME/bin to PATH)."
jv=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
case "$jv" in 8|11|17) ;; *) die "Spark 3.5 runs on Java 8, 11 or 17; 'java -version' says '$jv'. Install openjdk-17-jre-headless or set JAVA_HOME." ;; esac

stamp_src=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$venv/.sales_st_stamp" ] && [ "$(cat "$venv/.sales_st_stamp")" = "$stamp_src" ]; then
  exit 0
fi

for tool in g++ cmake make; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is needed to compile Horovod and was not found. Install it: 'apt-get install -y build-essential cmake'."
done

[ -x "$venv/bin/python" ] || { log "creating $venv with $py"; "$py" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# Build tools first, pinned: setuptools below 70 (Horovod 0.28.1's setup.py, built without
# isolation, and petastorm 0.13.1 need that), in place of the one the venv was created with,
# and Horovod's setup_requires, so that its build finds them and setuptools fetches nothing.
log "installing build tools"
"${pip[@]}" install -c constraints.txt setuptools wheel cloudpickle psutil PyYAML packaging
log "installing tensorflow-cpu (first, so that Horovod compiles against it)"
"${pip[@]}" install -c constraints.txt tensorflow-cpu
log "installing horovod (compiled from source on first install, ~2 min)"
HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  "${pip[@]}" install --no-build-isolation -c constraints.txt "horovod[tensorflow-cpu]"
# Horovod is built by the pip the venv was created with; then pip itself goes to the patched
# version in constraints.txt (the executors' packed venv carries it too).
log "upgrading pip to the patched version"
"${pip[@]}" install -c constraints.txt pip
log "installing the project"
"${pip[@]}" install --no-build-isolation -c constraints.txt -e ".[dev]"

log "verifying the stack"
build=$("$venv/bin/horovodrun" --check-build)
{ grep -q '\[X\] TensorFlow' <<<"$build" && grep -q '\[X\] Gloo' <<<"$build"; } \
  || { echo "$build" >&2; die "Horovod was built without TensorFlow or Gloo support; remove .venv and re-run with a C++ compiler and cmake available."; }
"$venv/bin/python" - <<'PY'
import horovod.tensorflow.keras, horovod.spark, petastorm, pyarrow, pyspark, tensorflow as tf
from importlib.metadata import version
assert tf.__version__.startswith("2.15"), tf.__version__
assert pyarrow.__version__ == "14.0.2", pyarrow.__version__
assert pyspark.__version__.startswith("3.5"), pyspark.__version__
pins = dict(l.strip().split("==") for l in open("constraints.txt") if "==" in l)
for name in ("pip", "setuptools", "wheel"):  # not the ones the venv was created with
    assert version(name) == pins[name], (name, version(name), pins[name])
PY
echo "$stamp_src" > "$venv/.sales_st_stamp"
log "environment ready: $venv"
