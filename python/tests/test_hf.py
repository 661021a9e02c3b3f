"""The transformers integration on tiny random models (no download): greedy
generation with int8 gives the fp16 DynamicCache's tokens; every preset's
logits stay within a tolerance of fp16's; GQA, padding, chunks, refusals."""

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

import kvq_jit
from conftest import tiny_llama
from kvq_jit.hf import KVQCache

PROMPT, NEW = 300, 32  # the prompt reaches the quantized store (residual 128)

# Max relative logit error vs fp16 (max |diff| / max |fp16 logit| over the
# teacher-forced decode steps), per preset: about 2x the largest value
# measured on these models and prompts (pytest -s prints them; largest:
# int8 0.0039, hf_quanto_int4 0.046, int4 0.030, kivi4 0.032, kivi2 0.193,
# the head_dim-128 Llama for int8, hf_quanto_int4 and kivi2).
TOLERANCE = {"int8": 0.008, "hf_quanto_int4": 0.1, "int4": 0.06, "kivi4": 0.07,
             "kivi2": 0.4}


def prompt(batch=1, tokens=PROMPT, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 512, (batch, tokens), generator=g)


def with_attention(model, name):
    model.set_attn_implementation(name)
    return model


def teacher_forced_logits(model, cache, ids, new):
    """Prefill ids[:, :-new], then one forward per token of ids[:, -new:]:
    the logits of every decode step, whatever the cache would have picked."""
    logits = [model(ids[:, :-new], cache=cache).logits[:, -1]]
    for t in range(ids.shape[1] - new, ids.shape[1] - 1):
        logits.append(model(ids[:, t:t + 1], cache=cache).logits[:, -1])
    return torch.stack(logits).float()


def fp16_generation(model, ids):
    with_attention(model, "sdpa")
    out = model.generate(ids, max_new_tokens=NEW, do_sample=False,
                         cache=DynamicCache(config=model.config))
    logits = teacher_forced_logits(model, DynamicCache(config=model.config), out, NEW)
    return out, logits


@pytest.mark.parametrize("name", ["llama", "llama-d128", "qwen2", "mistral"])
def test_int8_generates_the_fp16_tokens(models, name):
    model = models(name)
    ids = prompt()
    want, _ = fp16_generation(model, ids)
    with_attention(model, "kvq")
    cache = KVQCache(model.config, preset="int8")
    got = model.generate(ids, max_new_tokens=NEW, do_sample=False, cache=cache)
    assert torch.equal(got, want)
    sink, quantized, residual = cache.kvq.parts(0, 0)
    assert quantized > 0 and sink + quantized + residual == PROMPT + NEW - 1


@pytest.mark.parametrize("name", ["llama", "llama-d128", "qwen2", "mistral"])
@pytest.mark.parametrize("preset", list(TOLERANCE))
def test_logits_stay_within_the_preset_tolerance(models, name, preset):
    model = models(name)
    ids, fp16 = fp16_generation(model, prompt())
    with_attention(model, "kvq")
    got = teacher_forced_logits(model, KVQCache(model.config, preset=preset), ids, NEW)
    error = ((got - fp16).abs().amax((1, 2)) / fp16.abs().amax((1, 2))).max().item()
    print(f"{name} {preset}: max relative logit error {error:.5f}")
    assert error < TOLERANCE[preset]


def test_hf_style_parameters_choose_the_schemes(models):
    model = models("llama")
    cache = KVQCache(model.config, nbits=2, axis_key=-1, axis_value=0, q_group_size=32,
                     residual_length=64, sink=0)
    with_attention(model, "kvq")
    model(prompt(tokens=200), cache=cache)
    assert (cache.kvq.key_scheme, cache.kvq.value_scheme) == ("2c32", "2t32i")
    assert cache.kvq.parts(0, 0)[0] == 0 and cache.kvq.residual == 64
    with pytest.raises(kvq_jit.InvalidArgumentError, match="nbits=3"):
        KVQCache(model.config, nbits=3)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="axis_key=1"):
        KVQCache(model.config, axis_key=1)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="preset 'kivi9'"):
        KVQCache(model.config, preset="kivi9")


def test_left_padding_is_not_stored(models):
    model = with_attention(models("llama"), "kvq")
    short, long = prompt(tokens=150, seed=6), prompt(tokens=190, seed=7)
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    batch_cache = KVQCache(model.config, preset="int8")
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                             cache=batch_cache)
    assert batch_cache.kvq.tokens(0, 0) == 150 + 7 and batch_cache.kvq.tokens(0, 1) == 190 + 7
    alone = model.generate(short, max_new_tokens=8, do_sample=False,
                           cache=KVQCache(model.config, preset="int8"))
    assert torch.equal(batched[0, pad:], alone[0])


