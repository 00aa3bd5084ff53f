"""Modulated convolution with optional demodulation (docs/ops.md §4).

    y[b,o] = d[b,o] · Σ_{i,ky,kx} W[o,i,ky,kx] · s[b,i] · x[b,i, window]
    d[b,o] = rsqrt(Σ_{i,ky,kx} (W[o,i,ky,kx] · s[b,i])² + eps)   (demodulate=True, else 1)

Geometry (x is (B,I,H,W), weight (O,I,kh,kw), styles (B,I)):
  up=1  stride-1 convolution with symmetric zero padding p:
        y[..,Y,X] uses x[.., Y-p+ky, X-p+kx];  H_out = H + 2p - kh + 1.
        padding=0 is InfinityGAN's padding-free ("valid") convolution.
  up=2  stride-2 transposed convolution (``F.conv_transpose2d(stride=2, padding=p)`` with the weight
        read as W[o,i], no flip): x[..,iy,ix] contributes to y[.., 2·iy+ky-p, 2·ix+kx-p];
        H_out = 2·(H-1) + kh - 2p.  With p=0 and k=3 this is the full 2H+1 output of InfinityGAN's
        texture synthesizer, which then crops 1 px per side and applies a valid [1,2,1] blur (not part
        of this op).  The demodulation is the same d[b,o] as for up=1 (StyleGAN2's convention).

Implementations:
  modulated_conv2d_ref(form="three_pass")  x·s, one shared-weight convolution, ·d  (cuDNN friendly)
  modulated_conv2d_ref(form="grouped")     per-sample weights W·s·d, grouped convolution (StyleGAN2)
  anyres_fast::modulated_conv2d            custom op: CUDA implicit GEMM (csrc/kernels/modulated_conv2d.cu),
                                           CPU kernel = three-pass math; explicit backward formulas.
"""
from __future__ import annotations

import collections
import weakref

import torch
import torch.nn.functional as F

from . import _arch, _dispatch, conv_choice

OP = "modulated_conv2d"
FORMS = ("three_pass", "grouped")


# ----------------------------------------------------------------------------------------------------
# Geometry shared with style_fused_conv2d.

def output_size(size: int, k: int, padding: int, up: int) -> int:
    """Output length along one axis (see the module docstring)."""
    if up == 1:
        return size + 2 * padding - k + 1
    return 2 * (size - 1) + k - 2 * padding


def conv(x: torch.Tensor, weight: torch.Tensor, padding: int, up: int) -> torch.Tensor:
    """The shared-weight (un-modulated) convolution of the op: conv2d for up=1, stride-2 transposed
    conv for up=2 (weight stays (O,I,kh,kw))."""
    if up == 1:
        return F.conv2d(x, weight, padding=padding)
    return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=padding)


def conv_adjoint_input(grad: torch.Tensor, weight: torch.Tensor, input_hw, padding: int, up: int) -> torch.Tensor:
    """Adjoint of `conv` w.r.t. its input: maps (B,O,Ho,Wo) back to (B,I,H,W)."""
    if up == 1:
        shape = (grad.shape[0], weight.shape[1], *input_hw)
        return torch.nn.grad.conv2d_input(shape, weight, grad, padding=padding)
    # conv_transpose2d(., V) is the adjoint of conv2d(., V), so its adjoint is conv2d(., V).
    return F.conv2d(grad, weight.transpose(0, 1), stride=2, padding=padding)


def conv_adjoint_weight(x: torch.Tensor, grad: torch.Tensor, weight_shape, padding: int, up: int) -> torch.Tensor:
    """Gradient of <grad, conv(x, W)> w.r.t. W (summed over the batch), shape (O,I,kh,kw)."""
    if up == 1:
        return torch.nn.grad.conv2d_weight(x, weight_shape, grad, padding=padding)
    o, i, kh, kw = weight_shape
    # <grad, conv_transpose2d(x, V)> = <conv2d(grad, V), x>: V's gradient is conv2d_weight(grad -> x).
    dv = torch.nn.grad.conv2d_weight(grad, (i, o, kh, kw), x, stride=2, padding=padding)
    return dv.transpose(0, 1)


