"""Shared pieces of the op contract (docs/ops.md §1): the impl switch and input validation.

Every public op takes `impl="auto" | "cuda" | "ref"`:
  ref   pure PyTorch, any device, any float dtype (float64 for checking);
  cuda  the extension's kernel; raises OpUnsupported with the reason when it cannot run;
  auto  cuda when the tensors are on a GPU, the extension is available, the configuration is
        supported and the kernel passed its first-use self-check on that device (selfcheck.py), else ref.
"""
from __future__ import annotations

import math
import os
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
    """Picks the path of one call: "cuda" or "ref" (docs/ops.md §1).

    Args:
        op: op name for messages.
        impl: "auto", "cuda" or "ref".
        tensors: the call's tensors (None entries are ignored).
        cuda_unsupported: returns None when the kernel covers this configuration, else a short reason;
            only called when all tensors are on a CUDA device.
    Returns:
        "cuda" or "ref" ("auto" gives "ref" for a kernel that failed its self-check on this device).
    Raises:
        ValueError: impl is not one of IMPLS.
        OpUnsupported: impl="cuda" with tensors off the GPU or an uncovered configuration.
        ExtensionUnavailable: impl="cuda" (or ANYRES_FAST_EXT=require) and the extension cannot load.
    """
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
    if ext is None:
        return "ref"
    if impl == "auto":
        if _trust_gate is None:
            raise RuntimeError(f"{op}: the kernel self-check (anyres_fast.ops.selfcheck) is not installed")
        if not _trust_gate(op, present[0].device, present[0].dtype):
            return "ref"  # the kernel failed its first-use self-check here (it warned once)
    return "cuda"


# The first-use self-check, installed by selfcheck.py when the ops package loads. It runs the op modules,
# which import this module, so this module reaches it through the installed function, not an import.
_trust_gate: Optional[Callable] = None


def install_trust_gate(gate: Callable) -> None:
    """Set the function impl="auto" asks before using a kernel: gate(op, device, dtype) -> bool."""
    global _trust_gate
    _trust_gate = gate


def extension():
    """The loaded extension (only called after resolve_impl returned "cuda")."""
    return _extension.get(required=True)


def aligned(t: torch.Tensor, alignment: int) -> torch.Tensor:
    """t itself when its data pointer is a multiple of `alignment` bytes, else a contiguous copy (a fresh
    allocation: PyTorch's allocators align those to at least 64 bytes).

    Kernels that move 16-byte chunks (cp.async) or store 32-bit words fault with a sticky
    misaligned-address error on a contiguous view with a storage offset; the bindings refuse such
    pointers, and the ops pass their operands through this first.

    Args:
        t: a tensor.
        alignment: bytes (a power of two).
    Returns:
        t, or its aligned contiguous copy.
    """
    if t.data_ptr() % alignment == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def current_stream(device: torch.device) -> int:
    """The current CUDA stream of device as the integer handle the bindings take."""
    return torch.cuda.current_stream(device).cuda_stream


# ----------------------------------------------------------------------------------------------------
# Validation: messages name the op and the argument, and say what was expected.

def check_tensor(op: str, name: str, t, *, ndim=None, dtypes=REF_DTYPES, allow_none=False):
    """Raises TypeError (None when required, not a tensor, dtype not in dtypes) or ValueError (ndim not
    allowed: an int or a tuple of ints) naming op and argument; None passes when allow_none."""
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
    """Raises ValueError listing each tensor's device when the given (non-None) tensors are on more
    than one device."""
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {str(v.device) for v in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listing}")


def check_int(op: str, name: str, value, *, allowed=None, minimum=None) -> int:
    """Returns value as an int (anything with __index__ except bool and tensors). Raises TypeError for
    non-ints, ValueError when not in allowed or below minimum."""
    if isinstance(value, bool) or isinstance(value, torch.Tensor) or not hasattr(value, "__index__"):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    value = value.__index__()
    if allowed is not None and value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {tuple(allowed)}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return value


def check_finite(op: str, name: str, value, *, positive=False, allow_none=False) -> Optional[float]:
    """Returns value as a finite float (None passes when allow_none). Raises TypeError for non-numbers,
    ValueError for NaN/Inf or, with positive=True, values <= 0."""
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


# ----------------------------------------------------------------------------------------------------
# Memory guard: refuse before allocating when the estimate cannot fit (docs/ops.md §1).

UNKNOWN_LIMIT_BYTES = 2**62     # refused even when the available memory cannot be read (or while compiling)
QUERY_FROM_BYTES = 2**30        # smaller estimates are not checked against live memory (no per-call query)


def _format_bytes(n: float) -> str:
    if n >= 1024 ** 6:
        return f"{n:.2e} bytes"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def available_memory(device) -> Optional[int]:
    """Bytes that an allocation on `device` can use now, or None when that cannot be read.

    Args:
        device: a torch.device or device string ("cpu", "cuda", "cuda:1", ...).
    Returns:
        CUDA: free device memory plus what PyTorch's caching allocator holds reserved but unused;
        CPU: MemAvailable from /proc/meminfo (else free physical pages); None for other devices,
        while a CUDA graph is being captured, or when the query fails.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            if torch.cuda.is_current_stream_capturing():
                return None
            index = device.index if device.index is not None else torch.cuda.current_device()
            free, _total = torch.cuda.mem_get_info(index)
            unused = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
            return int(free + max(unused, 0))
        except (RuntimeError, AssertionError):
            return None
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_memory(op: str, nbytes: int, device, what: str = "its output and intermediates") -> None:
    """Raises MemoryError, before anything is allocated, when an op's estimated memory cannot fit.

    Args:
        op: op name for the message.
        nbytes: estimated bytes (Python int, any size; computed from shapes, never from tensor values).
        device: where the memory would be allocated.
        what: what the estimate covers, for the message.
    Raises:
        MemoryError: "<op>: needs about X for <what> on <device>, but only Y is available". Estimates of
            QUERY_FROM_BYTES or more are compared with available_memory(device); above
            UNKNOWN_LIMIT_BYTES they are refused even when the limit is unknown. Under torch.compile
            the live query is skipped (it would break the graph), so only the fixed bound applies.
    """
    nbytes = int(nbytes)
    if nbytes < QUERY_FROM_BYTES:
        return
    limit = None if torch.compiler.is_compiling() else available_memory(device)
    if limit is None:
        limit = UNKNOWN_LIMIT_BYTES
    if nbytes > limit:
        raise MemoryError(f"{op}: needs about {_format_bytes(nbytes)} for {what} on {torch.device(device)}, "
                          f"but only {_format_bytes(limit)} is available; use smaller inputs or sizes")
