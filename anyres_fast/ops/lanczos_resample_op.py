"""Separable Lanczos resampling with per-sample boxes (docs/ops.md §3).

    y = lanczos_resample(x, size, box=None, a=3, antialias=True, return_mask=False, impl="auto")

x is (B,C,H,W); size is (H_out, W_out) (or one int for both); box is (x0, y0, x1, y1) in input pixel
units (pixel k spans [k, k+1], like PIL's `box`), one box for the batch or a (B,4) tensor of per-sample
boxes; None means the whole input.

Per axis (x shown; y is the same with rows), output pixel i has its centre at
    c_i = x0 + (i + 0.5)·scale,   scale = (x1 - x0) / W_out
in input coordinates. With the filter scale f = max(scale, 1) when antialias (the kernel is stretched
when shrinking) or f = 1 otherwise, input pixel k (centre k + 0.5) gets the weight
    L((k + 0.5 - c_i) / f),   L(t) = sinc(t)·sinc(t/a) for |t| < a, else 0,
for the taps k in [floor(c_i - a·f + 0.5), floor(c_i + a·f + 0.5)) that lie inside the input; the
weights of each output pixel are normalised to sum 1 (an output with no tap inside the input is 0).
Rows are resampled first, then columns (PIL's order); the result is the separable product.

This is PIL's `Image.resize(size, Image.LANCZOS, box=box)` on float ('F') images (Pillow's
Resample.c: same centre, support, tap window, normalisation and exclusion of taps outside the image).
Convention differences we had to bridge or chose deliberately:
  * PIL passes the box to C as float32 and computes x1 - x0 in float32; we keep float64 throughout.
    The PIL tests use boxes that float32 represents exactly, so both sides see the same numbers.
  * PIL evaluates sin(pi·t) at integer t and gets ~1e-17 instead of 0; we return L(t) = 0 exactly at
    nonzero integers (its true value). Integer-aligned unit-scale resampling (identity, integer shifts)
    is therefore exact, as PIL's own crop/copy fast paths are. Differences are ~1e-17.
  * PIL keeps its intermediate (after the horizontal pass) in float32; we keep float32 (float64 for
    float64 input) and sum in that precision. Differences are ~1e-7.
  * PIL rejects boxes reaching outside the image; we accept any box that overlaps the input and
    exclude the taps that fall outside it (renormalising), as PIL does at the image border.
  * `a` may be any integer 1..8 (PIL's LANCZOS is a = 3) and `antialias=False` keeps f = 1 when
    shrinking (plain Lanczos interpolation, aliasing).

Gradients flow to x only; boxes are treated as constants (not differentiable).

Validity mask (return_mask=True): output pixel (i, j) is valid when every tap with a nonzero kernel
weight, on both axes, lies inside the input, i.e. exactly when the value does not depend on what lies
outside the input and needs no renormalisation. Returned as a bool tensor (B, 1, H_out, W_out).

Implementations:
  lanczos_resample_ref         dense per-sample weight matrices, y = M_y · x · M_xᵀ (autograd, float64)
  anyres_fast::lanczos_resample  custom op: CUDA kernels (csrc/kernels/lanczos_resample.cu: weight
                               tables on the device, then two separable gather passes; the backward is
                               the transpose of both passes, also a gather, so it is deterministic);
                               CPU kernel = the reference math with an explicit backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from . import _dispatch

OP = "lanczos_resample"
MAX_A = 8

BoxLike = Union[None, Sequence[float], torch.Tensor]


# ----------------------------------------------------------------------------------------------------
# Kernel and per-axis weight tables (float64). The CUDA table kernel implements the same formulas.

def lanczos_kernel(t: torch.Tensor, a: int) -> torch.Tensor:
    """The Lanczos kernel L(t) = sinc(t)·sinc(t/a) on |t| < a, else 0.

    Args:
        t: float tensor of any shape (float64 in the tables).
        a: order, int >= 1.
    Returns:
        Tensor like t; exactly 1 at 0 and exactly 0 at nonzero integers.
    """
    pt = math.pi * t
    safe = torch.where(t == 0, torch.ones_like(pt), pt)
    value = a * torch.sin(safe) * torch.sin(safe / a) / (safe * safe)
    value = torch.where(t == 0, torch.ones_like(value), value)
    zero = (t.abs() >= a) | ((t != 0) & (t == torch.round(t)))
    return torch.where(zero, torch.zeros_like(value), value)


def filter_scale(start: torch.Tensor, end: torch.Tensor, out_size: int, antialias: bool) -> torch.Tensor:
    scale = (end - start) / out_size
    return scale.clamp(min=1.0) if antialias else torch.ones_like(scale)


def max_taps(boxes: torch.Tensor, axis: int, in_size: int, out_size: int, a: int, antialias: bool) -> int:
    """Upper bound on the taps one output pixel of this axis uses (the table width).

    Args:
        boxes: (B, 4) float tensor of boxes (read on the host: a sync for device tensors).
        axis: 0 for x (columns), 1 for y (rows).
        in_size, out_size: input and output length of this axis.
        a: Lanczos order; antialias: bool.
    Returns:
        int min(2·ceil(a·f_max) + 1, in_size), f_max the largest filter scale over the batch.
    """
    fs = filter_scale(boxes[:, axis].double(), boxes[:, axis + 2].double(), out_size, antialias)
    return int(min(2 * math.ceil(a * float(fs.max())) + 1, in_size))


@dataclass
class AxisTables:
    lo: torch.Tensor        # (B,Out) float64: first tap (clamped to the input)
    weights: torch.Tensor   # (B,Out,K) float64: normalised weights of taps lo..lo+K-1 (0 past the window)
    valid: torch.Tensor     # (B,Out) bool: every nonzero-weight tap lies inside the input


def axis_tables(start: torch.Tensor, end: torch.Tensor, in_size: int, out_size: int, a: int,
                antialias: bool, taps: int) -> AxisTables:
    """Weights of one axis for every sample; start/end are (B,) float64 box edges on this axis."""
    f64 = dict(dtype=torch.float64, device=start.device)
    fs = filter_scale(start, end, out_size, antialias)[:, None]                       # (B,1)
    support = a * fs
    scale = ((end - start) / out_size)[:, None]
    centre = start[:, None] + (torch.arange(out_size, **f64) + 0.5) * scale           # (B,Out)
    lo_raw = torch.floor(centre - support + 0.5)
    hi_raw = torch.floor(centre + support + 0.5)
    lo, hi = lo_raw.clamp(0, in_size), hi_raw.clamp(0, in_size)
    tap = lo[..., None] + torch.arange(taps, **f64)                                   # (B,Out,K)
    w = lanczos_kernel((tap + 0.5 - centre[..., None]) / fs[..., None], a) * (tap < hi[..., None])
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)
    valid = _side_clean(centre, fs, a, lo_raw, hi_raw, in_size)
    return AxisTables(lo, w, valid)


def _side_clean(centre, fs, a, lo_raw, hi_raw, in_size) -> torch.Tensor:
    """True where no tap outside [0, in_size) inside the window has a nonzero weight.

    Checks the (up to) 2a+2 outside taps nearest the input on each side. That is exhaustive: with f = 1
    the whole window has at most 2a+1 taps, and with f > 1 neighbouring taps are 1/f < 1 apart in t,
    so two of them cannot both sit on zeros of L (integers); more outside taps than that means a
    nonzero one."""
    m_max = 2 * a + 2
    m = torch.arange(m_max, dtype=torch.float64, device=centre.device)
    left_end = torch.minimum(hi_raw, torch.zeros_like(hi_raw))          # outside taps: [lo_raw, left_end)
    right_begin = torch.maximum(lo_raw, torch.full_like(lo_raw, in_size))  # outside taps: [right_begin, hi_raw)
    ok = torch.ones_like(centre, dtype=torch.bool)
    for n, tap in (((left_end - lo_raw).clamp(min=0), left_end[..., None] - 1 - m),
                   ((hi_raw - right_begin).clamp(min=0), right_begin[..., None] + m)):
        w = lanczos_kernel((tap + 0.5 - centre[..., None]) / fs[..., None], a) * (m < n[..., None])
        ok &= (n <= m_max) & (w == 0).all(-1)
    return ok


def axis_matrix(tables: AxisTables, in_size: int) -> torch.Tensor:
    """Dense (B,Out,In) float64 matrix of one axis."""
    b, out_size, taps = tables.weights.shape
    idx = (tables.lo[..., None] + torch.arange(taps, dtype=torch.float64, device=tables.lo.device))
    idx = idx.clamp(max=in_size - 1).long()        # taps past the window carry weight 0
    m = torch.zeros((b, out_size, in_size), dtype=torch.float64, device=tables.lo.device)
    return m.scatter_add_(2, idx, tables.weights)


def _both_axes(boxes: torch.Tensor, in_hw, out_hw, a: int, antialias: bool, taps_yx=None):
    """(rows, cols) AxisTables for (B,4) float64 boxes on any device."""
    (h, w), (ho, wo) = in_hw, out_hw
    if taps_yx is None:
        host = boxes.detach().cpu()
        taps_yx = (max_taps(host, 1, h, ho, a, antialias), max_taps(host, 0, w, wo, a, antialias))
    rows = axis_tables(boxes[:, 1], boxes[:, 3], h, ho, a, antialias, taps_yx[0])
    cols = axis_tables(boxes[:, 0], boxes[:, 2], w, wo, a, antialias, taps_yx[1])
    return rows, cols


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mask(valid_rows: torch.Tensor, valid_cols: torch.Tensor) -> torch.Tensor:
    return (valid_rows[:, :, None] & valid_cols[:, None, :])[:, None]


def _apply(x, m_rows, m_cols):
    """y = M_rows · x · M_colsᵀ per sample, in float32 (float64 for float64 x).

    Dense matrices hold exact zeros outside each output's taps, and 0·NaN = NaN would carry one
    non-finite input to a whole row and column of the output. When x holds NaN/Inf (checked in eager
    mode only; a device sync on CUDA, where this reference is only the fallback), the product is taken
    over the finite values and exactly the outputs that give a non-finite input a nonzero weight are
    set to NaN: the spread is bounded by the kernel window, as on the CUDA path (docs/ops.md §3.1)."""
    cd = _compute_dtype(x.dtype)
    xc = x.to(cd)
    finite = None
    if not torch.compiler.is_compiling():
        finite = torch.isfinite(xc)
        if bool(finite.all()):
            finite = None
    if finite is not None:
        xc = torch.where(finite, xc, torch.zeros((), dtype=cd, device=x.device))
    t = torch.matmul(xc, m_cols.to(cd).transpose(1, 2)[:, None])          # (B,C,H,W_out)
    y = torch.matmul(m_rows.to(cd)[:, None], t)                           # (B,C,H_out,W_out)
    if finite is not None:
        bad = (~finite).to(cd)
        reach_cols = (m_cols != 0).to(cd).transpose(1, 2)[:, None]
        reach_rows = (m_rows != 0).to(cd)[:, None]
        hit = torch.matmul(reach_rows, torch.matmul(bad, reach_cols)) > 0
        y = torch.where(hit, torch.full((), math.nan, dtype=cd, device=x.device), y)
    return y.to(x.dtype)


def _apply_transpose(grad, m_rows, m_cols, dtype):
    cd = _compute_dtype(dtype)
    t = torch.matmul(m_rows.to(cd).transpose(1, 2)[:, None], grad.to(cd))  # (B,C,H,W_out)
    return torch.matmul(t, m_cols.to(cd)[:, None]).to(dtype)               # (B,C,H,W)


# ----------------------------------------------------------------------------------------------------
# Reference.

def lanczos_resample_ref(x, size, box: BoxLike = None, a=3, antialias=True, return_mask=False):
    """Reference: y = M_rows · x · M_colsᵀ with dense per-sample weight matrices (float64 tables).

    Differentiable in x by autograd (to any order), any device and float dtype. Arguments are
    validated as for lanczos_resample.

    Args:
        x: (B, C, H, W) float tensor.
        size: (H_out, W_out) or an int.
        box: None, 4 numbers, or a (4,) / (B, 4) tensor (see lanczos_resample).
        a: int in 1..8.
        antialias: bool.
        return_mask: bool.

    Returns:
        (B, C, H_out, W_out) in x's dtype, or (y, bool mask (B, 1, H_out, W_out)) with return_mask.

    Raises:
        TypeError, ValueError: as lanczos_resample.
    """
    out_hw, boxes, a = validate(OP + "_ref", x, size, box, a, antialias)
    # table widths from the validated host boxes: _both_axes would otherwise read them back from x's device
    (h, w), (ho, wo) = x.shape[2:], out_hw
    taps_yx = (max_taps(boxes, 1, h, ho, a, antialias), max_taps(boxes, 0, w, wo, a, antialias))
    rows, cols = _both_axes(boxes.to(x.device), x.shape[2:], out_hw, a, antialias, taps_yx)
    y = _apply(x, axis_matrix(rows, x.shape[2]), axis_matrix(cols, x.shape[3]))
    return (y, _mask(rows.valid, cols.valid)) if return_mask else y


# ----------------------------------------------------------------------------------------------------
# Custom ops (torch.library). boxes: (B,4) float64 on x's device; taps_*: table widths from max_taps.

@torch.library.custom_op("anyres_fast::lanczos_resample", mutates_args=())
def _lanczos_op(x: torch.Tensor, boxes: torch.Tensor, out_h: int, out_w: int, a: int, antialias: bool,
                taps_y: int, taps_x: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if x.device.type == "cuda":
        return _cuda_forward(x, boxes, out_h, out_w, a, antialias, taps_y, taps_x)
    rows, cols = _both_axes(boxes, x.shape[2:], (out_h, out_w), a, antialias, (taps_y, taps_x))
    y = _apply(x, axis_matrix(rows, x.shape[2]), axis_matrix(cols, x.shape[3]))
    return y.contiguous(), rows.valid, cols.valid


@_lanczos_op.register_fake
def _(x, boxes, out_h, out_w, a, antialias, taps_y, taps_x):
    b, c = x.shape[:2]
    return (x.new_empty((b, c, out_h, out_w)), x.new_empty((b, out_h), dtype=torch.bool),
            x.new_empty((b, out_w), dtype=torch.bool))


@torch.library.custom_op("anyres_fast::lanczos_resample_backward", mutates_args=())
def _lanczos_backward_op(grad: torch.Tensor, boxes: torch.Tensor, in_h: int, in_w: int, a: int,
                         antialias: bool, taps_y: int, taps_x: int) -> torch.Tensor:
    if grad.device.type == "cuda":
        return _cuda_backward(grad, boxes, in_h, in_w, a, antialias, taps_y, taps_x)
    rows, cols = _both_axes(boxes, (in_h, in_w), grad.shape[2:], a, antialias, (taps_y, taps_x))
    return _apply_transpose(grad, axis_matrix(rows, in_h), axis_matrix(cols, in_w), grad.dtype).contiguous()


@_lanczos_backward_op.register_fake
def _(grad, boxes, in_h, in_w, a, antialias, taps_y, taps_x):
    b, c = grad.shape[:2]
    return grad.new_empty((b, c, in_h, in_w))


def _setup_context(ctx, inputs, output):
    x, boxes, out_h, out_w, a, antialias, taps_y, taps_x = inputs
    ctx.save_for_backward(boxes)
    ctx.args = (x.shape[2], x.shape[3], a, antialias, taps_y, taps_x)
    ctx.mark_non_differentiable(output[1], output[2])


def _backward(ctx, grad, _grad_rows, _grad_cols):
    (boxes,) = ctx.saved_tensors
    dx = _lanczos_backward_op(grad.contiguous(), boxes, *ctx.args)
    return dx, None, None, None, None, None, None, None


_lanczos_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------
# CUDA path (see csrc/kernels/lanczos_resample.cu).

def _cuda_forward(x, boxes, out_h, out_w, a, antialias, taps_y, taps_x):
    ext = _dispatch.extension()
    x = x.contiguous()
    b, c = x.shape[:2]
    y = torch.empty((b, c, out_h, out_w), device=x.device, dtype=x.dtype)
    valid_rows = torch.empty((b, out_h), device=x.device, dtype=torch.bool)
    valid_cols = torch.empty((b, out_w), device=x.device, dtype=torch.bool)
    with torch.cuda.device(x.device):
        ext.lanczos_resample_forward(x, boxes.contiguous(), y, valid_rows, valid_cols, a, antialias,
                                     taps_y, taps_x, _dispatch.current_stream(x.device))
    return y, valid_rows, valid_cols


def _cuda_backward(grad, boxes, in_h, in_w, a, antialias, taps_y, taps_x):
    ext = _dispatch.extension()
    grad = grad.contiguous()
    b, c = grad.shape[:2]
    dx = torch.empty((b, c, in_h, in_w), device=grad.device, dtype=grad.dtype)
    with torch.cuda.device(grad.device):
        ext.lanczos_resample_backward(grad, boxes.contiguous(), dx, a, antialias, taps_y, taps_x,
                                      _dispatch.current_stream(grad.device))
    return dx


def _cuda_unsupported(x) -> Optional[str]:
    if x.dtype not in _dispatch.CUDA_DTYPES:
        return f"dtype {x.dtype} (CUDA kernels take float32, float16, bfloat16)"
    if max(x.shape[2:]) >= 2 ** 30:
        return "input side of 2^30 pixels or more"
    return None


# ----------------------------------------------------------------------------------------------------
# Validation and the public function.

def _check_size(op, size):
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"{op}: size must be an int or (H_out, W_out), got {tuple(size)}")
        hw = tuple(_dispatch.check_int(op, "size", s) for s in size)
    else:
        s = _dispatch.check_int(op, "size", size)
        hw = (s, s)
    if min(hw) < 1:
        raise ValueError(f"{op}: size must be >= 1 on both axes, got {hw}")
    return hw


def boxes_tensor(op: str, box: BoxLike, batch: int, in_hw) -> torch.Tensor:
    """Host (B, 4) float64 boxes from None, 4 numbers, a (4,) or a (B, 4) tensor; checks every box.

    Args:
        op: op name for messages.
        box: None, 4 numbers or a float/int tensor of shape (4,) or (B, 4) (any device).
        batch: B.
        in_hw: (H, W) of the input.
    Returns:
        Contiguous CPU float64 tensor (B, 4) of (x0, y0, x1, y1).
    Raises:
        TypeError: box of the wrong type or dtype.
        ValueError: wrong shape or batch; a box that is non-finite, empty, inverted or outside the
            input (the message names the first offending box). Under torch.compile the value checks
            of tensor boxes are skipped (they would be data-dependent).
    """
    h, w = in_hw
    if box is None:
        return torch.tensor([[0.0, 0.0, float(w), float(h)]], dtype=torch.float64).expand(batch, 4).clone()
    if isinstance(box, torch.Tensor):
        if not (box.dtype.is_floating_point or box.dtype in (torch.int32, torch.int64, torch.int16)):
            raise TypeError(f"{op}: box must be a float or int tensor, got dtype {box.dtype}")
        boxes = box.detach().to("cpu", torch.float64)
    else:
        values = python_box(op, box, in_hw)
        return torch.tensor([values], dtype=torch.float64).expand(batch, 4).contiguous()
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: box must have 4 values (x0, y0, x1, y1) or shape (B,4), got shape {tuple(boxes.shape)}")
    box_rows = boxes.shape[0]
    if box_rows == 1:
        boxes = boxes.expand(batch, 4)
    if boxes.shape[0] != batch:
        raise ValueError(f"{op}: box has {boxes.shape[0]} rows but x has batch {batch}")
    if torch.compiler.is_compiling():
        return boxes.contiguous()     # value checks would be data-dependent; see docs/ops.md §3.1
    x0, y0, x1, y1 = boxes.unbind(1)
    checks = (
        (~torch.isfinite(boxes).all(1), "must be finite"),
        ((x1 == x0) | (y1 == y0), "is empty (x1 must be > x0 and y1 > y0)"),
        ((x1 < x0) | (y1 < y0), "is inverted (x1 must be > x0 and y1 > y0)"),
        ((x1 <= 0) | (y1 <= 0) | (x0 >= w) | (y0 >= h), f"lies outside the input [0, {w}] x [0, {h}]; it must overlap it"),
    )
    for bad, what in checks:   # vectorised; the message names the first offending box
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            where = f"box[{i}] = {tuple(boxes[i].tolist())}" if box_rows > 1 else f"box {tuple(boxes[i].tolist())}"
            raise ValueError(f"{op}: {where} {what}")
    return boxes.contiguous()


def python_box(op: str, box, in_hw) -> tuple[float, float, float, float]:
    """One box given as 4 Python numbers (or None: the whole input), checked without tensors.

    Args:
        op: op name for messages.
        box: None or a sequence of 4 numbers (x0, y0, x1, y1) in input pixels.
        in_hw: (H, W) of the input.
    Returns:
        (x0, y0, x1, y1) as Python floats.
    Raises:
        TypeError: box is not 4 numbers.
        ValueError: wrong length, non-finite, empty, inverted, or not overlapping the input.
    """
    h, w = int(in_hw[0]), int(in_hw[1])
    if box is None:
        return 0.0, 0.0, float(w), float(h)
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise TypeError(f"{op}: box must be 4 numbers (x0, y0, x1, y1) or a (B,4) tensor, got {box!r}") from None
    if len(values) != 4:
        raise ValueError(f"{op}: box must have 4 values (x0, y0, x1, y1) or shape (B,4), got {len(values)} values")
    x0, y0, x1, y1 = values
    where = f"box {tuple(values)}"
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{op}: {where} must be finite")
    if x1 == x0 or y1 == y0:
        raise ValueError(f"{op}: {where} is empty (x1 must be > x0 and y1 > y0)")
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{op}: {where} is inverted (x1 must be > x0 and y1 > y0)")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"{op}: {where} lies outside the input [0, {w}] x [0, {h}]; it must overlap it")
    return x0, y0, x1, y1


def _max_taps_python(start: float, end: float, in_size: int, out_size: int, a: int, antialias: bool) -> int:
    """max_taps for one box given as Python floats (same float64 arithmetic, no tensors)."""
    fs = max((end - start) / out_size, 1.0) if antialias else 1.0
    return int(min(2 * math.ceil(a * fs) + 1, in_size))


def _estimate_bytes(x, out_hw, taps_yx, path: str) -> int:
    """Output, the row-pass intermediate and the weight tables (dense matrices on the reference)."""
    b, c, h, w = (int(v) for v in x.shape)
    ho, wo = out_hw
    item = x.element_size()
    data = b * c * ho * wo * item + b * c * h * wo * max(item, 4)
    if path == "cuda":
        return data + b * (ho * taps_yx[0] + wo * taps_yx[1]) * 8
    return data + b * (ho * h + wo * w) * 8 * 2 + b * (ho * taps_yx[0] + wo * taps_yx[1]) * 8 * 4


def validate(op, x, size, box, a, antialias, box_host=None):
    """Checks all arguments of lanczos_resample.

    Args:
        op: op name for messages. x, size, box, a, antialias: as lanczos_resample.
        box_host: None, or a CPU tensor holding the same values as the tensor `box` (see
            lanczos_resample); the checks then read it instead of copying `box` to the host.

    Returns:
        ((H_out, W_out), host (B, 4) float64 boxes, a).
    Raises:
        TypeError, ValueError: as lanczos_resample.
    """
    _dispatch.check_tensor(op, "x", x, ndim=4)
    if min(x.shape) == 0:
        raise ValueError(f"{op}: x is empty, shape {tuple(x.shape)}")
    out_hw = _check_size(op, size)
    a = _dispatch.check_int(op, "a", a, allowed=range(1, MAX_A + 1))
    if not isinstance(antialias, bool):
        raise TypeError(f"{op}: antialias must be a bool, got {antialias!r}")
    if box_host is not None:
        if not isinstance(box, torch.Tensor):
            raise TypeError(f"{op}: box_host is the host copy of a tensor box; box is {type(box).__name__}")
        if not isinstance(box_host, torch.Tensor) or box_host.device.type != "cpu":
            raise TypeError(f"{op}: box_host must be a CPU tensor, got "
                            f"{box_host.device if isinstance(box_host, torch.Tensor) else type(box_host).__name__}")
        if tuple(box_host.shape) != tuple(box.shape):
            raise ValueError(f"{op}: box_host has shape {tuple(box_host.shape)} but box {tuple(box.shape)}")
        if box.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.equal(box_host.to(torch.float64), box.detach().to(torch.float64)):
            raise ValueError(f"{op}: box_host holds other values than box")
    boxes = boxes_tensor(op, box if box_host is None else box_host, x.shape[0], x.shape[2:])
    return out_hw, boxes, a


def _is_identity(boxes: torch.Tensor, in_hw, out_hw) -> bool:
    h, w = in_hw
    return tuple(out_hw) == (h, w) and bool((boxes == boxes.new_tensor([0.0, 0.0, w, h])).all())


def _device_boxes(box: BoxLike, host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The validated (B,4) float64 host boxes on `device`, without a pageable host-to-device copy per call:
    one box for the whole batch is written by fill kernels (its four values travel as kernel arguments),
    per-sample boxes already on the device are converted there (the same float64 values as the host
    copy: the conversion from float32/int is exact), and per-sample host boxes go through pinned memory
    (an asynchronous DMA copy)."""
    if device.type == "cpu":
        return host
    if isinstance(box, torch.Tensor) and box.ndim == 2 and box.shape[0] > 1:
        if box.device == device:
            return box.detach().to(torch.float64).contiguous()
        if device.type == "cuda":
            return host.pin_memory().to(device, non_blocking=True)
        return host.to(device)
    batch = host.shape[0]
    return torch.stack([torch.full((batch,), v, dtype=torch.float64, device=device) for v in host[0].tolist()], 1)


