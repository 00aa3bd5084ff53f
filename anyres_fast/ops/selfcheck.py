"""First-use self-check of the CUDA kernels (docs/ops.md §1 "Self-check").

Before `impl="auto"` sends an op to its kernel on a device, the kernel is run once on small random inputs,
forward and backward, in the dtype of the call, against the float64 reference. It is used only when both
errors are within the tolerance; otherwise the op warns once (naming the op, the error and how to report
it) and runs the reference on that device for the rest of the process. The verdicts are stored next to the
conv autotuner's table (`<extension build dir>/selfcheck.json`, so per build key), one section per device
name and architecture, and reused by later processes.

Tolerance: with e(·) = ‖out − ref64‖ / ‖ref64‖ (docs/ops.md §1), the kernel passes when
    e(kernel) <= max(FACTOR · e(reference in the same dtype), FLOOR[dtype])
for the forward output and for every input gradient, FACTOR = 8. FLOOR is 1e-5 for float32 (4e-3 for the
convolutions on TF32 tensor cores), 4e-3 for float16 and 3e-2 for bfloat16.

`impl="cuda"` never consults the check (the caller asked for the kernel). Under torch.compile tracing or
CUDA-graph capture a check cannot run: a verdict already known (this process or the file) is used, an
unknown one counts as not trusted (the reference runs) until an eager call has checked the kernel.
`anyres-fast doctor --gpu` runs every check afresh and prints the table.

Environment: ANYRES_FAST_SELFCHECK = on (default) | off (trust the kernels unchecked).
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import _dispatch, conv_choice

FILE_NAME = "selfcheck.json"
FACTOR = 8.0
FLOOR = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
FLOOR_TF32 = 4e-3
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REPORT_HINT = ("please report it with the output of `anyres-fast doctor --gpu` (it names the GPU, driver "
               "and build) to the anyres_fast issue tracker")
SAME_KERNEL = {"teacher_warp": "lanczos_resample"}  # ops that run another op's kernel

_lock = threading.Lock()
_verdicts: dict = {}   # (device index, key) -> verdict dict
_warned: set = set()


def enabled() -> bool:
    """Whether first-use checks run (ANYRES_FAST_SELFCHECK, default on)."""
    value = os.environ.get("ANYRES_FAST_SELFCHECK", "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"ANYRES_FAST_SELFCHECK must be on or off, got {value!r}")
    return value == "on"


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64 (docs/ops.md §1)."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def _gen(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


# ----------------------------------------------------------------------------------------------------
# The checks: each returns (kernel outputs, same-dtype reference outputs, float64 reference outputs), every
# one a list of tensors: the forward result and the gradients of a fixed random projection of it.

def _grads(fn: Callable, inputs: list[torch.Tensor], proj_seed: int) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves)
    g = torch.randn(y.shape, generator=_gen(y.device, proj_seed), device=y.device, dtype=torch.float64)
    (y.double() * g).sum().backward()
    return [y.detach()] + [t.grad for t in leaves]


def _three_ways(op_fn: Callable, inputs: list[torch.Tensor], dtype: torch.dtype):
    """op_fn(impl, *inputs): the kernel in dtype, the reference in dtype, the reference in float64."""
    cast = [t.to(dtype) for t in inputs]
    return (_grads(lambda *a: op_fn("cuda", *a), cast, 7), _grads(lambda *a: op_fn("ref", *a), cast, 7),
            _grads(lambda *a: op_fn("ref", *a), [t.double() for t in cast], 7))


def _check_filtered_lrelu(device, dtype):
    from .filtered_lrelu_op import filtered_lrelu
    g = _gen(device, 1)
    x = torch.randn(1, 2, 8, 8, generator=g, device=device)
    b = torch.randn(2, generator=g, device=device)
    fu = torch.randn(12, generator=g, device=device).abs() + 0.1
    fd = torch.randn(12, generator=g, device=device).abs() + 0.1
    fu, fd = fu / fu.sum(), fd / fd.sum()
    return _three_ways(lambda impl, x_, b_: filtered_lrelu(x_, fu, fd, b_, up=2, down=2, padding=10, clamp=0.5,
                                                          impl=impl), [x, b], dtype)


def _check_lanczos_resample(device, dtype):
    from .lanczos_resample_op import lanczos_resample
    x = torch.randn(2, 3, 20, 24, generator=_gen(device, 2), device=device)
    return _three_ways(lambda impl, x_: lanczos_resample(x_, (13, 17), box=(1.5, 0.5, 22.25, 19.0), impl=impl),
                       [x], dtype)


def _conv_inputs(device, seed):
    g = _gen(device, seed)
    x = torch.randn(2, 8, 9, 9, generator=g, device=device)
    w = torch.randn(12, 8, 3, 3, generator=g, device=device) / math.sqrt(8 * 9)
    return g, x, w


def _check_modulated_conv2d(device, dtype):
    from .modulated_conv2d_op import modulated_conv2d
    g, x, w = _conv_inputs(device, 3)
    s = torch.rand(2, 8, generator=g, device=device) + 0.5

    def both(impl, x_, w_, s_):  # up=1 and up=2 (the two geometries of the kernel), one output
        y1 = modulated_conv2d(x_, w_, s_, padding=1, impl=impl)
        y2 = modulated_conv2d(x_, w_, s_, padding=0, up=2, impl=impl)
        return torch.cat([y1.flatten(), y2.flatten()])
    return _three_ways(both, [x, w, s], dtype)


def _check_style_fused_conv2d(device, dtype):
    from .style_fused_conv2d_op import style_fused_conv2d
    g, x, w = _conv_inputs(device, 4)
    smap = torch.rand(2, 8, 9, 9, generator=g, device=device) + 0.5

    def both(impl, x_, w_, s_):
        y1 = style_fused_conv2d(x_, w_, s_, padding=1, demod="exact", impl=impl)
        y2 = style_fused_conv2d(x_, w_, s_, padding=0, up=2, demod="none", impl=impl)
        return torch.cat([y1.flatten(), y2.flatten()])
    return _three_ways(both, [x, w, smap], dtype)


CHECKS: dict[str, Callable] = {
    "filtered_lrelu": _check_filtered_lrelu,
    "lanczos_resample": _check_lanczos_resample,
    "modulated_conv2d": _check_modulated_conv2d,
    "style_fused_conv2d": _check_style_fused_conv2d,
}
_CONV = ("modulated_conv2d", "style_fused_conv2d")


def _tf32(op: str, dtype: torch.dtype) -> bool:
    """Whether op runs float32 on TF32 tensor cores (the convolutions unless exact fp32 is asked for)."""
    if op not in _CONV or dtype != torch.float32:
        return False
    from .modulated_conv2d_op import exact_fp32
    return not exact_fp32()


def check_key(op: str, dtype: torch.dtype) -> str:
    """The verdict's key: op, dtype and, for float32 convolutions, tf32 or fp32."""
    key = f"{op}|{str(dtype).replace('torch.', '')}"
    if op in _CONV and dtype == torch.float32:
        key += "|tf32" if _tf32(op, dtype) else "|fp32"
    return key


