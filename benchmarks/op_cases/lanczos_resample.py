"""lanczos_resample benchmark cases (docs/ops.md §3; targets: docs/README.md).

Impls: "cuda" (weight tables + two separable gather passes), "ref" (dense per-sample weight matrices,
two batched matmuls) and, for the teacher warp, "sinc127-bilinear": the published way to warp a patch
into the teacher frame, implemented here only as a baseline. Per sample it builds a band-limited filter
for the scaling (FFT convolution of a sinc in input coordinates with a sinc in output coordinates, times
the likewise convolved Lanczos-3 windows, on a 4x grid), crops it to 127x127 taps, normalises each
polyphase, upsamples the patch 4x with it and samples the result bilinearly at the teacher pixels
(grid_sample, zeros outside). Our version is batched over samples (one FFT batch, one grouped
transposed convolution), so it is faster than the published per-sample Python loop.
Teacher-warp cases use it as the ratio baseline; the plain resize cases use "ref".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from anyres_fast.ops import lanczos_resample, lanczos_resample_ref, teacher_warp
from anyres_fast.ops.teacher_warp_op import teacher_boxes
from benchmarks._harness import Case

BASELINE = "sinc127-bilinear"
UP = 4             # upsampling factor of the baseline's fine grid
TAPS = 127         # FIR size on the fine grid
GRID = 511         # support on the fine grid before cropping (about ±64 input pixels)


# ----------------------------------------------------------------------------------------------------
# The per-sample band-limited filter baseline (benchmark only).

def _sinc(x):
    return torch.sinc(x)


def _lanczos_window(x, a=3):
    return torch.where(x.abs() < a, torch.sinc(x / a), torch.zeros_like(x))


def _fft_conv_same(p, q):
    """'same' 2-D convolution of (B,G,G) with (B,G,G) via FFT (sizes odd, centres aligned)."""
    g = p.shape[-1]
    n = 2 * g - 1
    out = torch.fft.irfft2(torch.fft.rfft2(p, s=(n, n)) * torch.fft.rfft2(q, s=(n, n)), s=(n, n))
    c = (g - 1) // 2
    return out[..., c:c + g, c:c + g]


def bandlimit_filters(scale: torch.Tensor) -> torch.Tensor:
    """(B,127,127) FIRs on the 4x grid for output/input scale s per sample (s < 1 shrinks)."""
    dev = scale.device
    u = (torch.arange(GRID, device=dev, dtype=torch.float32) - (GRID - 1) / 2) / UP     # input pixels
    s = scale.float()[:, None, None]
    yy, xx = u[None, :, None], u[None, None, :]
    sinc_in = (_sinc(yy) * _sinc(xx)).expand(scale.shape[0], GRID, GRID)
    sinc_out = s * s * _sinc(s * yy) * _sinc(s * xx)                          # cutoff at s·Nyquist
    win_in = (_lanczos_window(yy) * _lanczos_window(xx)).expand(scale.shape[0], GRID, GRID)
    win_out = _lanczos_window(s * yy) * _lanczos_window(s * xx)
    f = _fft_conv_same(sinc_in, sinc_out) * _fft_conv_same(win_in, win_out)
    c, h = (GRID - 1) // 2, (TAPS - 1) // 2
    f = f[:, c - h:c + h + 1, c - h:c + h + 1]
    # Normalise each of the UP x UP polyphase components to unit gain.
    phases = f.reshape(-1, TAPS, TAPS)
    for py in range(UP):
        for px in range(UP):
            part = phases[:, py::UP, px::UP]
            phases[:, py::UP, px::UP] = part / part.sum(dim=(1, 2), keepdim=True)
    return phases


def sinc127_bilinear_warp(patch, canvas, box_xy, teacher_size):
    """Warps (B,C,p,p) patches into the teacher frame like teacher_warp, the published way."""
    b, c, p, _ = patch.shape
    scale = teacher_size / canvas.float()                                           # teacher px per patch px
    filters = bandlimit_filters(scale).to(patch.dtype)                              # (B,127,127)
    weight = filters[:, None].repeat_interleave(c, dim=0)    # (B·C,1,127,127); each phase has unit gain
    fine = F.conv_transpose2d(patch.reshape(1, b * c, p, p), weight, stride=UP, padding=(TAPS - 1) // 2,
                              groups=b * c).reshape(b, c, UP * p - 3, UP * p - 3)
    # Teacher pixel centre (i + 0.5) -> patch coordinate u = (i + 0.5)·N/T - x0 -> fine index (u - 0.5)·UP.
    i = torch.arange(teacher_size, device=patch.device, dtype=torch.float32) + 0.5
    ratio = (canvas.float() / teacher_size)[:, None]
    ux = i[None] * ratio - box_xy[:, :1].float()
    uy = i[None] * ratio - box_xy[:, 1:].float()
    n_fine = UP * p - 3
    gx = ((ux - 0.5) * UP + 0.5) / n_fine * 2 - 1                                   # align_corners=False
    gy = ((uy - 0.5) * UP + 0.5) / n_fine * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).to(patch.dtype)
    warped = F.grid_sample(fine, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = ((gx.abs() < 1)[:, None, :] & (gy.abs() < 1)[:, :, None])[:, None]
    return warped, inside


# ----------------------------------------------------------------------------------------------------
# Cases.

def _fwd_bwd(fn, x):
    leaf = x.detach().requires_grad_()

    def run():
        y, mask = fn(leaf)
        (y * mask).sum().backward()
    return run


def _teacher_case(batch, p, teacher, dtype, device, with_ref=True):
    g = torch.Generator().manual_seed(0)
    patch = torch.rand(batch, 3, p, p, generator=g).to(device=device, dtype=dtype)
    canvas = torch.randint(p * 2, p * 8 + 1, (batch,), generator=g).double()        # scale 1/2 .. 1/8
    xy = torch.stack([torch.rand(batch, generator=g) * (canvas - p) for _ in range(2)], dim=1).floor()
    teacher_boxes((p, p), canvas, xy, batch)                                         # validates the inputs
    canvas_d, xy_d = canvas.to(device), xy.to(device)
    impls = {
        "cuda": lambda x: teacher_warp(x, canvas, xy, teacher, impl="cuda"),
        "ref": lambda x: teacher_warp(x, canvas, xy, teacher, impl="ref"),
        BASELINE: lambda x: sinc127_bilinear_warp(x, canvas_d, xy_d, teacher),
    }
    if device.type != "cuda":
        impls.pop("cuda")
    if not with_ref:
        impls.pop("ref")
    nbytes = (patch.numel() + batch * 3 * teacher * teacher) * patch.element_size()
    return Case("lanczos_resample", f"teacher warp B{batch} p{p} -> {teacher}, N in [{2 * p}, {8 * p}]", dtype,
                {k: (lambda f=f: f(patch)) for k, f in impls.items()},
                {k: _fwd_bwd(f, patch) for k, f in impls.items()}, bytes=nbytes, baseline=BASELINE)


def _resize_case(batch, channels, size_in, size_out, dtype, device, per_sample):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, channels, size_in, size_in, generator=g).to(device=device, dtype=dtype)
    if per_sample:   # random crops of 60..100% of the side
        side = size_in * (0.6 + 0.4 * torch.rand(batch, generator=g))
        x0, y0 = (size_in - side) * torch.rand(batch, generator=g), (size_in - side) * torch.rand(batch, generator=g)
        box = torch.stack([x0, y0, x0 + side, y0 + side], dim=1).double()
    else:
        box = None
    impls = {
        "cuda": lambda t: lanczos_resample(t, size_out, box=box, impl="cuda"),
        "ref": lambda t: lanczos_resample_ref(t, size_out, box=box),
    }
    if not per_sample:  # context: torch's antialiased bicubic (a different kernel, same job)
        impls["torch-bicubic-aa"] = lambda t: F.interpolate(t, size=(size_out, size_out), mode="bicubic",
                                                            antialias=True, align_corners=False)
    if device.type != "cuda":
        impls.pop("cuda")

    def fwd_bwd(fn):
        leaf = x.detach().requires_grad_()

        def run():
            fn(leaf).sum().backward()
        return run
    nbytes = (x.numel() + batch * channels * size_out * size_out) * x.element_size()
    label = f"resize B{batch} C{channels} {size_in}->{size_out}" + (" per-sample boxes" if per_sample else "")
    return Case("lanczos_resample", label, dtype, {k: (lambda f=f: f(x)) for k, f in impls.items()},
                {k: fwd_bwd(f) for k, f in impls.items()}, bytes=nbytes, baseline="ref")


def cases(device, quick):
    if device.type != "cuda":  # CPU smoke run: small shapes, references and the baseline
        return [_teacher_case(2, 32, 32, torch.float32, device),
                _resize_case(2, 3, 64, 24, torch.float32, device, per_sample=True)]
    out = [_teacher_case(32, 256, 256, torch.float32, device)]
    if quick:
        return out + [_resize_case(8, 3, 1024, 256, torch.float32, device, per_sample=True)]
    out += [
        _teacher_case(32, 256, 256, torch.bfloat16, device, with_ref=False),
        _resize_case(16, 3, 1024, 256, torch.float32, device, per_sample=False),
        _resize_case(16, 3, 1024, 256, torch.float32, device, per_sample=True),
        _resize_case(16, 3, 1024, 256, torch.float16, device, per_sample=True),
        _resize_case(16, 3, 256, 1024, torch.float32, device, per_sample=False),
        _resize_case(4, 3, 2048, 2000, torch.bfloat16, device, per_sample=True),
    ]
    return out

