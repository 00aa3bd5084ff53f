"""Teacher warp, inverse mode (docs/ops.md §3.2; Chai et al. 2022): a generated patch placed into the teacher's frame.

A patch of ph×pw pixels rendered on a canvas of N×N pixels, with its top-left pixel at (x0, y0) on the
canvas, covers the canvas square [x0, x0+pw] × [y0, y0+ph]. The teacher sees the whole canvas in a
frame of T×T pixels, so teacher pixel edge t sits at canvas coordinate t·N/T, i.e. at patch coordinate
t·N/T − x0. Resampling the patch over the box (−x0, −y0, N−x0, N−y0) onto T×T pixels therefore puts
every teacher pixel where it belongs (Lanczos-3, anti-aliased when N > T). Teacher pixels whose kernel
support reaches outside the patch are masked out; they include every pixel outside the patch's
square. For N = ph = pw = T (an identity patch) the warp is the identity, bit for bit, with a full mask.

    warped, mask = teacher_warp(patch, canvas_size, box_xy, teacher_size)
    loss = masked L1 / LPIPS between warped and the teacher image, over mask (weight λ_teacher = 5)
"""
from __future__ import annotations

import math

import torch

from . import _dispatch
from .lanczos_resample_op import MAX_A, _cuda_unsupported, _estimate_bytes, lanczos_resample

OP = "teacher_warp"


