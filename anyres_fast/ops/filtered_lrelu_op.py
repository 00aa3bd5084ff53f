"""filtered_lrelu: bias, upsample + FIR, leaky ReLU, clamp, FIR + downsample, fused (docs/ops.md §2).

Same semantics and signature as StyleGAN3's op. Per channel c:
  u = x + b[c]
  v = up² · FIR_fu(pad(zero_insert(u, up), padding))      (the "upsampled buffer", Hc x Wc)
  a = clamp(gain · leaky_relu(v, slope), ±clamp)
  y = FIR_fd(a) sampled every `down`-th position from 0
FIR is a 'valid' convolution (correlation when flip_filter=True); 1-D filters are separable (f⊗f);
padding is int, (px, py) or (px0, px1, py0, py1) in upsampled pixels, negative values crop.

Paths:
  filtered_lrelu_ref       pure PyTorch composition (upfirdn2d_ref), autograd to any order.
  anyres_fast::filtered_lrelu            custom op -> (y, signs): CUDA fused kernel / CPU explicit math.
  anyres_fast::filtered_lrelu_backward   custom op -> dx from dy and the sign record.
  anyres_fast::filtered_lrelu_masked     forward with the activation frozen to the record: the adjoint of
                                         the backward, so the custom-op path has derivatives of any order.
The sign record keeps 2 bits per element of the part of the upsampled buffer that the down filter
reads (code 0: positive, 1: negative -> ×slope, 2: clamped -> 0), 4 elements per byte; layout in
csrc/kernels/filtered_lrelu.cuh. Backward = transposed down filter, × derivative mask from the record,
transposed up filter; on CUDA it is the forward kernel with up/down and filters swapped and flipped.
Gradients flow to x and b (not to the filters: use impl="ref" for that).
The CUDA kernel takes up, down in {1, 2, 4}, float32/float16/bfloat16, separable filters up to 64 taps
and 2-D filters up to 32x32; impl="auto" uses the reference for anything else.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import _dispatch
from .upfirdn2d_op import Padding, check_filter, filter_size, parse_padding, upfirdn2d_ref

OP = "filtered_lrelu"
CUDA_FACTORS = (1, 2, 4)        # up and down the CUDA kernel is specialised for
CUDA_MAX_TAPS_1D = 64           # separable filter taps (shared-memory filter buffer)
CUDA_MAX_TAPS_2D = 32           # per side of a full 2-D filter
INT32_MAX = 2**31 - 1
GRID_MAX = 65535
MAX_DIM = 2**28                 # kernel bound on sizes, paddings, sign offsets (kFilteredLReluMaxDim)
EMULATED_SMEM = 227 * 1024      # shared memory per CTA assumed off the GPU (sm_90's opt-in maximum)
THREADS = 256
RU, RD = 4, 4                   # register blocks of the up / down passes (kRU, kRD in the .cu)
# (up, down, fu code, fd code) with compile-time tap counts (code: K separable taps, -K a K x K filter)
SPECIALISED = {(2, 2, 12, 12), (4, 2, 24, 12), (2, 2, 12, -12), (4, 2, 24, -12), (2, 4, 12, 24),
               (2, 2, -12, 12), (2, 4, -12, 24)}
SIGN_NONE, SIGN_WRITE, SIGN_READ = 0, 1, 2   # kernel sign modes (match the .cuh)


@dataclass(frozen=True)
class Geometry:
    """Sizes of one call. buf_* = upsampled buffer after fu; sign_* = the part the down filter reads."""
    in_h: int
    in_w: int
    up: int
    down: int
    pads: tuple[int, int, int, int]   # px0, px1, py0, py1
    fu_h: int
    fu_w: int
    fd_h: int
    fd_w: int

    @property
    def buf_w(self) -> int:
        return self.in_w * self.up + self.pads[0] + self.pads[1] - (self.fu_w - 1)

    @property
    def buf_h(self) -> int:
        return self.in_h * self.up + self.pads[2] + self.pads[3] - (self.fu_h - 1)

    @property
    def out_w(self) -> int:
        return (self.buf_w - self.fd_w) // self.down + 1

    @property
    def out_h(self) -> int:
        return (self.buf_h - self.fd_h) // self.down + 1

    @property
    def sign_w(self) -> int:
        return (self.out_w - 1) * self.down + self.fd_w

    @property
    def sign_h(self) -> int:
        return (self.out_h - 1) * self.down + self.fd_h

    @property
    def sign_row_bytes(self) -> int:
        """Rows padded to 16 elements = 4-byte multiples."""
        return (self.sign_w + 15) // 16 * 4


def geometry(x_shape, fu, fd, up: int, down: int, pads) -> Geometry:
    """Sizes of one call (no tensor is read).

    Args:
        x_shape: (N, C, H, W).
        fu, fd: None, 1-D or 2-D filters (only their shapes are used).
        up, down: ints >= 1.
        pads: (px0, px1, py0, py1).
    Returns:
        Geometry with the upsampled-buffer, output and sign-record sizes.
    """
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    return Geometry(int(x_shape[2]), int(x_shape[3]), up, down, tuple(pads), fu_h, fu_w, fd_h, fd_w)


# ----------------------------------------------------------------------------------------------------
# The CUDA launcher's plan (mirrors tile_dims / smem_bytes / filtered_lrelu_plan in the .cu, checked
# against it by the emulation tests), so the support check predicts what the launcher would reject.

def _round4(v: int) -> int:
    return (v + 3) & ~3


def _tile_smem(up, down, fu_w, fu_h, fu_sep, fd_w, fd_h, fd_sep, sign_write, tw, th):
    aw, ah = (tw - 1) * down + fd_w, (th - 1) * down + fd_h
    bu = up * RU
    nbx, nby = (aw + up - 1 + bu - 1) // bu, (ah + up - 1 + bu - 1) // bu
    mw, mh = nbx * bu, nby * bu
    iw, ih = nbx * RU + (fu_w + up - 2) // up, nby * RU + (fu_h + up - 2) // up
    in_stride, act_stride, down_stride = iw | 1, mw | 1, tw + 1
    fu_count = _round4(fu_w if fu_sep else fu_w * fu_h)
    fd_count = _round4(fd_w if fd_sep else fd_w * fd_h)
    mid = _round4(max(ih * act_stride if fu_sep else 0, (ah if fd_sep else th) * down_stride))
    floats = fu_count + fd_count + _round4(ih * in_stride) + mid + mh * act_stride
    dims = dict(aw=aw, ah=ah, mw=mw, mh=mh, iw=iw, ih=ih)
    return floats * 4 + (mh * mw if sign_write else 0), dims


def _filter_code(w: int, h: int, sep: bool) -> int:
    return w if sep else (-w if w == h else 0)


def launch_plan(up, down, in_h, in_w, out_h, out_w, pad_x0, pad_y0, fu_w, fu_h, fu_sep, fd_w, fd_h, fd_sep,
                sign_write=False, sign_ofs=(0, 0), max_smem=EMULATED_SMEM) -> dict:
    """What filtered_lrelu_launch would do with these kernel parameters: dict with `reason` (None when it
    would launch, else why it would refuse), tile_w, tile_h, smem_bytes, grid_x, grid_y, threads, variant
    ("compile-time taps" or "runtime taps") and macs_per_output (multiply-adds the tile computes per
    output, borders of the register blocks included)."""
    plan = dict(reason=None, threads=THREADS, tile_w=0, tile_h=0, smem_bytes=0, grid_x=0, grid_y=0,
                macs_per_output=0.0)
    spec = (up, down, _filter_code(fu_w, fu_h, fu_sep), _filter_code(fd_w, fd_h, fd_sep)) in SPECIALISED
    plan["variant"] = "compile-time taps" if spec else "runtime taps"
    if max(in_h, in_w, out_h, out_w) > MAX_DIM:
        plan["reason"] = f"a side longer than {MAX_DIM} (the kernel's 32-bit coordinate range)"
    elif max(abs(pad_x0), abs(pad_y0), abs(sign_ofs[0]), abs(sign_ofs[1])) > MAX_DIM:
        plan["reason"] = f"a padding or offset beyond +-{MAX_DIM} (the kernel's 32-bit coordinate range)"
    if plan["reason"]:
        return plan
    tw = th = 16 if down == 4 else 32
    min_w = max(RD, 16 // down)
    args = (up, down, fu_w, fu_h, fu_sep, fd_w, fd_h, fd_sep, sign_write)
    smem, dims = _tile_smem(*args, tw, th)
    while smem > max_smem and (th > RD or tw > min_w):
        if th > RD:
            th //= 2
        else:
            tw //= 2
        smem, dims = _tile_smem(*args, tw, th)
    grid_x, grid_y = -(-out_w // tw), -(-out_h // th)
    plan.update(tile_w=tw, tile_h=th, smem_bytes=smem, grid_x=grid_x, grid_y=grid_y)
    if smem > max_smem:
        plan["reason"] = (f"the smallest tile ({th}x{tw} outputs) needs {smem} bytes of shared memory, "
                          f"the device offers {max_smem}")
    elif grid_y > GRID_MAX or grid_x > INT32_MAX:
        plan["reason"] = (f"{out_h}x{out_w} outputs need {grid_y} tile rows ({th} outputs each); a launch "
                          f"takes at most {GRID_MAX}")
    # multiply-adds of one tile (every computed element of every pass), per output
    a = dims
    if fu_sep:
        up_macs = (a["ih"] * a["mw"] + a["mh"] * a["mw"]) * fu_w / up
    else:
        up_macs = a["mh"] * a["mw"] * fu_w * fu_h / up ** 2
    down_macs = (a["ah"] * tw + th * tw) * fd_w if fd_sep else th * tw * fd_w * fd_h
    plan["macs_per_output"] = (up_macs + down_macs) / (tw * th)
    return plan


def cuda_launch_plan(geo: Geometry, fu_sep: bool, fd_sep: bool, sign_write: bool = False,
                     max_smem: int = EMULATED_SMEM) -> dict:
    """launch_plan of the forward launch of `geo` (see _forward_cuda)."""
    return launch_plan(geo.up, geo.down, geo.in_h, geo.in_w, geo.out_h, geo.out_w, geo.pads[0], geo.pads[2],
                       geo.fu_w, geo.fu_h, fu_sep, geo.fd_w, geo.fd_h, fd_sep, sign_write, (0, 0), max_smem)


def cuda_backward_plan(geo: Geometry, fu_sep: bool, fd_sep: bool, max_smem: int = EMULATED_SMEM) -> dict:
    """launch_plan of the backward launch of `geo` (see _backward_cuda: up<->down, filters swapped)."""
    q0x, q0y = geo.fu_w - 1 - geo.pads[0], geo.fu_h - 1 - geo.pads[2]
    return launch_plan(geo.down, geo.up, geo.out_h, geo.out_w, geo.in_h, geo.in_w, geo.fd_w - 1 + q0x,
                       geo.fd_h - 1 + q0y, geo.fd_w, geo.fd_h, fd_sep, geo.fu_w, geo.fu_h, fu_sep, False,
                       (-q0x, -q0y), max_smem)


def _device_smem(device) -> int:
    """Shared memory per CTA the launcher will see (cudaDevAttrMaxSharedMemoryPerBlockOptin)."""
    if device is not None and getattr(device, "type", None) == "cuda":
        props = torch.cuda.get_device_properties(device)
        value = getattr(props, "shared_memory_per_block_optin", None)
        if value:
            return int(value)
    return EMULATED_SMEM


# ----------------------------------------------------------------------------------------------------
# Reference

def filtered_lrelu_ref(x: torch.Tensor, fu: Optional[torch.Tensor] = None, fd: Optional[torch.Tensor] = None,
                       b: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: Padding = 0,
                       gain: float = math.sqrt(2), slope: float = 0.2, clamp: Optional[float] = None,
                       flip_filter: bool = False) -> torch.Tensor:
    """The definition of filtered_lrelu as a pure-PyTorch composition of upfirdn2d_ref steps.

    Materialises the upsampled buffer; differentiable to any order in x, b and the filters; runs on
    any device and float dtype (float64 too). Does not validate its arguments: use
    filtered_lrelu(..., impl="ref") for checked input.

    Args:
        x: (N, C, H, W) float tensor.
        fu, fd: None, 1-D or 2-D float filters (see filtered_lrelu).
        b: (C,) bias or None.
        up, down: ints >= 1.
        padding: int, (px, py) or (px0, px1, py0, py1).
        gain, slope: floats.
        clamp: None or float >= 0.
        flip_filter: bool.

    Returns:
        (N, C, H_out, W_out) tensor in x's dtype (sizes as in filtered_lrelu).

    Raises:
        TypeError, ValueError: malformed padding (other errors are those of the torch functions used).
    """
    pads = parse_padding(OP, padding)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    v = upfirdn2d_ref(x, fu, up=up, padding=pads, flip_filter=flip_filter, gain=up**2)
    a = F.leaky_relu(v, slope) * gain
    if clamp is not None:
        a = a.clamp(-clamp, clamp)
    return upfirdn2d_ref(a, fd, down=down, flip_filter=flip_filter)


# ----------------------------------------------------------------------------------------------------
# Sign record (2 bits per element, 4 per byte, element k of a byte at bits 2k..2k+1)

def pack_signs(codes: torch.Tensor, row_bytes: int) -> torch.Tensor:
    """Packs sign-record codes, 4 per byte (element k of a byte at bits 2k..2k+1).

    Args:
        codes: uint8 (N, C, Hs, Ws) with values in {0: positive, 1: negative, 2: clamped}.
        row_bytes: bytes per packed row, >= ceil(Ws / 4).
    Returns:
        uint8 (N, C, Hs, row_bytes).
    """
    n, c, h, w = codes.shape
    codes = F.pad(codes, [0, row_bytes * 4 - w]).reshape(n, c, h, row_bytes, 4).to(torch.int32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=codes.device)
    return (codes << shifts).sum(-1).to(torch.uint8)


def unpack_signs(signs: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of pack_signs.

    Args:
        signs: packed uint8 (N, C, Hs, row_bytes).
        width: number of elements per row to return (<= 4·row_bytes).
    Returns:
        uint8 codes (N, C, Hs, width) in {0, 1, 2}.
    """
    n, c, h, nb = signs.shape
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=signs.device)
    codes = (signs.to(torch.int32)[..., None] >> shifts) & 3
    return codes.reshape(n, c, h, nb * 4)[..., :width].to(torch.uint8)


