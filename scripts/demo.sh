#!/usr/bin/env bash
# The main job, for now: installs what is missing, builds kvq, and runs the
# compiler pipeline on a KIVI-2 decode step, printing the IR after each stage.
# (The lowering to CUDA, the runtime and the quantized KV cache join this
# command as they land; see README.md.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
example=${1:-$root/examples/kivi2_decode.mlir}

"$root/scripts/setup.sh"
"$root/scripts/build.sh" kvq-opt >/dev/null
opt="$build/bin/kvq-opt"

stage() {
  echo
  echo "=== $1"
  echo "    \$ kvq-opt ${2:-} $(basename "$example")"
  echo
}

stage "1. kvq dialect, as written (parsed and verified)"
"$opt" "$example"
stage "2. after --kvq-fuse: quantize+pack and dequantize+attention fused" "--kvq-fuse"
"$opt" "$example" --kvq-fuse
stage "3. after --kvq-fuse --canonicalize: dead unpack/dequantize removed" "--kvq-fuse --canonicalize"
"$opt" "$example" --kvq-fuse --canonicalize
