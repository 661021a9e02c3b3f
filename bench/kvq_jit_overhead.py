#!/usr/bin/env python3
"""What a kvq_jit call costs on the host, beyond the kernel (CPU tensors,
reference backend, a cache of 8 tokens so the kernel itself is small):

    build/python-venv/bin/python bench/kvq_jit_overhead.py

the C++ binding alone, the op's body (tensor handling, no checks), the
public method (checks + the torch.library custom op: what eager code runs),
and the custom op alone (what a traced graph runs). Medians of 5 rounds of
2000 calls, in microseconds.
"""

import statistics
import time

import torch

import kvq_jit
from kvq_jit import ops


def main():
    cache = kvq_jit.QuantizedKVCache(layers=1, batch=1, kv_heads=2, query_heads=8, head_dim=64,
                                     capacity=4096, preset="int4")
    k = torch.randn(2, 8, 64).half()
    cache.append(0, 0, k, k)
    q = torch.randn(1, 8, 64).half()
    out = torch.empty_like(q)

    def timed(fn, calls=2000, rounds=5):
        for _ in range(100):
            fn()
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples.append((time.perf_counter() - start) / calls * 1e6)
        return statistics.median(samples)

    rows = [
        ("binding (C++ attend)", lambda: cache._cache.attend(0, q.data_ptr(), out.data_ptr())),
        ("op body (_attend)", lambda: cache._attend(0, q)),
        ("public attend (checks + op)", lambda: cache.attend(0, q)),
        ("custom op kvq_jit::cache_attend", lambda: ops.cache_attend(cache.state, cache.id, 0, q)),
    ]
    for name, fn in rows:
        print(f"{name:34} {timed(fn):8.1f} us")


if __name__ == "__main__":
    main()
