"""StyleGAN3's equivariance metrics EQ-T (integer), EQ-T_frac and EQ-R for the any-resolution generator.

Karras et al. 2021 ("Alias-Free Generative Adversarial Networks", appendix E): the generator's input
grid is moved by a transform M, and the output must move with it. Per batch (one draw shared by the
batch, as published):

- eqt-int:  t ~ U[-t_max, t_max]^2 rounded to whole pixels; M = translation by -t; reference = the
            untransformed image shifted by t pixels (zero fill), mask = the pixels that have a source.
- eqt-frac: t ~ U[-t_max, t_max]^2 (fractions of a pixel allowed); reference = the image shifted by a
            separable Lanczos-3 interpolation (6 taps per axis, windowed sinc normalised to sum 1),
            mask = the pixels whose taps all lie inside the image.
- eqr:      angle ~ U[-r_max pi, r_max pi]; M = rotation by -angle; reference = the image rotated with
            an oriented band-limiting filter (upsample x4 with it, then bilinear resampling), compared
            with the transformed output after the "pseudo-rotation" filter (the same band limit without
            moving pixels); mask = both masks.

PSNR = 20 log10(2) - 10 log10(MSE) with MSE = sum of masked squared differences / sum of the mask,
both summed in float64 over all samples, channels and pixels (images span [-1, 1], so the peak-to-peak
is 2). Published defaults: t_max = 0.125 (1/8 of the image), r_max = 1, 50,000 samples, batch 4.

Our generator takes the transform per call (`G.synthesize(ws, transform=M, scale=1)`: its Fourier
input applies R(w) T(w) M, the published order), rendered in its fixed-resolution form (canvas = p,
the identity patch transform). Latents, translations and angles come from one torch.Generator seeded
with `seed`, drawn in the published order (z, then t / t / angle for the metrics asked for), so a run
of the published code after torch.manual_seed(seed) on the CPU sees the same draws.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

KINDS = ("eqt-int", "eqt-frac", "eqr")
LANCZOS_A = 3


# ----------------------------------------------------------------------------------------------------
# Filters

def sinc(x: torch.Tensor) -> torch.Tensor:
    """Normalised sinc, sin(pi x) / (pi x), 1 at 0."""
    y = (x * math.pi).abs()
    return torch.where(y < 1e-30, torch.ones_like(x), torch.sin(y) / y.clamp(min=1e-30))


def lanczos_window(x: torch.Tensor, a: float) -> torch.Tensor:
    """Lanczos window sinc(x / a) on |x| < a, 0 outside."""
    u = x.abs() / a
    return torch.where(u < 1, sinc(u), torch.zeros_like(u))


def rotation_matrix(angle) -> torch.Tensor:
    """3 x 3 float32 matrix [[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]] (StyleGAN3's convention)."""
    angle = torch.as_tensor(angle, dtype=torch.float32)
    m = torch.eye(3, device=angle.device)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    return m


def oriented_bandlimit_filter(mat: torch.Tensor, a: int = LANCZOS_A, amax: int = 16, aflt: int = 64, up: int = 4,
                              cutoff_in: float = 1.0, cutoff_out: float = 1.0) -> torch.Tensor:
    """2-D FIR filter that limits a signal to the band of the input grid and of its image under `mat`.

    The ideal response is the convolution of an axis-aligned separable sinc (cutoff_in) with the same
    sinc rotated by mat's 2 x 2 part (cutoff_out); it is windowed by the convolution of the two matching
    Lanczos windows (a lobes). Both convolutions are circular, evaluated with FFTs on a grid of
    spacing 1/up and half-extent aflt, then the taps within +-amax are kept and every one of the
    up x up polyphase components is normalised to sum 1/up^2.

    Args:
        mat: (3, 3) or (2, 2) transform.
        a: Lanczos lobes. amax: half-extent of the kept taps (input pixels). aflt: half-extent of the
            FFT grid. up: taps per input pixel. cutoff_in, cutoff_out: the two band limits.

    Returns:
        float32 (2 amax up - 1, 2 amax up - 1) filter, centre tap in the middle.
    """
    if not a <= amax < aflt:
        raise ValueError(f"oriented_bandlimit_filter: need a <= amax < aflt, got {a}, {amax}, {aflt}")
    m = torch.as_tensor(mat, dtype=torch.float32)[:2, :2]
    n = aflt * up * 2 - 1
    # Positions -aflt + 1/up ... aflt - 1/up, rolled so that position 0 sits at index 0 (circular FFTs).
    pos = ((torch.arange(n, device=m.device) + 1) / up - aflt).roll(1 - aflt * up)
    yi, xi = torch.meshgrid(pos, pos, indexing="ij")
    xo = xi * m[0, 0] + yi * m[0, 1]
    yo = xi * m[1, 0] + yi * m[1, 1]

    def circular_conv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifftn(torch.fft.fftn(p) * torch.fft.fftn(q)).real

    ideal = circular_conv(sinc(xi * cutoff_in) * sinc(yi * cutoff_in), sinc(xo * cutoff_out) * sinc(yo * cutoff_out))
    window = circular_conv(lanczos_window(xi, a) * lanczos_window(yi, a), lanczos_window(xo, a) * lanczos_window(yo, a))
    f = ideal * window
    # Back to a centred layout, keep +-amax, normalise each polyphase component.
    crop = (aflt - amax) * up
    f = f.roll([aflt * up - 1] * 2, dims=[0, 1])[crop:-crop, crop:-crop]
    f = F.pad(f, [0, 1, 0, 1]).reshape(amax * 2, up, amax * 2, up)
    f = f / f.sum(dim=(0, 2), keepdim=True) / (up ** 2)
    return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1]


