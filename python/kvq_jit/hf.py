"""kvq as a Hugging Face transformers cache: decode attention reads the
quantized cache directly, through one fused kernel per layer.

    import kvq_jit.hf
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="kvq")
    cache = kvq_jit.hf.KVQCache(model.config, preset="kivi2")
    model.generate(**inputs, past_key_values=cache, max_new_tokens=64)

Importing this module registers the attention implementation "kvq" (the
attention function below, and sdpa's mask). With a KVQCache:
- the prompt attends in fp16 (PyTorch SDPA), then goes to the cache in bulk:
  its first `sink` tokens stay fp16, the rest but the last `residual` are
  quantized once, never re-quantized; left padding is not stored;
- each decode step appends the new tokens (one launch per layer) and runs
  kvq's fused attention over sink + quantized store + residual, without
  dequantizing the cache.
Without a KVQCache (a DynamicCache, say) "kvq" attention is plain SDPA.

The cache finds its way to the attention function through the `kwargs` dict
transformers hands to both Cache.update() and the attention function (the
Llama, Mistral and Qwen2 code of recent transformers 5 releases do); with an
older release, whose attention calls update() without it, through a
per-thread slot that the next attention call on that thread takes. A model
whose attention does not run through "kvq" is refused by name.
"""

import math
import threading

import torch
from transformers import AttentionInterface, PreTrainedConfig
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import _kvq
from .cache import QuantizedKVCache

ATTENTION = "kvq"
# The hand-over from update() to the attention function when transformers
# passes update() no kwargs (see the module's docstring): per thread, taken
# by the next attention call.
_handover = threading.local()
_HF_DEFAULT_PRESET = "hf_quanto_int4"  # QuantizedCache(quanto)'s defaults


def _hf_scheme(nbits, axis, group, what):
    if nbits not in (2, 4, 8):
        raise _kvq.InvalidArgumentError(f"nbits={nbits}: kvq quantizes to 2, 4 or 8 bits")
    if axis not in (0, -1):
        raise _kvq.InvalidArgumentError(
            f"{what}={axis}: expected 0 (groups of channels within a token, as quanto's "
            "axis=0) or -1 (groups of tokens within a channel, KIVI's keys)")
    # Token-axis codes interleaved, as the presets store them: the layout
    # the tensor-core attention unpacks fastest (docs/architecture.md).
    return f"{nbits}t{group}i" if axis == 0 else f"{nbits}c{group}"


class KVQLayer(CacheLayerMixin):
    """One model layer of a KVQCache: counts its tokens; the tokens live in
    the shared kvq cache, and move there in kvq_attention()."""

    is_compileable = False  # generate() must not compile on its own
    is_croppable = True  # KVQCache.crop: the most recent tokens are fp16
    is_sliding = False

    def __init__(self, owner: "KVQCache", index: int):
        super().__init__()
        self.owner, self.index = owner, index
        self.cumulative_length = 0
        self.prefilling = False
        self.arriving = 0

    def lazy_initialization(self, key_states, value_states):
        self.owner._create(key_states)
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, kwargs=None, **rest):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.owner._check_attention()
        self.prefilling = self.cumulative_length == 0
        # Counted once the kvq cache has taken them (KVQCache.prefill and
        # decode): a refused step leaves the count as the cache is.
        self.arriving = key_states.shape[-2]
        if kwargs is not None:
            kwargs["kvq_cache"] = self.owner
        else:
            _handover.cache = self.owner
        return key_states, value_states

    def taken(self):
        """The kvq cache took the tokens update() announced."""
        self.cumulative_length += self.arriving
        self.arriving = 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cumulative_length + query_length, 0

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_max_length(self) -> int:
        return self.owner.max_cache_len

    def reset(self) -> None:
        self.cumulative_length = 0



