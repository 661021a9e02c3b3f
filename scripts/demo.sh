#!/usr/bin/env bash
# The main job: installs what is missing, builds kvq, and runs a quantized KV
# cache end to end (kvq-demo): a Llama-2-7B-shaped cache (32 layers, 32
# heads, head_dim 128) prefilled and decoding with KV data that has outlier
# channels and an attention sink; it reports memory vs fp16, attention error
# vs fp16 per preset, kernels compiled or cached, compile and dispatch times;
# then continuous batching on the paged cache (requests of different prompt
# lengths arrive, decode, finish and give their pages to later ones).
# It uses the GPU when one is present, else the CPU emulator (about a minute
# on 2 cores). Then it shows the compiler's stages for the same kernels.
#
#   scripts/demo.sh [kvq-demo options, e.g. --backend=cuda --prefill=4096]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
out="$build/demo"

"$root/scripts/setup.sh"
echo "kvq demo: building (incremental) ..."
"$root/scripts/build.sh" kvq-demo kvq-opt kvq-translate >/dev/null
mkdir -p "$out"
export KVQ_DUMP_DIR=${KVQ_DUMP_DIR:-$out/kernels}

"$build/bin/kvq-demo" "$@"

echo
echo "=== the compiler, stage by stage, on examples/kivi2_decode.mlir (full stages in $out/)"
example="$root/examples/kivi2_decode.mlir"
"$build/bin/kvq-opt" "$example" --kvq-fuse --canonicalize >"$out/fused.mlir"
for stage in planned gpu emitc; do
  "$build/bin/kvq-translate" "$example" --to=stage --stage=$stage >"$out/$stage.mlir"
done
"$build/bin/kvq-translate" "$example" --to=cuda >"$out/kernels.cu"
for arch in sm_80 sm_90; do
  "$build/bin/kvq-translate" "$example" --to=ptx --arch=$arch >"$out/kernels.$arch.ptx"
done
printf '  %-48s %6s lines\n' \
  "kvq IR, fused (kvq-opt --kvq-fuse)" "$(wc -l <"$out/fused.mlir")" \
  "planned (--kvq-plan)" "$(wc -l <"$out/planned.mlir")" \
  "GPU IR (--kvq-to-gpu)" "$(wc -l <"$out/gpu.mlir")" \
  "EmitC (--kvq-gpu-to-emitc)" "$(wc -l <"$out/emitc.mlir")" \
  "CUDA C++ (kvq-translate --to=cuda)" "$(wc -l <"$out/kernels.cu")" \
  "PTX for sm_80 and sm_90 (nvrtc)" "$(wc -l <"$out/kernels.sm_90.ptx")"
echo "  ptxas, sm_90:"
"$build/bin/kvq-translate" "$example" --to=stats --arch=sm_90 | sed 's/^/    /'
echo
echo "Next: build/bin/kvq-run --help, build/bin/kvq-cache --help, docs/runtime.md"
