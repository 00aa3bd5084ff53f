"""Multiply-adds per output of the implicit-GEMM convolution kernel, before and after the parity split.

    python benchmarks/igemm_macs.py

Static counts from the kernels' tiling (not timings): the tensor-core MACs a launch issues, divided by
the outputs (B·M·H_out·W_out), for the conv shapes the models use. "before" is the kernel up to commit
23a0f73 (K = C·kh·kw in steps of 32 for every output, so up=2 visits all kh·kw taps of which 3/4 are
zero); "after" is csrc/kernels/implicit_gemm.cuh now (K steps of 32 channels of one tap; up=2 as four
output-parity sub-convolutions that only visit their own taps). python_tests/test_implicit_gemm_emulated.py
checks the "after" formula against the MMAs counted in the emulated kernel.
"""
from __future__ import annotations


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def out_size(size: int, k: int, p: int, up: int) -> int:
    return size + 2 * p - k + 1 if up == 1 else 2 * (size - 1) + k - 2 * p


def macs_before(b, c, m, h, w, k, p, up):
    ho, wo = out_size(h, k, p, up), out_size(w, k, p, up)
    n = b * ho * wo
    return _ceil(n, 64) * _ceil(m, 64) * _ceil(c * k * k, 32) * 64 * 64 * 32


def macs_after(b, c, m, h, w, k, p, up):
    ho, wo = out_size(h, k, p, up), out_size(w, k, p, up)
    cp = _ceil(c, 8) * 8
    total = 0
    classes = [(py, px) for py in (0, 1) for px in (0, 1)] if up == 2 else [None]
    for cls in classes:
        if cls is None:
            hc, wc, taps = ho, wo, k * k
        else:
            hc, wc = (ho - cls[0] + 1) // 2, (wo - cls[1] + 1) // 2
            taps = ((k - ((cls[0] + p) & 1) + 1) // 2) * ((k - ((cls[1] + p) & 1) + 1) // 2)
        total += _ceil(b * hc * wc, 64) * _ceil(m, 64) * taps * _ceil(cp, 32) * 64 * 64 * 32
    return total


# (label, B, C, M, H, W, k, padding, up)
SHAPES = [
    ("StyleGAN2-style 3x3 conv, 512 ch, 32 px", 4, 512, 512, 32, 32, 3, 1, 1),
    ("3x3 up=2 (transposed), 512 ch, 16 -> 33 px", 4, 512, 512, 16, 16, 3, 0, 2),
    ("3x3 up=2 (transposed), 256 ch, 64 -> 127 px, p=1", 4, 256, 256, 64, 64, 3, 1, 2),
    ("3x3 conv, 128 ch, 256 px", 2, 128, 128, 256, 256, 3, 1, 1),
    ("1x1 ToRGB, 64 ch -> 3", 2, 64, 3, 256, 256, 1, 0, 1),
]


def main() -> int:
    print("| shape | ideal MACs/output (C·taps) | before | after | before/after |")
    print("|---|---|---|---|---|")
    for label, b, c, m, h, w, k, p, up in SHAPES:
        outputs = b * m * out_size(h, k, p, up) * out_size(w, k, p, up)
        ideal = c * k * k / (4 if up == 2 else 1)
        before, after = macs_before(b, c, m, h, w, k, p, up) / outputs, macs_after(b, c, m, h, w, k, p, up) / outputs
        print(f"| {label} | {ideal:.0f} | {before:.0f} | {after:.0f} | {before / after:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