def lanczos_resample(x, size, box: BoxLike = None, a=3, antialias=True, return_mask=False, impl="auto",
                     box_host=None):
    """Separable Lanczos resampling of x over a box (PIL's LANCZOS for a=3); docs/ops.md §3.1.

    Args:
        x: (B, C, H, W) float16, bfloat16, float32 or float64 tensor (float64: reference path only).
        size: (H_out, W_out) or one int for both, >= 1.
        box: region of the input to resample, in input pixels (pixel k spans [k, k+1]): None (the
            whole input), 4 numbers (x0, y0, x1, y1) for the whole batch, or a float/int tensor of
            shape (4,) or (B, 4) (per-sample boxes, on any device). Each box must be finite, have
            x1 > x0 and y1 > y0, and overlap the input; it may reach outside it (taps outside are
            excluded and the weights renormalised). Pass numbers, not a tensor, under
            torch.compile(fullgraph=True).
        a: Lanczos order, int in 1..8 (PIL: 3).
        antialias: bool; True stretches the kernel by the shrink factor when downsampling.
        return_mask: bool; also return the validity mask.
        impl: "auto", "cuda" or "ref" (docs/ops.md §1).
        box_host: None, or a CPU tensor with the same shape and values as a tensor `box` that lives
            on the GPU. The checks and the table widths then read box_host, so the call makes no
            device-to-host copy (a synchronisation) of the boxes, and the kernels read `box` where it
            is (docs/ops.md §3.1). Values that differ from box's are not detected on the GPU.

    Returns:
        y: (B, C, H_out, W_out) in x's dtype (the identity, whole input at the same size, returns a
        copy of x bit for bit); with return_mask=True the tuple (y, mask), mask a bool tensor
        (B, 1, H_out, W_out) that is True where every tap with a nonzero weight lies inside the input.
        Differentiable in x (boxes are constants). A NaN/Inf input pixel makes exactly the outputs
        whose kernel window reaches it non-finite (the reference reports them as NaN).

    Raises:
        TypeError: x not a tensor or of an unsupported dtype; size/a not ints; antialias not a bool;
            box not numbers or a float/int tensor; box_host not a CPU tensor, or given with a box
            that is not a tensor.
        ValueError: x not 4-D or empty; size < 1 or not 2 values; a outside 1..8; a box of the wrong
            shape or batch, non-finite, empty, inverted or not overlapping the input; box_host of
            another shape than box (or, for a CPU box, other values).
        MemoryError: the estimated output, intermediates and weight tables exceed the available memory.
        OpUnsupported: impl="cuda" with tensors off the GPU or an unsupported dtype/size.
        ExtensionUnavailable: impl="cuda" and the extension is disabled or failed to build.
    """
    out_hw, boxes, a = validate(OP, x, size, box, a, antialias, box_host)
    h, w = x.shape[2:]
    if not isinstance(box, torch.Tensor):
        # Host numbers: decided in Python, so this also traces under torch.compile(fullgraph=True).
        x0, y0, x1, y1 = python_box(OP, box, (h, w))
        identity = tuple(out_hw) == (h, w) and (x0, y0, x1, y1) == (0.0, 0.0, float(w), float(h))
        taps_yx = (_max_taps_python(y0, y1, h, out_hw[0], a, antialias),
                   _max_taps_python(x0, x1, w, out_hw[1], a, antialias))
    elif torch.compiler.is_compiling():
        # Tensor boxes under torch.compile: no data-dependent host decisions; the input size bounds
        # the table width (max_taps never exceeds it), at some cost in speed.
        identity, taps_yx = False, (int(h), int(w))
    else:
        identity = _is_identity(boxes, (h, w), out_hw)
        taps_yx = (max_taps(boxes, 1, h, out_hw[0], a, antialias), max_taps(boxes, 0, w, out_hw[1], a, antialias))
    if identity:
        y = x.clone()
        mask = torch.ones((x.shape[0], 1) + tuple(out_hw), dtype=torch.bool, device=x.device)
        return (y, mask) if return_mask else y
    which = _dispatch.resolve_impl(OP, impl, (x,), lambda: _cuda_unsupported(x))
    _dispatch.check_memory(OP, _estimate_bytes(x, out_hw, taps_yx, which), x.device)
    boxes = _device_boxes(box, boxes, x.device)
    if which == "ref":
        rows, cols = _both_axes(boxes, (h, w), out_hw, a, antialias, taps_yx)
        y = _apply(x, axis_matrix(rows, h), axis_matrix(cols, w))
        return (y, _mask(rows.valid, cols.valid)) if return_mask else y
    y, valid_rows, valid_cols = _lanczos_op(x, boxes, out_hw[0], out_hw[1], a, antialias, *taps_yx)
    return (y, _mask(valid_rows, valid_cols)) if return_mask else y
