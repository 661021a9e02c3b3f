"""kvq_jit.QuantizedKVCache with torch tensors: attention against a torch
reference built from the cache's own parts, decode steps, chunks, strided
input, sequences, and refusals that change nothing."""

import math

import pytest
import torch

import kvq_jit

KV_HEADS, QUERY_HEADS, DIM = 2, 4, 64


def make_cache(preset="kivi2", batch=2, **options):
    options.setdefault("capacity", 512)
    return kvq_jit.QuantizedKVCache(layers=2, batch=batch, kv_heads=KV_HEADS,
                                    query_heads=QUERY_HEADS, head_dim=DIM, preset=preset,
                                    **options)


def kv_like(tokens, seed):
    """Keys with an outlier channel and a sink token, values plain."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(KV_HEADS, tokens, DIM, generator=g)
    k[:, :, 7] *= 10
    k[:, 0] *= 6
    v = torch.randn(KV_HEADS, tokens, DIM, generator=g)
    return k.half(), v.half()


def reference_attention(cache, layer, sequence, k, v, q, zero_points="minmax"):
    """Attention in float64 over what the cache says it holds: fp16 sink and
    residual, the quantized middle through kvq_jit.quantize/dequantize (with
    `zero_points`, as the cache's prefill picked them)."""
    sink, quantized, residual = cache.parts(layer, sequence)
    keys, values = k.clone(), v.clone()
    if quantized:
        body = slice(sink, sink + quantized)
        for t, scheme in ((keys, cache.key_scheme), (values, cache.value_scheme)):
            part = t[:, body].contiguous()
            words, scales, zeros = kvq_jit.quantize(part, scheme, zero_points)
            t[:, body] = kvq_jit.dequantize(words, scales, zeros, scheme, quantized, DIM)
    group = QUERY_HEADS // KV_HEADS
    keys = keys.double().repeat_interleave(group, 0)
    values = values.double().repeat_interleave(group, 0)
    scores = torch.einsum("hd,htd->ht", q.double(), keys) / math.sqrt(DIM)
    return torch.einsum("ht,htd->hd", scores.softmax(-1), values)


@pytest.mark.parametrize("preset", kvq_jit.presets())
def test_attention_matches_the_reference_of_its_parts(preset):
    cache = make_cache(preset)
    prompts = [kv_like(300, 1), kv_like(37, 2)]
    for sequence, (k, v) in enumerate(prompts):
        cache.append(0, sequence, k, v)
    assert cache.parts(0, 0)[1] > 0, "the long prompt must reach the quantized store"
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    out = cache.attend(0, q)
    for sequence, (k, v) in enumerate(prompts):
        want = reference_attention(cache, 0, sequence, k, v, q[sequence])
        assert (out[sequence].double() - want).abs().max() < 2e-3


def test_a_decode_step_equals_appending_each_sequence():
    stepped, appended = make_cache("int4"), make_cache("int4")
    for cache in (stepped, appended):
        for sequence in range(2):
            cache.append(1, sequence, *kv_like(150 + sequence, sequence))
    for step in range(40):  # crosses a residual flush
        k, v = (torch.randn(2, KV_HEADS, DIM).half() for _ in range(2))
        stepped.append_step(1, k, v)
        for sequence in range(2):
            appended.append(1, sequence, k[sequence].unsqueeze(1), v[sequence].unsqueeze(1))
    assert stepped.parts(1, 0) == appended.parts(1, 0)
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    assert torch.equal(stepped.attend(1, q), appended.attend(1, q))


def test_strided_input_is_read_where_it_is():
    k, v = kv_like(96, 3)
    batched = torch.stack([k, k])  # [batch, kv_heads, seq, dim]: slice of it
    token_major = k.transpose(0, 1).contiguous()  # [tokens, kv_heads, dim]
    a, b, c = make_cache(), make_cache(), make_cache()
    a.append(0, 0, k, v)
    b.append(0, 0, batched[1], torch.stack([v, v])[1])
    c.append(0, 0, token_major.transpose(0, 1), v.transpose(0, 1).contiguous().transpose(0, 1))
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    assert torch.equal(a.attend(0, q), b.attend(0, q))
    assert torch.equal(a.attend(0, q), c.attend(0, q))


def test_a_chunk_attends_causally():
    chunked = make_cache("kivi4", max_query_tokens=8)
    single = make_cache("kivi4")
    for cache in (chunked, single):
        for sequence in range(2):
            cache.append(0, sequence, *kv_like(70, 10 + sequence))
    new = 5
    k, v = (torch.randn(new, KV_HEADS, DIM).half() for _ in range(2))
    q = torch.randn(new, QUERY_HEADS, DIM).half()
    out = chunked.append_and_attend(0, k, v, q, [0, new, new])  # sequence 1 takes none
    for i in range(new):
        single.append(0, 0, k[i].unsqueeze(1), v[i].unsqueeze(1))
        want = single.attend(0, torch.stack([q[i], q[i]]))[0]
        assert (out[i].float() - want.float()).abs().max() < 1e-3
    assert chunked.parts(0, 0) == single.parts(0, 0)


def test_sequences_release_fork_snapshot_restore():
    cache = make_cache("kivi2", batch=3)
    cache.append(0, 0, *kv_like(200, 4))
    cache.append(1, 0, *kv_like(200, 5))
    used = cache.pages_in_use(0)
    assert used > 0
    cache.fork(0, 1)
    blob = cache.snapshot(0)
    cache.restore(2, blob)
    q = torch.randn(3, QUERY_HEADS, DIM).half()
    out = cache.attend(0, q.roll(0, 0)[[0, 0, 0]])
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    cache.release(2)
    with pytest.raises(kvq_jit.KVQError):
        cache.restore(2, bytes(bad))
    assert cache.parts(0, 2) == (0, 0, 0)
    cache.release(0)
    cache.release(1)
    assert cache.pages_in_use(0) == 0


def test_refusals_name_the_bad_value_and_change_nothing():
    cache = make_cache("int8", capacity=256)
    k, v = kv_like(200, 6)
    cache.append(0, 0, k, v)
    before = cache.parts(0, 0)
    with pytest.raises(kvq_jit.KVQError, match="capacity|256"):
        cache.append(0, 0, k, v)  # 400 > 256
    assert cache.parts(0, 0) == before
    with pytest.raises(kvq_jit.InvalidArgumentError, match="layer 2"):
        cache.append(2, 0, k, v)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="sequence 5"):
        cache.append(0, 5, k, v)
    with pytest.raises(kvq_jit.InvalidArgumentError, match=r"k: shape \[3, 200, 64\]"):
        cache.append(0, 1, torch.cat([k, k[:1]]), v)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="v: dtype torch.float32"):
        cache.append(0, 1, k, v.float())
    with pytest.raises(kvq_jit.InvalidArgumentError, match="head_dim"):
        cache.append(0, 1, k.transpose(1, 2).contiguous().transpose(1, 2), v)
    with pytest.raises(kvq_jit.InvalidArgumentError, match=r"q: shape"):
        cache.attend(0, torch.randn(2, KV_HEADS, DIM).half())
    with pytest.raises(kvq_jit.InvalidArgumentError, match="preset 'kivi3'|kivi3"):
        make_cache("kivi3")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="device meta"):
        kvq_jit.QuantizedKVCache(layers=1, batch=1, kv_heads=2, query_heads=4, head_dim=64,
                                 device="meta")
    assert cache.parts(0, 0) == before and cache.parts(0, 1) == (0, 0, 0)


