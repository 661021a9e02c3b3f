#!/usr/bin/env python3
"""Generate with fp16, Hugging Face's QuantizedCache (quanto) and every kvq
preset on the same model and prompt, and print a table: memory of the cache,
time per decode step, tokens identical to fp16, logit error.

    build/python-venv/bin/python examples/hf_generate.py            # tiny random Llama, CPU
    build/python-venv/bin/python examples/hf_generate.py --model meta-llama/Llama-3.2-1B --device cuda

(scripts/python-setup.sh makes build/python-venv.) Without --model the model
is a small Llama (GQA) randomly initialised from a config: nothing is
downloaded. Greedy decoding; the logit error is measured teacher-forced on
the fp16 tokens (every cache sees the same inputs), as max |logit - fp16
logit| / max |fp16 logit| over the decode steps.
"""

import argparse
import inspect
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import QuantizedCache

import kvq_jit
import kvq_jit.hf


def tiny_llama(layers):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1024, hidden_size=512, intermediate_size=1024,
                         num_hidden_layers=layers, num_attention_heads=8,
                         num_key_value_heads=2, head_dim=64, max_position_embeddings=8192)
    return LlamaForCausalLM(config)


def cache_bytes(cache) -> int:
    """Bytes the cache's K/V take now."""
    if isinstance(cache, kvq_jit.hf.KVQCache):
        return cache.memory()["used_bytes"]
    total = 0
    for layer in cache.layers:
        tensors = [layer.keys, layer.values]
        for q in (getattr(layer, "_quantized_keys", None), getattr(layer, "_quantized_values", None)):
            if q is not None:  # optimum-quanto's packed data, scales and shifts
                tensors += [q._data._data if hasattr(q._data, "_data") else q._data,
                            q._scale, q._shift]
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return total


def cache_keyword(model) -> str:
    """How forward() takes the cache: `cache` (transformers >= 5.2x) or
    `past_key_values` (earlier releases)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def decode(model, cache, ids, new, forced=None):
    """Greedy decoding of `new` tokens (or the tokens `forced` gives):
    (tokens, per-step logits, per-step seconds)."""
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    with torch.no_grad():
        keyword = {cache_keyword(model): cache}
        logits = model(ids, **keyword).logits[:, -1]
        tokens, all_logits, times = [], [logits.float()], []
        for step in range(new - 1):
            token = logits.argmax(-1, keepdim=True) if forced is None else forced[:, step:step + 1]
            tokens.append(token)
            sync()
            start = time.perf_counter()
            logits = model(token, **keyword).logits[:, -1]
            sync()
            times.append(time.perf_counter() - start)
            all_logits.append(logits.float())
        tokens.append(logits.argmax(-1, keepdim=True))
    return torch.cat(tokens, 1), torch.stack(all_logits), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a transformers model name or path (default: tiny random Llama)")
    parser.add_argument("--layers", type=int, default=4, help="layers of the tiny model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--presets", default=",".join(kvq_jit.presets()))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--list-specs", action="store_true",
                        help="print the kvq kernels the run needs (for a kernel bundle) and stop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float16)
    else:
        model = tiny_llama(args.layers)
    if args.list_specs:
        config = model.config
        specs = set()
        for preset in args.presets.split(","):
            specs.update(kvq_jit.QuantizedKVCache(
                layers=1, batch=1, kv_heads=config.num_key_value_heads,
                query_heads=config.num_attention_heads,
                head_dim=getattr(config, "head_dim", None)
                or config.hidden_size // config.num_attention_heads,
                capacity=64, preset=preset).kernel_specs)
        print("\n".join(sorted(specs)))
        return
    model = model.to(args.device, torch.float16).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens),
                        generator=torch.Generator().manual_seed(1)).to(args.device)

    def run(attention, make_cache):
        model.set_attn_implementation(attention)
        tokens, _, times = decode(model, cache := make_cache(), ids, args.new_tokens)
        memory = cache_bytes(cache)
        _, logits, _ = decode(model, make_cache(), ids, args.new_tokens, forced=reference[0])
        return tokens, logits, times, memory

    config = model.config
    reference = None
    rows, skipped = [], []
    configs = [("fp16 (DynamicCache)", "sdpa", lambda: DynamicCache(config=config)),
               ("HF QuantizedCache quanto int4", "sdpa",
                lambda: QuantizedCache("quanto", config, nbits=4))]
    configs += [(f"kvq {p}", "kvq", lambda p=p: kvq_jit.hf.KVQCache(
        config, preset=p, max_cache_len=args.prompt_tokens + args.new_tokens))
        for p in args.presets.split(",")]
    for name, attention, make_cache in configs:
        if reference is None:
            model.set_attn_implementation(attention)
            tokens, logits, times = decode(model, cache := make_cache(), ids, args.new_tokens)
            reference = (tokens, logits)
            rows.append((name, cache_bytes(cache), statistics.median(times), tokens, 0.0))
            continue
        try:
            tokens, logits, times, memory = run(attention, make_cache)
        except ImportError as missing:  # QuantizedCache without optimum-quanto
            skipped.append(f"{name}: {missing}")
            continue
        error = ((logits - reference[1]).abs().amax((1, 2))
                 / reference[1].abs().amax((1, 2))).max().item()
        rows.append((name, memory, statistics.median(times), tokens, error))

    print(f"model: {args.model or f'tiny random Llama ({args.layers} layers, 8 heads, 2 kv heads, head_dim 64)'}"
          f", {args.device} ({torch.get_num_threads()} torch threads), prompt {args.prompt_tokens} "
          f"tokens, {args.new_tokens} new (greedy)")
    print(f"{'cache':32} {'K/V memory':>12} {'ms/token':>9} {'same tokens':>12} {'logit error':>12}")
    fp16_bytes = rows[0][1]
    for name, memory, seconds, tokens, error in rows:
        same = int((tokens == reference[0]).cumprod(1).sum())
        print(f"{name:32} {memory / 2**20:8.2f} MiB {seconds * 1e3:9.3f} "
              f"{same:>5}/{tokens.shape[1]:<6} {error:12.5f}"
              + (f"   ({fp16_bytes / memory:.2f}x smaller)" if memory and memory != fp16_bytes else ""))
    for line in skipped:
        print(f"not run: {line}")


if __name__ == "__main__":
    main()
