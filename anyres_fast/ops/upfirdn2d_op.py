"""upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample (StyleGAN2/3 semantics, docs/ops.md §6).

Reference only (pure PyTorch, differentiable to any order). For every spatial axis:
  1. insert up-1 zeros after each sample (length W*up),
  2. pad with p0 zeros before and p1 after (negative values crop),
  3. convolve "valid" with the filter (correlate instead when flip_filter=True),
  4. keep every down-th sample starting at 0.
Output width = (W*up + p0 + p1 - fw) // down + 1.

Filters: None (identity), 1-D [taps] (separable: applied along x then y, i.e. the outer product f⊗f),
or 2-D [fh, fw]. `gain` scales the result: a 2-D filter is multiplied by gain, a 1-D one by sqrt(gain)
per pass, so the total is `gain` either way.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import _dispatch

OP = "upfirdn2d"
Padding = Union[int, Sequence[int]]


def parse_padding(op: str, padding: Padding) -> tuple[int, int, int, int]:
    """Normalises a padding argument.

    Args:
        op: op name for messages.
        padding: int p, (px, py), (px0, px1, py0, py1), or a tensor holding one of those.
    Returns:
        (px0, px1, py0, py1) ints: p -> (p, p, p, p); (px, py) -> (px, px, py, py).
    Raises:
        TypeError: non-int values. ValueError: not 1, 2 or 4 values.
    """
    if isinstance(padding, torch.Tensor):
        padding = padding.tolist()
    if isinstance(padding, (int,)) and not isinstance(padding, bool):
        return (padding,) * 4
    try:
        values = [_dispatch.check_int(op, "padding", p) for p in padding]
    except TypeError:
        raise TypeError(f"{op}: padding must be an int or a sequence of 2 or 4 ints, got {padding!r}") from None
    if len(values) == 2:
        px, py = values
        return px, px, py, py
    if len(values) == 4:
        return tuple(values)
    raise ValueError(f"{op}: padding must be an int or a sequence of 2 or 4 ints, got {padding!r}")


def filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(fw, fh) of a filter in the None / 1-D separable / 2-D convention."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def check_filter(op: str, name: str, f) -> None:
    _dispatch.check_tensor(op, name, f, ndim=(1, 2), dtypes=_dispatch.REF_DTYPES, allow_none=True)
    if f is not None:
        if f.numel() == 0:
            raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(f.shape)}")


def setup_filter(f, device=torch.device("cpu"), normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1.0, separable: Optional[bool] = None) -> Optional[torch.Tensor]:
    """Turns filter taps into the float32 filter tensor that upfirdn2d and filtered_lrelu take.

    Args:
        f: taps: None (a single 1), a number, or a 1-D or 2-D list, array or tensor.
        device: where the result lives (default CPU).
        normalize: bool; divide by the sum (unit DC gain).
        flip_filter: bool; flip the taps in every axis.
        gain: float, distributed as upfirdn2d does (gain for 2-D, sqrt(gain) for 1-D filters).
        separable: None keeps 1-D filters of 8 or more taps separable and expands shorter ones to
            their 2-D outer product (cheaper for tiny filters, as StyleGAN does); True keeps 1-D
            filters 1-D, False always expands them.

    Returns:
        float32 tensor, (taps,) or (fh, fw), on device.

    Raises:
        ValueError: taps that are empty or have more than 2 dimensions; a non-finite gain, or a
            negative one for a separable filter.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: taps must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    gain = float(gain)
    if not math.isfinite(gain) or (f.ndim == 1 and gain < 0):
        raise ValueError(f"setup_filter: gain must be finite (and >= 0 for a separable filter, which is "
                         f"applied twice), got {gain}")
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _zero_insert(x: torch.Tensor, upx: int, upy: int) -> torch.Tensor:
    if upx == 1 and upy == 1:
        return x
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    return x.reshape(n, c, h * upy, w * upx)


def _pad_crop(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> torch.Tensor:
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-py0, 0): h - max(-py1, 0), max(-px0, 0): w - max(-px1, 0)]


def _fir(x: torch.Tensor, f: torch.Tensor, flip_filter: bool, gain: float) -> torch.Tensor:
    """'valid' depthwise FIR; conv2d correlates, so flipping the taps makes it a convolution."""
    c = x.shape[1]
    # sqrt(|gain|) per pass of a separable filter, the sign once (gain ** 0.5 would be complex for gain < 0)
    f = f.to(x.dtype) * (abs(gain) ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    sign = -1.0 if gain < 0 else 1.0
    if f.ndim == 2:
        return F.conv2d(x, (f * sign)[None, None].repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, (f * sign)[None, None, None, :].repeat(c, 1, 1, 1), groups=c)  # along x
    return F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)  # along y