def test_memory_is_smaller_than_fp16():
    cache = make_cache("kivi2", capacity=2048)
    cache.append(0, 0, *kv_like(2000, 7))
    use = cache.memory()
    assert use["used_bytes"] < use["fp16_bytes"] / 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_run_on_the_cuda_backend():
    cache = make_cache("kivi2", device="cuda")
    k, v = kv_like(300, 8)
    cache.append(0, 0, k.cuda(), v.cuda())
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    out = cache.attend(0, q.cuda())
    want = reference_attention(cache, 0, 0, k, v, q[0])
    assert (out[0].cpu().double() - want).abs().max() < 2e-3


def test_the_emulator_backend_runs_the_generated_kernels(monkeypatch):
    """KVQ_CPU_BACKEND=emulator: the generated CUDA of the cache's kernels,
    run on the CPU emulator, against the reference backend."""
    caches = {}
    for backend in ("reference", "emulator"):
        monkeypatch.setenv("KVQ_CPU_BACKEND", backend)
        caches[backend] = cache = make_cache("kivi2", capacity=256)
        cache.append(0, 0, *kv_like(150, 9))
        cache.append(0, 1, *kv_like(40, 10))
        for _ in range(3):
            cache.append_step(0, *(torch.ones(2, KV_HEADS, DIM).half() for _ in range(2)))
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    emulated, reference = caches["emulator"].attend(0, q), caches["reference"].attend(0, q)
    assert caches["emulator"].parts(0, 0) == caches["reference"].parts(0, 0)
    assert (emulated.float() - reference.float()).abs().max() < 2e-3
    monkeypatch.setenv("KVQ_CPU_BACKEND", "gpu")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="KVQ_CPU_BACKEND='gpu'"):
        make_cache()


def test_kernel_specs_name_every_kernel_the_cache_runs():
    cache = make_cache("kivi2", max_query_tokens=4)
    specs = cache.kernel_specs
    assert cache.attention_spec in specs
    assert {"quantize 2c32 d=64 f16", "quantize 2t32i d=64 f16",
            "append k=2c32 v=2t32i d=64 f16"} <= set(specs)
    assert any(s.endswith("chunked") or " chunked" in s for s in specs), specs