def weight_energy(weight: torch.Tensor) -> torch.Tensor:
    """Q[o,i] = Σ_k W[o,i,k]², shape (O,I)."""
    return weight.square().sum(dim=(2, 3))


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float) -> torch.Tensor:
    """d[b,o] = rsqrt(Σ_i s[b,i]² Q[o,i] + eps), shape (B,O)."""
    return torch.rsqrt(styles.square() @ weight_energy(weight).t() + eps)


# ----------------------------------------------------------------------------------------------------
# Reference (pure PyTorch, differentiable by autograd).

def modulated_conv2d_ref(x, weight, styles, demodulate=True, padding=0, up=1, eps=1e-8, form="three_pass"):
    """Reference modulated convolution; autograd-differentiable, any device and float dtype.

    Does not validate its arguments (use modulated_conv2d(..., impl="ref") for that).

    Args:
        x: (B, I, H, W); weight: (O, I, kh, kw) in x's dtype; styles: (B, I), cast to x's dtype.
        demodulate: bool; padding: int >= 0; up: 1 or 2; eps: float > 0.
        form: "three_pass" (x·s, one shared-weight convolution, ·d) or "grouped" (per-sample
            weights W·s·d and a grouped convolution, StyleGAN2's formulation).
    Returns:
        (B, O, H_out, W_out) in x's dtype (sizes as modulated_conv2d).
    Raises:
        ValueError: unknown form.
    """
    if form == "three_pass":
        styles = styles.to(x.dtype)
        y = conv(x * styles[:, :, None, None], weight, padding, up)
        if demodulate:
            y = y * demod_coefficients(weight, styles, eps)[:, :, None, None]
        return y
    if form == "grouped":
        return _grouped(x, weight, styles.to(x.dtype), demodulate, padding, up, eps)
    raise ValueError(f"{OP}: form must be one of {FORMS}, got {form!r}")


def _grouped(x, weight, styles, demodulate, padding, up, eps):
    b, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    per_sample = weight[None] * styles[:, None, :, None, None]          # (B,O,I,kh,kw)
    if demodulate:
        per_sample = per_sample * torch.rsqrt(per_sample.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    xg = x.reshape(1, b * i, h, w)
    if up == 1:
        y = F.conv2d(xg, per_sample.reshape(b * o, i, kh, kw), padding=padding, groups=b)
    else:
        wt = per_sample.transpose(1, 2).reshape(b * i, o, kh, kw)
        y = F.conv_transpose2d(xg, wt, stride=2, padding=padding, groups=b)
    return y.reshape(b, o, y.shape[2], y.shape[3])


# ----------------------------------------------------------------------------------------------------
# Explicit forward/backward math (the custom ops' CPU kernels; _cuda_backward mirrors it).

def forward_math(x, weight, styles, demodulate, padding, up, eps):
    return modulated_conv2d_ref(x, weight, styles, demodulate, padding, up, eps, form="three_pass")


def backward_math(grad, x, weight, styles, demodulate, padding, up, eps, y=None):
    """Returns (dx, dweight, dstyles) by explicit formulas (no autograd).

    With z = conv(x·s, W) and y = z·d:
      gz = g·d;  gxs = conv_adjoint_input(gz);  dx = gxs·s;  ds_conv = Σ_pix gxs·x
      dW_conv = conv_adjoint_weight(x·s, gz)
      demod:  gd = Σ_pix g·z;  gE = -½ gd d³ with E = s² Qᵀ;
              ds += 2 s · (gE Q);  dW += 2 W · (gEᵀ s²)[:, :, None, None]
    y: optional forward output; with it gd = Σ_pix g·y/d instead of recomputing the convolution z."""
    styles = styles.to(x.dtype)
    xs = x * styles[:, :, None, None]
    if demodulate:
        d = demod_coefficients(weight, styles, eps)
        gz = grad * d[:, :, None, None]
    else:
        gz = grad
    gxs = conv_adjoint_input(gz, weight, x.shape[2:], padding, up)
    dx = gxs * styles[:, :, None, None]
    dstyles = (gxs * x).sum(dim=(2, 3))
    dweight = conv_adjoint_weight(xs, gz, weight.shape, padding, up)
    if demodulate:
        if y is not None:
            gd = (grad * y).sum(dim=(2, 3)) / d                           # y = z·d
        else:
            gd = (grad * conv(xs, weight, padding, up)).sum(dim=(2, 3))   # (B,O)
        ge = -0.5 * gd * d.pow(3)                                         # (B,O)
        q = weight_energy(weight)                                         # (O,I)
        dstyles = dstyles + 2.0 * styles * (ge @ q)
        dweight = dweight + 2.0 * weight * (ge.t() @ styles.square())[:, :, None, None]
    return dx, dweight, dstyles


# ----------------------------------------------------------------------------------------------------
# Custom ops (torch.library).

@torch.library.custom_op("anyres_fast::modulated_conv2d", mutates_args=())
def _modulated_conv2d_op(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                         padding: int, up: int, eps: float) -> torch.Tensor:
    if x.device.type == "cuda":
        return _cuda_forward(x, weight, styles, demodulate, padding, up, eps)
    return forward_math(x, weight, styles, demodulate, padding, up, eps).contiguous()


@_modulated_conv2d_op.register_fake
def _(x, weight, styles, demodulate, padding, up, eps):
    b, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    return x.new_empty((b, o, output_size(h, kh, padding, up), output_size(w, kw, padding, up)))


@torch.library.custom_op("anyres_fast::modulated_conv2d_backward", mutates_args=())
def _modulated_conv2d_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                  styles: torch.Tensor, y: torch.Tensor, demodulate: bool, padding: int,
                                  up: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if x.device.type == "cuda":
        return _cuda_backward(grad, x, weight, styles, demodulate, padding, up, eps, y)
    dx, dw, ds = backward_math(grad, x, weight, styles, demodulate, padding, up, eps, y=y)
    return dx.contiguous(), dw.contiguous(), ds.to(styles.dtype).contiguous()


@_modulated_conv2d_backward_op.register_fake
def _(grad, x, weight, styles, y, demodulate, padding, up, eps):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), styles.new_empty(styles.shape)


