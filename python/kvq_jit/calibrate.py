"""Static KV-cache scales from sample keys or values (kvq/Calibrate.h).

    scales = kvq_jit.calibrate_scales(k, format="e4m3", granularity="head",
                                      method="mse")
    scales["scale"]   # [kv_heads] float32: vLLM's k_scale (stored = fp8(x / scale))

`samples` is [tokens, kv_heads, head_dim] (any float dtype, any device: it
is copied to fp32 on the CPU). Formats: "e4m3", "e5m2", "int2" .. "int8"
(`asymmetric=True` gives integers a zero point). Methods: "minmax", or
"mse" (clipping ratios from `min_clip` to 1 in `grid` steps, the one with
the least squared round-trip error: PrefixQuant's initialisation).
"""

import torch

from . import _kvq


def calibrate_scales(samples: torch.Tensor, format: str = "e4m3",
                     granularity: str = "tensor", method: str = "minmax",
                     grid: int = 100, min_clip: float = 0.5,
                     asymmetric: bool = False) -> dict:
    """Scales (and zero points, for asymmetric integers) of `samples`, one
    per tensor or per kv head, with each one's relative round-trip error
    on the samples: {"scale", "zero", "relative_error"}, float tensors of
    one element or kv_heads."""
    if not isinstance(samples, torch.Tensor) or samples.dim() != 3:
        raise _kvq.InvalidArgumentError(
            "samples must be a [tokens, kv_heads, head_dim] tensor, got "
            + (f"shape {list(samples.shape)}" if isinstance(samples, torch.Tensor)
               else type(samples).__name__))
    if granularity not in ("tensor", "head"):
        raise _kvq.InvalidArgumentError(
            f"granularity must be 'tensor' or 'head', got {granularity!r}")
    if method not in ("minmax", "mse"):
        raise _kvq.InvalidArgumentError(
            f"method must be 'minmax' or 'mse', got {method!r}")
    host = samples.detach().to(device="cpu", dtype=torch.float32).contiguous()
    tokens, heads, head_dim = host.shape
    rows = _kvq.calibrate_scales(host.data_ptr(), tokens, heads, head_dim,
                                 format, asymmetric, granularity == "head",
                                 method == "mse", grid, min_clip)
    scale, zero, error = zip(*rows)
    return {"scale": torch.tensor(scale, dtype=torch.float32),
            "zero": torch.tensor(zero, dtype=torch.float32),
            "relative_error": torch.tensor(error, dtype=torch.float64)}