# ----------------------------------------------------------------------------------------------------
# CPU kernels of the custom ops: explicit formulas from the reference math (no autograd inside)

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _forward_explicit(x, fu, fd, b, up, down, pads, gain, slope, clamp, flip_filter, write_signs):
    geo = geometry(x.shape, fu, fd, up, down, pads)
    xc = x.to(_compute_dtype(x.dtype))
    if b is not None:
        xc = xc + b.to(xc.dtype).reshape(1, -1, 1, 1)
    v = upfirdn2d_ref(xc, fu, up=up, padding=pads, flip_filter=flip_filter, gain=up**2)
    positive = v > 0
    a = torch.where(positive, v, v * slope) * gain
    clamped = a.abs() > clamp if clamp is not None else torch.zeros_like(positive)
    if clamp is not None:
        a = a.clamp(-clamp, clamp)
    y = upfirdn2d_ref(a, fd, down=down, flip_filter=flip_filter).to(x.dtype).contiguous()
    if not write_signs:
        return y, x.new_empty((0,), dtype=torch.uint8)
    codes = torch.where(clamped, 2, torch.where(positive, 0, 1)).to(torch.uint8)
    codes = codes[:, :, :geo.sign_h, :geo.sign_w]
    return y, pack_signs(codes, geo.sign_row_bytes)


