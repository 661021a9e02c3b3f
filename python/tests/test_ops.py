"""quantize/dequantize as torch ops: layouts, round trip, errors."""

import pytest
import torch

import kvq_jit


def half_step(x, scheme):
    """Max |x - dequantized| allowed: half a quantization step of each
    group (min-max asymmetric), plus fp16 rounding of scale and zero."""
    bits, axis, group = int(scheme[0]), scheme[1], int(scheme[2:])
    rows, tokens, dim = x.shape
    if axis == "t":
        g = x.float().reshape(rows, tokens, dim // group, group)
        span = g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)
        step = (span / (2 ** bits - 1)).expand_as(g).reshape(x.shape)
    else:
        g = x.float().reshape(rows, tokens // group, group, dim)
        span = g.amax(2, keepdim=True) - g.amin(2, keepdim=True)
        step = (span / (2 ** bits - 1)).expand_as(g).reshape(x.shape)
    return step / 2 * 1.01 + 2e-3 * x.float().abs() + 1e-3


@pytest.mark.parametrize("scheme", ["2t32", "4t64", "8t64", "2c32", "4c32", "8c64"])
def test_round_trip_is_within_half_a_step(scheme):
    torch.manual_seed(0)
    x = torch.randn(3, 64, 64, dtype=torch.float16)
    x[:, :, 5] *= 10  # an outlier channel
    words, scales, zeros = kvq_jit.quantize(x, scheme)
    assert words.dtype == torch.int32 and words.shape == (3, 64 * 64 * int(scheme[0]) // 32)
    back = kvq_jit.dequantize(words, scales, zeros, scheme, tokens=64, head_dim=64)
    assert back.shape == x.shape and back.dtype == torch.float16
    error = (back.float() - x.float()).abs()
    assert (error <= half_step(x, scheme)).all(), error.max()


def test_codes_are_packed_densely():
    # 4-bit codes of a ramp: every nibble of every word is used.
    x = torch.arange(64, dtype=torch.float16).reshape(1, 1, 64).repeat(1, 1, 1)
    words, scales, zeros = kvq_jit.quantize(x, "4t64")
    assert words.shape == (1, 8)
    nibbles = [(int(w) >> (4 * i)) & 0xF for w in words[0].tolist() for i in range(8)]
    assert sorted(set(nibbles)) == list(range(16))


def test_bad_input_is_refused_by_name():
    x = torch.randn(2, 32, 64, dtype=torch.float16)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="dtype torch.float32"):
        kvq_jit.quantize(x.float(), "4t64")
    with pytest.raises(kvq_jit.InvalidArgumentError, match=r"shape \[32, 64\]"):
        kvq_jit.quantize(x[0], "4t64")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="not contiguous"):
        kvq_jit.quantize(x.transpose(0, 1), "4t64")
    with pytest.raises(kvq_jit.InvalidSpecError, match="5t64"):
        kvq_jit.quantize(x, "5t64")
    words, scales, zeros = kvq_jit.quantize(x, "4t64")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="scales"):
        kvq_jit.dequantize(words, scales[:, 1:].contiguous(), zeros, "4t64", 32, 64)
    assert issubclass(kvq_jit.InvalidArgumentError, ValueError)
    assert issubclass(kvq_jit.ResourceExhaustedError, kvq_jit.KVQError)


def test_bf16_needs_fp32_scales():
    x = torch.randn(1, 32, 64, dtype=torch.bfloat16) * 1e5  # past fp16's range
    with pytest.raises(kvq_jit.InvalidSpecError, match="bf16"):
        kvq_jit.quantize(x, "4t64")
    words, scales, zeros = kvq_jit.quantize(x, "4t64x")
    assert scales.dtype == torch.float32
    back = kvq_jit.dequantize(words, scales, zeros, "4t64x", 32, 64, dtype=torch.bfloat16)
    assert torch.isfinite(back).all()


@pytest.mark.parametrize("scheme", ["2c32", "4t64"])
def test_the_emulator_quantizes_bit_for_bit_as_the_reference(monkeypatch, scheme):
    x = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(3)).half()
    results = {}
    for backend in ("reference", "emulator"):
        monkeypatch.setenv("KVQ_CPU_BACKEND", backend)
        words, scales, zeros = kvq_jit.quantize(x, scheme)
        results[backend] = (words, scales, zeros,
                            kvq_jit.dequantize(words, scales, zeros, scheme, 64, 64))
    for got, want in zip(results["emulator"], results["reference"]):
        assert torch.equal(got, want)


@pytest.mark.parametrize("fmt,torch_type", [("e4m3", torch.float8_e4m3fn),
                                            ("e5m2", torch.float8_e5m2)])
def test_fp8_codes_are_torchs_fp8_bytes_in_element_order(fmt, torch_type):
    """vLLM's FP8 KV cache stores each element as the byte of x / scale:
    kvq's words hold exactly torch's FP8 bytes of x / scale, element by
    element in little-endian order (per kv head scales here: row h uses
    scale h), and read back as fp8 * scale."""
    g = torch.Generator().manual_seed(21)
    x = (torch.randn(2, 40, 64, generator=g) * 3).half()
    scales = torch.tensor([0.02, 0.05])
    words, s, z = kvq_jit.quantize(x, f"{fmt}ph", scales=scales)
    stored = words.view(torch.uint8).reshape(2, 40, 64)
    want = (x.float() / scales.view(2, 1, 1)).to(torch_type)
    assert torch.equal(stored, want.view(torch.uint8))
    back = kvq_jit.dequantize(words, s, z, f"{fmt}ph", 40, 64)
    assert torch.equal(back, (want.float() * scales.view(2, 1, 1)).half())
    with pytest.raises(kvq_jit.InvalidArgumentError, match="pass scales="):
        kvq_jit.quantize(x, f"{fmt}pt")
    with pytest.raises(kvq_jit.InvalidArgumentError, match="takes 1 value"):
        kvq_jit.quantize(x, f"{fmt}pt", scales=[1.0, 2.0])
