#!/usr/bin/env bash
# Builds the self-contained GPU suite: one folder that runs kvq's whole GPU
# suite on a machine with only a GPU driver (bench/gpu/device-run.sh):
#
#   bin/kvq-gpu-bench   runtime-only and static: needs libc, libm and the
#                       dlopen'ed libcuda.so.1, nothing else (no LLVM/MLIR,
#                       no nvrtc, no boost, no libstdc++)
#   bin/kvq-cache       the same, to import/list/verify bundles there
#   kernels.kvqb        a kernel bundle with every kernel the suite's runs
#                       use, CUBIN for each arch in bench/gpu/suite.sh plus
#                       PTX, and the emulator kernels of the smoke run
#   device-run.sh, suite.sh, sdpa_baseline.py, MANIFEST.txt
#   python/, runtime/   the Python package's sources and the runtime-only
#                       library with its headers: device-run.sh builds
#                       kvq_jit there (the GPU image has torch, nanobind and
#                       scikit-build-core) and runs python_check.py and
#                       hf_generate.py on CUDA tensors; the bundle holds
#                       their kernels too (their --list-specs, run here in
#                       build/python-venv, scripts/python-setup.sh)
#
#   scripts/gpu-bundle.sh [FOLDER]     (default: build/gpu-bundle)
#
# Kernels are compiled on this machine (nvrtc needs no GPU) into a cache
# under the build folder, so a second run only re-exports them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
out=${1:-$build/gpu-bundle}
"$root/scripts/build.sh" kvq-gpu-bench kvq-gpu-bench-runtime-only kvq-cache \
  kvq-cache-runtime-only >/dev/null
python=$("$root/scripts/python-setup.sh")

# shellcheck source=../bench/gpu/suite.sh
. "$root/bench/gpu/suite.sh"
export KVQ_CACHE_DIR="$build/gpu-bundle-cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
jit="$build/bin/kvq-gpu-bench"
# Every attention spec twice: as the plan chooses, and forced onto the CUDA
# cores (device-run.sh runs the suite again with
# KVQ_ATTENTION_PATH=cuda-cores, which asks for those).
with_cuda_cores() {
  while IFS= read -r spec; do
    echo "$spec"
    case "$spec" in
      attention*|dense-attention*) echo "$spec path=cuda-cores" ;;
    esac
  done
}
{
  "$jit" --list-specs "${KVQ_SUITE_CHECK[@]}"
  "$jit" --list-specs "${KVQ_SUITE_BENCH[@]}"
  "$jit" --list-specs "${KVQ_SUITE_SMOKE[@]}"
  "$jit" --list-specs --check "${KVQ_SUITE_SMOKE[@]}"
  # The Python part's caches (the plan's attention path only).
  "$python" "$root/bench/gpu/python_check.py" --list-specs
  "$python" "$root/examples/hf_generate.py" --list-specs
} 2>/dev/null | with_cuda_cores | sort -u > "$work/specs.txt"
{
  "$jit" --list-specs --check "${KVQ_SUITE_SMOKE[@]}"
  "$jit" --list-specs "${KVQ_SUITE_SMOKE[@]}"
} | with_cuda_cores > "$work/smoke.txt"

archs=()
for a in "${KVQ_SUITE_ARCHS[@]}"; do archs+=("--arch=$a"); done
"$build/bin/kvq-cache" export --spec-file="$work/specs.txt" "${archs[@]}" \
  --out="$work/cuda.kvqb" > "$work/export-cuda.log"
"$build/bin/kvq-cache" export --spec-file="$work/smoke.txt" --backend=emulator \
  --out="$work/emulator.kvqb" > "$work/export-emulator.log"
rm -rf "$out"
mkdir -p "$out/bin"
"$build/bin/kvq-cache" merge --out="$out/kernels.kvqb" "$work/cuda.kvqb" "$work/emulator.kvqb" >/dev/null
for tool in kvq-gpu-bench kvq-cache; do
  strip -o "$out/bin/$tool" "$build/runtime-only/bin/$tool"
done
cp "$root/bench/gpu/device-run.sh" "$root/bench/gpu/suite.sh" "$root/bench/gpu/split-sweep.sh" \
   "$root/bench/gpu/mma_check.cu" "$root/bench/gpu/mma_test_tile.h" \
   "$root/bench/gpu/pair_ops_cases.h" \
   "$root/codegen/lib/device/kvq_prelude.cuh" \
   "$root/bench/gpu/sdpa_baseline.py" "$out/"
# The Python package: sources, and the runtime-only library + public
# headers it is built against there.
mkdir -p "$out/python" "$out/runtime/lib" "$out/runtime/include/kvq/Codegen"
cp -r "$root/python/pyproject.toml" "$root/python/CMakeLists.txt" "$root/python/README.md" \
   "$root/python/src" "$root/python/kvq_jit" "$out/python/"
find "$out/python" -name __pycache__ -prune -exec rm -rf {} +
# The public headers are the top-level ones (runtime/CMakeLists.txt installs
# the same).
cp "$root"/runtime/include/kvq/*.h "$out/runtime/include/kvq/"
cp "$root/codegen/include/kvq/Codegen/KernelSpec.h" "$out/runtime/include/kvq/Codegen/"
runtime_library=$(readlink -f "$build/lib/libkvq_runtime.so")
strip -o "$out/runtime/lib/$(basename "$runtime_library")" "$runtime_library"
cp "$root/bench/gpu/python_check.py" "$root/examples/hf_generate.py" "$out/"
{
  echo "kvq $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "built $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(wc -l < "$work/specs.txt") specs x ${KVQ_SUITE_ARCHS[*]} + emulator smoke kernels"
  echo "run: bash device-run.sh [RESULTS_DIR]"
  echo "needs: a CUDA driver, glibc >= $(objdump -T "$out/bin/kvq-gpu-bench" | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1 | cut -d_ -f2) (x86-64)"
  echo
  (cd "$out" && find . -type f | sort | xargs ls -l | awk '{print $5, $9}')
} > "$out/MANIFEST.txt"
echo "gpu bundle: $out ($(du -sh "$out" | cut -f1)), $(wc -l < "$work/specs.txt") specs for ${KVQ_SUITE_ARCHS[*]}"
