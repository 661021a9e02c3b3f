#!/usr/bin/env bash
# kvq's whole GPU suite in one go, on a machine with a GPU and its driver and
# nothing else of kvq's: no LLVM/MLIR, no nvrtc, no compiler. Run it from
# the folder scripts/gpu-bundle.sh builds (it is copied there):
#
#   bash build/gpu-bundle/device-run.sh [RESULTS_DIR]
#
# It prints the device, driver and clocks, measures the copy bandwidth (the
# ceiling), runs the correctness suite (quantize bit-exact, attention vs the
# reference, MISMATCH lines on failure), then the attention benchmark and,
# when PyTorch with CUDA is installed, PyTorch SDPA on the same shapes.
# Writes results.md and raw-logs.tar.gz (every log and partial file) to
# RESULTS_DIR (default: $OUT, else ./gpu-results). Exits non-zero if any correctness check failed.
#
# KVQ_SUITE_BACKEND=emulator runs the same flow on the CPU emulator at the
# smoke size (the test suite does, to check this script without a GPU).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-$PWD/gpu-results}}
mkdir -p "$out"
# Raw logs go to a folder of their own and come back as one tarball: the
# device tool returns at most 8 files from $OUT.
raw="$out/raw"
rm -rf "$raw" "$out/raw-logs.tar.gz"
mkdir -p "$raw"
bench="$here/bin/kvq-gpu-bench"
export KVQ_BUNDLE="$here/kernels.kvqb"
export KVQ_CACHE_DIR
KVQ_CACHE_DIR=$(mktemp -d)/kvq-cache
# shellcheck source=suite.sh
. "$here/suite.sh"
if [ "${KVQ_SUITE_BACKEND:-cuda}" = emulator ]; then
  KVQ_SUITE_CHECK=(--backend=emulator "${KVQ_SUITE_CHECK[@]}" "${KVQ_SUITE_SMOKE[@]}")
  KVQ_SUITE_BENCH=(--backend=emulator "${KVQ_SUITE_SMOKE[@]}")
fi
if [ ! -x "$bench" ] || [ ! -f "$KVQ_BUNDLE" ]; then
  echo "device-run: $here is not a GPU bundle (no bin/kvq-gpu-bench or kernels.kvqb); build it with scripts/gpu-bundle.sh" >&2
  exit 2
fi
# The binaries are static but for libc: say so if this libc is too old.
if ! startup=$("$bench" --help 2>&1 >/dev/null); then
  echo "device-run: $bench does not start here: $startup" >&2
  grep '^needs:' "$here/MANIFEST.txt" >&2 || true
  exit 2
fi
start=$(date +%s)
log() { echo "device-run: $*" | tee -a "$raw/device-run.log" >&2; }

{
  echo "## Device"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu --format=csv 2>&1 || echo "nvidia-smi failed"
  nvidia-smi -q -d CLOCK 2>/dev/null | grep -iE "applications|default|sm|memory" | head -20
  echo "host: $(uname -srm), $(nproc) CPUs"
  echo '```'
} > "$raw/device.md"
cat "$raw/device.md" >&2

log "correctness suite"
timeout 150 "$bench" "${KVQ_SUITE_CHECK[@]}" --out="$raw/check.md" 2> "$raw/check.log"
check=$?
log "correctness exit status $check ($(( $(date +%s) - start )) s)"
grep MISMATCH "$raw/check.md" >&2 || true

log "attention benchmark"
timeout 240 "$bench" "${KVQ_SUITE_BENCH[@]}" --out="$raw/bench.md" 2> "$raw/bench.log"
timing=$?
log "benchmark exit status $timing ($(( $(date +%s) - start )) s)"

# The same correctness suite and benchmark with attention forced onto the
# CUDA cores (the bundle carries both paths' kernels): the plan's choice of
# tensor cores is checked against these two tables.
log "correctness suite, CUDA cores"
KVQ_ATTENTION_PATH=cuda-cores timeout 150 "$bench" "${KVQ_SUITE_CHECK[@]}" \
  --out="$raw/check-cc.md" 2> "$raw/check-cc.log"