def _backward_explicit(dy, signs, fu, fd, in_h, in_w, up, down, pads, gain, slope, flip_filter):
    """dx = up² · FIRᵀ_fu( mask ⊙ FIRᵀ_fd(dy) ), with mask = gain · {1, slope, 0} from the record."""
    geo = Geometry(in_h, in_w, up, down, tuple(pads), *_hw(fu), *_hw(fd))
    px0, px1, py0, py1 = pads
    dyc = dy.to(_compute_dtype(dy.dtype))
    # transposed decimation + fd: zero-insert dy by `down`, full convolution with the flipped filter
    da = upfirdn2d_ref(dyc, fd, up=down, flip_filter=not flip_filter,
                       padding=(geo.fd_w - 1, geo.fd_w - down, geo.fd_h - 1, geo.fd_h - down))
    dv = F.pad(da * _mask(signs, geo, gain, slope, da.dtype), [0, geo.buf_w - geo.sign_w, 0, geo.buf_h - geo.sign_h])
    # transposed fu + upsampling: correlate with the flipped filter and keep every up-th sample
    dx = upfirdn2d_ref(dv, fu, down=up, flip_filter=not flip_filter, gain=up**2,
                       padding=(geo.fu_w - 1 - px0, geo.fu_w - up - px1, geo.fu_h - 1 - py0, geo.fu_h - up - py1))
    return dx.to(dy.dtype).contiguous()


