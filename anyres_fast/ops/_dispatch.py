"""Shared pieces of the op contract (docs/ops.md §1): the impl switch and input validation.

Every public op takes `impl="auto" | "cuda" | "ref"`:
  ref   pure PyTorch, any device, any float dtype (float64 for checking);
  cuda  the extension's kernel; raises OpUnsupported with the reason when it cannot run;
  auto  cuda when the tensors are on a GPU, the extension is available and the configuration is
        supported, else ref.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch

from . import _extension

IMPLS = ("auto", "cuda", "ref")
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REF_DTYPES = CUDA_DTYPES + (torch.float64,)


class OpUnsupported(RuntimeError):
    """impl="cuda" was asked for but cannot run on these inputs (the message says why)."""


def resolve_impl(op: str, impl: str, tensors: Iterable[Optional[torch.Tensor]],
                 cuda_unsupported: Callable[[], Optional[str]] = lambda: None) -> str:
    """Returns "cuda" or "ref".

    cuda_unsupported() returns None when the CUDA kernel covers this configuration, else a short reason;
    it is only called for GPU tensors."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref":
        return "ref"
    present = [t for t in tensors if t is not None]
    on_gpu = bool(present) and all(t.device.type == "cuda" for t in present)
    if not on_gpu:
        if impl == "cuda":
            where = sorted({str(t.device) for t in present})
            raise OpUnsupported(f"{op}: impl='cuda' needs all tensors on a CUDA device, got {where}; "
                                f"use impl='auto' or 'ref' for CPU tensors")
        return "ref"
    reason = cuda_unsupported()
    if reason is not None:
        if impl == "cuda":
            raise OpUnsupported(f"{op}: impl='cuda' cannot run this configuration: {reason}")
        return "ref"
    ext = _extension.get(required=(impl == "cuda"))
    return "cuda" if ext is not None else "ref"


def extension():
    """The loaded extension (only called after resolve_impl returned "cuda")."""
    return _extension.get(required=True)


def current_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


# ----------------------------------------------------------------------------------------------------
# Validation: messages name the op and the argument, and say what was expected.

def check_tensor(op: str, name: str, t, *, ndim=None, dtypes=REF_DTYPES, allow_none=False):
    if t is None:
        if allow_none:
            return
        raise TypeError(f"{op}: {name} is required")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            raise ValueError(f"{op}: {name} must have {' or '.join(map(str, allowed))} dimensions, "
                             f"got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} has dtype {str(t.dtype).replace('torch.', '')}; supported: {names}")


def check_same_device(op: str, **tensors):
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {str(v.device) for v in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listing}")


def check_int(op: str, name: str, value, *, allowed=None, minimum=None) -> int:
    if isinstance(value, bool) or isinstance(value, torch.Tensor) or not hasattr(value, "__index__"):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    value = value.__index__()
    if allowed is not None and value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {tuple(allowed)}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return value


def check_finite(op: str, name: str, value, *, positive=False, allow_none=False) -> Optional[float]:
    if value is None and allow_none:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{op}: {name} must be > 0, got {value}")
    return value
