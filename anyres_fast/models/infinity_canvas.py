"""The unbounded canvas of InfinityGenerator: seeded inputs defined everywhere, patch plans, style fusion.

docs/infinitygan.md describes the frame. In short: z_S sample s of the canvas (an integer, any sign)
drives canvas pixels 2^D s + [0, P). The local latent z_l, every G_T noise map and the coordinates are
functions of the absolute canvas index and the seed (a counter-based hash, no stored state), so a
patch's inputs are its slice of the canvas-wide inputs and any window of the canvas can be generated
without generating or storing anything else.

A cyclic canvas (docs/infinitygan.md, "Cyclic canvas") puts the columns on a ring of L latent columns:
every column index is taken modulo the ring (L for z_l and the coordinates, step_k * L for the noise of
G_T conv k) before it is hashed, so the image repeats every 2^D L pixels exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B          # < 2^31, so (x < 2^32) * _MUL never overflows int64
STREAM_ZL = 0             # stream ids: z_l, then 1 + i for the noise of G_T conv i


# ----------------------------------------------------------------------------------------------------
# Counter-based N(0, 1) values

def _mix(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit avalanche hash on int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * _MUL) & M32
    x = x ^ (x >> 16)
    x = (x * _MUL) & M32
    return x ^ (x >> 16)


def _mix_int(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * _MUL) & M32
    x ^= x >> 16
    x = (x * _MUL) & M32
    return x ^ (x >> 16)


def stream_key(seed: int, stream: int) -> int:
    """32-bit key of one input map (z_l or one noise layer) of the canvas of `seed` (0 <= seed < 2^63)."""
    return _mix_int(_mix_int(_mix_int(seed & M32) ^ (seed >> 32)) ^ _mix_int(stream + 0x9E37))


def canvas_normal(seed: int, stream: int, channels: int, rows: torch.Tensor, cols: torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) values of canvas map `stream` at the given absolute rows x cols (Box-Muller of two hashes).

    Args:
        seed: canvas seed; stream: map id; channels: C.
        rows: (B, H) int64 canvas row indices (any sign); cols: (B, W) int64; same device.
    Returns:
        (B, C, H, W) tensor of `dtype` on that device; equal values for equal (seed, stream, c, row, col)
        whatever slice is asked for.
    """
    key = stream_key(seed, stream)
    c = torch.arange(channels, dtype=torch.int64, device=rows.device)
    hc = _mix(c ^ key)[None, :, None, None]                                   # (1, C, 1, 1)
    hy = _mix(hc ^ (rows & M32)[:, None, :, None])                            # (B, C, H, 1)
    h = _mix(hy ^ (cols & M32)[:, None, None, :])                             # (B, C, H, W)
    u1 = ((_mix(h ^ 0x68E31DA4) >> 8).to(torch.float32) + 0.5) * (2.0 ** -24)  # (0, 1)
    u2 = (_mix(h ^ 0x1B56C4E9) >> 8).to(torch.float32) * (2.0 ** -24)          # [0, 1)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2 * math.pi) * u2)
    return z.to(dtype)


# ----------------------------------------------------------------------------------------------------
# The ring of a cyclic canvas

def wrap(index: torch.Tensor, period: Optional[int]) -> torch.Tensor:
    """Column indices on a ring of `period` samples (index mod period, in [0, period)); unchanged for None."""
    return index if period is None else torch.remainder(index, period)


def ring_columns(width, scale: int, patch: int, what: str = "cyclic_width") -> int:
    """Latent columns L of a cyclic canvas `width` pixels wide (width = scale * L).

    Args:
        width: ring width in pixels. scale: 2^depth, pixels per latent column. patch: patch size in pixels.
        what: how the caller names the width in the error.
    Returns:
        L = width // scale.
    Raises:
        ValueError: width not an int, not a multiple of scale (the ring must hold whole latent columns,
            or the noise and latents could not repeat with the image), or below one patch.
    """
    if isinstance(width, bool) or not isinstance(width, int):
        raise ValueError(f"{what} must be an int (pixels), got {width!r}")
    if width < patch:
        raise ValueError(f"{what} {width}: a cyclic canvas must be at least one {patch}-pixel patch wide")
    if width % scale:
        lo = width // scale * scale
        near = f"{lo} or {lo + scale}" if lo >= patch else f"{lo + scale}"
        raise ValueError(f"{what} {width}: a cyclic canvas must be a multiple of {scale} pixels (2^depth, one "
                         f"latent column of this model), e.g. {near}")
    return width // scale


