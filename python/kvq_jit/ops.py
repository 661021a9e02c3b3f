"""kvq's kernels as torch.library custom ops (namespace `kvq_jit`).

torch.compile traces them as opaque nodes, so a model step that calls them
compiles without graph breaks. The cache ops take the cache's `state` tensor
as a mutated argument: it carries no data, but it orders a cache's calls
(append before attend, layer after layer) in a traced graph and keeps them
from being dropped as dead code. A cache is named by its integer id
(QuantizedKVCache.id).
"""

import weakref
from typing import Optional

import torch

from . import _kvq
from ._backend import addresses, check_tensor, context_for, half_type_name, stream_of

_caches = weakref.WeakValueDictionary()  # id -> kvq_jit.QuantizedKVCache


def register_cache(cache) -> int:
    cache_id = register_cache.next_id
    register_cache.next_id += 1
    _caches[cache_id] = cache
    return cache_id


register_cache.next_id = 1


def _cache(cache_id: int):
    cache = _caches.get(cache_id)
    if cache is None:
        raise _kvq.InvalidArgumentError(f"cache {cache_id}: no such kvq cache (released?)")
    return cache


# --- quantize / dequantize --------------------------------------------------

def _spec(kind: str, scheme: str, head_dim: int, dtype: torch.dtype,
          zero_points: str = "minmax", kv_heads: int = 0) -> str:
    half = "bf16" if dtype == torch.bfloat16 else "f16"
    options = " hqq" if zero_points == "hqq" else ""
    heads = f" hkv={kv_heads}" if kv_heads else ""  # per-head static scales
    return f"{kind} {scheme} d={head_dim}{heads} {half}{options}"


def _check_spec(kind: str, scheme: str, head_dim: int, dtype: torch.dtype,
                zero_points: str = "minmax", kv_heads: int = 0):
    """Raises an InvalidSpecError naming `scheme` unless kvq can generate it."""
    try:
        _kvq.canonical_spec(_spec(kind, scheme, head_dim, dtype, zero_points, kv_heads))
    except _kvq.InvalidSpecError as error:
        message = str(error)
        raise _kvq.InvalidSpecError(
            message if scheme in message else f"scheme {scheme!r}: {message}") from None


def _buffers(scheme: str, rows: int, tokens: int, head_dim: int):
    words, scales, scale_bytes = _kvq.scheme_buffers(scheme, head_dim, 1, tokens)
    scale_dtype = torch.float32 if scale_bytes == 4 else torch.float16
    return (rows, words), (rows, scales), scale_dtype


