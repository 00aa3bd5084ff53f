"""Host emulation of filtered_lrelu's CUDA kernel, shared by the emulation tests: the ctypes harness,
the stand-in for the extension module, the g++ build and the check of one configuration against the
reference (docs/build.md §5)."""
import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import torch

from helpers import missing_toolchain
from helpers import rel_error

from anyres_fast.ops import filtered_lrelu_ref

from anyres_fast.ops import filtered_lrelu_op as fl

F64 = torch.float64

HARNESS = r'''
#include "kernels/filtered_lrelu.cu"
extern "C" int emu_filtered_lrelu(const float* x, const int64_t* xs, const int* dims, const float* bias,
                                  const float* fu, const int* fud, const float* fd, const int* fdd, float* y,
                                  const int* od, const int* ints, const float* floats, uint8_t* signs,
                                  const int* sd) {
  anyres_fast::FilteredLReluParams p;
  p.x = x; p.x_stride_n = xs[0]; p.x_stride_c = xs[1]; p.x_stride_h = xs[2]; p.x_stride_w = xs[3];
  p.N = dims[0]; p.C = dims[1]; p.in_h = dims[2]; p.in_w = dims[3];
  p.bias = bias;
  p.fu = fu; p.fu_w = fud[0]; p.fu_h = fud[1]; p.fu_separable = fud[2] != 0; p.fu_reverse = fud[3] != 0;
  p.fd = fd; p.fd_w = fdd[0]; p.fd_h = fdd[1]; p.fd_separable = fdd[2] != 0; p.fd_reverse = fdd[3] != 0;
  p.y = y; p.out_h = od[0]; p.out_w = od[1];
  p.up = ints[0]; p.down = ints[1]; p.pad_x0 = ints[2]; p.pad_y0 = ints[3]; p.sign_mode = ints[4];
  p.gain = floats[0]; p.slope = floats[1]; p.clamp = floats[2];
  p.signs = signs; p.sign_h = sd[0]; p.sign_w = sd[1]; p.sign_row_bytes = sd[2];
  p.sign_ofs_x = sd[3]; p.sign_ofs_y = sd[4];
  return anyres_fast::filtered_lrelu_launch(p, anyres_fast::DType::f32, nullptr);
}
extern "C" long emu_misaligned_stores() { return anyres_fast::emulation::misaligned_stores; }
// The launcher's plan for kernel parameters v (see test_launch_plan_matches_the_launcher).
extern "C" int emu_plan(const int* v, int max_smem, int64_t* out) {
  static float dummy[4];
  static uint8_t sign_dummy[4];
  anyres_fast::FilteredLReluParams p;
  p.x = dummy; p.y = dummy; p.fu = dummy; p.fd = dummy; p.N = 1; p.C = 1;
  p.up = v[0]; p.down = v[1]; p.in_h = v[2]; p.in_w = v[3]; p.out_h = v[4]; p.out_w = v[5];
  p.pad_x0 = v[6]; p.pad_y0 = v[7];
  p.fu_w = v[8]; p.fu_h = v[9]; p.fu_separable = v[10] != 0; p.fd_w = v[11]; p.fd_h = v[12]; p.fd_separable = v[13] != 0;
  p.sign_mode = v[14]; p.sign_ofs_x = v[15]; p.sign_ofs_y = v[16];
  if (p.sign_mode) {
    p.signs = sign_dummy;
    p.sign_h = (p.out_h - 1) * p.down + p.fd_h; p.sign_w = (p.out_w - 1) * p.down + p.fd_w;
    p.sign_row_bytes = (p.sign_w + 15) / 16 * 4;
  }
  anyres_fast::FilteredLReluTile tile{};
  int64_t gx = 0, gy = 0;
  const int rc = anyres_fast::filtered_lrelu_plan(p, max_smem, tile, gx, gy);
  out[0] = tile.tile_w; out[1] = tile.tile_h; out[2] = int64_t(tile.smem_bytes); out[3] = gx; out[4] = gy;
  out[5] = anyres_fast::filtered_lrelu_specialised(p);
  return rc;
}
'''


class EmulatedExtension:
    """Stands in for the extension module: same `filtered_lrelu` signature as the pybind binding."""

    def __init__(self, lib):
        self.lib = lib

    def filtered_lrelu(self, x, b, fu, fd, fu_reverse, fd_reverse, y, signs, up, down, px0, py0, gain, slope, clamp,
                       mode, sign_w, sx, sy, stream):
        assert x.dtype == torch.float32 and y.is_contiguous() and fu.is_contiguous() and fd.is_contiguous()
        ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None and t.numel() else 0)
        ints = lambda *v: (ctypes.c_int * len(v))(*v)
        fdims = lambda f, rev: ints(f.shape[-1], f.shape[0], int(f.ndim == 1), int(rev))
        sdims = ints(signs.shape[2] if mode else 0, sign_w, signs.shape[3] if mode else 0, sx, sy)
        rc = self.lib.emu_filtered_lrelu(
            ptr(x), (ctypes.c_int64 * 4)(*x.stride()), ints(*x.shape), ptr(b), ptr(fu), fdims(fu, fu_reverse),
            ptr(fd), fdims(fd, fd_reverse), ptr(y), ints(y.shape[2], y.shape[3]), ints(up, down, px0, py0, mode),
            (ctypes.c_float * 3)(gain, slope, clamp), ptr(signs), sdims)
        assert rc == 0, f"launcher returned {rc}"


