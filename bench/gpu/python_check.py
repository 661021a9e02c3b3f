#!/usr/bin/env python3
"""kvq_jit, the Python package, on CUDA tensors: the GPU suite's Python part.

bench/gpu/device-run.sh builds the package on the GPU machine against the
bundle's runtime-only library (no LLVM/MLIR there); the kernels come from
the bundle (scripts/gpu-bundle.sh exports what `--list-specs` prints).

1. Correctness: for every preset, a paged cache on the GPU and the same
   cache on the CPU (the reference backend) take the same ragged prompts and
   40 decode steps (residual flushes and page allocation on the device);
   their attention must agree within 2e-3, the suite's tolerance (a
   MISMATCH line otherwise, and exit status 1).
2. Timing: one decode step's attention, batch 8, Llama-3-8B's shape (32
   query heads, 8 kv heads, head_dim 128), 4k and 32k tokens, through
   kvq_jit against PyTorch's fp16 SDPA on the same K/V; and append_step.

    python3 python_check.py [--device cuda|cpu] [--list-specs]

Prints markdown.
"""

import argparse
import statistics
import sys

import torch

import kvq_jit

SHAPE = dict(kv_heads=8, query_heads=32, head_dim=128)
PROMPTS = [1500, 37, 2200, 300]
CONTEXTS = [4096, 32768]


def make(preset, device, batch, capacity):
    return kvq_jit.QuantizedKVCache(layers=1, batch=batch, capacity=capacity, preset=preset,
                                    device=device, **SHAPE)


def kv_like(tokens, generator, device):
    k = torch.randn(SHAPE["kv_heads"], tokens, SHAPE["head_dim"], generator=generator)
    k[:, :, 5] *= 10  # an outlier channel
    v = torch.randn(SHAPE["kv_heads"], tokens, SHAPE["head_dim"], generator=generator)
    return k.half().to(device), v.half().to(device)


def check(preset, device):
    """Max |GPU - CPU reference| of the attention after prompts and steps."""
    g = torch.Generator().manual_seed(7)
    caches = [make(preset, device, len(PROMPTS), 4096), make(preset, "cpu", len(PROMPTS), 4096)]
    for sequence, tokens in enumerate(PROMPTS):
        k, v = kv_like(tokens, g, "cpu")
        for cache in caches:
            cache.append(0, sequence, k.to(cache.device), v.to(cache.device))
    for _ in range(40):
        k, v = (torch.randn(len(PROMPTS), SHAPE["kv_heads"], SHAPE["head_dim"], generator=g).half()
                for _ in range(2))
        for cache in caches:
            cache.append_step(0, k.to(cache.device), v.to(cache.device))
    q = torch.randn(len(PROMPTS), SHAPE["query_heads"], SHAPE["head_dim"], generator=g).half()
    gpu, cpu = (cache.attend(0, q.to(cache.device)).float().cpu() for cache in caches)
    assert caches[0].parts(0, 0) == caches[1].parts(0, 0)
    return (gpu - cpu).abs().max().item()


def median_ms(fn, iterations=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timing(preset, context, device):
    batch = 8
    cache = make(preset, device, batch, context + 64)
    k = torch.randn(batch, SHAPE["kv_heads"], context, SHAPE["head_dim"], device=device).half()
    v = torch.randn_like(k)
    cache.prefill(0, k, v)
    q = torch.randn(batch, SHAPE["query_heads"], SHAPE["head_dim"], device=device).half()
    attend = median_ms(lambda: cache.attend(0, q))
    sdpa = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(
        q.unsqueeze(2), k, v, enable_gqa=True))
    step_k = torch.randn(batch, SHAPE["kv_heads"], SHAPE["head_dim"], device=device).half()
    step = median_ms(lambda: cache.append_step(0, step_k, step_k), iterations=10)
    return attend, sdpa, step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--list-specs", action="store_true",
                        help="print the kernels the check needs (on the CPU, nothing compiled)")
    args = parser.parse_args()
    if args.list_specs:
        specs = set()
        for preset in kvq_jit.presets():
            specs.update(make(preset, "cpu", 1, 64).kernel_specs)
        print("\n".join(sorted(specs)))
        return 0

    failed = False
    print("## kvq_jit (Python) on CUDA tensors\n")
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if args.device == 'cuda' else args.device}, "
          f"backend {kvq_jit.context_for(args.device).backend}\n")
    print("Correctness: a paged cache on the device vs the same cache on the CPU reference "
          f"backend, prompts {PROMPTS} tokens + 40 decode steps, {SHAPE}.\n")
    print("| preset | max abs diff | verdict |\n|---|---|---|")
    for preset in kvq_jit.presets():
        try:
            diff = check(preset, args.device)
            verdict = "ok" if diff <= 2e-3 else "MISMATCH"
        except kvq_jit.KVQError as error:
            diff, verdict = float("nan"), f"MISMATCH ({type(error).__name__}: {error})"
        failed |= verdict != "ok"
        print(f"| {preset} | {diff:.2e} | {verdict} |")
    if args.device == "cuda":
        print("\nTiming: one decode step's attention, batch 8, medians of 20 (CUDA events); "
              "fp16 = torch SDPA (enable_gqa) on the same K/V.\n")
        print("| preset | tokens | kvq_jit attend (ms) | torch SDPA fp16 (ms) | speedup | append_step (ms) |")
        print("|---|---|---|---|---|---|")
        for context in CONTEXTS:
            for preset in kvq_jit.presets():
                try:
                    attend, sdpa, step = timing(preset, context, args.device)
                    print(f"| {preset} | {context} | {attend:.3f} | {sdpa:.3f} | "
                          f"{sdpa / attend:.2f}x | {step:.3f} |")
                except kvq_jit.KVQError as error:
                    print(f"| {preset} | {context} | {type(error).__name__}: {error} | | | |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