def run_check(op: str, device: torch.device, dtype: torch.dtype) -> dict:
    """Runs one self-check now (no cache).

    Args:
        op: a key of CHECKS.
        device: where the kernel runs.
        dtype: float32, float16 or bfloat16.
    Returns:
        dict with ok (bool), forward / backward (kernel errors), tolerance, and error (a message when the
        kernel raised or an error exceeded the tolerance, else None).
    """
    floor = FLOOR_TF32 if _tf32(op, dtype) else FLOOR[dtype]
    verdict = {"ok": False, "forward": None, "backward": None, "tolerance": None, "error": None}
    try:
        kernel, ref_same, ref64 = CHECKS[op](device, dtype)
    except Exception as exc:  # a kernel that raises is as untrusted as one that is wrong
        verdict["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return verdict
    errors = [rel_error(k, r) for k, r in zip(kernel, ref64)]
    bounds = [max(FACTOR * rel_error(s, r), floor) for s, r in zip(ref_same, ref64)]
    finite = all(math.isfinite(e) for e in errors)
    verdict.update(forward=errors[0], backward=max(errors[1:]), tolerance=bounds[0],
                   ok=finite and all(e <= b for e, b in zip(errors, bounds)))
    if not verdict["ok"]:
        worst = max(range(len(errors)), key=lambda i: errors[i] / bounds[i] if math.isfinite(errors[i]) else math.inf)
        what = "forward" if worst == 0 else f"gradient of input {worst}"
        verdict["error"] = f"{what} error {errors[worst]:.3g} > tolerance {bounds[worst]:.3g}"
    return verdict


# ----------------------------------------------------------------------------------------------------
# The cache and the gate used by impl="auto".

def device_section(device: torch.device) -> str:
    """The file section of a device: its name and architecture ("cpu" off the GPU)."""
    if device.type != "cuda":
        return "cpu"
    from . import _arch
    major, minor = _arch.device_capability(device)
    return f"{conv_choice.device_name(device)}|sm_{major}{minor}"


def file_path() -> Path:
    """selfcheck.json next to conv_choice.json (the extension build folder: one file per build key)."""
    return conv_choice.table_path().parent / FILE_NAME


def _index(device: torch.device) -> int:
    if device.type != "cuda":
        return -1
    return device.index if device.index is not None else torch.cuda.current_device()


def _can_run_now(device: torch.device) -> bool:
    if torch.compiler.is_compiling():
        return False
    return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def trusted(op: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether impl="auto" may use op's kernel on device for dtype (runs the check at first use).

    Args:
        op: the op's name (ops without a check, and the dtypes the checks do not cover, are trusted).
        device: the call's device.
        dtype: the call's dtype.
    Returns:
        True when the kernel passed (or checks are off); False when it failed (one RuntimeWarning per op
        and device says why) or when its verdict is unknown and cannot be obtained now (see the module
        docstring).
    """
    op = SAME_KERNEL.get(op, op)
    if op not in CHECKS or dtype not in DTYPES or not enabled():
        return True
    key = check_key(op, dtype)
    memo = (_index(device), key)
    verdict = _verdicts.get(memo)
    if verdict is None:
        path, section = file_path(), device_section(device)
        with _lock:
            verdict = conv_choice.load_table(path).get(section, {}).get(key)
        if verdict is None:
            if not _can_run_now(device):
                return False
            verdict = run_check(op, device, dtype)
            with _lock:
                table = conv_choice.load_table(path)
                table.setdefault(section, {})[key] = verdict
                conv_choice.save_table(path, table)
        _verdicts[memo] = verdict
    if not verdict["ok"] and memo not in _warned:
        _warned.add(memo)
        warnings.warn(f"anyres_fast: the CUDA kernel of {op} failed its self-check on "
                      f"{device_section(device)} ({key}): {verdict['error']}; {op} runs its PyTorch reference "
                      f"there instead. This is a bug: {REPORT_HINT}.", RuntimeWarning, stacklevel=4)
    return bool(verdict["ok"])


def report_rows(device: torch.device, dtypes=DTYPES) -> list[tuple[str, str, dict]]:
    """Runs every check on device afresh (what `anyres-fast doctor --gpu` prints) and records the verdicts.

    Returns:
        [(op, key, verdict)] for every op of CHECKS and dtype.
    """
    rows = []
    path, section = file_path(), device_section(device)
    for op in CHECKS:
        for dtype in dtypes:
            key = check_key(op, dtype)
            verdict = run_check(op, device, dtype)
            _verdicts[(_index(device), key)] = verdict
            with _lock:
                table = conv_choice.load_table(path)
                table.setdefault(section, {})[key] = verdict
                conv_choice.save_table(path, table)
            rows.append((op, key, verdict))
    return rows


# impl="auto" asks `trusted` (looked up at call time, so a test may replace it).
_dispatch.install_trust_gate(lambda op, device, dtype: trusted(op, device, dtype))