def upfirdn2d_ref(x: torch.Tensor, f: Optional[torch.Tensor], up=1, down=1, padding: Padding = 0,
                  flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Pure-PyTorch upfirdn2d (the definition; no argument checks: use upfirdn2d for those).

    Args:
        x: (N, C, H, W) float tensor.
        f: None, 1-D or 2-D filter (cast to x's dtype).
        up, down: int or (x, y) ints >= 1.
        padding: int, (px, py) or (px0, px1, py0, py1).
        flip_filter: bool; gain: float.
    Returns:
        (N, C, H_out, W_out) in x's dtype (sizes as upfirdn2d).
    Raises:
        TypeError, ValueError: malformed padding.
    """
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    px0, px1, py0, py1 = parse_padding(OP, padding)
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    x = _zero_insert(x, upx, upy)
    x = _pad_crop(x, px0, px1, py0, py1)
    x = _fir(x, f, flip_filter, gain)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor] = None, up=1, down=1, padding: Padding = 0,
              flip_filter: bool = False, gain: float = 1.0, impl: str = "auto") -> torch.Tensor:
    """Upsample (zero insertion), pad/crop, FIR filter, downsample: StyleGAN2's upfirdn2d (docs/ops.md §6).

    Only the reference exists: impl "auto" and "ref" run it, "cuda" raises OpUnsupported.

    Args:
        x: (N, C, H, W) float16, bfloat16, float32 or float64 tensor.
        f: None (identity), 1-D (taps,) separable or 2-D (fh, fw) float filter on x's device.
        up: int >= 1 or (up_x, up_y).
        down: int >= 1 or (down_x, down_y).
        padding: int, (px, py) or (px0, px1, py0, py1) in upsampled pixels; negative values crop.
        flip_filter: bool; True correlates instead of convolving.
        gain: finite float; the total gain (a 2-D filter is scaled by gain, a 1-D one by sqrt(gain)
            per pass).
        impl: "auto", "ref" or "cuda" (raises).

    Returns:
        (N, C, H_out, W_out) in x's dtype, W_out = (W·up_x + px0 + px1 − fw) // down_x + 1 (H_out
        alike). Differentiable to any order in x and f.

    Raises:
        TypeError: non-tensor or unsupported dtype; up/down/padding not ints; gain not a number.
        ValueError: wrong dimensions, empty filter, up/down < 1 or not 1/2 values, non-finite gain,
            a filter larger than the padded, upsampled input, tensors on different devices, impl
            not one of "auto", "cuda", "ref".
        MemoryError: the estimated buffers exceed the available memory.
        OpUnsupported: impl="cuda".
    """
    _dispatch.check_tensor(OP, "x", x, ndim=4)
    check_filter(OP, "f", f)
    _dispatch.check_same_device(OP, x=x, f=f)
    for name, v in (("up", up), ("down", down)):
        vals = (v, v) if not isinstance(v, (tuple, list)) else tuple(v)
        if len(vals) != 2:
            raise ValueError(f"{OP}: {name} must be an int or (x, y), got {v!r}")
        for item in vals:
            _dispatch.check_int(OP, name, item, minimum=1)
    up = tuple(int(u) for u in ((up, up) if not isinstance(up, (tuple, list)) else up))
    down = tuple(int(d) for d in ((down, down) if not isinstance(down, (tuple, list)) else down))
    pads = parse_padding(OP, padding)
    gain = _dispatch.check_finite(OP, "gain", gain)
    fw, fh = filter_size(f)
    out_w = x.shape[3] * up[0] + pads[0] + pads[1] - fw
    out_h = x.shape[2] * up[1] + pads[2] + pads[3] - fh
    if out_w < 0 or out_h < 0:
        raise ValueError(f"{OP}: filter {fh}x{fw} is larger than the padded, upsampled input "
                         f"({x.shape[2] * up[1] + pads[2] + pads[3]}x{x.shape[3] * up[0] + pads[0] + pads[1]})")
    # zero-inserted + padded input, filtered result (and the first separable pass), output
    padded = x.shape[0] * x.shape[1] * max(out_h + fh, 1) * max(out_w + fw, 1)
    _dispatch.check_memory(OP, 3 * padded * max(x.element_size(), 4), x.device)
    if impl == "cuda":
        raise _dispatch.OpUnsupported(f"{OP}: there is no CUDA kernel for this op (reference only, "
                                      f"docs/ops.md §6); use impl='auto' or 'ref'")
    _dispatch.resolve_impl(OP, "ref" if impl == "auto" else impl, [x])
    return upfirdn2d_ref(x, f, up=up, down=down, padding=pads, flip_filter=flip_filter, gain=gain)