@torch.library.custom_op("kvq_jit::quantize", mutates_args=())
def _quantize(x: torch.Tensor, scheme: str,
              zero_points: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, tokens, head_dim = x.shape
    words_shape, scales_shape, scale_dtype = _buffers(scheme, rows, tokens, head_dim)
    words = torch.empty(words_shape, dtype=torch.int32, device=x.device)
    scales = torch.empty(scales_shape, dtype=scale_dtype, device=x.device)
    zeros = torch.empty(scales_shape, dtype=scale_dtype, device=x.device)
    with addresses(x.device) as at:
        context_for(x.device).quantize(
            _spec("quantize", scheme, head_dim, x.dtype, zero_points), at(x),
            at(words, output=True),
            at(scales, output=True), at(zeros, output=True), rows=rows, tokens=tokens,
            in_tokens=tokens, out_tokens=tokens, out_offset=0, stream=stream_of(x.device))
    return words, scales, zeros


@_quantize.register_fake
def _(x, scheme, zero_points):
    rows, tokens, head_dim = x.shape
    words_shape, scales_shape, scale_dtype = _buffers(scheme, rows, tokens, head_dim)
    return (x.new_empty(words_shape, dtype=torch.int32),
            x.new_empty(scales_shape, dtype=scale_dtype),
            x.new_empty(scales_shape, dtype=scale_dtype))


@torch.library.custom_op("kvq_jit::quantize_static", mutates_args=())
def _quantize_static(x: torch.Tensor, scheme: str, scales: torch.Tensor,
                     zeros: torch.Tensor) -> torch.Tensor:
    rows, tokens, head_dim = x.shape
    words_shape, _, _ = _buffers(scheme, rows, tokens, head_dim)
    words = torch.empty(words_shape, dtype=torch.int32, device=x.device)
    heads = scales.numel() if _kvq.scheme_scales(scheme) == "head" else 0
    with addresses(x.device) as at:
        context_for(x.device).quantize(
            _spec("quantize", scheme, head_dim, x.dtype, kv_heads=heads), at(x),
            at(words, output=True), at(scales), at(zeros) if zeros.numel() else 0,
            rows=rows, tokens=tokens, in_tokens=tokens, out_tokens=tokens, out_offset=0,
            stream=stream_of(x.device))
    return words


@_quantize_static.register_fake
def _(x, scheme, scales, zeros):
    rows, tokens, head_dim = x.shape
    words_shape, _, _ = _buffers(scheme, rows, tokens, head_dim)
    return x.new_empty(words_shape, dtype=torch.int32)


def _static_scales(name: str, values, count: int, device) -> torch.Tensor:
    """Given scales (or zeros) as `count` float32 values on `device`."""
    t = torch.as_tensor(values, dtype=torch.float32).flatten().to(device)
    if t.numel() != count:
        raise _kvq.InvalidArgumentError(
            f"{name}: the scheme takes {count} value(s) (one per tensor or per "
            f"kv head), got {t.numel()}")
    return t.contiguous()


def quantize(x: torch.Tensor, scheme: str, zero_points: str = "minmax",
             scales=None, zeros=None):
    """Quantizes `x` ([rows, tokens, head_dim], fp16/bf16) in `scheme` (a
    scheme tag: '4t64' = 4 bits per token in groups of 64 channels, '2c32' =
    2 bits per channel in groups of 32 tokens, + 's' symmetric, 'x' fp32
    scales). Returns (words int32 [rows, n], scales [rows, m], zeros [rows, m])
    in kvq's packed layout (docs/architecture.md). `zero_points="hqq"` refines
    an asymmetric scheme's zero points with HQQ's half-quadratic search
    (docs/accuracy.md); "minmax" keeps each group's minimum.

    Static schemes ('e4m3pt', 'e5m2ph', '4tphs', ...) take their calibrated
    `scales` (and, asymmetric, `zeros`): one value, or one per kv head (the
    rows, which then cycle through the heads). FP8 codes are the bytes of
    x / scale, vLLM's; the words hold them in element order. Returns (words,
    scales, zeros) with the given scales."""
    check_tensor("x", x, shape=(None, None, None), contiguous=True)
    half_type_name(x.dtype, "x")
    kind = _kvq.scheme_scales(scheme)
    if kind != "group":
        if scales is None:
            raise _kvq.InvalidArgumentError(
                f"scheme {scheme!r} has static scales: pass scales= (kvq_jit.calibrate_scales)")
        count = 1 if kind == "tensor" else torch.as_tensor(scales).numel()
        s = _static_scales("scales", scales, count, x.device)
        z = (_static_scales("zeros", zeros, count, x.device) if zeros is not None
             else torch.empty(0, dtype=torch.float32, device=x.device))
        _check_spec("quantize", scheme, x.shape[2], x.dtype,
                    kv_heads=count if kind == "head" else 0)
        return _quantize_static(x, scheme, s, z), s, z
    if zero_points not in ("minmax", "hqq"):
        raise ValueError(f"zero_points must be 'minmax' or 'hqq', got {zero_points!r}")
    context_for(x.device)  # a device kvq cannot serve fails here, by name
    _check_spec("quantize", scheme, x.shape[2], x.dtype, zero_points)
    return _quantize(x, scheme, zero_points)


@torch.library.custom_op("kvq_jit::dequantize", mutates_args=())
def _dequantize(words: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, scheme: str,
                tokens: int, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    rows = words.shape[0]
    out = torch.empty((rows, tokens, head_dim), dtype=dtype, device=words.device)
    heads = scales.numel() if _kvq.scheme_scales(scheme) == "head" else 0
    with addresses(words.device) as at:
        context_for(words.device).dequantize(
            _spec("dequantize", scheme, head_dim, dtype, kv_heads=heads), at(words),
            at(scales), at(zeros) if zeros.numel() else 0,
            at(out, output=True), rows=rows, tokens=tokens, in_tokens=tokens, in_offset=0,
            out_tokens=tokens, stream=stream_of(words.device))
    return out


@_dequantize.register_fake
def _(words, scales, zeros, scheme, tokens, head_dim, dtype):
    return words.new_empty((words.shape[0], tokens, head_dim), dtype=dtype)


def dequantize(words, scales, zeros, scheme: str, tokens: int, head_dim: int,
               dtype=torch.float16) -> torch.Tensor:
    """The inverse of quantize(): [rows, tokens, head_dim] of `dtype`."""
    half_type_name(dtype, "dtype")
    kind = _kvq.scheme_scales(scheme)
    heads = scales.numel() if kind == "head" else 0
    _check_spec("dequantize", scheme, head_dim, dtype, kv_heads=heads)
    check_tensor("words", words, shape=(None, None), dtype=torch.int32, contiguous=True)
    words_shape, scales_shape, scale_dtype = _buffers(scheme, words.shape[0], tokens, head_dim)
    check_tensor("words", words, shape=words_shape)
    if kind != "group":  # the given static scales (and zeros, or none)
        count = 1 if kind == "tensor" else heads
        scales = _static_scales("scales", scales, count, words.device)
        zeros = (_static_scales("zeros", zeros, count, words.device)
                 if zeros is not None and torch.as_tensor(zeros).numel()
                 else torch.empty(0, dtype=torch.float32, device=words.device))
        return _dequantize(words, scales, zeros, scheme, tokens, head_dim, dtype)
    for name, t in (("scales", scales), ("zeros", zeros)):
        check_tensor(name, t, shape=scales_shape, dtype=scale_dtype, device=words.device,
                     contiguous=True)
    return _dequantize(words, scales, zeros, scheme, tokens, head_dim, dtype)


# --- the cache --------------------------------------------------------------

@torch.library.custom_op("kvq_jit::cache_append", mutates_args=("state",))
def cache_append(state: torch.Tensor, cache: int, layer: int, sequence: int,
                 k: torch.Tensor, v: torch.Tensor) -> None:
    _cache(cache)._append(layer, sequence, k, v)


@cache_append.register_fake
def _(state, cache, layer, sequence, k, v):
    return None


@torch.library.custom_op("kvq_jit::cache_prefill", mutates_args=("state",))
def cache_prefill(state: torch.Tensor, cache: int, layer: int, k: torch.Tensor, v: torch.Tensor,
                  real: Optional[torch.Tensor]) -> None:
    _cache(cache)._prefill(layer, k, v, real)


@cache_prefill.register_fake
def _(state, cache, layer, k, v, real):
    return None


@torch.library.custom_op("kvq_jit::cache_append_step", mutates_args=("state",))
def cache_append_step(state: torch.Tensor, cache: int, layer: int, k: torch.Tensor,
                      v: torch.Tensor) -> None:
    _cache(cache)._append_step(layer, k, v)


@cache_append_step.register_fake
def _(state, cache, layer, k, v):
    return None


@torch.library.custom_op("kvq_jit::cache_attend", mutates_args=("state",))
def cache_attend(state: torch.Tensor, cache: int, layer: int, q: torch.Tensor) -> torch.Tensor:
    return _cache(cache)._attend(layer, q)


@cache_attend.register_fake
def _(state, cache, layer, q):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("kvq_jit::cache_append_and_attend", mutates_args=("state",))
def cache_append_and_attend(state: torch.Tensor, cache: int, layer: int, k: torch.Tensor,
                            v: torch.Tensor, q: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    return _cache(cache)._append_and_attend(layer, k, v, q, offsets)


@cache_append_and_attend.register_fake
def _(state, cache, layer, k, v, q, offsets):
    return torch.empty_like(q, memory_format=torch.contiguous_format)
