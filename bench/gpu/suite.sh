# The GPU suite's runs of kvq-gpu-bench, in one place: device-run.sh runs
# them, scripts/gpu-bundle.sh exports exactly the kernels they use (each
# run's --list-specs). Sourced, not run.

# Correctness first: every preset, head_dim 64/128, GQA 1/4/8, ragged batch.
KVQ_SUITE_CHECK=(--check --check-head-dims=64,128 --gqa=1,4,8)
# Then timings: batch 1/8, 1k-128k tokens, GQA 4 and 1 (Llama-3-8B and
# Llama-2-7B shapes: head_dim 128, 8 kv heads), every preset vs fp16. Batch
# 8 stops at 32k tokens: 8 x 128k is 4.3 GB of fp16 K/V made on the host,
# minutes of a 15-minute lease (batch 1 x 128k already reads 0.5 GB).
KVQ_SUITE_BENCH=(--batches=1,8 --tokens=1024,8192,32768,131072 --gqa=4,1
                 --head-dim=128 --kv-heads=8 --iterations=20 --warmup=3
                 --max-batch-tokens=262144 --cache-contexts=4096,32768)
# Under compute-sanitizer's memcheck (slow: the smoke size).
KVQ_SUITE_MEMCHECK=(--check --smoke)
# The toy run the test suite makes on the CPU emulator.
KVQ_SUITE_SMOKE=(--smoke)
# Architectures the bundle carries CUBINs for (plus PTX in every entry):
# the lent machines are H100/H200, and both attention paths' kernels must
# fit the 64 MiB a device call carries.
KVQ_SUITE_ARCHS=(sm_90)
