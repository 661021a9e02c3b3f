#!/usr/bin/env bash
# Runs kvq's GPU benchmark suite on a CUDA machine and writes one results
# file, bench/results/gpu-<device>.md (or the path given first):
#   - kvq-gpu-bench: decode attention of every preset and of the fp16
#     baseline (batch 1/8/32, 1k-128k tokens, GQA 1/4/8), quantize, and
#     QuantizedKVCache steps, each attention result checked against the
#     reference backend in the same run;
#   - PyTorch's scaled_dot_product_attention on the same shapes, when
#     PyTorch with CUDA is installed (bench/gpu/sdpa_baseline.py).
# Options (after the path, if one is given) go to kvq-gpu-bench, e.g.
#   bench/gpu/run.sh --tokens=32768 --batches=1
# Needs the CUDA driver and a built tree (scripts/build.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bench="$root/build/bin/kvq-gpu-bench"
if [ ! -x "$bench" ]; then
  "$root/scripts/build.sh" kvq-gpu-bench
fi
device="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9\n' '-' || true)"
out="$root/bench/results/gpu-${device:-unknown}.md"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then # a path, not an option
  out="$1"
  shift
fi
mkdir -p "$(dirname "$out")"

"$bench" --backend=cuda --out="$out" "$@"

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  python3 "$root/bench/gpu/sdpa_baseline.py" "$@" >> "$out"  # same shape options
else
  printf '\n## PyTorch scaled_dot_product_attention\n\nNot measured: PyTorch with CUDA is not installed on this machine.\n' >> "$out"
fi
echo "kvq: results in $out"