class KVQCache(Cache):
    """A transformers Cache whose layers live in one kvq QuantizedKVCache.

    `preset`: a kvq preset (kvq_jit.presets(): kivi2, kivi4, hf_quanto_int4,
    int8, int4). The HF QuantizedCache parameters are accepted too: `nbits`
    (2/4/8), `axis_key`/`axis_value` (0: per token, -1: per channel),
    `q_group_size`, `residual_length`; given without a preset they start from
    QuantizedCache(quanto)'s defaults (4 bits, axis 0, groups of 64, residual
    128). `sink`: fp16 attention-sink tokens (the preset's 4 unless set; 0
    quantizes the prompt from its first token, as transformers does).
    `max_cache_len`: tokens per sequence the cache holds (prompt + new).
    `max_query_tokens`: new tokens one forward may add after the prompt
    (1 for generate(); up to 64 for speculative verification).
    The kvq cache is created at the first update, for that batch, dtype
    (fp16 and bf16 are stored as they are; fp32 as fp16) and device, or at
    once with `batch_size`, `dtype` and `device` (as torch.compile needs:
    creating it allocates, which a traced forward cannot do; transformers'
    early_initialization() does the same)."""

    def __init__(self, config: PreTrainedConfig, preset: str = None, *, nbits: int = None,
                 axis_key: int = None, axis_value: int = None, q_group_size: int = None,
                 residual_length: int = None, sink: int = None, max_cache_len: int = 4096,
                 max_query_tokens: int = 1, batch_size: int = None, dtype: torch.dtype = None,
                 device=None):
        self.config = config.get_text_config(decoder=True)
        hf_style = {"nbits": nbits, "axis_key": axis_key, "axis_value": axis_value,
                    "q_group_size": q_group_size}
        if preset is None:
            preset = _HF_DEFAULT_PRESET if any(v is not None for v in hf_style.values()) \
                or residual_length is not None else "kivi2"
        if preset not in _kvq.presets():
            raise _kvq.InvalidArgumentError(
                f"preset {preset!r} is not one of {', '.join(_kvq.presets())}")
        self.preset = preset
        self.key = self.value = None
        if any(v is not None for v in hf_style.values()):
            bits = 4 if nbits is None else nbits
            group = 64 if q_group_size is None else q_group_size
            self.key = _hf_scheme(bits, 0 if axis_key is None else axis_key, group, "axis_key")
            self.value = _hf_scheme(bits, 0 if axis_value is None else axis_value, group,
                                    "axis_value")
        self.residual, self.sink = residual_length, sink
        self.max_cache_len, self.max_query_tokens = max_cache_len, max_query_tokens
        self._check_window(max_cache_len)
        self.kv_heads = getattr(self.config, "num_key_value_heads", None) \
            or self.config.num_attention_heads
        self.query_heads = self.config.num_attention_heads
        self.head_dim = getattr(self.config, "head_dim", None) \
            or self.config.hidden_size // self.config.num_attention_heads
        self.kvq = None  # kvq_jit.QuantizedKVCache, at the first update
        super().__init__(layers=[KVQLayer(self, i)
                                 for i in range(self.config.num_hidden_layers)])
        if batch_size is not None:
            self.early_initialization(batch_size, self.kv_heads, self.head_dim,
                                      dtype or torch.float16, torch.device(device or "cpu"))

    # --- set-up --------------------------------------------------------------
    def _check_window(self, max_cache_len):
        """kvq attends over every token it holds: a sliding-window layer is
        the same only while the cache fits the window, so a longer cache is
        refused (as transformers' QuantizedCache refuses such models)."""
        window = getattr(self.config, "sliding_window", None)
        types = getattr(self.config, "layer_types", None)
        windowed = ([t for t in types if t != "full_attention"] if types is not None
                    else (["sliding_attention"] if window is not None else []))
        if windowed and (window is None or max_cache_len > window):
            raise _kvq.InvalidArgumentError(
                f"this model has {sorted(set(windowed))[0]} layers (sliding_window={window}); "
                f"kvq attends over every held token, the same only up to the window: "
                f"max_cache_len={max_cache_len} must be at most {window}")

    def _check_attention(self):
        if self.config._attn_implementation != ATTENTION:
            raise _kvq.InvalidArgumentError(
                f"the model's attention is {self.config._attn_implementation!r}: a KVQCache "
                "needs attn_implementation='kvq' (import kvq_jit.hf, then load the model "
                "with attn_implementation='kvq' or call model.set_attn_implementation('kvq'))")

    def _create(self, key_states: torch.Tensor):
        if self.kvq is not None:
            return
        if torch.compiler.is_compiling():
            raise _kvq.InvalidArgumentError(
                "a KVQCache first used inside torch.compile: create it with batch_size=, "
                "dtype= and device= (or call early_initialization()) before the first forward")
        dtype = key_states.dtype if key_states.dtype in (torch.float16, torch.bfloat16) \
            else torch.float16
        self.kvq = QuantizedKVCache(
            layers=len(self.layers), batch=key_states.shape[0], kv_heads=self.kv_heads,
            query_heads=self.query_heads, head_dim=self.head_dim,
            capacity=self.max_cache_len, preset=self.preset, dtype=dtype,
            device=key_states.device, key=self.key, value=self.value, residual=self.residual,
            sink=self.sink, max_query_tokens=self.max_query_tokens)
        for layer in self.layers:
            layer.batch_size = key_states.shape[0]

    @property
    def batch_size(self) -> int:
        return self.kvq.batch if self.kvq is not None else -1

    def memory(self) -> dict:
        """Bytes the held tokens take, and the same tokens in fp16."""
        return self.kvq.memory() if self.kvq is not None else {}

    def crop(self, tokens_to_remove: int) -> None:
        """Speculative decoding's rollback: removes the last tokens of every
        sequence (transformers 5.2x passes minus their count; a positive
        value is the length to keep, as earlier releases). The `residual`
        most recent tokens are fp16 and can always go; more is refused,
        naming how many can, before anything changes."""
        length = self.get_seq_length()
        remove = -tokens_to_remove if tokens_to_remove <= 0 else length - tokens_to_remove
        if remove <= 0 or self.kvq is None:
            return
        for sequence in range(self.kvq.batch):
            removable = self.kvq.truncatable(sequence)
            if remove > removable:
                raise _kvq.InvalidArgumentError(
                    f"crop of {remove} tokens: sequence {sequence} has only its last "
                    f"{removable} in fp16 (the rest are quantized)")
        for sequence in range(self.kvq.batch):
            self.kvq.truncate(sequence, remove)
        for layer in self.layers:
            layer.cumulative_length -= remove

    def reorder_cache(self, beam_idx):
        """Beam search: sequence b becomes what sequence beam_idx[b] was, in
        every layer. Done through snapshots (each source's pages, sink and
        residual copied out, then restored into its new slots): correct,
        and a copy of the whole cache per reordering step."""
        order = [int(b) for b in beam_idx.tolist()]
        if self.kvq is None or order == list(range(len(order))):
            return
        if len(order) != self.kvq.batch or not all(0 <= b < self.kvq.batch for b in order):
            raise _kvq.InvalidArgumentError(
                f"beam_idx {order}: expected a permutation-like index of {self.kvq.batch} slots")
        snapshots = {b: self.kvq.snapshot(b) for b in set(order)}
        for b in range(self.kvq.batch):
            self.kvq.release(b)
        for target, source in enumerate(order):
            self.kvq.restore(target, snapshots[source])

    def reset(self):
        super().reset()
        if self.kvq is not None:
            for sequence in range(self.kvq.batch):
                self.kvq.release(sequence)

    # --- the attention function's two paths ----------------------------------
    def prefill(self, layer: int, key: torch.Tensor, value: torch.Tensor, attention_mask):
        """The prompt of every sequence into the cache, minus its padding."""
        kvq = self.kvq
        key, value = key.to(kvq.dtype), value.to(kvq.dtype)
        real = None
        if attention_mask is not None and attention_mask.dim() == 4:
            last_row = attention_mask[:, 0, -1, :]
            real = last_row if last_row.dtype == torch.bool else last_row == 0
        kvq.prefill(layer, key, value, real)
        self.layers[layer].taken()

    def decode(self, layer: int, query, key, value, scaling):
        """The new tokens (one per sequence, or up to max_query_tokens)
        appended, and their attention over the cache: [batch, new, heads, d]."""
        kvq = self.kvq
        batch, heads, new, dim = query.shape
        out_dtype = query.dtype
        if scaling is not None and abs(scaling * math.sqrt(dim) - 1) > 1e-6:
            query = query * (scaling * math.sqrt(dim))  # kvq scales by 1/sqrt(d)
        query, key, value = query.to(kvq.dtype), key.to(kvq.dtype), value.to(kvq.dtype)
        if new == 1:
            kvq.append_step(layer, key[:, :, 0], value[:, :, 0])
            self.layers[layer].taken()
            out = kvq.attend(layer, query[:, :, 0].contiguous())
            return out.view(batch, 1, heads, dim).to(out_dtype)
        if new > kvq.max_query_tokens:
            raise _kvq.InvalidArgumentError(
                f"{new} new tokens in one forward: the KVQCache takes up to "
                f"max_query_tokens={kvq.max_query_tokens} after the prompt")
        rows = lambda t: t.transpose(1, 2).reshape(batch * new, t.shape[1], dim)
        offsets = [b * new for b in range(batch + 1)]
        out = kvq.append_and_attend(layer, rows(key), rows(value), rows(query), offsets)
        self.layers[layer].taken()
        return out.view(batch, new, heads, dim).to(out_dtype)


def kvq_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                  kvq_cache: KVQCache = None, **kwargs):
    """The "kvq" attention implementation (transformers' AttentionInterface):
    query [batch, heads, new, d]; returns ([batch, new, heads, d], None)."""
    if kvq_cache is None:
        kvq_cache = getattr(_handover, "cache", None)
        _handover.cache = None
    if kvq_cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    layer = module.layer_idx
    if kvq_cache.layers[layer].prefilling:
        out = sdpa_attention_forward(module, query, key, value, attention_mask,
                                     dropout=dropout, scaling=scaling, **kwargs)
        kvq_cache.prefill(layer, key, value, attention_mask)
        return out
    return kvq_cache.decode(layer, query, key, value, scaling), None


AttentionInterface.register(ATTENTION, kvq_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
