#!/usr/bin/env bash
# A transformers decode step on the CPU with fp16 (DynamicCache), transformers'
# QuantizedCache(quanto) and every kvq preset (examples/hf_generate.py), at 2k
# and 8k tokens of context, with PyTorch's default threads and with one
# thread (bench/README.md says why both). Prints the tables; the committed
# run is bench/results/hf-cpu.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=$("$root/scripts/python-setup.sh")
for threads in "" 1; do
  for context in 2048 8192; do
    "$python" "$root/examples/hf_generate.py" --prompt-tokens "$context" --new-tokens 32 \
      ${threads:+--threads "$threads"} 2>&1 | grep -v -e "Warning" -e "^W[0-9]"
    echo
  done
done