check_cc=$?
log "correctness (CUDA cores) exit status $check_cc ($(( $(date +%s) - start )) s)"
grep MISMATCH "$raw/check-cc.md" >&2 || true
log "attention benchmark, CUDA cores"
KVQ_ATTENTION_PATH=cuda-cores timeout 240 "$bench" "${KVQ_SUITE_BENCH[@]}" \
  --out="$raw/bench-cc.md" 2> "$raw/bench-cc.log"
timing_cc=$?
log "benchmark (CUDA cores) exit status $timing_cc ($(( $(date +%s) - start )) s)"

# The smoke correctness run under compute-sanitizer's memcheck, where it is
# installed: every preset's kernels, paged too, with no out-of-bounds or
# misaligned access on the GPU itself.
if [ "${KVQ_SUITE_BACKEND:-cuda}" = cuda ] && command -v compute-sanitizer > /dev/null; then
  log "memcheck (compute-sanitizer, smoke correctness run)"
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$bench" "${KVQ_SUITE_MEMCHECK[@]}" --out="$raw/memcheck-run.md" \
    > "$raw/memcheck.log" 2>&1
  memcheck=$?
  KVQ_ATTENTION_PATH=cuda-cores timeout 120 compute-sanitizer --tool memcheck \
    --error-exitcode 9 "$bench" "${KVQ_SUITE_MEMCHECK[@]}" \
    --out="$raw/memcheck-cc-run.md" >> "$raw/memcheck.log" 2>&1
  memcheck_cc=$?
  [ "$memcheck" -eq 0 ] && memcheck=$memcheck_cc
  log "memcheck exit status $memcheck ($(( $(date +%s) - start )) s)"
  {
    printf '\n## Memory check\n\n`compute-sanitizer --tool memcheck` over `kvq-gpu-bench %s`: exit status %s.\n\n```\n' \
      "${KVQ_SUITE_MEMCHECK[*]}" "$memcheck"
    grep -E "ERROR SUMMARY|Invalid|out of bounds" "$raw/memcheck.log" | head -20
    printf '```\n'
  } > "$raw/memcheck.md"
else
  memcheck=0
  printf '\n## Memory check\n\nNot run: no compute-sanitizer here, or not the cuda backend.\n' > "$raw/memcheck.md"
fi

# The prelude's tensor-core tile against the fragment layout the emulator
# implements, built here with the machine's nvcc (bench/gpu/mma_check.cu).
if [ "${KVQ_SUITE_BACKEND:-cuda}" = cuda ] && command -v nvcc > /dev/null; then
  log "tensor-core fragment check (nvcc)"
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
  { timeout 120 nvcc -arch="sm_${arch:-90}" -I"$here" "$here/mma_check.cu" \
      -o "$raw/mma_check" && timeout 30 "$raw/mma_check"; } > "$raw/mma.log" 2>&1
  mma=$?
  log "mma check exit status $mma ($(( $(date +%s) - start )) s)"
  printf '\n## Tensor-core fragment check\n\n`nvcc -arch=sm_%s mma_check.cu`, run: exit status %s.\n\n```\n%s\n```\n' \
    "${arch:-90}" "$mma" "$(tail -5 "$raw/mma.log")" > "$raw/mma.md"
else
  mma=0
  printf '\n## Tensor-core fragment check\n\nNot run: no nvcc here, or not the cuda backend.\n' > "$raw/mma.md"
fi

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  log "PyTorch SDPA baseline"
  timeout 60 python3 "$here/sdpa_baseline.py" "${KVQ_SUITE_BENCH[@]}" > "$raw/sdpa.md" 2> "$raw/sdpa.log"
  log "SDPA exit status $? ($(( $(date +%s) - start )) s)"
else
  printf '\n## PyTorch scaled_dot_product_attention\n\nNot measured: PyTorch with CUDA is not installed on this machine.\n' > "$raw/sdpa.md"