def test_truncate_removes_the_newest_tokens_as_if_never_appended():
    # (While no residual flush happened in between: one that did stays, its
    # tokens quantized a little earlier than they would have been.)
    k, v = kv_like(300, 11)
    cut, kept = make_cache("kivi4"), make_cache("kivi4")
    for cache in (cut, kept):
        for layer in range(2):  # truncate() cuts every layer
            cache.append(layer, 0, k[:, :280], v[:, :280])
            cache.append(layer, 1, k[:, :40], v[:, :40])
    for layer in range(2):
        cut.append(layer, 0, k[:, 280:290], v[:, 280:290])  # 10 drafts, then rejected
    cut.truncate(0, 10)
    assert cut.parts(0, 0) == kept.parts(0, 0) and cut.parts(1, 0) == kept.parts(1, 0)
    for _ in range(40):  # decoding goes on alike, residual flushes included
        ks, vs = (torch.randn(2, KV_HEADS, DIM).half() for _ in range(2))
        for layer in range(2):
            cut.append_step(layer, ks, vs)
            kept.append_step(layer, ks, vs)
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    assert torch.equal(cut.attend(0, q), kept.attend(0, q))
    # Only fp16 tokens can go: refused beyond them, and nothing changes.
    sink, quantized, residual = cut.parts(0, 0)
    assert quantized > 0 and cut.truncatable(0) == residual
    with pytest.raises(kvq_jit.InvalidArgumentError, match=f"only the last {residual}"):
        cut.truncate(0, residual + 1)
    assert cut.parts(0, 0) == (sink, quantized, residual)
    assert cut.parts(0, 1) == (4, 0, 76)  # 40 prompt tokens + 40 steps
    cut.truncate(1, 80)  # nothing quantized yet: the sink can go too
    assert cut.parts(0, 1) == cut.parts(1, 1) == (0, 0, 0)


def test_hqq_prefill_stores_what_kvq_jit_quantize_gives():
    """A cache with prefill_zero_points="hqq" attends over HQQ-quantized
    prompts: it matches the reference built with zero_points="hqq" and is
    told apart from the min-max one."""
    cache = make_cache("kivi2", prefill_zero_points="hqq")
    prompts = [kv_like(300, 5), kv_like(200, 6)]
    for sequence, (k, v) in enumerate(prompts):
        cache.append(0, sequence, k, v)
    q = torch.randn(2, QUERY_HEADS, DIM).half()
    out = cache.attend(0, q)
    for sequence, (k, v) in enumerate(prompts):
        hqq = reference_attention(cache, 0, sequence, k, v, q[sequence], "hqq")
        minmax = reference_attention(cache, 0, sequence, k, v, q[sequence])
        got = out[sequence].double()
        assert (got - hqq).abs().max() < 2e-3 * hqq.abs().max()
        assert (got - minmax).abs().max() > 1e-2 * minmax.abs().max()


def test_hqq_zero_points_lower_the_error_and_bad_names_are_refused():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 256, DIM, generator=g).half()

    def error(zero_points):
        words, scales, zeros = kvq_jit.quantize(x, "4t32", zero_points)
        back = kvq_jit.dequantize(words, scales, zeros, "4t32", 256, DIM)
        return ((back.double() - x.double()).norm() / x.double().norm()).item()

    assert error("hqq") < 0.99 * error("minmax")
    with pytest.raises(ValueError, match="'median'"):
        kvq_jit.quantize(x, "4t32", "median")
    with pytest.raises(kvq_jit.InvalidSpecError, match="symmetric"):
        kvq_jit.quantize(x, "4t32s", "hqq")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="'median'"):
        make_cache("kivi2", prefill_zero_points="median")


def test_fp8_cache_with_calibrated_scales_matches_its_reference():
    """An FP8 E4M3 cache (per-tensor scales from calibrate_scales, vLLM's
    amax / 448) attends over what its scales store: the quantized middle is
    fp8(x / scale) * scale, computed here in torch; missing scales are
    refused by name."""
    k, v = kv_like(300, 8)
    scales = {}
    for name, x in (("key", k), ("value", v)):
        scale = kvq_jit.calibrate_scales(x.transpose(0, 1).float(), "e4m3")["scale"]
        scales[name] = [float(scale[0])] * 2  # both layers
    cache = make_cache("fp8_e4m3", key_scales=scales["key"], value_scales=scales["value"])
    cache.append(0, 0, k, v)
    sink, quantized, residual = cache.parts(0, 0)
    assert quantized > 0 and sink == 0
    body = slice(sink, sink + quantized)
    # The stored values as the kernel reads them: fp8 * scale in fp32 (not
    # rounded to fp16).
    keys, values = k.double(), v.double()
    for t, s in ((keys, scales["key"][0]), (values, scales["value"][0])):
        stored = (t[:, body].float() / s).to(torch.float8_e4m3fn)
        t[:, body] = (stored.float() * s).double()
    group = QUERY_HEADS // KV_HEADS
    q = torch.randn(2, QUERY_HEADS, DIM, generator=torch.Generator().manual_seed(3)).half()
    out = cache.attend(0, q)
    kk = keys.repeat_interleave(group, 0)
    vv = values.repeat_interleave(group, 0)
    p = (torch.einsum("hd,htd->ht", q[0].double(), kk) / math.sqrt(DIM)).softmax(-1)
    want = torch.einsum("ht,htd->hd", p, vv)
    assert (out[0].double() - want).abs().max() < 2e-3
    with pytest.raises(kvq_jit.InvalidArgumentError, match="key scales: scheme e4m3pt needs 2"):
        make_cache("fp8_e4m3")
