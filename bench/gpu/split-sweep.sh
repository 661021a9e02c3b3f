#!/usr/bin/env bash
# How the attention kernels' time moves with the number of blocks: each
# preset at batch 1 and 8, 8k-128k tokens, timed at the runtime's split and
# at 2-16 blocks per SM (kvq-gpu-bench --waves; the runtime uses 4, and the
# H200 sweeps put the best at or just under one round of resident blocks,
# 6 per SM for these kernels: bench/results/gpu-h200-split-sweep.md); then Nsight
# Compute's occupancy, warp-stall and memory sections for one kivi2 and one
# fp16 attention launch, where ncu is installed. Run from the GPU bundle:
#
#   bash build/gpu-bundle/split-sweep.sh [RESULTS_DIR]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-$PWD/gpu-results}}
mkdir -p "$out"
export KVQ_BUNDLE="$here/kernels.kvqb" KVQ_CACHE_DIR
KVQ_CACHE_DIR=$(mktemp -d)/kvq-cache
bench="$here/bin/kvq-gpu-bench"
timeout 200 "$bench" --presets=fp16,kivi2,kivi4,int4,int8 --batches=1,8 \
  --tokens=8192,32768,131072 --gqa=4,1 --head-dim=128 --kv-heads=8 \
  --iterations=10 --warmup=2 --max-batch-tokens=262144 \
  --waves=2,3,4,5,6,8,16 --cache-contexts=4096 --out="$out/sweep.md" \
  2> "$out/sweep.log"
echo "split-sweep: kvq-gpu-bench exit status $?" >&2
if command -v ncu > /dev/null; then
  for preset in kivi2 fp16; do
    timeout 90 ncu --clock-control none --section Occupancy \
      --section WarpStateStats --section MemoryWorkloadAnalysis \
      --section LaunchStats --section SpeedOfLight --section SchedulerStats \
      --section ComputeWorkloadAnalysis -k regex:kvq_attn -c 1 \
      "$bench" --presets="$preset" --batches=1 --tokens=32768 --gqa=4 \
      --head-dim=128 --kv-heads=8 --iterations=1 --warmup=0 \
      --cache-contexts= --out=/dev/null > "$out/ncu-$preset.txt" 2>&1
    echo "split-sweep: ncu $preset exit status $?" >&2
  done
fi
sed -n '/## Split sweep/,/^## Quantize/p' "$out/sweep.md"
