"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), as StyleGAN2-ADA / StyleGAN3 train with it (docs/training.md, "ADA").

`AugmentPipe` applies the published pipeline's geometric and colour transforms to a batch, each with
probability (multiplier * p); `PIPES["bgc"]` enables the ones of the published default preset `bgc`
(pixel blitting, general geometric, colour). The random numbers are drawn in the published order and
with the published shapes, so with the same torch RNG state (generator None: torch's global RNG on the
images' device) the result is the published pipeline's. `AdaController` adjusts p from the sign of
D's logits on reals, as the published training loop does.

One deliberate difference: at p = 0 the images are returned unchanged (all draws still taken), while
the published pipeline still resamples them through the wavelet filter and `grid_sample`, which is the
identity up to rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import ops

# Low-pass filter of Daubechies' symlet 6 (12 taps): the orthogonal wavelet filter the published
# pipeline upsamples and downsamples with around the warp (values of the standard wavelet tables).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")

# The published presets this package offers (StyleGAN3's train.py has only `bgc`).
PIPES = {"bgc": dict.fromkeys(GEOMETRIC + COLOUR, 1.0)}


@dataclass(frozen=True)
class AugmentPipe:
    """The augmentation pipeline: probability multipliers (0 = off) and strengths (published values).

    Multipliers: xflip, rotate90 (k * 90 degrees), xint (integer translation), scale (isotropic),
    rotate (arbitrary, before and after the anisotropic scaling), aniso, xfrac (fractional
    translation), brightness, contrast, lumaflip, hue, saturation. A transform applies to a sample
    with probability multiplier * p.
    Strengths: xint_max (fraction of the image size), scale_std / aniso_std / contrast_std /
    saturation_std (log2 standard deviations), rotate_max / hue_max (1 = full circle), xfrac_std
    (fraction of the image size), brightness_std.
    """
    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    xint_max: float = 0.125
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0

    @classmethod
    def preset(cls, name: str) -> "AugmentPipe":
        """The pipeline of a published preset name (only "bgc").

        Raises:
            ValueError: an unknown name.
        """
        if name not in PIPES:
            raise ValueError(f"augmentation pipeline {name!r}: only {', '.join(sorted(PIPES))} is available")
        return cls(**PIPES[name])

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __call__(self, images: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: (B, C, H, W) with C = 3 (RGB) or 1 (grey), in [-1, 1] (any float dtype; half
                precision is computed in float32).
            p: the overall probability multiplier (ADA's p), >= 0.
            generator: where the random numbers come from: None = torch's global RNG on the images'
                device (the published pipeline's source), else a generator (e.g. a CPU one of the
                Trainer's counter-based ones); the transform matrices are built on its device.

        Returns:
            (B, C, H, W) augmented images (float64 stays float64, everything else float32),
            differentiable w.r.t. `images` (R1 differentiates through it).

        Raises:
            ValueError: not a 4-D batch, or a channel count other than 1 or 3 with a colour transform.
        """
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe: expected (B, C, H, W) images, got shape {tuple(images.shape)}")
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        images = images.to(dtype)
        draw = _Draws(images.shape[0], dtype, images.device if generator is None else generator.device, generator)
        p_t = torch.tensor(float(p), dtype=dtype, device=draw.device)
        # In float32 even under --precision fp16/bf16 (autocast would run the filters in half precision).
        with torch.autocast(images.device.type, enabled=False):
            G_inv = self._geometric_matrix(draw, p_t, images.shape[3], images.shape[2])
            if G_inv is not None and p > 0:
                images = warp(images, G_inv)
            C = self._colour_matrix(draw, p_t, images.shape[1])
            if C is not None and p > 0:
                images = apply_colour_matrix(images, C.to(images.device))
        return images

    # -- the random parameters, in the published order ---------------------------------------------
    def _geometric_matrix(self, d: "_Draws", p: torch.Tensor, width: int, height: int) -> Optional[torch.Tensor]:
        """G_inv (B, 3, 3): output pixel -> input pixel (centred coordinates), or None when no
        geometric transform is enabled."""
        if not any(getattr(self, k) > 0 for k in GEOMETRIC):
            return None
        G = d.eye(3)
        if self.xflip > 0:
            i = torch.floor(d.rand([d.n]) * 2)
            i = torch.where(d.rand([d.n]) < self.xflip * p, i, torch.zeros_like(i))
            G = G @ d.scale2d(1 / (1 - 2 * i), 1.0)
        if self.rotate90 > 0:
            i = torch.floor(d.rand([d.n]) * 4)
            i = torch.where(d.rand([d.n]) < self.rotate90 * p, i, torch.zeros_like(i))
            G = G @ d.rotate2d(-(-np.pi / 2 * i))
        if self.xint > 0:
            t = (d.rand([d.n, 2]) * 2 - 1) * self.xint_max
            t = torch.where(d.rand([d.n, 1]) < self.xint * p, t, torch.zeros_like(t))
            G = G @ d.translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if self.scale > 0:
            s = torch.exp2(d.randn([d.n]) * self.scale_std)
            s = torch.where(d.rand([d.n]) < self.scale * p, s, torch.ones_like(s))
            G = G @ d.scale2d(1 / s, 1 / s)
        # Rotation before and after the anisotropic scaling, each with p_rot, so that
        # P(at least one) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
        if self.rotate > 0:
            theta = (d.rand([d.n]) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(d.rand([d.n]) < p_rot, theta, torch.zeros_like(theta))
            G = G @ d.rotate2d(-(-theta))
        if self.aniso > 0:
            s = torch.exp2(d.randn([d.n]) * self.aniso_std)
            s = torch.where(d.rand([d.n]) < self.aniso * p, s, torch.ones_like(s))
            G = G @ d.scale2d(1 / s, 1 / (1 / s))
        if self.rotate > 0:
            theta = (d.rand([d.n]) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(d.rand([d.n]) < p_rot, theta, torch.zeros_like(theta))
            G = G @ d.rotate2d(-(-theta))
        if self.xfrac > 0:
            t = d.randn([d.n, 2]) * self.xfrac_std
            t = torch.where(d.rand([d.n, 1]) < self.xfrac * p, t, torch.zeros_like(t))
            G = G @ d.translate2d(-(t[:, 0] * width), -(t[:, 1] * height))
        return G

    def _colour_matrix(self, d: "_Draws", p: torch.Tensor, channels: int) -> Optional[torch.Tensor]:
        """C (B, 4, 4): homogeneous colour in -> colour out, or None when no colour transform is enabled."""
        rgb = channels > 1
        if not (self.brightness > 0 or self.contrast > 0 or self.lumaflip > 0
                or (rgb and (self.hue > 0 or self.saturation > 0))):
            return None
        I4 = d.eye(4)
        C = I4
        if self.brightness > 0:
            b = d.randn([d.n]) * self.brightness_std
            b = torch.where(d.rand([d.n]) < self.brightness * p, b, torch.zeros_like(b))
            C = d.translate3d(b, b, b) @ C
        if self.contrast > 0:
            c = torch.exp2(d.randn([d.n]) * self.contrast_std)
            c = torch.where(d.rand([d.n]) < self.contrast * p, c, torch.ones_like(c))
            C = d.scale3d(c, c, c) @ C
        v = torch.as_tensor(np.asarray([1, 1, 1, 0]) / np.sqrt(3), dtype=d.dtype, device=d.device)  # luma axis
        vv = torch.outer(v, v)
        if self.lumaflip > 0:
            i = torch.floor(d.rand([d.n, 1, 1]) * 2)
            i = torch.where(d.rand([d.n, 1, 1]) < self.lumaflip * p, i, torch.zeros_like(i))
            C = (I4 - 2 * vv * i) @ C               # Householder reflection of the luma axis
        if self.hue > 0 and rgb:
            theta = (d.rand([d.n]) * 2 - 1) * np.pi * self.hue_max
            theta = torch.where(d.rand([d.n]) < self.hue * p, theta, torch.zeros_like(theta))
            C = d.rotate3d(v, theta) @ C            # rotation about the luma axis
        if self.saturation > 0 and rgb:
            s = torch.exp2(d.randn([d.n, 1, 1]) * self.saturation_std)
            s = torch.where(d.rand([d.n, 1, 1]) < self.saturation * p, s, torch.ones_like(s))
            C = (vv + (I4 - vv) * s) @ C
        return C


class _Draws:
    """Random numbers and matrix builders of one call: dtype, device and generator fixed."""

    def __init__(self, n: int, dtype: torch.dtype, device, generator: Optional[torch.Generator]):
        self.n, self.dtype, self.device, self.generator = n, dtype, torch.device(device), generator

    def rand(self, shape) -> torch.Tensor:
        return torch.rand(shape, dtype=self.dtype, device=self.device, generator=self.generator)

    def randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, dtype=self.dtype, device=self.device, generator=self.generator)

    def eye(self, k: int) -> torch.Tensor:
        return torch.eye(k, dtype=self.dtype, device=self.device)

    def matrix(self, *rows) -> torch.Tensor:
        """(B, R, K) from rows of per-sample (B,) tensors and numbers (numbers broadcast)."""
        elems = [torch.as_tensor(x, dtype=self.dtype, device=self.device).expand(self.n)
                 for row in rows for x in row]
        return torch.stack(elems, dim=-1).reshape(self.n, len(rows), -1)

    def translate2d(self, tx, ty) -> torch.Tensor:
        return self.matrix([1, 0, tx], [0, 1, ty], [0, 0, 1])

    def scale2d(self, sx, sy) -> torch.Tensor:
        return self.matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1])

    def rotate2d(self, theta) -> torch.Tensor:
        return self.matrix([torch.cos(theta), torch.sin(-theta), 0], [torch.sin(theta), torch.cos(theta), 0],
                           [0, 0, 1])

    def translate3d(self, tx, ty, tz) -> torch.Tensor:
        return self.matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1])

    def scale3d(self, sx, sy, sz) -> torch.Tensor:
        return self.matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1])

    def rotate3d(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Rotation by theta about the unit axis v[:3] (Rodrigues' formula as a matrix)."""
        vx, vy, vz = v[0], v[1], v[2]
        s, c = torch.sin(theta), torch.cos(theta)
        cc = 1 - c
        return self.matrix([vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                           [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                           [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                           [0, 0, 0, 1])


def _fixed(k: int, values, dtype, device) -> torch.Tensor:
    """A (3, 3) constant matrix of a scale (k=0: sx, sy) or translation (k=1: tx, ty)."""
    a, b = values
    m = [[a, 0, 0], [0, b, 0], [0, 0, 1]] if k == 0 else [[1, 0, a], [0, 1, b], [0, 0, 1]]
    return torch.tensor(m, dtype=dtype, device=device)


def geometric_filter(dtype: torch.dtype, device) -> torch.Tensor:
    """The separable sym6 low-pass filter, normalised to unit DC gain in `dtype` (the published
    normalisation, done in the computation's precision)."""
    f = torch.tensor(SYM6, dtype=dtype, device=device)
    return f / f.sum()


def warp(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """Resample images through G_inv as the published pipeline does: reflect-pad by the margin the
    transformed corners need (plus the filter's), upsample 2x with the sym6 wavelet filter, bilinear
    `grid_sample` at the transformed output pixels (zeros outside), downsample 2x with the same filter.

    Args:
        images: (B, C, H, W) float. G_inv: (B, 3, 3) output pixel -> input pixel, pixel coordinates
            centred on the image, images' dtype, on any device (a CPU one costs no device sync).

    Returns:
        (B, C, H, W).
    """
    b, ch, height, width = images.shape
    dtype, device = images.dtype, G_inv.device        # the matrices stay where they were drawn
    Hz = geometric_filter(dtype, images.device)
    Hz_pad = Hz.shape[0] // 4                      # 3 pixels: the filter's reach at the lower resolution

    # Padding: the transformed corners' extent, plus the filter's reach, at most one reflection.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=dtype, device=device)
    cp = G_inv @ corners.t()                                   # (B, 3, 4)
    reach = cp[:, :2, :].permute(1, 0, 2).flatten(1)           # (2, B*4): x, y
    margin = torch.cat([-reach, reach]).max(dim=1).values       # x0, y0, x1, y1
    margin = margin + torch.tensor([Hz_pad * 2 - cx, Hz_pad * 2 - cy] * 2, dtype=dtype, device=device)
    margin = margin.max(torch.zeros(4, dtype=dtype, device=device))
    margin = margin.min(torch.tensor([width - 1, height - 1] * 2, dtype=dtype, device=device))
    mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().to(torch.int32).tolist())

    images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    G_inv = _fixed(1, ((mx0 - mx1) / 2, (my0 - my1) / 2), dtype, device) @ G_inv

    # Upsample 2x (upfirdn2d with StyleGAN's upsample2d padding and gain up^2).
    fw = Hz.shape[0]
    images = ops.upfirdn2d(images, Hz, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2] * 2, gain=4)
    G_inv = _fixed(0, (2, 2), dtype, device) @ G_inv @ _fixed(0, (1 / 2, 1 / 2), dtype, device)
    G_inv = _fixed(1, (-0.5, -0.5), dtype, device) @ G_inv @ _fixed(1, (0.5, 0.5), dtype, device)

    # Warp to the output grid (the image plus the filter's reach on each side, at 2x), in
    # grid_sample's normalised [-1, 1] coordinates.
    shape = [b, ch, (height + Hz_pad * 2) * 2, (width + Hz_pad * 2) * 2]
    G_inv = (_fixed(0, (2 / images.shape[3], 2 / images.shape[2]), dtype, device) @ G_inv
             @ _fixed(0, (1 / (2 / shape[3]), 1 / (2 / shape[2])), dtype, device))
    grid = F.affine_grid(G_inv[:, :2, :].to(images.device), size=shape, align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Downsample 2x (StyleGAN's downsample2d padding) and crop the reach away.
    pad = [-Hz_pad * 2 + (fw - 2 + 1) // 2, -Hz_pad * 2 + (fw - 2) // 2] * 2
    return ops.upfirdn2d(images, Hz, down=2, padding=pad, flip_filter=True)


def apply_colour_matrix(images: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Apply per-sample homogeneous colour matrices: RGB -> C[:3, :3] @ rgb + C[:3, 3]; a grey image
    takes the mean of the three rows (as the published pipeline).

    Args:
        images: (B, C, H, W) with C in (1, 3). C: (B, 4, 4), same dtype and device.

    Returns:
        (B, C, H, W).

    Raises:
        ValueError: another channel count.
    """
    b, ch, h, w = images.shape
    x = images.reshape(b, ch, h * w)
    if ch == 3:
        x = C[:, :3, :3] @ x + C[:, :3, 3:]
    elif ch == 1:
        C = C[:, :3, :].mean(dim=1, keepdim=True)
        x = x * C[:, :, :3].sum(dim=2, keepdim=True) + C[:, :, 3:]
    else:
        raise ValueError(f"AugmentPipe: colour transforms need RGB (3 channels) or grey (1), got {ch} channels")
    return x.reshape(b, ch, h, w)


class AdaController:
    """ADA's p: fixed, or adjusted every `interval` steps from r_t = mean(sign(D(real))) over the reals
    D scored since the last adjustment (main and R1 passes, all ranks): p += sign(r_t - target) *
    batch * interval / (kimg * 1000), clamped at 0 (the published heuristic; it has no upper clamp).
    p is kept in float32 as the published buffer (arithmetic float32(p) + float32(adjust)).

    Args:
        target: r_t target (0.6 published), or None for a fixed p.
        p: initial p. interval: steps between adjustments (4). kimg: thousands of images over which
            p can move by 1 (500).
        dtype: "float32" (the published buffer in a float32 run) or "float64".

    Raises:
        ValueError: a target outside [0, 1], a negative or non-finite p, interval < 1 or kimg <= 0.
    """

    def __init__(self, target: Optional[float] = 0.6, p: float = 0.0, interval: int = 4, kimg: float = 500,
                 dtype: str = "float32"):
        if target is not None and not 0 <= target <= 1:
            raise ValueError(f"ADA target {target}: expected a number in [0, 1]")
        if not (math.isfinite(p) and p >= 0):
            raise ValueError(f"ADA p {p}: expected a finite number >= 0")
        if int(interval) < 1 or not kimg > 0:
            raise ValueError(f"ADA interval {interval} / kimg {kimg}: expected >= 1 / > 0")
        self.target, self.interval, self.kimg = target, int(interval), float(kimg)
        self._np = np.float32 if dtype == "float32" else np.float64
        self.p = float(self._np(p))
        self._pending = []      # this step's [sum of signs, count] tensors (on the device)
        self._acc = None        # [sum, count] since the last adjustment, over all ranks (device tensor)
        self._carry = (0.0, 0.0)  # the same, restored from a checkpoint

    @property
    def adaptive(self) -> bool:
        """True when p follows D (a target is set)."""
        return self.target is not None

    def observe(self, real_logits: torch.Tensor) -> None:
        """Record the signs of D's logits on reals (every pass that scores reals: main and R1)."""
        if self.adaptive:
            s = real_logits.detach().flatten().to(torch.float64).sign()
            self._pending.append(torch.stack([s.sum(), torch.full((), float(s.numel()), dtype=torch.float64,
                                                                  device=s.device)]))

    def end_step(self, ctx, step: int) -> None:
        """After step `step` (0-based): add this step's signs (summed over ranks, one all_reduce) and
        after every `interval`-th step adjust p from their mean (one read-back from the device).

        Args:
            ctx: the run's Context (batch, world, device). step: the step just done.
        """
        if not self.adaptive:
            return
        t = torch.stack(self._pending).sum(dim=0) if self._pending else \
            torch.zeros(2, dtype=torch.float64, device=ctx.device)
        self._pending = []
        if ctx.world > 1:
            torch.distributed.all_reduce(t)
        self._acc = t if self._acc is None else self._acc + t
        if (step + 1) % self.interval == 0:
            s, n = self._totals()
            self._acc, self._carry = None, (0.0, 0.0)
            if n > 0:
                self.adjust(s / n, ctx.batch)

    def _totals(self) -> tuple:
        s, n = self._carry
        if self._acc is not None:
            a, b = self._acc.tolist()
            s, n = s + a, n + b
        return s, n

    def adjust(self, rt: float, batch: int) -> float:
        """One adjustment from r_t with the global batch size; returns the new p."""
        step = float(np.sign(rt - self.target)) * (batch * self.interval) / (self.kimg * 1000)
        self.p = float(max(self._np(self.p) + self._np(step), self._np(0)))
        return self.p

    def state_dict(self) -> dict:
        """p and the sign sum and count since the last adjustment, as plain floats."""
        s, n = self._totals()
        return {"p": self.p, "sum": s, "count": n}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self._carry = (float(state["sum"]), float(state["count"]))
        self._acc, self._pending = None, []
