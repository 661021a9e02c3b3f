"""torch.compile traces a kvq decode step without graph breaks: the kvq
kernels are torch.library custom ops, and the cache reaches the attention
function through the attention kwargs."""

import pytest
import torch
from torch._dynamo.utils import counters

import kvq_jit
from conftest import tiny_llama
from kvq_jit.hf import KVQCache


def prompt(tokens=200):
    return torch.randint(0, 512, (1, tokens), generator=torch.Generator().manual_seed(5))


def test_compiled_generate_gives_the_eager_tokens_in_two_graphs():
    model = tiny_llama()
    model.set_attn_implementation("kvq")
    ids = prompt()
    eager = model.generate(ids, max_new_tokens=12, do_sample=False,
                           cache=KVQCache(model.config, preset="kivi2"))
    torch._dynamo.reset()
    counters.clear()
    model.forward = torch.compile(model.forward, fullgraph=True)  # a break would raise
    cache = KVQCache(model.config, preset="kivi2", batch_size=1, dtype=torch.float16)
    compiled = model.generate(ids, max_new_tokens=12, do_sample=False, cache=cache)
    assert torch.equal(compiled, eager)
    assert not counters["graph_break"]
    # One graph for the prefill, one for every decode step: no recompiles.
    assert counters["stats"]["unique_graphs"] == 2


def test_the_cache_ops_trace_in_one_graph():
    cache = kvq_jit.QuantizedKVCache(layers=1, batch=2, kv_heads=2, query_heads=4,
                                     head_dim=64, capacity=256, preset="int4")
    twin = kvq_jit.QuantizedKVCache(layers=1, batch=2, kv_heads=2, query_heads=4,
                                    head_dim=64, capacity=256, preset="int4")
    prompts = [[torch.randn(2, 40, 64).half() for _ in range(2)] for _ in range(2)]
    for c in (cache, twin):
        for sequence, (k, v) in enumerate(prompts):
            c.append(0, sequence, k, v)

    def step(c, k, v, q):
        c.append_step(0, k, v)
        return c.attend(0, q) * 2

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for _ in range(3):
        k, v = (torch.randn(2, 2, 64).half() for _ in range(2))
        q = torch.randn(2, 4, 64).half()
        assert torch.equal(compiled(cache, k, v, q), step(twin, k, v, q))
    assert cache.parts(0, 0) == twin.parts(0, 0) == (4, 0, 39)


def test_a_cache_created_inside_a_compiled_forward_is_refused_by_name():
    model = tiny_llama()
    model.set_attn_implementation("kvq")
    torch._dynamo.reset()
    forward = torch.compile(model.forward, fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="batch_size="):
        forward(prompt(20), cache=KVQCache(model.config))