def _depthwise(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return f.to(x.dtype).expand(x.shape[1], 1, *f.shape)


# ----------------------------------------------------------------------------------------------------
# Image transforms (images (N, C, H, W); translations t in units of the image size)

def integer_translation(x: torch.Tensor, tx, ty) -> tuple:
    """Shift by round(t W), round(t H) whole pixels, zero fill.

    Returns:
        (shifted image, mask): mask is 1 where the pixel has a source.
    """
    _, _, h, w = x.shape
    ix = int(torch.as_tensor(tx * w, dtype=torch.float32).round())
    iy = int(torch.as_tensor(ty * h, dtype=torch.float32).round())
    z, m = torch.zeros_like(x), torch.zeros_like(x)
    if abs(ix) < w and abs(iy) < h:
        dst = (slice(None), slice(None), slice(max(iy, 0), h + min(iy, 0)), slice(max(ix, 0), w + min(ix, 0)))
        src = (slice(None), slice(None), slice(max(-iy, 0), h + min(-iy, 0)), slice(max(-ix, 0), w + min(-ix, 0)))
        z[dst] = x[src]
        m[dst] = 1
    return z, m


def lanczos_taps(frac: torch.Tensor, a: int = LANCZOS_A) -> torch.Tensor:
    """Weights of taps j = -(a-1) ... a for a shift by frac in [0, 1): L(j - frac), normalised to sum 1."""
    j = torch.arange(2 * a, dtype=torch.float32, device=frac.device) - (a - 1)
    taps = sinc(j - frac) * sinc((j - frac) / a)
    return taps / taps.sum()


def fractional_translation(x: torch.Tensor, tx, ty, a: int = LANCZOS_A) -> tuple:
    """Shift by (t W, t H) pixels with separable Lanczos-a interpolation.

    z[n] = sum_j L(j - f) x[n - i - j] along each axis (t = i + f, i integer, f in [0, 1), zero
    outside the image).

    Returns:
        (shifted image, mask): mask is 1 where every tap reads inside the image.
    """
    _, _, h, w = x.shape
    sx = torch.as_tensor(tx * w, dtype=torch.float32)
    sy = torch.as_tensor(ty * h, dtype=torch.float32)
    ix, iy = int(sx.floor()), int(sy.floor())
    fx, fy = sx - ix, sy - iy
    b = a - 1
    wx, wy = lanczos_taps(fx.to(x.device), a), lanczos_taps(fy.to(x.device), a)
    # Correlation with the reversed taps: out[n] = sum_j L(j - f) xpad[n - j]; pad a before, b after.
    y = F.conv2d(F.pad(x, [a, b, 0, 0]), _depthwise(x, wx.flip(0).view(1, -1)), groups=x.shape[1])
    y = F.conv2d(F.pad(y, [0, 0, a, b]), _depthwise(x, wy.flip(0).view(-1, 1)), groups=x.shape[1])
    # y[n] holds the value for output n + i: shift by the integer part, zero fill.
    z = torch.zeros_like(x)
    if abs(ix) < w and abs(iy) < h:
        z[:, :, max(iy, 0):h + min(iy, 0), max(ix, 0):w + min(ix, 0)] = \
            y[:, :, max(-iy, 0):h + min(-iy, 0), max(-ix, 0):w + min(-ix, 0)]
    m = torch.zeros_like(x)
    mx0, mx1, my0, my1 = max(ix + a, 0), min(ix - b, 0) + w, max(iy + a, 0), min(iy - b, 0) + h
    if mx0 < mx1 and my0 < my1:
        m[:, :, my0:my1, mx0:mx1] = 1
    return z, m


def _upsample(x: torch.Tensor, f: torch.Tensor, up: int) -> torch.Tensor:
    """Zero-insertion upsampling by `up` convolved with f (gain up^2), with a margin of p = len(f) // 2
    samples on each side: (N, C, H up + 2 p, W up + 2 p), laid out as StyleGAN's upfirdn2d upsample2d
    lays it out (its half-sample offset is corrected by affine_transformation's grid)."""
    k, p = f.shape[0], f.shape[0] // 2
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    y = F.conv_transpose2d(x, _depthwise(x, f * up ** 2), stride=up, groups=c)   # y[m] = sum_i x[i] f[m - up i]
    left = p + (k + up - 1) // 2 - (k - 1)
    right_x = w * up + 2 * p - left - y.shape[3]
    right_y = h * up + 2 * p - left - y.shape[2]
    return F.pad(y, [left, right_x, left, right_y])


def affine_transformation(x: torch.Tensor, mat: torch.Tensor, up: int = 4, **filter_kwargs) -> tuple:
    """Resample x under the 2-D transform mat (translations in units of the image size): band-limit and
    upsample by `up` with oriented_bandlimit_filter, then bilinear sampling at the transformed grid.

    Returns:
        (transformed image, mask of the pixels with a full filter support).
    """
    _, _, h, w = x.shape
    mat = torch.as_tensor(mat, dtype=torch.float32, device=x.device)
    f = oriented_bandlimit_filter(mat, up=up, **filter_kwargs).to(x.device)
    p = f.shape[0] // 2
    y = _upsample(x, f, up)
    # Output pixel -> source position in the normalised coordinates of the upsampled image y, whose
    # extent is the image plus p/up input pixels on each side; the half-tap offset of the upsampling
    # is 1/(2 up) input pixels.
    theta = torch.linalg.inv(mat)
    theta[:2, 2] *= 2
    theta[0, 2] += 1 / up / w
    theta[1, 2] += 1 / up / h
    theta[0, :] *= w / (w + p / up * 2)
    theta[1, :] *= h / (h + p / up * 2)
    grid = F.affine_grid(theta[:2, :3].unsqueeze(0).repeat(x.shape[0], 1, 1), list(x.shape), align_corners=False)
    z = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = torch.zeros_like(y)
    c = 2 * p + 1
    m[:, :, c:-c, c:-c] = 1
    m = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return z, m


def fractional_rotation(x: torch.Tensor, angle, a: int = LANCZOS_A) -> tuple:
    """Rotate by `angle` (radians) with the band-limited resampling of affine_transformation."""
    return affine_transformation(x, rotation_matrix(torch.as_tensor(angle, dtype=torch.float32)), a=a, amax=2 * a)


def pseudo_rotation(x: torch.Tensor, angle, a: int = LANCZOS_A) -> tuple:
    """The band limit a rotation by `angle` would impose, without moving pixels (filter at up = 1).

    Returns:
        (filtered image, mask of the pixels with a full filter support).
    """
    mat = rotation_matrix(-torch.as_tensor(angle, dtype=torch.float32))
    f = oriented_bandlimit_filter(mat, a=a, amax=2 * a, up=1).to(x.device)
    p = f.shape[0] // 2
    y = F.conv2d(F.pad(x, [p, p, p, p]), _depthwise(x, f.flip(0, 1)), groups=x.shape[1])
    m = torch.zeros_like(y)
    m[:, :, p:-p, p:-p] = 1
    return y, m


# ----------------------------------------------------------------------------------------------------
# The metrics

def psnr_from_sums(squared: float, count: float) -> float:
    """20 log10(2) - 10 log10(squared / count) (peak-to-peak 2 for images in [-1, 1]); +inf for an exact
    match (squared 0), as the published torch code gives, without numpy's divide-by-zero warning."""
    if squared == 0:
        return float("inf")
    return float(20 * np.log10(2) - 10 * np.log10(squared / count))


def default_synthesis(G, force_fp32: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """synth(ws, M) for our Generator in its fixed-resolution form: the input grid moved by M (3 x 3,
    shared by the batch), canvas = p, the scale branch fed N/p = 1."""

    def synth(ws: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        t = m.to(ws.device, torch.float32).expand(ws.shape[0], 3, 3)
        return G.synthesize(ws, transform=t, scale=1.0, force_fp32=force_fp32)

    return synth


@torch.no_grad()
def equivariance_psnr(G, kinds: Sequence[str], num: int = 50_000, batch: int = 4, seed: int = 0,
                      translate_max: float = 0.125, rotate_max: float = 1.0, device=None,
                      labels: Optional[Callable[[int], torch.Tensor]] = None,
                      synthesis: Optional[Callable] = None, force_fp32: bool = False,
                      progress: bool = True) -> dict:
    """EQ-T / EQ-T_frac / EQ-R PSNRs (dB) of a generator.

    Args:
        G: needs z_dim, c_dim, img_resolution and mapping(z, c) -> ws; the synthesis call is
            `synthesis(ws, M)` (default: our Generator's, see default_synthesis).
        kinds: any of "eqt-int", "eqt-frac", "eqr"; computed in that order from shared samples, each
            with its own draw per batch (published: one metric per run).
        num: samples (rounded up to whole batches, as published). batch: samples per draw.
        seed: seed of the torch.Generator all draws come from (CPU).
        translate_max: largest translation, in units of the image size. rotate_max: largest angle / pi.
        device: where the generator runs (default its parameters').
        labels: labels(count) -> (count, c_dim) for a conditional generator.
        synthesis: synth(ws, M) override.
        force_fp32: all layers in float32.
        progress: tqdm bar.

    Returns:
        {kind: psnr} for each kind asked for.

    Raises:
        ValueError: an unknown kind, num/batch < 1, or a conditional G without labels.
    """
    kinds = list(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"equivariance: kinds must be among {KINDS}, got {kinds}")
    if num < 1 or batch < 1:
        raise ValueError("equivariance: num and batch must be >= 1")
    if getattr(G, "c_dim", 0) and labels is None:
        raise ValueError("equivariance: a conditional generator (c_dim > 0) needs labels")
    device = torch.device(device) if device is not None else next(G.parameters()).device
    synth = synthesis or default_synthesis(G, force_fp32)
    res = G.img_resolution
    gen = torch.Generator().manual_seed(seed)
    eye = torch.eye(3)
    sums = {k: torch.zeros(2, dtype=torch.float64) for k in kinds}
    ordered = [k for k in KINDS if k in kinds]
    with tqdm(total=num, desc="equivariance", unit="img", disable=not progress) as bar:
        for _ in range(0, num, batch):
            z = torch.randn(batch, G.z_dim, generator=gen).to(device)
            c = None
            if getattr(G, "c_dim", 0):
                c = torch.as_tensor(labels(batch), dtype=torch.float32).to(device)
            ws = G.mapping(z, c)
            orig = synth(ws, eye)
            for kind in ordered:
                if kind == "eqt-int":
                    t = (torch.rand(2, generator=gen) * 2 - 1) * translate_max
                    t = (t * res).round() / res
                    m = eye.clone()
                    m[:2, 2] = -t
                    ref, mask = integer_translation(orig, t[0], t[1])
                    diff = ref - synth(ws, m)
                elif kind == "eqt-frac":
                    t = (torch.rand(2, generator=gen) * 2 - 1) * translate_max
                    m = eye.clone()
                    m[:2, 2] = -t
                    ref, mask = fractional_translation(orig, t[0], t[1])
                    diff = ref - synth(ws, m)
                else:
                    angle = (torch.rand([], generator=gen) * 2 - 1) * (rotate_max * np.pi)
                    img = synth(ws, rotation_matrix(-angle))
                    ref, ref_mask = fractional_rotation(orig, angle)
                    pseudo, pseudo_mask = pseudo_rotation(img, angle)
                    mask = ref_mask * pseudo_mask
                    diff = ref - pseudo
                sums[kind] += torch.stack([(diff.square() * mask).to(torch.float64).sum(),
                                           mask.to(torch.float64).sum()]).cpu()
            bar.update(min(batch, num - bar.n))
    return {k: psnr_from_sums(float(sums[k][0]), float(sums[k][1])) for k in kinds}


def equivariance_metric(G, kind: str, opts) -> dict:
    """One equivariance metric as a result line (the metrics CLI's format).

    Args:
        G: our Generator (fixed-resolution form).
        kind: "eqt-int", "eqt-frac" or "eqr".
        opts: anyres_fast.metrics.Options (num, batch, seed, translate_max, rotate_max, device,
            precision, labels, progress).

    Returns:
        {"metric": kind, "psnr": dB, "num_fake": samples, "settings": {...}, "time": ...}.
    """
    started = time.time()
    if not (hasattr(G, "mapping") and hasattr(G, "synthesize")):
        raise ValueError(f"{kind} needs a generator with a Fourier input that takes a transform "
                         f"(mapping + synthesize); {type(G).__name__} has none")
    batch = opts.batch
    psnr = equivariance_psnr(G, [kind], num=opts.num, batch=batch, seed=opts.seed,
                             translate_max=opts.translate_max, rotate_max=opts.rotate_max, device=opts.device,
                             labels=opts.labels if getattr(G, "c_dim", 0) else None,
                             force_fp32=opts.precision == "fp32", progress=opts.progress)[kind]
    samples = -(-opts.num // batch) * batch
    settings = dict(opts.recorded(), translate_max=opts.translate_max, rotate_max=opts.rotate_max,
                    generator_size=G.img_resolution, form="fixed resolution (canvas = p)")
    return {"metric": kind, "psnr": psnr, "num_fake": samples, "settings": settings,
            "seconds": round(time.time() - started, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
