"""kvq_jit: kvq's JIT-compiled quantized KV-cache kernels for PyTorch.

    import kvq_jit
    cache = kvq_jit.QuantizedKVCache(layers=32, batch=8, kv_heads=8,
                                     query_heads=32, head_dim=128,
                                     capacity=4096, preset="kivi2",
                                     device="cuda")
    cache.append(layer, sequence, k, v)     # a prompt: [kv_heads, tokens, head_dim]
    cache.append_step(layer, k, v)          # one token per sequence: [batch, kv_heads, head_dim]
    out = cache.attend(layer, q)            # q: [batch, query_heads, head_dim]

CUDA tensors run on the cuda backend (torch's current device and stream), CPU
tensors on the reference backend (KVQ_CPU_BACKEND=emulator runs the generated
CUDA on the CPU instead). The kernels are torch.library custom ops
(kvq_jit.ops), so torch.compile traces them. The transformers integration is
kvq_jit.hf.
"""

from ._kvq import (  # noqa: F401  (the error types of every StatusCode)
    BadBundleError,
    CompileError,
    InvalidArgumentError,
    InvalidSpecError,
    KVQError,
    MissingKernelError,
    NoDeviceError,
    ResourceExhaustedError,
    RuntimeFailedError,
)
from ._kvq import preset as _preset
from ._kvq import presets as _presets
from ._backend import context_for
from .cache import QuantizedKVCache
from .calibrate import calibrate_scales
from .ops import dequantize, quantize

__all__ = [
    "BadBundleError", "CompileError", "InvalidArgumentError", "InvalidSpecError",
    "KVQError", "MissingKernelError", "NoDeviceError", "ResourceExhaustedError",
    "RuntimeFailedError", "QuantizedKVCache", "calibrate_scales", "context_for", "dequantize",
    "preset", "presets", "quantize",
]
__version__ = "0.1.0"


def presets() -> list:
    """The preset names a cache accepts (kivi2, kivi4, hf_quanto_int4, int8, int4)."""
    return list(_presets())


def preset(name: str) -> dict:
    """A preset's key and value schemes (tags such as '2c32'), fp16 residual
    and sink tokens."""
    return dict(_preset(name))
