"""Convolution with a spatially varying style (spatial style fusion, docs/ops.md §5).

    y = conv(x ⊙ S, W) ⊙ D

x (B,I,H,W), weight (O,I,kh,kw), style_map S (B,I,H,W) at the layer's input resolution. `conv` and the
geometry (padding, up=1 conv / up=2 stride-2 transposed conv, output sizes) are exactly those of
`modulated_conv2d` (see its module docstring). D depends on `demod`:

  "exact"      D = rsqrt(conv(S ⊙ S, W ⊙ W) + eps): for every output pixel the sum of (W·s)² over
               exactly the inputs that produced it. With S constant in space this equals modulated_conv2d
               wherever the whole k×k window lies inside the input for up=1 (all pixels of a valid conv).
               It differs, by design, where taps fall on zero padding (they carry no energy) and for up=2:
               a stride-2 transposed output pixel only receives the taps of its parity (e.g. 4, 2 or 1 of
               the 9 taps of a 3×3 kernel), and exact demodulation normalises by exactly those.
  "pointwise"  InfinityGAN's published approximation (models/ops.py, spatially varying ModulatedConv2d):
               the demodulation uses only the style at one position per output pixel,
                   D_in[b,o,h,w] = rsqrt(Σ_i S[b,i,h,w]² · Σ_k W[o,i,k]² + eps)   at input resolution,
               then read at the centre of each output pixel's window, in input coordinates
                   up=1: c = Y - p + (k-1)/2        (valid 3×3: the 1-px centre crop of D_in they use)
                   up=2: c = (Y + p - (k-1)/2) / 2  (they bilinearly resize D_in with align_corners to
                         the 1-px-cropped 2H-1 output, which is exactly this linear interpolation)
               with linear interpolation between input pixels (per axis) and clamping at the border.
               Note they interpolate D (after the rsqrt), not the energy; so do we.
  "none"       D = 1 (ToRGB-style layers).

Implementations: `style_fused_conv2d_ref` (two convolutions, autograd) and the custom op
`anyres_fast::style_fused_conv2d` (CUDA: one implicit-GEMM kernel with two accumulators over the same
window, epilogue acc1·rsqrt(acc2+eps); CPU: reference math with explicit backward formulas).
"""
from __future__ import annotations

import torch

from . import _dispatch, conv_choice
from .modulated_conv2d_op import (_cuda_unsupported, _mode_forward, conv, conv_adjoint_input, conv_adjoint_weight,
                               exact_fp32, gemm_weight, output_size, validate, weight_energy)

OP = "style_fused_conv2d"
DEMODS = ("exact", "pointwise", "none")


# ----------------------------------------------------------------------------------------------------
# Pointwise demodulation: sampling D_in at the window centres (a separable linear map).

def centre_interpolation(size_in: int, size_out: int, k: int, padding: int, up: int, like: torch.Tensor):
    """(size_out, size_in) matrix R with D_out = R · D_in along one axis (see "pointwise" above)."""
    out = torch.arange(size_out, dtype=torch.float64)
    if up == 1:
        c = out - padding + (k - 1) / 2
    else:
        c = (out + padding - (k - 1) / 2) / 2
    c = c.clamp(0, size_in - 1)
    i0 = c.floor().long().clamp(max=size_in - 1)
    i1 = (i0 + 1).clamp(max=size_in - 1)
    frac = c - i0.double()
    r = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    r.index_put_((rows, i0), 1 - frac, accumulate=True)
    r.index_put_((rows, i1), frac, accumulate=True)
    return r.to(device=like.device, dtype=like.dtype)


def _pointwise_parts(style_map, weight, out_hw, padding, up, eps):
    """(D_in, Ry, Rx): D_out = Ry · D_in · Rxᵀ."""
    kh, kw = weight.shape[2:]
    energy = torch.einsum("bihw,oi->bohw", style_map.square(), weight_energy(weight))
    d_in = torch.rsqrt(energy + eps)
    ry = centre_interpolation(style_map.shape[2], out_hw[0], kh, padding, up, style_map)
    rx = centre_interpolation(style_map.shape[3], out_hw[1], kw, padding, up, style_map)
    return d_in, ry, rx


def _sample(d_in, ry, rx):
    return ry @ d_in @ rx.t()


# ----------------------------------------------------------------------------------------------------
# Reference.

def style_fused_conv2d_ref(x, weight, style_map, padding=0, up=1, demod="exact", eps=1e-8):
    """Two-convolution reference; autograd-differentiable, any device and float dtype.

    Does not validate its arguments (use style_fused_conv2d(..., impl="ref") for that).

    Args:
        x: (B, I, H, W); weight: (O, I, kh, kw); style_map: (B, I, H, W), cast to x's dtype.
        padding: int >= 0; up: 1 or 2; demod: "exact", "pointwise" or "none"; eps: float > 0.
    Returns:
        (B, O, H_out, W_out) in x's dtype.
    Raises:
        ValueError: unknown demod.
    """
    style_map = style_map.to(x.dtype)
    y = conv(x * style_map, weight, padding, up)
    if demod == "exact":
        y = y * torch.rsqrt(conv(style_map.square(), weight.square(), padding, up) + eps)
    elif demod == "pointwise":
        y = y * _sample(*_pointwise_parts(style_map, weight, y.shape[2:], padding, up, eps))
    elif demod != "none":
        raise ValueError(f"{OP}: demod must be one of {DEMODS}, got {demod!r}")
    return y


