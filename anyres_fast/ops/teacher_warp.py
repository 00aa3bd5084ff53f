"""Teacher warp, inverse mode (docs/ops.md §3.2; Chai et al. 2022, §3.2): a generated patch placed into the teacher's frame.

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

import torch

from . import _dispatch
from .lanczos_resample import lanczos_resample

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
    if not torch.isfinite(t).all():
        raise ValueError(f"{op}: {name} must be finite, got {t.tolist()}")
    return t


def teacher_boxes(patch_hw, canvas_size, box_xy, batch, op=OP) -> torch.Tensor:
    """(B,4) float64 boxes, in patch pixels, of the whole canvas: (−x0, −y0, N−x0, N−y0)."""
    ph, pw = patch_hw
    n = _per_sample(op, "canvas_size", canvas_size, batch, 1)[:, 0]
    xy = _per_sample(op, "box_xy", box_xy, batch, 2)
    if (n <= 0).any():
        raise ValueError(f"{op}: canvas_size must be > 0, got {n.tolist()}")
    x0, y0 = xy[:, 0], xy[:, 1]
    outside = (x0 < 0) | (y0 < 0) | (x0 + pw > n) | (y0 + ph > n)
    if outside.any():
        i = int(outside.nonzero()[0, 0])
        raise ValueError(f"{op}: patch {i} ({ph}x{pw} at box_xy=({x0[i].item()}, {y0[i].item()})) does not lie "
                         f"inside its canvas of size {n[i].item()}")
    return torch.stack([-x0, -y0, n - x0, n - y0], dim=1)


def teacher_warp(patch, canvas_size, box_xy, teacher_size, a=3, impl="auto"):
    """Warps patches (B,C,ph,pw) into the teacher's T×T frame; returns (warped (B,C,T,T), mask (B,1,T,T) bool).

    canvas_size: N per sample (number or (B,) tensor); box_xy: the patch's top-left canvas pixel (x0, y0)
    per sample ((2,) or (B,2)); teacher_size: T (int)."""
    _dispatch.check_tensor(OP, "patch", patch, ndim=4)
    t = _dispatch.check_int(OP, "teacher_size", teacher_size, minimum=1)
    if min(patch.shape) == 0:
        raise ValueError(f"{OP}: patch is empty, shape {tuple(patch.shape)}")
    boxes = teacher_boxes(patch.shape[2:], canvas_size, box_xy, patch.shape[0])
    return lanczos_resample(patch, (t, t), box=boxes, a=a, antialias=True, return_mask=True, impl=impl)

