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
          zero_points: str = "minmax") -> str:
    half = "bf16" if dtype == torch.bfloat16 else "f16"
    options = " hqq" if zero_points == "hqq" else ""
    return f"{kind} {scheme} d={head_dim} {half}{options}"


def _check_spec(kind: str, scheme: str, head_dim: int, dtype: torch.dtype,
                zero_points: str = "minmax"):
    """Raises an InvalidSpecError naming `scheme` unless kvq can generate it."""
    try:
        _kvq.canonical_spec(_spec(kind, scheme, head_dim, dtype, zero_points))
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


def quantize(x: torch.Tensor, scheme: str, zero_points: str = "minmax"):
    """Quantizes `x` ([rows, tokens, head_dim], fp16/bf16) in `scheme` (a
    scheme tag: '4t64' = 4 bits per token in groups of 64 channels, '2c32' =
    2 bits per channel in groups of 32 tokens, + 's' symmetric, 'x' fp32
    scales). Returns (words int32 [rows, n], scales [rows, m], zeros [rows, m])
    in kvq's packed layout (docs/architecture.md). `zero_points="hqq"` refines
    an asymmetric scheme's zero points with HQQ's half-quadratic search
    (docs/accuracy.md); "minmax" keeps each group's minimum."""
    check_tensor("x", x, shape=(None, None, None), contiguous=True)
    half_type_name(x.dtype, "x")
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
    with addresses(words.device) as at:
        context_for(words.device).dequantize(
            _spec("dequantize", scheme, head_dim, dtype), at(words), at(scales), at(zeros),
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
    _check_spec("dequantize", scheme, head_dim, dtype)
    check_tensor("words", words, shape=(None, None), dtype=torch.int32, contiguous=True)
    words_shape, scales_shape, scale_dtype = _buffers(scheme, words.shape[0], tokens, head_dim)
    check_tensor("words", words, shape=words_shape)
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