def _masked_explicit(x, signs, fu, fd, up, down, pads, gain, slope, flip_filter):
    """The forward with the activation replaced by the recorded derivative mask (a linear map of x):
    the adjoint of _backward_explicit, used for double backward."""
    geo = geometry(x.shape, fu, fd, up, down, pads)
    v = upfirdn2d_ref(x.to(_compute_dtype(x.dtype)), fu, up=up, padding=pads, flip_filter=flip_filter, gain=up**2)
    a = v[:, :, :geo.sign_h, :geo.sign_w] * _mask(signs, geo, gain, slope, v.dtype)
    return upfirdn2d_ref(a, fd, down=down, flip_filter=flip_filter).to(x.dtype).contiguous()


def _mask(signs, geo: Geometry, gain, slope, dtype) -> torch.Tensor:
    """Derivative of the activation per sign-region element: gain * {1, slope, 0}[code]."""
    codes = unpack_signs(signs, geo.sign_w)
    # a lookup table in the compute dtype (python scalars in torch.where would round to float32)
    table = torch.tensor([gain, gain * slope, 0.0, 0.0], dtype=dtype, device=signs.device)
    return table[codes.long()]


def _hw(f: Optional[torch.Tensor]) -> tuple[int, int]:
    w, h = filter_size(f)
    return h, w


