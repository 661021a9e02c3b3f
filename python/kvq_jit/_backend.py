"""Which kvq Context serves a tensor, and the checks every tensor passes
before its address reaches C++.

A CUDA tensor is served by a cuda-backend Context on its device (kvq uses the
device's primary CUDA context, the one PyTorch uses, so addresses are
shared); a CPU tensor by the reference backend, or the emulator with
KVQ_CPU_BACKEND=emulator. Contexts are created once per (backend, device).
"""

import contextlib
import os
import threading

import torch

from . import _kvq

_HALF_TYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_contexts = {}
_lock = threading.Lock()


def backend_for(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda"
    if device.type == "cpu":
        backend = os.environ.get("KVQ_CPU_BACKEND", "reference")
        if backend not in ("reference", "emulator"):
            raise _kvq.InvalidArgumentError(
                f"KVQ_CPU_BACKEND={backend!r}: expected 'reference' or 'emulator'")
        return backend
    raise _kvq.InvalidArgumentError(
        f"device {device}: kvq runs on cuda and cpu tensors only")


def context_for(device) -> "_kvq.Context":
    """The kvq Context serving tensors on `device` (created on first use)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    backend = backend_for(device)
    key = (backend, device.index or 0)
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = _kvq.Context.create(backend=backend, device=key[1])
            _contexts[key] = context
        return context


def stream_of(device: torch.device) -> int:
    """The CUstream kvq queues on: torch's current stream on `device`."""
    if device.type != "cuda":
        return 0
    return torch.cuda.current_stream(device).cuda_stream


def half_type_name(dtype: torch.dtype, what: str) -> str:
    name = _HALF_TYPES.get(dtype)
    if name is None:
        raise _kvq.InvalidArgumentError(
            f"{what}: dtype {dtype}, expected torch.float16 or torch.bfloat16")
    return name


def check_tensor(what: str, tensor, *, shape=None, dtype=None, device=None,
                 last_dim_contiguous=True, contiguous=False) -> torch.Tensor:
    """Raises an InvalidArgumentError naming `what` and the bad value unless
    `tensor` is a tensor of this shape (None entries: any size), dtype and
    device, with contiguous rows (or fully contiguous)."""
    if not isinstance(tensor, torch.Tensor):
        raise _kvq.InvalidArgumentError(
            f"{what}: expected a torch.Tensor, got {type(tensor).__name__}")
    if shape is not None:
        if tensor.dim() != len(shape) or any(
                want is not None and got != want
                for got, want in zip(tensor.shape, shape)):
            wanted = ", ".join("*" if s is None else str(s) for s in shape)
            raise _kvq.InvalidArgumentError(
                f"{what}: shape {list(tensor.shape)}, expected [{wanted}]")
    if dtype is not None and tensor.dtype != dtype:
        raise _kvq.InvalidArgumentError(
            f"{what}: dtype {tensor.dtype}, expected {dtype}")
    if device is not None and tensor.device != device:
        raise _kvq.InvalidArgumentError(
            f"{what}: on {tensor.device}, expected {device}")
    if contiguous and not tensor.is_contiguous():
        raise _kvq.InvalidArgumentError(
            f"{what}: strides {list(tensor.stride())} are not contiguous")
    if last_dim_contiguous and tensor.dim() and tensor.stride(-1) != 1 \
            and tensor.shape[-1] > 1:
        raise _kvq.InvalidArgumentError(
            f"{what}: strides {list(tensor.stride())}: the last dimension "
            "(head_dim) must be contiguous")
    return tensor


@contextlib.contextmanager
def addresses(device: torch.device):
    """Yields address(tensor, output=False): the address kvq reads a tensor
    at. On the emulator, which checks every address against its own
    allocations, the tensor is copied into a buffer of the emulator's (and
    an output copied back when the block ends); elsewhere it is the tensor's
    own data_ptr(). Staged tensors must be contiguous."""
    if device.type != "cpu" or backend_for(device) != "emulator":
        yield lambda tensor, output=False: tensor.data_ptr()
        return
    context = context_for(device)
    buffers, outputs = [], []

    def address(tensor, output=False):
        assert tensor.is_contiguous(), "staged tensors are contiguous"
        size = max(tensor.numel() * tensor.element_size(), 1)
        buffer = context.allocate(size)
        buffers.append(buffer)
        if output:
            outputs.append((tensor, buffer, size))
        else:
            context.copy_in(buffer, tensor.data_ptr(), size)
        return buffer

    try:
        yield address
        for tensor, buffer, size in outputs:
            context.copy_out(tensor.data_ptr(), buffer, size)
    finally:
        for buffer in buffers:
            context.release(buffer)
