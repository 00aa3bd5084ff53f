"""modulated_conv2d benchmark cases: the layers our models run (docs/ops.md §4).

Impls: "cuda" (implicit GEMM, TF32 for fp32), "ref-three-pass" (x·s, one cuDNN conv, ·d) and "ref-grouped"
(per-sample weights, grouped cuDNN conv). Baseline: ref-three-pass (usually the faster reference at batch
≥ 8); the table shows both reference times, so the ratio to either can be read off.
"""
from __future__ import annotations

import torch

from anyres_fast.ops import modulated_conv2d, modulated_conv2d_ref
from benchmarks._harness import Case, forward_backward

# (label, in_ch, out_ch, input size, kernel, padding, up, dtype)
LAYERS = [
    ("SG3-T L0 36px", 512, 512, 36, 3, 2, 1, torch.float32),
    ("SG3-T L4 52px", 512, 512, 54, 3, 2, 1, torch.float16),
    ("SG3-T L6 84px", 512, 512, 86, 3, 2, 1, torch.float16),
    ("SG3-T L8 148px", 512, 512, 150, 3, 2, 1, torch.float16),
    ("SG3-T L11 276px", 256, 181, 278, 3, 2, 1, torch.float16),
    ("SG3-R L0 36px", 1024, 1024, 36, 1, 0, 1, torch.float32),
    ("SG3-R L6 84px", 1024, 1024, 84, 1, 0, 1, torch.float16),
    ("InfGAN-101 G_S 7x7 35px", 259, 256, 35, 7, 0, 1, torch.float32),
    ("InfGAN-101 G_T up 11px", 512, 512, 11, 3, 0, 2, torch.float32),
    ("InfGAN-101 G_T up 53px", 512, 512, 53, 3, 0, 2, torch.float32),
    ("InfGAN-101 G_T 3x3 103px", 512, 512, 103, 3, 0, 1, torch.float32),
]
QUICK = ("SG3-T L4 52px", "InfGAN-101 G_S 7x7 35px", "InfGAN-101 G_T up 53px")


def _inputs(batch, cin, cout, size, k, dtype, device):
    x = torch.randn(batch, cin, size, size, device=device, dtype=dtype)
    weight = (torch.randn(cout, cin, k, k, device=device) / (cin * k * k) ** 0.5).to(dtype)
    styles = (torch.randn(batch, cin, device=device) * 0.2 + 1).to(dtype)
    return x, weight, styles


def _impls(padding, up):
    return {
        "cuda": lambda x, w, s: modulated_conv2d(x, w, s, padding=padding, up=up, impl="cuda"),
        "ref-three-pass": lambda x, w, s: modulated_conv2d_ref(x, w, s, True, padding, up, form="three_pass"),
        "ref-grouped": lambda x, w, s: modulated_conv2d_ref(x, w, s, True, padding, up, form="grouped"),
    }


def cases(device, quick):
    if device.type != "cuda":  # CPU smoke run: one small layer, references only
        x, w, s = _inputs(2, 32, 32, 20, 3, torch.float32, device)
        impls = {k: v for k, v in _impls(1, 1).items() if k != "cuda"}
        return [Case("modulated_conv2d", "cpu smoke 32ch 20px k3", torch.float32,
                     {k: (lambda f=f: f(x, w, s)) for k, f in impls.items()},
                     {k: forward_backward(f, x, w, s) for k, f in impls.items()}, baseline="ref-three-pass")]
    out = []
    for batch in ((8,) if quick else (1, 8, 32)):
        for label, cin, cout, size, k, padding, up, dtype in LAYERS:
            if quick and label not in QUICK:
                continue
            x, w, s = _inputs(batch, cin, cout, size, k, dtype, device)
            impls = _impls(padding, up)
            osize = (size + 2 * padding - k + 1) if up == 1 else (2 * (size - 1) + k - 2 * padding)
            nbytes = (x.numel() + w.numel() + s.numel() + batch * cout * osize * osize) * x.element_size()
            out.append(Case(
                "modulated_conv2d", f"{label} {cin}->{cout} k{k} p{padding} up{up} B{batch}", dtype,
                {name: (lambda f=f, x=x, w=w, s=s: f(x, w, s)) for name, f in impls.items()},
                {name: forward_backward(f, x, w, s) for name, f in impls.items()},
                bytes=nbytes, baseline="ref-three-pass"))
    return out