# ----------------------------------------------------------------------------------------------------
# CUDA launch helpers

def _kernel_filter(f: Optional[torch.Tensor], flip_filter: bool, device) -> tuple[torch.Tensor, bool]:
    """(float32 contiguous taps, reverse): the kernel correlates, reading the taps reversed (= flipped in
    every axis) when reverse is set, i.e. for a convolution (flip_filter=False)."""
    if f is None:
        return torch.ones(1, 1, dtype=torch.float32, device=device), False
    return f.to(device=device, dtype=torch.float32).contiguous(), not flip_filter


def _launch(x, b, fu_k, fd_k, out, signs, up, down, p0x, p0y, gain, slope, clamp, mode, sign_w, sx, sy):
    (fu_c, fu_rev), (fd_c, fd_rev) = fu_k, fd_k
    ext = _dispatch.extension()
    bias = b.to(x.dtype).contiguous() if b is not None else x.new_empty((0,))
    # (CPU tensors only reach here in the tests, which plug in a host emulation of the kernel)
    stream = _dispatch.current_stream(x.device) if x.is_cuda else 0
    # the write mode stores the record as 32-bit words: a view at an unaligned offset gets a temporary
    record = signs if mode != SIGN_WRITE or signs.data_ptr() % 4 == 0 else torch.empty_like(signs)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        ext.filtered_lrelu(x, bias, fu_c, fd_c, fu_rev, fd_rev, out, record, up, down, p0x, p0y, float(gain),
                           float(slope), float(clamp), mode, sign_w, sx, sy, stream)
    if record is not signs:
        signs.copy_(record)


def _forward_cuda(x, fu, fd, b, up, down, pads, gain, slope, clamp, flip_filter, write_signs):
    geo = geometry(x.shape, fu, fd, up, down, pads)
    n, c = x.shape[:2]
    y = torch.empty((n, c, geo.out_h, geo.out_w), dtype=x.dtype, device=x.device)
    if write_signs:
        # the kernel writes every word of the record (padding included): no zero fill needed
        signs = torch.empty((n, c, geo.sign_h, geo.sign_row_bytes), dtype=torch.uint8, device=x.device)
    else:
        signs = torch.empty((0,), dtype=torch.uint8, device=x.device)
    _launch(x, b, _kernel_filter(fu, flip_filter, x.device), _kernel_filter(fd, flip_filter, x.device),
            y, signs, up, down, pads[0], pads[2], gain, slope, math.inf if clamp is None else clamp,
            SIGN_WRITE if write_signs else SIGN_NONE, geo.sign_w, 0, 0)
    return y, signs


def _backward_cuda(dy, signs, fu, fd, in_h, in_w, up, down, pads, gain, slope, flip_filter):
    """The forward kernel run on dy with up<->down, fu<->fd, flipped taps, reading the sign record.
    Its buffer index i maps to the forward buffer position i - q0 with q0 = fu_w-1-px0 (same for y)."""
    geo = Geometry(in_h, in_w, up, down, tuple(pads), *_hw(fu), *_hw(fd))
    q0x, q0y = geo.fu_w - 1 - pads[0], geo.fu_h - 1 - pads[2]
    n, c = dy.shape[:2]
    dx = torch.empty((n, c, in_h, in_w), dtype=dy.dtype, device=dy.device)
    _launch(dy, None, _kernel_filter(fd, not flip_filter, dy.device),
            _kernel_filter(fu, not flip_filter, dy.device), dx, signs, down, up,
            geo.fd_w - 1 + q0x, geo.fd_h - 1 + q0y, gain * up**2 / down**2, slope, math.inf, SIGN_READ,
            geo.sign_w, -q0x, -q0y)
    return dx


def _masked_cuda(x, signs, fu, fd, up, down, pads, gain, slope, flip_filter):
    geo = geometry(x.shape, fu, fd, up, down, pads)
    y = torch.empty((x.shape[0], x.shape[1], geo.out_h, geo.out_w), dtype=x.dtype, device=x.device)
    _launch(x, None, _kernel_filter(fu, flip_filter, x.device), _kernel_filter(fd, flip_filter, x.device),
            y, signs, up, down, pads[0], pads[2], gain, slope, math.inf, SIGN_READ, geo.sign_w, 0, 0)
    return y


# ----------------------------------------------------------------------------------------------------
# torch.library registration