def backward_math(grad, x, weight, style_map, padding, up, demod, eps):
    """(dx, dweight, dstyle_map) by explicit formulas. With A = conv(x·S, W), y = A·D:
      gA = g·D;  gxS = conv_adjoint_input(gA, W);  dx = gxS·S;  dS = gxS·x;  dW = conv_adjoint_weight(x·S, gA)
      exact:     E = conv(S², W²), D = (E+eps)^-½, gE = -½ (g·A) D³
                 dS += 2 S · conv_adjoint_input(gE, W²);  dW += 2 W · conv_adjoint_weight(S², gE)
      pointwise: gD_in = Ryᵀ (g·A) Rx;  gE_in = -½ gD_in D_in³ with E_in = S² Qᵀ (per pixel)
                 dS += 2 S · (gE_in Q);  dW += 2 W · Σ_{b,h,w} gE_in S²"""
    style_map = style_map.to(x.dtype)
    s2 = style_map.square()
    a = conv(x * style_map, weight, padding, up)
    if demod == "exact":
        e = conv(s2, weight.square(), padding, up)
        dmap = torch.rsqrt(e + eps)
    elif demod == "pointwise":
        d_in, ry, rx = _pointwise_parts(style_map, weight, a.shape[2:], padding, up, eps)
        dmap = _sample(d_in, ry, rx)
    else:
        dmap = None
    ga = grad * dmap if dmap is not None else grad
    gxs = conv_adjoint_input(ga, weight, x.shape[2:], padding, up)
    dx = gxs * style_map
    ds = gxs * x
    dw = conv_adjoint_weight(x * style_map, ga, weight.shape, padding, up)
    if demod == "exact":
        ge = -0.5 * grad * a * dmap.pow(3)
        w2 = weight.square()
        ds = ds + 2.0 * style_map * conv_adjoint_input(ge, w2, x.shape[2:], padding, up)
        dw = dw + 2.0 * weight * conv_adjoint_weight(s2, ge, weight.shape, padding, up)
    elif demod == "pointwise":
        gd_in = ry.t() @ (grad * a) @ rx
        ge = -0.5 * gd_in * d_in.pow(3)                                  # (B,O,H,W)
        q = weight_energy(weight)
        ds = ds + 2.0 * style_map * torch.einsum("bohw,oi->bihw", ge, q)
        dw = dw + 2.0 * weight * torch.einsum("bohw,bihw->oi", ge, s2)[:, :, None, None]
    return dx, dw, ds


# ----------------------------------------------------------------------------------------------------
# Custom ops.

@torch.library.custom_op("anyres_fast::style_fused_conv2d", mutates_args=())
def _style_fused_conv2d_op(x: torch.Tensor, weight: torch.Tensor, style_map: torch.Tensor, padding: int,
                           up: int, demod: str, eps: float) -> torch.Tensor:
    if x.device.type == "cuda":
        return _cuda_forward(x, weight, style_map, padding, up, demod, eps)
    return style_fused_conv2d_ref(x, weight, style_map, padding, up, demod, eps).contiguous()


@_style_fused_conv2d_op.register_fake
def _(x, weight, style_map, padding, up, demod, eps):
    b, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    return x.new_empty((b, o, output_size(h, kh, padding, up), output_size(w, kw, padding, up)))


@torch.library.custom_op("anyres_fast::style_fused_conv2d_backward", mutates_args=())
def _style_fused_conv2d_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                    style_map: torch.Tensor, padding: int, up: int, demod: str,
                                    eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if x.device.type == "cuda":
        # Explicit formulas on cuDNN convolutions in float32 (see csrc/kernels/modulated_conv2d.cu, notes).
        ct = torch.promote_types(x.dtype, torch.float32)
        dx, dw, ds = backward_math(grad.to(ct), x.to(ct), weight.to(ct), style_map.to(ct), padding, up, demod, eps)
    else:
        dx, dw, ds = backward_math(grad, x, weight, style_map, padding, up, demod, eps)
    return (dx.to(x.dtype).contiguous(), dw.to(weight.dtype).contiguous(),
            ds.to(style_map.dtype).contiguous())


@_style_fused_conv2d_backward_op.register_fake
def _(grad, x, weight, style_map, padding, up, demod, eps):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), style_map.new_empty(style_map.shape)


