#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on kvq-gpu-bench's decode shapes.

One query token per sequence attends over the same token count kvq's
kernels see (body + 4 sink + 128 residual tokens) in fp16, with the same
L2 flush before each timed call and CUDA-event timing. Prints a markdown
section for bench/gpu/run.sh to append to the results file.
"""
import argparse
import statistics

import torch
import torch.nn.functional as F


def parse(text):
    return [int(x) for x in text.split(",") if x]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--tokens", default="1024,8192,32768,131072")
    p.add_argument("--gqa", default="1,4,8")
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--max-batch-tokens", type=int, default=1 << 20)
    p.add_argument("--iterations", type=int, default=20)
    # The shape options kvq-gpu-bench shares; its other options are ignored.
    a, _ = p.parse_known_args()

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    flush = torch.empty(2 * max(props.L2_cache_size, 32 << 20), dtype=torch.uint8, device=dev)
    print("\n## PyTorch scaled_dot_product_attention (fp16)\n")
    print(f"torch {torch.__version__} on {props.name}; median of {a.iterations} runs, "
          "L2 flushed before each; tokens = body + 132 (sink and residual).\n")
    print("| batch | tokens | gqa | median us |\n|---|---|---|---|")
    for b in parse(a.batches):
        for t in parse(a.tokens):
            if b * t > a.max_batch_tokens:
                continue
            n = (t + 127) // 128 * 128 + 132
            k = torch.randn(b, a.kv_heads, n, a.head_dim, device=dev, dtype=torch.float16)
            v = torch.randn_like(k)
            for g in parse(a.gqa):
                q = torch.randn(b, a.kv_heads * g, 1, a.head_dim, device=dev, dtype=torch.float16)
                # enable_gqa (torch >= 2.5) reads each kv head once; older
                # versions need K/V repeated per query head (copied here,
                # outside the timed region).
                try:
                    F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                    kk, vv, extra = k, v, {"enable_gqa": True}
                except TypeError:
                    kk = k.repeat_interleave(g, dim=1)
                    vv = v.repeat_interleave(g, dim=1)
                    extra = {}
                times = []
                for i in range(a.iterations + 3):
                    flush.zero_()
                    start = torch.cuda.Event(enable_timing=True)
                    stop = torch.cuda.Event(enable_timing=True)
                    start.record()
                    F.scaled_dot_product_attention(q, kk, vv, **extra)
                    stop.record()
                    stop.synchronize()
                    if i >= 3:
                        times.append(start.elapsed_time(stop) * 1e3)
                print(f"| {b} | {t} | {g} | {statistics.median(times):.1f} |")
            del k, v


if __name__ == "__main__":
    main()