@torch.library.custom_op("anyres_fast::filtered_lrelu", mutates_args=())
def _filtered_lrelu_op(x: torch.Tensor, fu: torch.Tensor, fd: torch.Tensor, b: Optional[torch.Tensor],
                       up: int, down: int, padding: list[int], gain: float, slope: float,
                       clamp: Optional[float], flip_filter: bool, write_signs: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_explicit(x, fu, fd, b, up, down, tuple(padding), gain, slope, clamp, flip_filter, write_signs)


@_filtered_lrelu_op.register_kernel("cuda")
def _(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, write_signs):
    return _forward_cuda(x, fu, fd, b, up, down, tuple(padding), gain, slope, clamp, flip_filter, write_signs)


@_filtered_lrelu_op.register_fake
def _(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, write_signs):
    geo = geometry(x.shape, fu, fd, up, down, padding)
    y = x.new_empty((x.shape[0], x.shape[1], geo.out_h, geo.out_w))
    if write_signs:
        return y, x.new_empty((x.shape[0], x.shape[1], geo.sign_h, geo.sign_row_bytes), dtype=torch.uint8)
    return y, x.new_empty((0,), dtype=torch.uint8)


@torch.library.custom_op("anyres_fast::filtered_lrelu_backward", mutates_args=())
def _filtered_lrelu_backward_op(dy: torch.Tensor, signs: torch.Tensor, fu: torch.Tensor, fd: torch.Tensor,
                                in_h: int, in_w: int, up: int, down: int, padding: list[int], gain: float,
                                slope: float, flip_filter: bool) -> torch.Tensor:
    return _backward_explicit(dy, signs, fu, fd, in_h, in_w, up, down, tuple(padding), gain, slope, flip_filter)


@_filtered_lrelu_backward_op.register_kernel("cuda")
def _(dy, signs, fu, fd, in_h, in_w, up, down, padding, gain, slope, flip_filter):
    return _backward_cuda(dy, signs, fu, fd, in_h, in_w, up, down, tuple(padding), gain, slope, flip_filter)


@_filtered_lrelu_backward_op.register_fake
def _(dy, signs, fu, fd, in_h, in_w, up, down, padding, gain, slope, flip_filter):
    return dy.new_empty((dy.shape[0], dy.shape[1], in_h, in_w))


@torch.library.custom_op("anyres_fast::filtered_lrelu_masked", mutates_args=())
def _filtered_lrelu_masked_op(x: torch.Tensor, signs: torch.Tensor, fu: torch.Tensor, fd: torch.Tensor, up: int,
                              down: int, padding: list[int], gain: float, slope: float,
                              flip_filter: bool) -> torch.Tensor:
    """Forward with the activation frozen to the recorded mask; the adjoint of filtered_lrelu_backward."""
    return _masked_explicit(x, signs, fu, fd, up, down, tuple(padding), gain, slope, flip_filter)


@_filtered_lrelu_masked_op.register_kernel("cuda")
def _(x, signs, fu, fd, up, down, padding, gain, slope, flip_filter):
    return _masked_cuda(x, signs, fu, fd, up, down, tuple(padding), gain, slope, flip_filter)


@_filtered_lrelu_masked_op.register_fake
def _(x, signs, fu, fd, up, down, padding, gain, slope, flip_filter):
    geo = geometry(x.shape, fu, fd, up, down, padding)
    return x.new_empty((x.shape[0], x.shape[1], geo.out_h, geo.out_w))


# filtered_lrelu_backward and filtered_lrelu_masked are linear in their tensor input and adjoint to each
# other (same sign record), so each one's gradient is the other: derivatives of any order.
def _setup_backward_context(ctx, inputs, output):
    dy, signs, fu, fd, in_h, in_w, up, down, padding, gain, slope, flip_filter = inputs
    ctx.save_for_backward(signs, fu, fd)
    ctx.params = (up, down, list(padding), gain, slope, flip_filter)


def _backward_of_backward(ctx, g):
    signs, fu, fd = ctx.saved_tensors
    return (torch.ops.anyres_fast.filtered_lrelu_masked(g, signs, fu, fd, *ctx.params),) + (None,) * 11


def _setup_masked_context(ctx, inputs, output):
    x, signs, fu, fd, up, down, padding, gain, slope, flip_filter = inputs
    ctx.save_for_backward(signs, fu, fd)
    ctx.params = (x.shape[2], x.shape[3], up, down, list(padding), gain, slope, flip_filter)


def _backward_of_masked(ctx, g):
    signs, fu, fd = ctx.saved_tensors
    return (torch.ops.anyres_fast.filtered_lrelu_backward(g, signs, fu, fd, *ctx.params),) + (None,) * 9


_filtered_lrelu_backward_op.register_autograd(_backward_of_backward, setup_context=_setup_backward_context)
_filtered_lrelu_masked_op.register_autograd(_backward_of_masked, setup_context=_setup_masked_context)


def _setup_context(ctx, inputs, output):
    x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, write_signs = inputs
    _, signs = output
    ctx.save_for_backward(fu, fd, signs)
    ctx.params = (x.shape[2], x.shape[3], up, down, list(padding), gain, slope, flip_filter)
    ctx.write_signs = write_signs
    ctx.b_dtype = None if b is None else b.dtype


def _backward(ctx, dy, _dsigns):
    fu, fd, signs = ctx.saved_tensors
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise RuntimeError(f"{OP}: gradients with respect to the filters fu/fd are not supported; "
                           f"use impl='ref' for that")
    if not ctx.write_signs:
        raise RuntimeError(f"{OP}: backward needs the sign record; call the op with write_signs=True "
                           f"(the public filtered_lrelu does so when x or b requires grad)")
    dx = torch.ops.anyres_fast.filtered_lrelu_backward(dy.contiguous(), signs, fu, fd, *ctx.params)
    db = None
    if ctx.b_dtype is not None and ctx.needs_input_grad[3]:
        db = dx.sum(dim=(0, 2, 3), dtype=_compute_dtype(dx.dtype)).to(ctx.b_dtype)
    return (dx if ctx.needs_input_grad[0] else None, None, None, db) + (None,) * 8


_filtered_lrelu_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------
# Public function

def _cuda_unsupported(x, fu, fd, up, down, geo: Geometry) -> Optional[str]:
    if x.dtype not in _dispatch.CUDA_DTYPES:
        return f"dtype {x.dtype} (the kernel handles float32, float16, bfloat16)"
    if up not in CUDA_FACTORS or down not in CUDA_FACTORS:
        return f"up={up}, down={down} (the kernel handles {CUDA_FACTORS})"
    for name, f in (("fu", fu), ("fd", fd)):
        if f is None:
            continue
        if f.ndim == 1 and f.shape[0] > CUDA_MAX_TAPS_1D:
            return f"{name} has {f.shape[0]} taps (at most {CUDA_MAX_TAPS_1D} for separable filters)"
        if f.ndim == 2 and max(f.shape) > CUDA_MAX_TAPS_2D:
            return f"{name} is {tuple(f.shape)} (at most {CUDA_MAX_TAPS_2D}x{CUDA_MAX_TAPS_2D} for 2-D filters)"
    n, c = x.shape[:2]
    if n * c > INT32_MAX or max(geo.buf_h, geo.buf_w, x.shape[2], x.shape[3]) > INT32_MAX // 8:
        return "tensor dimensions too large for the kernel's 32-bit plane indexing"
    # what the launcher itself would reject (tile rows beyond the grid limit, shared memory, coordinate
    # range), for the forward and for the backward launch
    fu_sep = fu is not None and fu.ndim == 1
    fd_sep = fd is not None and fd.ndim == 1
    smem = _device_smem(x.device)
    for what, plan in (("forward", cuda_launch_plan(geo, fu_sep, fd_sep, True, smem)),
                       ("backward", cuda_backward_plan(geo, fu_sep, fd_sep, smem))):
        if plan["reason"]:
            return f"the {what} launch: {plan['reason']}"
    return None


def _memory_estimate(x, geo: Geometry, path: str) -> int:
    """Bytes of the output plus, on the reference path, the padded upsampled buffers it materialises
    (about three alive at once), or on the CUDA path the sign record (shapes only, never values)."""
    planes = int(x.shape[0]) * int(x.shape[1])
    out = planes * geo.out_h * geo.out_w * x.element_size()
    if path == "cuda":
        return out + planes * geo.sign_h * geo.sign_row_bytes
    padded = max(geo.buf_h + geo.fu_h - 1, 1) * max(geo.buf_w + geo.fu_w - 1, 1)
    return out + 3 * planes * padded * max(x.element_size(), 4)


def filtered_lrelu(x: torch.Tensor, fu: Optional[torch.Tensor] = None, fd: Optional[torch.Tensor] = None,
                   b: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: Padding = 0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: Optional[float] = None,
                   flip_filter: bool = False, impl: str = "auto") -> torch.Tensor:
    """Fused bias + upsample + FIR + leaky ReLU + clamp + FIR + downsample (StyleGAN3's op).

    Per channel: v = up² · FIR_fu(pad(zero_insert(x + b, up), padding)), a = clamp(gain · lrelu(v, slope),
    ±clamp), y = FIR_fd(a) kept every `down`-th sample. Semantics in docs/ops.md §2.

    Args:
        x: (N, C, H, W) float16, bfloat16, float32 or float64 tensor (float64: reference path only).
        fu: up filter: None (identity), 1-D (taps,) separable, or 2-D (fh, fw); any float dtype, on
            x's device (see setup_filter).
        fd: down filter, same forms as fu.
        b: (C,) bias added before upsampling, or None.
        up: upsampling factor, int >= 1 (zero insertion).
        down: downsampling factor, int >= 1.
        padding: int p, (px, py) or (px0, px1, py0, py1), in upsampled pixels; negative values crop.
        gain: finite float multiplying the activation (default sqrt(2)).
        slope: finite float, the leaky ReLU's negative slope (default 0.2; 1 makes it linear).
        clamp: None or a finite float >= 0; the activation is clamped to [-clamp, clamp].
        flip_filter: bool; True correlates with the filters instead of convolving.
        impl: "auto" (CUDA kernel when available and covered, else reference), "cuda" or "ref".

    Returns:
        (N, C, H_out, W_out) tensor in x's dtype, with
        W_out = (W·up + px0 + px1 − (fu_w − 1) − fd_w) // down + 1 (H_out alike). Differentiable in x
        and b (to any order); on the CUDA path not in the filters.

    Raises:
        TypeError: x/b/filters not tensors or of an unsupported dtype; up/down/padding not ints;
            flip_filter not a bool; gain/slope/clamp not numbers.
        ValueError: wrong dimensions, b of the wrong length, tensors on different devices, non-finite
            gain/slope/clamp, clamp < 0, up/down < 1, empty x, or filters larger than the padded,
            upsampled input.
        MemoryError: the estimated output and intermediates exceed the available memory.
        OpUnsupported: impl="cuda" and the tensors are not on a GPU or the kernel does not cover the
            configuration (the message says why).
        ExtensionUnavailable: impl="cuda" and the CUDA extension is disabled or failed to build.
    """
    _dispatch.check_tensor(OP, "x", x, ndim=4)
    check_filter(OP, "fu", fu)
    check_filter(OP, "fd", fd)
    _dispatch.check_tensor(OP, "b", b, ndim=1, allow_none=True)
    _dispatch.check_same_device(OP, x=x, fu=fu, fd=fd, b=b)
    if b is not None and b.shape[0] != x.shape[1]:
        raise ValueError(f"{OP}: b has {b.shape[0]} elements but x has {x.shape[1]} channels")
    up = _dispatch.check_int(OP, "up", up, minimum=1)
    down = _dispatch.check_int(OP, "down", down, minimum=1)
    pads = parse_padding(OP, padding)
    gain = _dispatch.check_finite(OP, "gain", gain)
    slope = _dispatch.check_finite(OP, "slope", slope)
    clamp = _dispatch.check_finite(OP, "clamp", clamp, allow_none=True)
    if clamp is not None and clamp < 0:
        raise ValueError(f"{OP}: clamp must be >= 0 or None, got {clamp}")
    if not isinstance(flip_filter, bool):
        raise TypeError(f"{OP}: flip_filter must be a bool, got {flip_filter!r}")
    if x.numel() == 0:
        raise ValueError(f"{OP}: x must not be empty, got shape {tuple(x.shape)}")
    geo = geometry(x.shape, fu, fd, up, down, pads)
    if geo.buf_w < geo.fd_w or geo.buf_h < geo.fd_h or geo.buf_w < 1 or geo.buf_h < 1:
        raise ValueError(
            f"{OP}: filters too large for the input: x {x.shape[2]}x{x.shape[3]} upsampled by {up} with "
            f"padding {pads} and fu {geo.fu_h}x{geo.fu_w} leaves {geo.buf_h}x{geo.buf_w}, which the down "
            f"filter fd {geo.fd_h}x{geo.fd_w} does not fit")

    path = _dispatch.resolve_impl(OP, impl, [x, fu, fd, b],
                                  lambda: _cuda_unsupported(x, fu, fd, up, down, geo))
    _dispatch.check_memory(OP, _memory_estimate(x, geo, path), x.device)
    if path == "ref":
        return filtered_lrelu_ref(x, fu, fd, b, up, down, pads, gain, slope, clamp, flip_filter)
    write_signs = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    fu_t = fu if fu is not None else torch.ones(1, 1, dtype=torch.float32, device=x.device)
    fd_t = fd if fd is not None else torch.ones(1, 1, dtype=torch.float32, device=x.device)
    y, _ = torch.ops.anyres_fast.filtered_lrelu(x, fu_t, fd_t, b, up, down, list(pads), gain, slope, clamp,
                                                flip_filter, write_signs)
    return y