def _setup_context(ctx, inputs, output):
    x, weight, styles, demodulate, padding, up, eps = inputs
    ctx.save_for_backward(x, weight, styles, output)
    ctx.args = (demodulate, padding, up, eps)


def _backward(ctx, grad):
    x, weight, styles, y = ctx.saved_tensors
    dx, dw, ds = _modulated_conv2d_backward_op(grad.contiguous(), x, weight, styles, y, *ctx.args)
    return dx, dw, ds, None, None, None, None


_modulated_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------
# CUDA path (extension kernels; see csrc/kernels/modulated_conv2d.cu for the design).

# float32 inputs run on TF32 tensor cores like cuDNN's default; exact fp32 (FMA) when this flag is on or
# when the user turned TF32 off for cuDNN (torch.backends.cudnn.allow_tf32 = False).
EXACT_FP32 = {"enabled": False}


def exact_fp32() -> bool:
    return EXACT_FP32["enabled"] or not torch.backends.cudnn.allow_tf32


# GEMM-ready weights: (M, kh, kw, Cp) with the channels zero-padded to a multiple of CHANNEL_MULTIPLE
# (csrc/kernels/implicit_gemm_api.h), so the kernel reads 16-byte chunks. Made once per weight version and
# reused while the weight is unchanged: the cache holds a weak reference to the weight (a freed weight
# drops its entry, so a new tensor at the same address never hits) and the entry is valid only for the
# same data pointer, strides and version counter, which every in-place update of the tensor bumps
# (optimizer steps, copy_ under no_grad). Writes through `.data` bypass the version counter and are not
# seen; call clear_gemm_weight_cache() after those.
CHANNEL_MULTIPLE = 8
_GEMM_CACHE_SIZE = 256
_gemm_cache: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
GEMM_CACHE_STATS = {"hits": 0, "misses": 0}


def clear_gemm_weight_cache() -> None:
    """Drops every cached GEMM-ready weight (see gemm_weight)."""
    _gemm_cache.clear()


