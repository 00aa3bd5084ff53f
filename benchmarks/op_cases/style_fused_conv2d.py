"""style_fused_conv2d benchmark cases: InfinityGAN-101 layers under spatial style fusion (docs/ops.md §5).

Impls: "cuda" (one implicit-GEMM kernel, two accumulators, exact demodulation), "ref" (the two-convolution
reference form, exact), "ref-pointwise" (the published approximation in PyTorch). Baseline: ref.
"""
from __future__ import annotations

import torch

from anyres_fast.ops import style_fused_conv2d, style_fused_conv2d_ref
from benchmarks._harness import Case, forward_backward

# (label, in_ch, out_ch, input size, kernel, padding, up, dtype)
LAYERS = [
    ("InfGAN-101 G_S 7x7 35px", 259, 256, 35, 7, 0, 1, torch.float32),
    ("InfGAN-101 G_T up 11px", 512, 512, 11, 3, 0, 2, torch.float32),
    ("InfGAN-101 G_T up 53px", 512, 512, 53, 3, 0, 2, torch.float32),
    ("InfGAN-101 G_T 3x3 103px", 512, 512, 103, 3, 0, 1, torch.float32),
    ("InfGAN-101 G_T 3x3 103px fp16", 512, 512, 103, 3, 0, 1, torch.float16),
]
QUICK = ("InfGAN-101 G_S 7x7 35px", "InfGAN-101 G_T up 53px")


def _inputs(batch, cin, cout, size, k, dtype, device):
    x = torch.randn(batch, cin, size, size, device=device, dtype=dtype)
    weight = (torch.randn(cout, cin, k, k, device=device) / (cin * k * k) ** 0.5).to(dtype)
    smap = (torch.rand(batch, cin, size, size, device=device) * 0.5 + 0.75).to(dtype)
    return x, weight, smap


def _impls(padding, up):
    return {
        "cuda": lambda x, w, s: style_fused_conv2d(x, w, s, padding=padding, up=up, impl="cuda"),
        "ref": lambda x, w, s: style_fused_conv2d_ref(x, w, s, padding, up, "exact"),
        "ref-pointwise": lambda x, w, s: style_fused_conv2d_ref(x, w, s, padding, up, "pointwise"),
    }


def cases(device, quick):
    if device.type != "cuda":
        x, w, s = _inputs(2, 32, 32, 20, 3, torch.float32, device)
        impls = {k: v for k, v in _impls(0, 1).items() if k != "cuda"}
        return [Case("style_fused_conv2d", "cpu smoke 32ch 20px k3", torch.float32,
                     {k: (lambda f=f: f(x, w, s)) for k, f in impls.items()},
                     {k: forward_backward(f, x, w, s) for k, f in impls.items()})]
    out = []
    for batch in ((8,) if quick else (1, 8, 32)):
        for label, cin, cout, size, k, padding, up, dtype in LAYERS:
            if quick and label not in QUICK:
                continue
            x, w, s = _inputs(batch, cin, cout, size, k, dtype, device)
            impls = _impls(padding, up)
            osize = (size + 2 * padding - k + 1) if up == 1 else (2 * (size - 1) + k - 2 * padding)
            nbytes = (2 * x.numel() + w.numel() + batch * cout * osize * osize) * x.element_size()
            out.append(Case(
                "style_fused_conv2d", f"{label} {cin}->{cout} k{k} p{padding} up{up} B{batch}", dtype,
                {name: (lambda f=f, x=x, w=w, s=s: f(x, w, s)) for name, f in impls.items()},
                {name: forward_backward(f, x, w, s) for name, f in impls.items()},
                bytes=nbytes, baseline="ref"))
    return out