def test_several_new_tokens_per_forward(models):
    model = with_attention(models("qwen2"), "kvq")
    ids = prompt(tokens=160)
    one_by_one = teacher_forced_logits(model, KVQCache(model.config, preset="kivi4"), ids, 6)
    chunked = KVQCache(model.config, preset="kivi4", max_query_tokens=8)
    first = model(ids[:, :-6], cache=chunked).logits[:, -1]
    rest = model(ids[:, -6:-1], cache=chunked).logits[0]
    together = torch.cat([first, rest]).float()
    assert (together - one_by_one[:, 0]).abs().max() < 2e-2 * one_by_one.abs().max()
    small = KVQCache(model.config, preset="kivi4")
    model(ids[:, :100], cache=small)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="max_query_tokens=1"):
        model(ids[:, 100:104], cache=small)
    # The refused forward changed nothing: the cache and its count agree and
    # the next token is accepted.
    assert small.get_seq_length() == small.kvq.tokens(0, 0) == 100
    model(ids[:, 100:101], cache=small)
    assert small.get_seq_length() == small.kvq.tokens(1, 0) == 101


def test_a_model_without_kvq_attention_is_refused(models):
    model = with_attention(models("llama"), "sdpa")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="attn_implementation='kvq'"):
        model(prompt(tokens=20), cache=KVQCache(model.config))


def test_kvq_attention_without_a_kvq_cache_is_sdpa(models):
    model = models("llama")
    ids = prompt(tokens=40)
    with_attention(model, "sdpa")
    want = model(ids, cache=DynamicCache(config=model.config)).logits
    with_attention(model, "kvq")
    got = model(ids, cache=DynamicCache(config=model.config)).logits
    assert torch.equal(got, want)


def test_transformers_without_kwargs_in_update(models, monkeypatch):
    """Releases before 5.2x call Cache.update(k, v, layer) without the
    attention kwargs: the cache then reaches the attention function through
    a per-thread hand-over, with the same result."""
    model = with_attention(models("llama"), "kvq")
    ids = prompt(tokens=200)
    want = model.generate(ids, max_new_tokens=12, do_sample=False,
                          cache=KVQCache(model.config, preset="int4"))

    def update_as_older_releases(self, key_states, value_states, layer_idx, *args, **kwargs):
        return Cache.update(self, key_states, value_states, layer_idx)

    monkeypatch.setattr(KVQCache, "update", update_as_older_releases)
    cache = KVQCache(model.config, preset="int4")
    got = model.generate(ids, max_new_tokens=12, do_sample=False, cache=cache)
    assert torch.equal(got, want)
    assert cache.kvq.tokens(0, 0) == 200 + 11


def test_a_bf16_model_stores_bf16_with_fp32_scales():
    """bf16 models (Llama 3's dtype): the cache keeps bf16 sink and residual
    tokens and quantizes with fp32 scales (an fp16 scale overflows past
    65504); logits stay within the preset's tolerance of bf16's own."""
    model = tiny_llama().to(torch.bfloat16)
    ids, reference = fp16_generation(model, prompt())
    with_attention(model, "kvq")
    cache = KVQCache(model.config, preset="kivi4")
    got = teacher_forced_logits(model, cache, ids, NEW)
    assert cache.kvq.dtype == torch.bfloat16
    assert cache.kvq.key_scheme.endswith("x") and cache.kvq.value_scheme.endswith("x")
    error = ((got - reference).abs().amax((1, 2)) / reference.abs().amax((1, 2))).max()
    print(f"llama bf16 kivi4: max relative logit error {error.item():.5f}")
    assert error < TOLERANCE["kivi4"]


def test_sliding_window_models_are_held_to_their_window():
    from transformers import MistralConfig
    config = MistralConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                           sliding_window=1024)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="max_cache_len=4096 must be at most 1024"):
        KVQCache(config)
    assert KVQCache(config, max_cache_len=1024).max_cache_len == 1024


def test_beam_search_reorders_the_cache(models):
    """num_beams=3: the cache is reordered every step (reorder_cache); with
    int8 the beams end where the fp16 DynamicCache's do."""
    model = models("llama")
    ids = prompt(tokens=180)
    with_attention(model, "sdpa")
    want = model.generate(ids, max_new_tokens=10, num_beams=3, do_sample=False,
                          cache=DynamicCache(config=model.config))
    with_attention(model, "kvq")
    cache = KVQCache(model.config, preset="int8")
    got = model.generate(ids, max_new_tokens=10, num_beams=3, do_sample=False, cache=cache)
    assert torch.equal(got, want)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="beam_idx"):
        cache.reorder_cache(torch.tensor([0, 5, 1]))


def test_assisted_generation_crops_rejected_drafts(models):
    """Speculative decoding: a random assistant's drafts are verified in one
    forward (max_query_tokens) and the rejected ones cropped from the cache;
    the tokens are greedy decoding's."""
    import copy
    from transformers import LlamaForCausalLM
    model = with_attention(models("llama"), "kvq")
    torch.manual_seed(9)
    assistant = LlamaForCausalLM(copy.deepcopy(model.config)).to(torch.float16).eval()
    assistant.set_attn_implementation("sdpa")
    ids = prompt(tokens=200)
    want = model.generate(ids, max_new_tokens=16, do_sample=False,
                          cache=KVQCache(model.config, preset="int8"))
    cache = KVQCache(model.config, preset="int8", max_query_tokens=64)
    crops = []
    crop = cache.crop
    cache.crop = lambda n: (crops.append(n), crop(n))[1]
    got = model.generate(ids, max_new_tokens=16, do_sample=False, cache=cache,
                         assistant_model=assistant)
    assert torch.equal(got, want)
    assert any(n < 0 for n in crops), crops
    assert cache.get_seq_length() == cache.kvq.tokens(0, 0)