fi

# The Python package, built here against the bundle's runtime-only library
# (no network: the GPU image's torch, nanobind, scikit-build-core, cmake),
# then python_check.py (device vs the CPU reference, timings) and the
# transformers example on CUDA tensors. KVQ_SUITE_PYTHON picks the python
# (the test suite points it at build/python-venv; on the emulator run the
# check runs on CPU tensors).
py=${KVQ_SUITE_PYTHON:-python3}
python_status=0
if "$py" -c "import torch, nanobind, scikit_build_core" 2>/dev/null; then
  log "python package (kvq_jit)"
  site=$(mktemp -d)
  PIP_NO_INDEX=1 timeout 300 "$py" -m pip install --no-build-isolation --no-deps \
    --disable-pip-version-check --target "$site/site" -Cbuild-dir="$site/build" \
    -Ccmake.define.KVQ_RUNTIME_ROOT="$here/runtime" "$here/python" > "$raw/python-build.log" 2>&1
  python_status=$?
  device=cuda
  [ "${KVQ_SUITE_BACKEND:-cuda}" = emulator ] && device=cpu
  if [ "$python_status" -eq 0 ]; then
    PYTHONPATH="$site/site" timeout 240 "$py" "$here/python_check.py" --device="$device" \
      > "$raw/python.md" 2> "$raw/python.log"
    python_status=$?
    if [ "$device" = cuda ]; then
      {
        printf '\n### examples/hf_generate.py --device cuda --prompt-tokens 2048\n\n```\n'
        PYTHONPATH="$site/site" timeout 180 "$py" "$here/hf_generate.py" --device cuda \
          --prompt-tokens 2048 --new-tokens 32 2>> "$raw/python.log"
        echo "exit status $?"
        printf '```\n'
      } >> "$raw/python.md"
    fi
  else
    printf '\n## kvq_jit (Python)\n\nThe package did not build here: see python-build.log.\n\n```\n%s\n```\n' \
      "$(tail -20 "$raw/python-build.log")" > "$raw/python.md"
  fi
  log "python exit status $python_status ($(( $(date +%s) - start )) s)"
else
  printf '\n## kvq_jit (Python)\n\nNot run: no %s with torch, nanobind and scikit-build-core here.\n' "$py" > "$raw/python.md"
fi

{
  echo "# kvq GPU suite results"
  echo
  echo "Bundle: $(head -3 "$here/MANIFEST.txt" | tr '\n' ' ')"
  echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - start )) s in all."
  echo "Correctness exit status: $check (CUDA cores: $check_cc); benchmark exit status: $timing (CUDA cores: $timing_cc); memcheck exit status: $memcheck (both paths); mma check exit status: $mma; python exit status: $python_status."
  echo
  cat "$raw/device.md"
  echo
  cat "$raw/check.md" 2>/dev/null
  echo
  cat "$raw/bench.md" 2>/dev/null
  echo
  echo "# Attention on the CUDA cores (KVQ_ATTENTION_PATH=cuda-cores)"
  echo
  cat "$raw/check-cc.md" 2>/dev/null
  echo
  cat "$raw/bench-cc.md" 2>/dev/null
  cat "$raw/memcheck.md" 2>/dev/null
  cat "$raw/mma.md" 2>/dev/null
  cat "$raw/sdpa.md" 2>/dev/null
  echo
  cat "$raw/python.md" 2>/dev/null
} > "$out/results.md"
tar czf "$out/raw-logs.tar.gz" -C "$raw" . && rm -rf "$raw"
log "results in $out/results.md, raw logs in $out/raw-logs.tar.gz"
[ "$check" -eq 0 ] && [ "$timing" -eq 0 ] && [ "$check_cc" -eq 0 ] && \
  [ "$timing_cc" -eq 0 ] && [ "$memcheck" -eq 0 ] && [ "$mma" -eq 0 ] && \
  [ "$python_status" -eq 0 ]
