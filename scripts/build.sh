#!/usr/bin/env bash
# Configures (once) and builds kvq with CMake + Ninja + ccache into $KVQ_BUILD_DIR
# (default: build/). Incremental: a second run rebuilds only what changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}

if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=${KVQ_BUILD_TYPE:-Release} \
    -DMLIR_DIR="$(llvm-config-22 --cmakedir)/../mlir" >/dev/null
fi
ninja -C "$build" "$@"