def _gemm_layout(weight, adjoint, square):
    w = weight.detach()
    if square:
        # W² in at least float32, rounded once to the weight's dtype
        w = w.to(torch.promote_types(w.dtype, torch.float32)).square().to(weight.dtype)
    w = w.permute(1, 2, 3, 0) if adjoint else w.permute(0, 2, 3, 1)  # (M, kh, kw, C)
    c = w.shape[3]
    out = w.new_zeros((*w.shape[:3], -(-c // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE))
    out[..., :c] = w
    return out


def gemm_weight(weight: torch.Tensor, adjoint: bool = False, square: bool = False) -> torch.Tensor:
    """The implicit-GEMM kernel's weight layout, cached per weight version.

    weight (O,I,kh,kw) -> (O,kh,kw,Ip) (adjoint=False) or (I,kh,kw,Op) (adjoint=True), of W or W²
    (square=True), channels zero-padded to a multiple of CHANNEL_MULTIPLE; same dtype and device."""
    key = (id(weight), adjoint, square)
    state = (weight.data_ptr(), weight._version, tuple(weight.shape), weight.stride(), weight.dtype, weight.device)
    entry = _gemm_cache.get(key)
    if entry is not None and entry[0]() is weight and entry[1] == state:
        _gemm_cache.move_to_end(key)
        GEMM_CACHE_STATS["hits"] += 1
        return entry[2]
    GEMM_CACHE_STATS["misses"] += 1
    with torch.no_grad():
        gw = _gemm_layout(weight, adjoint, square)
    def forget(ref, key=key):  # the weight was freed: its entry must not outlive it
        if _gemm_cache.get(key, (None,))[0] is ref:
            del _gemm_cache[key]

    _gemm_cache[key] = (weakref.ref(weight, forget), state, gw)
    _gemm_cache.move_to_end(key)
    while len(_gemm_cache) > _GEMM_CACHE_SIZE:
        _gemm_cache.popitem(last=False)
    return gw


def _demod_factors(ext, weight, s32, demodulate, eps):
    """d[b,o] in float32 (ones without demodulation), computed on the device by the extension."""
    shape = (s32.shape[0], weight.shape[0])
    if not demodulate:
        return torch.ones(shape, device=s32.device, dtype=torch.float32)
    d = torch.empty(shape, device=s32.device, dtype=torch.float32)
    with torch.cuda.device(s32.device):
        ext.modulated_conv2d_demod(weight, s32, d, float(eps), _dispatch.current_stream(s32.device))
    return d


def _cuda_forward(x, weight, styles, demodulate, padding, up, eps):
    ext = _dispatch.extension()
    x, weight = x.contiguous(), weight.contiguous()
    s32 = styles.float().contiguous()
    b, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    d = _demod_factors(ext, weight, s32, demodulate, eps)
    y = torch.empty((b, o, output_size(h, kh, padding, up), output_size(w, kw, padding, up)),
                    device=x.device, dtype=x.dtype)
    with torch.cuda.device(x.device):
        ext.modulated_conv2d_igemm(x, _dispatch.aligned(gemm_weight(weight), 16), s32, d, y, _mode_forward(up), padding,
                                   exact_fp32(), _dispatch.current_stream(x.device))
    return y


def _cuda_backward(grad, x, weight, styles, demodulate, padding, up, eps, y=None):
    """dx by the same implicit-GEMM kernel run as the adjoint convolution, modulated by d on its input
    side (gz = g·d, fused into the loads) and left unscaled on the output side (gxs); dx = gxs·s, and
    the dW/ds reductions use cuDNN/cuBLAS on activation-sized tensors (never a per-sample weight)."""
    ext = _dispatch.extension()
    grad, x, weight = grad.contiguous(), x.contiguous(), weight.contiguous()
    s32 = styles.float().contiguous()
    b, _, h, w = x.shape
    d = _demod_factors(ext, weight, s32, demodulate, eps)
    ones = torch.ones((b, weight.shape[1]), device=x.device, dtype=torch.float32)
    gxs = torch.empty_like(x)
    with torch.cuda.device(x.device):
        # The adjoint conv reads grad (B,O,..) modulated by d and writes (B,I,..) unscaled.
        ext.modulated_conv2d_igemm(grad, _dispatch.aligned(gemm_weight(weight, adjoint=True), 16), d, ones, gxs,
                                   _mode_adjoint(up),
                                   padding, exact_fp32(), _dispatch.current_stream(x.device))
    # Big tensors stay in the input dtype (cuDNN accumulates in fp32); the small (B,I), (B,O), (O,I)
    # reductions and the demodulation terms are in (at least) float32.
    ct = torch.promote_types(x.dtype, torch.float32)
    s_t = s32.to(x.dtype)[:, :, None, None]
    dx = gxs * s_t
    ds = (gxs * x).sum(dim=(2, 3), dtype=ct)
    gz = grad * d.to(x.dtype)[:, :, None, None]
    dw = conv_adjoint_weight(x * s_t, gz, weight.shape, padding, up).to(ct)
    if demodulate:
        s_c, d_c = s32.to(ct), d.to(ct)
        if y is not None:
            gd = (grad * y).sum(dim=(2, 3), dtype=ct) / d_c                   # y = z·d
        else:
            gd = (grad * conv(x * s_t, weight, padding, up)).sum(dim=(2, 3), dtype=ct)
        ge = -0.5 * gd * d_c.pow(3)
        q = weight_energy(weight.to(ct))
        ds = ds + 2.0 * s_c * (ge @ q)
        dw = dw + 2.0 * weight.to(ct) * (ge.t() @ s_c.square())[:, :, None, None]
    return dx.contiguous(), dw.to(weight.dtype).contiguous(), ds.to(styles.dtype).contiguous()


# Geometry modes of the kernel (csrc/kernels/implicit_gemm.cuh, ConvMode).
_CONV_S1, _CONV_S2, _TCONV_S1, _TCONV_S2 = 0, 1, 2, 3


def _mode_forward(up):
    return _CONV_S1 if up == 1 else _TCONV_S2


def _mode_adjoint(up):
    return _TCONV_S1 if up == 1 else _CONV_S2


def _cuda_unsupported(x, weight, dual: bool = False) -> str | None:
    """None when the kernels cover this configuration (shared by style_fused_conv2d; dual: the
    two-accumulator form of its exact demodulation), else why not: dtype, sizes, and the device's
    architecture and shared memory (anyres_fast/ops/_arch.py)."""
    if x.dtype not in _dispatch.CUDA_DTYPES:
        return f"dtype {x.dtype} (CUDA kernels take float32, float16, bfloat16)"
    reason = _arch.igemm_unsupported(x.device, x.dtype, dual)
    if reason is not None:
        return reason
    o, i, kh, kw = weight.shape
    b, _, h, w = x.shape
    cp = -(-max(o, i) // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
    # bound on the output pixels of either geometry (up=2 at most doubles the size plus the kernel)
    n_tiles = -(-(b * (2 * h + kh) * (2 * w + kw)) // 64)
    if (cp * kh * kw >= 2**31 - 64 or max(x.shape) >= 2**31 or b > 65535 or -(-cp // 32) > 65535
            or n_tiles * -(-max(o, i) // 64) >= 2**31):
        return f"sizes beyond the kernel's 32-bit GEMM dimensions (x {tuple(x.shape)}, weight {tuple(weight.shape)})"
    return None


# ----------------------------------------------------------------------------------------------------
# Public function.

def validate(op, x, weight, padding, up, eps):
    """Shared checks of x, weight, padding, up and eps; returns (padding, up, eps)."""
    _dispatch.check_tensor(op, "x", x, ndim=4)
    _dispatch.check_tensor(op, "weight", weight, ndim=4)
    padding = _dispatch.check_int(op, "padding", padding, minimum=0)
    up = _dispatch.check_int(op, "up", up, allowed=(1, 2))
    eps = _dispatch.check_finite(op, "eps", eps, positive=True)
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight dtype {weight.dtype} differs from x dtype {x.dtype}; cast one of them")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight has {weight.shape[1]} input channels but x has {x.shape[1]} "
                         f"(x {tuple(x.shape)}, weight {tuple(weight.shape)})")
    if min(weight.shape) == 0 or min(x.shape) == 0:
        raise ValueError(f"{op}: empty tensor (x {tuple(x.shape)}, weight {tuple(weight.shape)})")
    kh, kw = weight.shape[2:]
    hout, wout = output_size(x.shape[2], kh, padding, up), output_size(x.shape[3], kw, padding, up)
    if hout < 1 or wout < 1:
        raise ValueError(f"{op}: output would be empty ({hout}x{wout}) for input {x.shape[2]}x{x.shape[3]}, "
                         f"kernel {kh}x{kw}, padding {padding}, up {up}")
    if up == 1 and padding >= max(kh, kw):
        raise ValueError(f"{op}: padding {padding} must be smaller than the kernel size {max(kh, kw)}")
    # output (two output-sized temporaries on the reference) and two input-sized ones (x·s, padding)
    b, o = int(x.shape[0]), int(weight.shape[0])
    item = max(x.element_size(), 4)
    _dispatch.check_memory(op, (2 * b * o * hout * wout + 2 * x.numel()) * item, x.device)
    return padding, up, eps


def modulated_conv2d(x, weight, styles, demodulate=True, padding=0, up=1, eps=1e-8, impl="auto"):
    """Modulated (and by default demodulated) convolution, StyleGAN2's (docs/ops.md §4).

    y[b,o] = d[b,o] · Σ_{i,k} W[o,i,k] · s[b,i] · x[b,i,window], d = rsqrt(Σ_{i,k} (W·s)² + eps).

    Args:
        x: (B, I, H, W) float16, bfloat16, float32 or float64 tensor (float64: reference only).
        weight: (O, I, kh, kw), same dtype and device as x.
        styles: (B, I) per-sample input-channel scales, any float dtype (the reference computes in
            x's dtype, the CUDA kernel in float32).
        demodulate: bool; False leaves d = 1.
        padding: int >= 0; symmetric zero padding for up=1 (must be < the kernel size; 0 is the
            padding-free "valid" convolution), the conv_transpose2d padding for up=2.
        up: 1 (stride-1 convolution) or 2 (stride-2 transposed convolution, weight not flipped).
        eps: finite float > 0 inside the demodulation rsqrt.
        impl: "auto", "cuda" or "ref".

    Returns:
        (B, O, H_out, W_out) in x's dtype: up=1: H_out = H + 2·padding − kh + 1; up=2:
        H_out = 2·(H − 1) + kh − 2·padding (W_out alike). Differentiable in x, weight and styles.

    Raises:
        TypeError: non-tensor or unsupported dtype; weight dtype differs from x; padding/up not ints;
            demodulate not a bool; eps not a number.
        ValueError: wrong dimensions or shapes (channel counts, styles not (B, I)), empty tensors,
            padding < 0 or >= the kernel size (up=1), up not 1 or 2, eps not finite and > 0, an
            empty output, tensors on different devices.
        MemoryError: the estimated output and temporaries exceed the available memory.
        OpUnsupported: impl="cuda" with tensors off the GPU or sizes beyond the kernel.
        ExtensionUnavailable: impl="cuda" and the extension is disabled or failed to build.
    """
    padding, up, eps = validate(OP, x, weight, padding, up, eps)
    _dispatch.check_tensor(OP, "styles", styles, ndim=2)
    if styles.shape != (x.shape[0], x.shape[1]):
        raise ValueError(f"{OP}: styles must have shape (B, I) = {(x.shape[0], x.shape[1])}, "
                         f"got {tuple(styles.shape)}")
    if not isinstance(demodulate, bool):
        raise TypeError(f"{OP}: demodulate must be a bool, got {demodulate!r}")
    _dispatch.check_same_device(OP, x=x, weight=weight, styles=styles)
    which = _dispatch.resolve_impl(OP, impl, (x, weight, styles), lambda: _cuda_unsupported(x, weight))
    if which == "cuda" and impl == "auto":  # custom kernel or cuDNN three-pass, whichever measured faster
        key = conv_choice.shape_key(OP, x, weight, padding, up, f"demodulate={demodulate}", exact_fp32())
        which = conv_choice.choose(OP, key, x.device,
                                   lambda: _modulated_conv2d_op(x, weight, styles, demodulate, padding, up, eps),
                                   lambda: modulated_conv2d_ref(x, weight, styles, demodulate, padding, up, eps))
    if which == "ref":
        return modulated_conv2d_ref(x, weight, styles, demodulate, padding, up, eps)
    return _modulated_conv2d_op(x, weight, styles, demodulate, padding, up, eps)