def _per_sample(op, name, value, batch, width):
    """(B, width) float64 host tensor from a number/sequence or a tensor of shape (width,), (B,) or (B,width)."""
    if isinstance(value, torch.Tensor):
        if not (value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{op}: {name} must be a float or int tensor, got dtype {value.dtype}")
        t = value.detach().to("cpu", torch.float64)
    else:
        try:
            t = torch.tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{op}: {name} must be numbers or a tensor, got {value!r}") from None
    if t.ndim == 0 or (t.ndim == 1 and width > 1 and t.shape[0] == width):
        t = t.reshape(1, -1).expand(batch, width) if t.ndim == 1 else t.reshape(1, 1).expand(batch, width)
    elif t.ndim == 1 and width == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[1] != width or t.shape[0] not in (1, batch):
        raise ValueError(f"{op}: {name} must have shape ({batch}, {width}) or broadcast to it, got {tuple(t.shape)}")
    t = t.expand(batch, width)
    if not torch.compiler.is_compiling() and not torch.isfinite(t).all():
        raise ValueError(f"{op}: {name} must be finite, got {t.tolist()}")
    return t


def teacher_boxes(patch_hw, canvas_size, box_xy, batch, op=OP) -> torch.Tensor:
    """Per-sample boxes, in patch pixels, of the whole canvas: (−x0, −y0, N−x0, N−y0).

    Args:
        patch_hw: (ph, pw).
        canvas_size: number or (B,) tensor; box_xy: (2,) or (B, 2) numbers or tensor.
        batch: B; op: op name for messages.
    Returns:
        CPU float64 tensor (B, 4).
    Raises:
        TypeError, ValueError: as teacher_warp.
    """
    ph, pw = patch_hw
    n = _per_sample(op, "canvas_size", canvas_size, batch, 1)[:, 0]
    xy = _per_sample(op, "box_xy", box_xy, batch, 2)
    if torch.compiler.is_compiling():
        return torch.stack([-xy[:, 0], -xy[:, 1], n - xy[:, 0], n - xy[:, 1]], dim=1)
    if (n <= 0).any():
        raise ValueError(f"{op}: canvas_size must be > 0, got {n.tolist()}")
    x0, y0 = xy[:, 0], xy[:, 1]
    outside = (x0 < 0) | (y0 < 0) | (x0 + pw > n) | (y0 + ph > n)
    if outside.any():
        i = int(outside.nonzero()[0, 0])
        raise ValueError(f"{op}: patch {i} ({ph}x{pw} at box_xy=({x0[i].item()}, {y0[i].item()})) does not lie "
                         f"inside its canvas of size {n[i].item()}")
    return torch.stack([-x0, -y0, n - x0, n - y0], dim=1)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _python_box(patch_hw, canvas_size, box_xy):
    """The one box (−x0, −y0, N−x0, N−y0) as Python floats when canvas_size and box_xy are plain numbers
    (checked in Python, so this traces under torch.compile); None for tensors or per-sample values."""
    if not _is_number(canvas_size) or isinstance(box_xy, torch.Tensor):
        return None
    try:
        if len(box_xy) != 2 or not all(_is_number(v) for v in box_xy):
            return None
    except TypeError:
        return None
    ph, pw = int(patch_hw[0]), int(patch_hw[1])
    n, x0, y0 = float(canvas_size), float(box_xy[0]), float(box_xy[1])
    if not all(math.isfinite(v) for v in (n, x0, y0)):
        raise ValueError(f"{OP}: canvas_size and box_xy must be finite, got {canvas_size!r}, {tuple(box_xy)!r}")
    if n <= 0:
        raise ValueError(f"{OP}: canvas_size must be > 0, got [{n}]")
    if x0 < 0 or y0 < 0 or x0 + pw > n or y0 + ph > n:
        raise ValueError(f"{OP}: patch 0 ({ph}x{pw} at box_xy=({x0}, {y0})) does not lie inside its canvas "
                         f"of size {n}")
    return (-x0, -y0, n - x0, n - y0)


def teacher_warp(patch, canvas_size, box_xy, teacher_size, a=3, impl="auto"):
    """Warps generated patches into the teacher's T×T frame of their whole canvas (docs/ops.md §3.2).

    Resamples each patch over the box (−x0, −y0, N−x0, N−y0) onto T×T pixels with lanczos_resample
    (anti-aliased), so teacher pixel (i, j) holds what the patch shows at canvas position
    ((j + 0.5)·N/T, (i + 0.5)·N/T). With N = ph = pw = T the warp is the identity.

    Args:
        patch: (B, C, ph, pw) float tensor (dtypes as lanczos_resample).
        canvas_size: N, the canvas side in pixels: a number, or a (B,) / (1,) float or int tensor.
        box_xy: the patch's top-left canvas pixel (x0, y0): 2 numbers, or a (2,) / (B, 2) tensor.
            Both are read on the host: pass CPU tensors (training keeps host copies) to avoid a
            device-to-host copy, which synchronises the GPU (docs/ops.md §3.2).
        teacher_size: T, the teacher's image side, int >= 1.
        a: Lanczos order, int in 1..8.
        impl: "auto", "cuda" or "ref".

    Returns:
        (warped, mask): warped (B, C, T, T) in patch's dtype; mask bool (B, 1, T, T), True where the
        teacher pixel's kernel support lies inside the patch (False everywhere outside its footprint).

    Raises:
        TypeError: patch not a tensor; teacher_size not an int; canvas_size/box_xy not numbers or
            float/int tensors.
        ValueError: patch not 4-D or empty; teacher_size < 1; canvas_size <= 0; non-finite values;
            shapes that do not broadcast to the batch; a patch that does not lie inside its canvas.
            Under torch.compile with tensor arguments the value checks are skipped.
        MemoryError, OpUnsupported, ExtensionUnavailable: as lanczos_resample.
    """
    _dispatch.check_tensor(OP, "patch", patch, ndim=4)
    t = _dispatch.check_int(OP, "teacher_size", teacher_size, minimum=1)
    if min(patch.shape) == 0:
        raise ValueError(f"{OP}: patch is empty, shape {tuple(patch.shape)}")
    a = _dispatch.check_int(OP, "a", a, allowed=range(1, MAX_A + 1))
    # resolve and size here too, so that errors name teacher_warp rather than the op it calls
    which = _dispatch.resolve_impl(OP, impl, (patch,), lambda: _cuda_unsupported(patch))
    _dispatch.check_memory(OP, _estimate_bytes(patch, (t, t), tuple(patch.shape[2:]), which), patch.device)
    boxes = _python_box(patch.shape[2:], canvas_size, box_xy)
    if boxes is None:
        boxes = teacher_boxes(patch.shape[2:], canvas_size, box_xy, patch.shape[0])
    return lanczos_resample(patch, (t, t), box=boxes, a=a, antialias=True, return_mask=True, impl=impl)