def _setup_context(ctx, inputs, output):
    x, weight, style_map, padding, up, demod, eps = inputs
    ctx.save_for_backward(x, weight, style_map)
    ctx.args = (padding, up, demod, eps)


def _backward(ctx, grad):
    x, weight, style_map = ctx.saved_tensors
    dx, dw, ds = _style_fused_conv2d_backward_op(grad.contiguous(), x, weight, style_map, *ctx.args)
    return dx, dw, ds, None, None, None, None


_style_fused_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _cuda_forward(x, weight, style_map, padding, up, demod, eps):
    ext = _dispatch.extension()
    x, weight = x.contiguous(), weight.contiguous()
    smap = style_map.to(x.dtype).contiguous()
    b, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    y = torch.empty((b, o, output_size(h, kh, padding, up), output_size(w, kw, padding, up)),
                    device=x.device, dtype=x.dtype)
    exact = demod == "exact"
    with torch.cuda.device(x.device):
        wg = _dispatch.aligned(gemm_weight(weight), 16)  # cp.async reads 16-byte chunks of it
        wsq = _dispatch.aligned(gemm_weight(weight, square=True), 16) if exact else wg
        ext.style_fused_conv2d_igemm(x, wg, wsq, smap, y,
                                     _mode_forward(up), padding, exact, float(eps), exact_fp32(),
                                     _dispatch.current_stream(x.device))
    if demod == "pointwise":
        # The demodulation map is a per-pixel 1x1 contraction (B·O·I·H·W MACs), done in at least float32.
        ct = torch.promote_types(x.dtype, torch.float32)
        dmap = _sample(*_pointwise_parts(smap.to(ct), weight.to(ct), y.shape[2:], padding, up, eps))
        y = (y.to(ct) * dmap).to(x.dtype)
    return y


# ----------------------------------------------------------------------------------------------------
# Public function.

def style_fused_conv2d(x, weight, style_map, padding=0, up=1, demod="exact", eps=1e-8, impl="auto"):
    """Convolution with a per-pixel style map, y = conv(x ⊙ S, W) ⊙ D (docs/ops.md §5).

    Args:
        x: (B, I, H, W) float16, bfloat16, float32 or float64 tensor (float64: reference only).
        weight: (O, I, kh, kw), same dtype and device as x.
        style_map: S, (B, I, H, W) (the shape of x), any float dtype, cast to x's dtype.
        padding: int >= 0 (as modulated_conv2d: < the kernel size for up=1).
        up: 1 (convolution) or 2 (stride-2 transposed convolution).
        demod: "exact" (D = rsqrt(conv(S², W²) + eps), per output pixel over its own window),
            "pointwise" (InfinityGAN's approximation: the demodulation at the window centre,
            linearly interpolated) or "none" (D = 1).
        eps: finite float > 0.
        impl: "auto", "cuda" or "ref".

    Returns:
        (B, O, H_out, W_out) in x's dtype, the sizes of modulated_conv2d. Differentiable in x, weight
        and style_map. With S constant in space and demod="exact" it equals modulated_conv2d wherever
        the whole window lies inside the input.

    Raises:
        TypeError: non-tensor or unsupported dtype; weight dtype differs from x; padding/up not ints.
        ValueError: wrong dimensions or shapes (style_map not shaped like x), empty tensors, padding
            out of range, up not 1 or 2, unknown demod, eps not finite and > 0, an empty output,
            tensors on different devices.
        MemoryError: the estimated output and temporaries exceed the available memory.
        OpUnsupported: impl="cuda" with tensors off the GPU or sizes beyond the kernel.
        ExtensionUnavailable: impl="cuda" and the extension is disabled or failed to build.
    """
    padding, up, eps = validate(OP, x, weight, padding, up, eps)
    _dispatch.check_tensor(OP, "style_map", style_map, ndim=4)
    if style_map.shape != x.shape:
        raise ValueError(f"{OP}: style_map must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(style_map.shape)}")
    if demod not in DEMODS:
        raise ValueError(f"{OP}: demod must be one of {DEMODS}, got {demod!r}")
    _dispatch.check_same_device(OP, x=x, weight=weight, style_map=style_map)
    which = _dispatch.resolve_impl(OP, impl, (x, weight, style_map), lambda: _cuda_unsupported(x, weight, dual=demod == "exact"))
    if which == "cuda" and impl == "auto":  # custom kernel or cuDNN reference, whichever measured faster
        key = conv_choice.shape_key(OP, x, weight, padding, up, f"demod={demod}", exact_fp32())
        which = conv_choice.choose(OP, key, x.device,
                                   lambda: _style_fused_conv2d_op(x, weight, style_map, padding, up, demod, eps),
                                   lambda: style_fused_conv2d_ref(x, weight, style_map, padding, up, demod, eps))
    if which == "ref":
        return style_fused_conv2d_ref(x, weight, style_map, padding, up, demod, eps)
    return _style_fused_conv2d_op(x, weight, style_map, padding, up, demod, eps)