# ----------------------------------------------------------------------------------------------------
# Patch plan

@dataclass(frozen=True)
class Plan:
    """Patches covering the window [top, top + height) x [left, left + width) of the canvas."""
    top: int
    left: int
    height: int
    width: int
    zs: int                     # z_S size of every patch (ts_input)
    patch: int                  # pixels per patch side
    scale: int                  # 2^depth: pixels per latent
    rows: tuple                 # z_S start rows of the patch rows
    cols: tuple

    @property
    def patches(self) -> List[tuple]:
        return [(r, c) for r in self.rows for c in self.cols]


def plan_window(top: int, left: int, height: int, width: int, *, zs: int, patch: int, scale: int) -> Plan:
    """Patches of z_S size `zs` at a stride of zs - 5 latents (patch - 5 pixels: the 5-pixel overlap of
    the published tiling) whose union covers the window."""
    stride = zs - 5

    def axis(start, length):
        s = start // scale
        out = [s]
        while scale * out[-1] + patch < start + length:
            out.append(out[-1] + stride)
        return tuple(out)

    return Plan(top, left, height, width, zs, patch, scale, axis(top, height), axis(left, width))


# ----------------------------------------------------------------------------------------------------
# Spatial style fusion

def check_centres(centres, k: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """(K, 2) float64 (x, y) canvas pixels, each inside the window; raises ValueError otherwise."""
    try:
        c = torch.as_tensor(centres, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"InfinityGenerator.generate: style_centres must be a (K, 2) array of (x, y) pixels, "
                         f"got {centres!r}") from None
    if c.ndim != 2 or c.shape != (k, 2):
        raise ValueError(f"InfinityGenerator.generate: style_centres must have shape (K, 2) = ({k}, 2) "
                         f"(one (x, y) per z_g row), got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError("InfinityGenerator.generate: style_centres must be finite")
    for i, (x, y) in enumerate(c.tolist()):
        if not (left <= x < left + width and top <= y < top + height):
            raise ValueError(f"InfinityGenerator.generate: style centre {i} at (x={x:g}, y={y:g}) is outside the "
                             f"canvas window x in [{left}, {left + width}), y in [{top}, {top + height})")
    return c


def fusion_weights(centres: torch.Tensor, kernel: int, grids: Sequence[tuple], device) -> List[torch.Tensor]:
    """Mean-filtered nearest-centre weights of one patch, sampled on several layer grids.

    The pixel-space map assigns every canvas pixel to its nearest centre (squared distance, ties to the
    lower index), one-hot over K, and averages it over a kernel x kernel window: defined on the whole
    unbounded canvas, so no padding is involved. Every layer grid point sits on a canvas pixel, where
    the map is read.

    Args:
        centres: (K, 2) float64 (x, y) pixels. kernel: odd window size.
        grids: per layer (ys, xs): int64 (H,), (W,) canvas pixel positions of its samples.
    Returns:
        per grid a (K, H, W) float32 map on `device`, summing to 1 at every sample.
    """
    half = kernel // 2
    y_lo = min(int(g[0].min()) for g in grids) - half
    y_hi = max(int(g[0].max()) for g in grids) + half
    x_lo = min(int(g[1].min()) for g in grids) - half
    x_hi = max(int(g[1].max()) for g in grids) + half
    yy = torch.arange(y_lo, y_hi + 1, dtype=torch.float64, device=device)
    xx = torch.arange(x_lo, x_hi + 1, dtype=torch.float64, device=device)
    c = centres.to(device)
    d = (yy[None, :, None] - c[:, 1, None, None]).square() + (xx[None, None, :] - c[:, 0, None, None]).square()
    nearest = d.argmin(dim=0)                                                # (Hr, Wr)
    one_hot = torch.nn.functional.one_hot(nearest, c.shape[0]).permute(2, 0, 1).to(torch.float64)
    integral = torch.nn.functional.pad(one_hot.cumsum(1).cumsum(2), (1, 0, 1, 0))   # exact integer counts
    out = []
    for ys, xs in grids:
        r0, r1 = (ys.to(device) - half - y_lo), (ys.to(device) + half + 1 - y_lo)
        c0, c1 = (xs.to(device) - half - x_lo), (xs.to(device) + half + 1 - x_lo)
        s = (integral[:, r1][:, :, c1] - integral[:, r0][:, :, c1]
             - integral[:, r1][:, :, c0] + integral[:, r0][:, :, c0])
        out.append((s / (kernel * kernel)).to(torch.float32))
    return out
