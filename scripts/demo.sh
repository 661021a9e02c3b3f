#!/usr/bin/env bash
# The main job, for now: installs what is missing, builds kvq, compiles a
# KIVI-2 decode step (examples/kivi2_decode.mlir) through every stage down to
# PTX/CUBIN for sm_80 and sm_90 (an excerpt of each stage printed, the full
# stages in build/demo/), then runs the kernels on the best backend here and
# checks them against the reference. (The quantized KV cache joins this
# command when it lands; see README.md.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
example=${1:-$root/examples/kivi2_decode.mlir}
out="$build/demo"

"$root/scripts/setup.sh"
echo "kvq demo: building (incremental) ..."
"$root/scripts/build.sh" kvq-opt kvq-translate kvq-run >/dev/null
opt="$build/bin/kvq-opt"
translate="$build/bin/kvq-translate"
mkdir -p "$out"

show() { # title, file, lines
  echo
  echo "=== $1  ($(wc -l <"$2") lines: $2)"
  head -n "${3:-25}" "$2"
  [ "$(wc -l <"$2")" -le "${3:-25}" ] || echo "    ..."
}

"$opt" "$example" >"$out/1-kvq.mlir"
show "1. kvq dialect as written: unpack + dequantize + attention, quantize + pack" "$out/1-kvq.mlir" 40
"$translate" "$example" --to=stage --stage=planned >"$out/2-planned.mlir"
show "2. --kvq-fuse --kvq-plan: fused ops with their launch plan" "$out/2-planned.mlir" 12
"$translate" "$example" --to=stage --stage=gpu >"$out/3-gpu.mlir"
show "3. --kvq-to-gpu: gpu.func kernels (scf, arith, memref, gpu ids/barriers/shuffles)" "$out/3-gpu.mlir" 20
"$translate" "$example" --to=stage --stage=emitc >"$out/4-emitc.mlir"
"$translate" "$example" --to=cuda >"$out/5-kernels.cu"
show "4-5. --kvq-gpu-to-emitc, then CUDA C++ (full EmitC in $out/4-emitc.mlir)" "$out/5-kernels.cu" 45
for arch in sm_80 sm_90; do
  "$translate" "$example" --to=ptx --arch=$arch >"$out/6-kernels.$arch.ptx"
  echo
  echo "=== 6. nvrtc -> PTX/CUBIN for $arch ($(wc -l <"$out/6-kernels.$arch.ptx") PTX lines: $out/6-kernels.$arch.ptx)"
  "$translate" "$example" --to=stats --arch=$arch
done
echo
echo "=== 7. run it: quantize generated KV data with the generated kernels, run the fused"
echo "       attention, check against the reference (GPU if present, else the CPU emulator)"
echo "    \$ kvq-run --spec=\"attention k=2c32 v=2t32 d=128 hq=32 hkv=32\" --tokens=1024"
echo
"$build/bin/kvq-run" --spec="attention k=2c32 v=2t32 d=128 hq=32 hkv=32" --tokens=1024
echo
echo "All stages are in $out/. Next: build/bin/kvq-translate --help, docs/runtime.md"
