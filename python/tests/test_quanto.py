"""kvq's schemes against optimum-quanto's quantization, called the way
transformers' QuantizedCache(backend="quanto") calls it (MaxOptimizer +
quantize_weight on [batch, heads, tokens, head_dim]): on the same tensors,
the relative error of the two differs by < 2 %.

Where the two round differently: quanto (MaxOptimizer, quantize_affine)
computes scale = (max - min) / (2^b - 1) and shift = -min in the input's
dtype (fp16 here), codes round((x + shift) / scale) in fp16 arithmetic, and
dequantizes as code * scale - shift in fp16; kvq computes in f32 and rounds
each operation (docs/architecture.md, numeric contract), storing the scale
and the zero (min) as fp16. The two formulas round the dequantized values
differently in their last bits, and an element within an fp16 rounding of a
code boundary may take the neighbouring code (measured: 0.04-0.35 % of the
elements, printed with pytest -s)."""

import pytest
import torch
from transformers.cache_utils import QuantoQuantizedLayer

import kvq_jit


def kv_like(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 256, 64, generator=g)
    x[..., 3] += 8  # an offset channel
    x[..., 11] *= 6  # an outlier channel
    return x.half()


def relative_error(approx, x):
    return ((approx.float() - x.float()).norm() / x.float().norm()).item()


@pytest.mark.parametrize("nbits, axis, group, scheme", [
    (4, 0, 64, "4t64"),   # the hf_quanto_int4 preset (QuantizedCache's defaults)
    (2, 0, 64, "2t64"),
    (4, -1, 64, "4c64"),  # keys per channel, as KIVI
    (2, -1, 32, "2c32"),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_kvq_and_quanto_errors_agree(nbits, axis, group, scheme, seed):
    x = kv_like(seed)
    layer = QuantoQuantizedLayer(nbits=nbits, axis_key=axis, q_group_size=group)
    quanto = layer._dequantize(layer._quantize(x.contiguous(), axis=axis))
    rows = x.reshape(-1, x.shape[2], x.shape[3])
    words, scales, zeros = kvq_jit.quantize(rows, scheme)
    kvq = kvq_jit.dequantize(words, scales, zeros, scheme, x.shape[2], x.shape[3])
    e_quanto, e_kvq = relative_error(quanto, x), relative_error(kvq.reshape(x.shape), x)
    print(f"{scheme} seed {seed}: quanto {e_quanto:.5f} kvq {e_kvq:.5f}")
    assert abs(e_kvq - e_quanto) < 0.02 * e_quanto
    # Not only the same error: the same codes, but for boundary roundings
    # (values a quarter step or more apart; the rest is the fp16 rounding of
    # the two dequantization formulas).
    step = step_of(scales, scheme, rows.shape)
    apart = (kvq.float() - quanto.reshape(rows.shape).float()).abs() >= 0.25 * step
    print(f"  codes apart: {apart.float().mean().item():.5f}")
    assert apart.float().mean().item() < 0.01


def step_of(scales, scheme, shape):
    """Each element's quantization step, from kvq's scales [rows, n]."""
    rows, tokens, dim = shape
    group = int(scheme[2:])
    if scheme[1] == "t":
        per = scales.float().reshape(rows, tokens, dim // group, 1)
        return per.expand(rows, tokens, dim // group, group).reshape(shape)
    per = scales.float().reshape(rows, tokens // group, 1, dim)
    return per.expand(rows, tokens // group, group, dim).reshape(shape)
