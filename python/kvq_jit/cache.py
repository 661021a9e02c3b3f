"""QuantizedKVCache over torch tensors: kvq's paged quantized KV cache
(fp16 sink + append-only quantized store + fp16 residual, fused attention;
docs/runtime.md) with PyTorch tensors in and out.

Every call checks its tensors (shape, dtype, device, strides) and raises an
InvalidArgumentError naming the bad one; the C++ cache checks counts and
capacity again and changes nothing when it refuses. The public methods go
through the kvq_jit custom ops (kvq_jit.ops), so torch.compile can trace them.
"""

import torch

from . import _kvq, ops
from ._backend import (addresses, backend_for, check_tensor, context_for, half_type_name,
                       stream_of)


def _floats(values) -> list:
    """Scales as a flat list of floats: None, a sequence or a tensor."""
    if values is None:
        return []
    if isinstance(values, torch.Tensor):
        return values.detach().float().flatten().cpu().tolist()
    return [float(v) for v in values]


class QuantizedKVCache:
    def __init__(self, *, layers: int, batch: int, kv_heads: int, query_heads: int,
                 head_dim: int, capacity: int = 4096, preset: str = "kivi2",
                 dtype: torch.dtype = torch.float16, device="cpu", key: str = None,
                 value: str = None, residual: int = None, sink: int = None, pages: int = 0,
                 max_query_tokens: int = 1, prefill_zero_points: str = "minmax",
                 key_scales=None, key_zeros=None, value_scales=None, value_zeros=None):
        """A cache for `batch` sequences of up to `capacity` tokens in each of
        `layers` layers. `preset` (kvq_jit.presets()) sets the schemes,
        residual and sink; `key`/`value` (scheme tags such as '2c32'),
        `residual` and `sink` override them. Tensors live on `device`; on
        CUDA, the cache queues its kernels on the stream current at creation.
        `pages` < the default shares a smaller pool between sequences;
        `max_query_tokens` > 1 enables append_and_attend with chunks;
        `prefill_zero_points="hqq"` gives a prompt's asymmetric groups HQQ's
        optimized zero points (lower error, docs/accuracy.md; decode steps
        keep min-max). Static schemes ('e4m3pt', '4tphs', presets fp8_e4m3,
        fp8_e5m2, prefixquant) take their calibrated scales (and, asymmetric,
        zero points): `key_scales` ..., one per layer (per tensor) or
        [layers, kv_heads] (per kv head), as kvq_jit.calibrate_scales gives
        them."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device, self.dtype = device, dtype
        self.layers, self.batch = layers, batch
        self.kv_heads, self.query_heads, self.head_dim = kv_heads, query_heads, head_dim
        self.capacity, self.max_query_tokens = capacity, max_query_tokens
        self.preset = preset
        # The emulator reads only memory it allocated: inputs are staged.
        self._staged = device.type == "cpu" and backend_for(device) == "emulator"
        self._cache = _kvq.QuantizedKVCache.create(
            context_for(device), layers=layers, batch=batch, kv_heads=kv_heads,
            query_heads=query_heads, head_dim=head_dim,
            dtype=half_type_name(dtype, "dtype"), capacity=capacity, preset=preset or "",
            key=key or "", value=value or "", residual=-1 if residual is None else residual,
            sink=-1 if sink is None else sink, pages=pages, max_query_tokens=max_query_tokens,
            prefill_zero_points=prefill_zero_points, key_scales=_floats(key_scales),
            key_zeros=_floats(key_zeros), value_scales=_floats(value_scales),
            value_zeros=_floats(value_zeros), stream=stream_of(device))
        # Orders this cache's ops in a traced graph (kvq_jit.ops); no data.
        self.state = torch.zeros(1, device=device)
        self.id = ops.register_cache(self)

    # --- what the cache holds ------------------------------------------------
    @property
    def key_scheme(self) -> str:
        return self._cache.key_scheme

    @property
    def value_scheme(self) -> str:
        return self._cache.value_scheme

    @property
    def residual(self) -> int:
        return self._cache.residual

    @property
    def sink(self) -> int:
        return self._cache.sink

    @property
    def page_tokens(self) -> int:
        return self._cache.page_tokens

    @property
    def attention_spec(self) -> str:
        return self._cache.attention_spec

    @property
    def kernel_specs(self) -> list:
        """Every kernel the cache runs (what a bundle must hold for the
        runtime-only library: `kvq-cache export --spec-file`)."""
        return list(self._cache.kernel_specs)

    def parts(self, layer: int, sequence: int) -> tuple:
        """(sink, quantized, residual) tokens of `sequence` in `layer`."""
        return self._cache.parts(layer, sequence)

    def tokens(self, layer: int, sequence: int) -> int:
        return sum(self.parts(layer, sequence))

    def memory(self) -> dict:
        """Bytes of the held tokens (sink, quantized, residual, used) and of
        the same tokens in fp16 (fp16_bytes)."""
        return self._cache.memory()

    def pages_in_use(self, layer: int) -> int:
        return self._cache.pages_in_use(layer)

    # --- tokens in -----------------------------------------------------------
    def _check_layer(self, layer: int):
        if not 0 <= layer < self.layers:
            raise _kvq.InvalidArgumentError(f"layer {layer} is not in [0, {self.layers})")

    def _check_kv(self, k, v, shape):
        check_tensor("k", k, shape=shape, dtype=self.dtype, device=self.device)
        check_tensor("v", v, shape=tuple(k.shape), dtype=self.dtype, device=self.device)

    def append(self, layer: int, sequence: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Appends tokens to `sequence`: k and v [kv_heads, tokens, head_dim]
        (any strides with contiguous rows: a slice of [batch, kv_heads, seq,
        head_dim] or a transposed [tokens, kv_heads, head_dim] is read where
        it is)."""
        self._check_layer(layer)
        self._check_kv(k, v, (self.kv_heads, None, self.head_dim))
        ops.cache_append(self.state, self.id, layer, sequence, k, v)

    def prefill(self, layer: int, k: torch.Tensor, v: torch.Tensor, real=None) -> None:
        """A batch of prompts: k and v [batch, kv_heads, tokens, head_dim];
        sequence b takes the tokens `real[b]` ([batch, tokens] bool) marks,
        all of them without `real` (left padding is not stored)."""
        self._check_layer(layer)
        self._check_kv(k, v, (self.batch, self.kv_heads, None, self.head_dim))
        if real is not None:
            check_tensor("real", real, shape=(self.batch, k.shape[2]), dtype=torch.bool,
                         device=self.device, last_dim_contiguous=False)
        ops.cache_prefill(self.state, self.id, layer, k, v, real)

    def append_step(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """One decode step of `layer`: one token for every sequence that holds
        tokens, k and v [batch, kv_heads, head_dim], in one launch."""
        self._check_layer(layer)
        self._check_kv(k, v, (self.batch, self.kv_heads, self.head_dim))
        ops.cache_append_step(self.state, self.id, layer, k, v)

    # --- attention -------------------------------------------------------------
    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """Attention of q [batch, query_heads, head_dim] over everything each
        sequence holds in `layer`: [batch, query_heads, head_dim]."""
        self._check_layer(layer)
        check_tensor("q", q, shape=(self.batch, self.query_heads, self.head_dim),
                     dtype=self.dtype, device=self.device)
        return ops.cache_attend(self.state, self.id, layer, q)

    def append_and_attend(self, layer: int, k: torch.Tensor, v: torch.Tensor, q: torch.Tensor,
                          offsets) -> torch.Tensor:
        """Several new tokens per sequence, each attending causally with its
        own query: sequence b takes rows [offsets[b], offsets[b+1]) of k, v
        ([tokens, kv_heads, head_dim]) and q ([tokens, query_heads,
        head_dim]); returns [tokens, query_heads, head_dim]."""
        self._check_layer(layer)
        offsets = [int(o) for o in offsets]
        if len(offsets) != self.batch + 1:
            raise _kvq.InvalidArgumentError(
                f"offsets has {len(offsets)} entries, not batch + 1 = {self.batch + 1}")
        self._check_kv(k, v, (offsets[-1], self.kv_heads, self.head_dim))
        check_tensor("q", q, shape=(offsets[-1], self.query_heads, self.head_dim),
                     dtype=self.dtype, device=self.device)
        return ops.cache_append_and_attend(self.state, self.id, layer, k, v, q, offsets)

    # --- sequences -------------------------------------------------------------
    def release(self, sequence: int) -> None:
        """Empties `sequence` in every layer; its pages go back to the pool."""
        self._cache.release(sequence)

    def truncate(self, sequence: int, tokens: int) -> None:
        """Removes the last `tokens` tokens of `sequence` in every layer (a
        draft's rejected tokens); only tokens still in fp16 can go (at least
        the `residual` most recent)."""
        self._cache.truncate(sequence, tokens)

    def truncatable(self, sequence: int) -> int:
        """How many of `sequence`'s newest tokens truncate() can remove now."""
        return self._cache.truncatable(sequence)

    def fork(self, source: int, target: int) -> None:
        """Makes empty `target` a copy of `source` (whole pages shared)."""
        self._cache.fork(source, target)

    def snapshot(self, sequence: int) -> bytes:
        """`sequence`'s KV in every layer, as checksummed bytes."""
        return self._cache.snapshot(sequence)

    def restore(self, sequence: int, data: bytes) -> None:
        """Empty `sequence` takes a snapshot's KV (every byte checked first)."""
        self._cache.restore(sequence, data)

    # --- the ops' bodies: tensors checked, on the cache's device -------------
    def _same_layout(self, k, v):
        if k.stride() != v.stride() or (self._staged and not k.is_contiguous()):
            k, v = k.contiguous(), v.contiguous()
        return k, v

    def _append(self, layer, sequence, k, v):
        k, v = self._same_layout(k, v)
        with addresses(self.device) as at:
            self._cache.append(layer, sequence, at(k), at(v), tokens=k.shape[1],
                               head_stride=k.stride(0), token_stride=k.stride(1))

    def _prefill(self, layer, k, v, real):
        for sequence in range(k.shape[0]):
            ks, vs = k[sequence], v[sequence]
            if real is not None:
                keep = real[sequence].nonzero().flatten().tolist()
                if not keep:
                    continue
                if keep[-1] - keep[0] + 1 == len(keep):  # one run: a view
                    ks, vs = ks[:, keep[0]:keep[-1] + 1], vs[:, keep[0]:keep[-1] + 1]
                else:
                    index = torch.tensor(keep, device=k.device)
                    ks, vs = ks.index_select(1, index), vs.index_select(1, index)
            self._append(layer, sequence, ks, vs)

    def _append_step(self, layer, k, v):
        k, v = self._same_layout(k, v)
        with addresses(self.device) as at:
            self._cache.append_step(layer, at(k), at(v), head_stride=k.stride(1),
                                    token_stride=k.stride(0))

    def _attend(self, layer, q):
        q = q.contiguous()
        out = torch.empty_like(q)
        with addresses(self.device) as at:
            self._cache.attend(layer, at(q), at(out, output=True))
        return out

    def _append_and_attend(self, layer, k, v, q, offsets):
        k, v = self._same_layout(k, v)
        q = q.contiguous()
        out = torch.empty_like(q)
        with addresses(self.device) as at:
            self._cache.append_and_attend(layer, at(k), at(v), at(q), at(out, output=True),
                                          offsets, head_stride=k.stride(1),
                                          token_stride=k.stride(0))
        return out
