"""filtered_lrelu benchmark cases: the StyleGAN3-T layers at 256² (docs/anyres_generator.md §2), batch 8.

Impls: "cuda" (fused kernel; forward+backward writes then reads the sign record) and "ref" (pure
PyTorch composition that materialises the upsampled buffer). Each layer runs in the dtype StyleGAN3 uses
for it. On a CPU (smoke run) only "ref" runs, on 4 channels at batch 1.
"""
from __future__ import annotations

import math

import torch

from anyres_fast.ops import filtered_lrelu
from benchmarks._harness import Case

# (layer, Cout, x size, up, padding lo/hi, dtype) for StyleGAN3-T at 256² (--cbase 32768, --cmax 512)
T256_LAYERS = [
    ("L0-2", 512, 38, 2, (9, 8), torch.float32),
    ("L3", 512, 38, 4, (-6, -9), torch.float16),
    ("L4", 512, 54, 2, (9, 8), torch.float16),
    ("L5", 512, 54, 4, (-6, -9), torch.float16),
    ("L6", 512, 86, 2, (9, 8), torch.float16),
    ("L7", 512, 86, 4, (-6, -9), torch.float16),
    ("L8", 512, 150, 2, (9, 8), torch.float16),
    ("L9", 362, 150, 2, (9, 8), torch.float16),
    ("L10", 256, 150, 4, (-6, -9), torch.float16),
    ("L11", 181, 278, 2, (9, 8), torch.float16),
    ("L12", 128, 278, 2, (9, 8), torch.float16),
    ("L13", 128, 278, 2, (-11, -12), torch.float16),
    ("RGB", 3, 256, 1, (0, 0), torch.float16),
]
QUICK = ("L0-2", "L3", "L10", "L13", "RGB")


def _lowpass(taps: int, up: int, device) -> torch.Tensor:
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    h = torch.sinc(n / up) * torch.kaiser_window(taps, periodic=False, beta=6.0, dtype=torch.float64)
    return (h / h.sum()).float().to(device)


def _case(name, cout, size, up, pad, dtype, device, batch, channels_cap):
    c = min(cout, channels_cap)
    rgb = up == 1
    fu = None if rgb else _lowpass(6 * up, up, device)
    fd = None if rgb else _lowpass(12, 2, device)
    down = 1 if rgb else 2
    padding = (pad[0], pad[1], pad[0], pad[1])
    gain, slope = (1.0, 1.0) if rgb else (math.sqrt(2), 0.2)
    x = torch.randn(batch, c, size, size, device=device, dtype=dtype)
    b = torch.randn(c, device=device, dtype=dtype) * 0.1
    xg = x.clone().requires_grad_(True)
    bg = b.clone().requires_grad_(True)
    y0 = filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, 256.0, impl="ref")
    dy = torch.randn_like(y0)

    def fwd(impl):
        return lambda: filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, 256.0, impl=impl)

    def fwdbwd(impl):
        def run():
            y = filtered_lrelu(xg, fu, fd, bg, up, down, padding, gain, slope, 256.0, impl=impl)
            torch.autograd.grad(y, (xg, bg), dy)
        return run

    impls = ["cuda", "ref"] if device.type == "cuda" else ["ref"]
    elem = torch.finfo(dtype).bits // 8
    return Case(op="filtered_lrelu",
                shape=f"T256 {name} [{batch},{c},{size},{size}] up{up} down{down}",
                dtype=dtype,
                forward={i: fwd(i) for i in impls},
                backward={i: fwdbwd(i) for i in impls},
                bytes=(x.numel() + y0.numel()) * elem,
                baseline="ref")


def cases(device, quick: bool) -> list[Case]:
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    batch, cap = (8, 4096) if on_gpu else (1, 4)
    out = []
    for name, cout, size, up, pad, dtype in T256_LAYERS:
        if quick and name not in QUICK:
            continue
        if not on_gpu:
            dtype = torch.float32  # half convolutions on CPU are slow or missing; this is only a smoke run
        out.append(_case(name, cout, size, up, pad, dtype, device, batch, cap))
    return out