def build_emulation(directory, extra_flags=(), harness=None):
    """Compile the real kernel source + a harness (default HARNESS) with g++ in host-emulation mode;
    returns the ctypes library."""
    cxx = shutil.which("g++")
    cuda_inc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    if cxx is None or not (cuda_inc / "cuda_runtime.h").exists():
        missing_toolchain("needs g++ and the CUDA headers for the host emulation of the kernel")
    csrc = Path(__file__).resolve().parents[2] / "csrc"
    (directory / "harness.cpp").write_text(HARNESS if harness is None else harness)
    cmd = [cxx, "-std=c++20", "-O1", "-w", "-x", "c++", "-DANYRES_FAST_HOST_EMULATION", *extra_flags,
           f"-I{csrc}", "-isystem", str(cuda_inc), "-shared", "-fPIC", str(directory / "harness.cpp"),
           "-o", str(directory / "libemu.so")]
    subprocess.run(cmd, check=True, capture_output=True)
    return ctypes.CDLL(str(directory / "libemu.so"))


EMU_CASES = [
    # shape, up, down, fu, fd, padding, clamp, flip  (StyleGAN3 T/R layer kinds at small sizes, then odd ones)
    ((1, 3, 38, 38), 2, 2, (12,), (12,), (9, 8, 9, 8), 0.7, False),          # T up2
    ((1, 2, 38, 37), 4, 2, (24,), (12,), (-6, -9, -6, -9), 0.7, False),      # T up4
    ((1, 2, 36, 36), 2, 2, (12,), (12, 12), (11, 10, 11, 10), 0.7, False),   # R up2 radial fd
    ((1, 2, 36, 35), 4, 2, (24,), (12, 12), (-2, -5, -2, -5), 0.7, False),   # R up4 radial fd
    ((1, 2, 40, 45), 2, 2, (12,), (12,), (-11, -12, -11, -12), 0.7, False),  # critically sampled last layer
    ((2, 3, 70, 33), 1, 1, None, None, (0, 0, 0, 0), 0.3, False),             # ToRGB-like, several tiles
    ((1, 2, 9, 8), 1, 2, (5, 4), (5, 4), (3, 1, 2, 4), 0.5, True),
    ((1, 2, 21, 23), 2, 4, (5, 4), (16,), (3, 1, 2, 4), None, False),
    ((1, 2, 17, 19), 4, 1, (9,), (3,), (2, -3, 4, 1), 0.5, True),
    ((1, 1, 33, 67), 2, 2, (3,), None, (0, 0, 0, 0), 0.5, True),
]


def check_emulated_matches_reference(case):
    """Forward with sign record, backward (sign read) and masked forward of one EMU_CASES entry through
    the op's CUDA path (with an emulated extension plugged in) against the reference."""
    shape, up, down, fus, fds, padding, clamp, flip = case
    gen = torch.Generator().manual_seed(11)
    mk = lambda s: None if s is None else torch.randn(*s, generator=gen, dtype=F64)
    fu, fd = mk(fus), mk(fds)
    x = torch.randn(*shape, generator=gen, dtype=F64)
    b = torch.randn(shape[1], generator=gen, dtype=F64)
    f32 = lambda t: None if t is None else t.float()
    ref = filtered_lrelu_ref(x, fu, fd, b, up, down, padding, 1.3, 0.2, clamp, flip)
    y, signs = fl._forward_cuda(f32(x), f32(fu), f32(fd), f32(b), up, down, padding, 1.3, 0.2, clamp, flip, True)
    assert y.shape == ref.shape
    assert rel_error(y, ref) <= 1e-5
    # the record matches the explicit CPU kernel at every element the down filter reads
    one = torch.ones(1, 1, dtype=F64)
    _, signs_cpu = fl._forward_explicit(x, one if fu is None else fu, one if fd is None else fd, b, up, down,
                                        padding, 1.3, 0.2, clamp, flip, True)
    geo = fl.geometry(x.shape, fu, fd, up, down, padding)
    read_rows = (torch.arange(geo.sign_h) % down) < geo.fd_h
    read_cols = (torch.arange(geo.sign_w) % down) < geo.fd_w
    got, want = fl.unpack_signs(signs, geo.sign_w), fl.unpack_signs(signs_cpu, geo.sign_w)
    mismatch = (got[:, :, read_rows][..., read_cols] != want[:, :, read_rows][..., read_cols]).double().mean()
    assert mismatch.item() <= 1e-3  # fp32 kernel vs fp64 CPU: only values within rounding of 0 may differ
    # backward through the kernel in sign-read mode
    xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    dy = torch.randn(ref.shape, generator=gen, dtype=F64)
    dx_ref, = torch.autograd.grad(filtered_lrelu_ref(xr, fu, fd, br, up, down, padding, 1.3, 0.2, clamp, flip),
                                  [xr], dy)
    dx = fl._backward_cuda(dy.float(), signs, f32(fu), f32(fd), shape[2], shape[3], up, down, padding, 1.3, 0.2,
                           flip)
    assert rel_error(dx, dx_ref) <= 1e-5
    # the masked forward (double backward) through the kernel equals the CPU op
    g = torch.randn(shape, generator=gen, dtype=F64)
    m = fl._masked_cuda(g.float(), signs, f32(fu), f32(fd), up, down, padding, 1.3, 0.2, flip)
    m_cpu = fl._masked_explicit(g, signs, one if fu is None else fu, one if fd is None else fd, up, down, padding,
                                1.3, 0.2, flip)
    assert rel_error(m, m_cpu) <= 1e-5
