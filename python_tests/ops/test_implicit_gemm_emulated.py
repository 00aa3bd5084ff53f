"""The implicit-GEMM convolution kernel (csrc/kernels/implicit_gemm.cuh, behind modulated_conv2d and
style_fused_conv2d) on the CPU: the real source compiled by g++ with -DANYRES_FAST_HOST_EMULATION(_THREADS),
every CTA run as its 128 real threads taking turns at __syncthreads (host_emulation.h), WMMA fragments
emulated at matrix level with the documented alignment and ldm rules checked, cp.async landing at its
wait (implicit_gemm_emulation.h). It is driven through the ops' Python CUDA paths with a stand-in for the
extension that mirrors the bindings, and compared with the float64 PyTorch references.

Not covered here: the demodulation kernels (warp shuffles; the stand-in computes d in PyTorch), anything
about speed, and the hardware's real fragment register layout and cp.async timing (the GPU run checks
those)."""
import contextlib
import ctypes
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import rel_error

from anyres_fast.ops import modulated_conv2d_op as mc
from anyres_fast.ops import style_fused_conv2d_op as sf

CSRC = Path(__file__).resolve().parents[2] / "csrc"
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # anyres_fast::DType
GUARD = 64  # NaN elements either side of every output
THREADS = 128

_HARNESS = r'''
#include "kernels/modulated_conv2d.cu"
#include "kernels/style_fused_conv2d.cu"

namespace emu = anyres_fast::emulation;
namespace ige = anyres_fast::igemm_emulation;
using anyres_fast::DType;

extern "C" void emu_configure(int reverse_order, int skip_barrier_line, int skip_wait_line, int smem_offset) {
  emu::reverse_order = reverse_order != 0;
  emu::skip_barrier_line = skip_barrier_line;
  ige::skip_wait_line = skip_wait_line;
  ige::smem_offset = smem_offset;
  emu::barrier_lines.clear();
  emu::max_block_threads = 0;
  emu::error_count = 0;
  emu::first_error.clear();
  ige::wmma_calls = 0;
  ige::cp_async_copies = 0;
  ige::mma_macs = 0;
  ige::wait_lines.clear();
}
extern "C" void emu_trace(int on) {
  if (on) emu::trace.clear();
  emu::trace_on = on != 0;
}
extern "C" long emu_trace_length() { return long(emu::trace.size()); }
// record i: CTA, thread, site, seq, byte offset from the shared-memory base, bytes
extern "C" void emu_trace_record(long i, int64_t* out) {
  const emu::Access& a = emu::trace[size_t(i)];
  out[0] = a.block; out[1] = a.thread; out[2] = a.site; out[3] = a.seq;
  out[4] = int64_t(a.address - reinterpret_cast<uintptr_t>(emu::shared_memory)); out[5] = a.bytes;
}
extern "C" int emu_max_block_threads() { return int(emu::max_block_threads); }
extern "C" long emu_error_count() { return emu::error_count; }
extern "C" const char* emu_first_error() { return emu::first_error.c_str(); }
extern "C" long emu_wmma_calls() { return ige::wmma_calls; }
extern "C" long long emu_mma_macs() { return ige::mma_macs; }
extern "C" long emu_cp_async_copies() { return ige::cp_async_copies; }
extern "C" int emu_barrier_lines(int* lines, int capacity) {
  int n = 0;
  for (int line : emu::barrier_lines)
    if (n < capacity) lines[n++] = line;
  return int(emu::barrier_lines.size());
}
extern "C" int emu_wait_lines(int* lines, int capacity) {
  int n = 0;
  for (int line : ige::wait_lines)
    if (n < capacity) lines[n++] = line;
  return int(ige::wait_lines.size());
}

// the launchers the bindings call, unmangled for ctypes; dims = ImplicitGemmShape's fields in order
static anyres_fast::ImplicitGemmShape shape_of(const int* d) {
  anyres_fast::ImplicitGemmShape s;
  s.batch = d[0]; s.channels = d[1]; s.h_in = d[2]; s.w_in = d[3]; s.m_out = d[4]; s.h_out = d[5]; s.w_out = d[6];
  s.kh = d[7]; s.kw = d[8]; s.pad = d[9]; s.mode = d[10];
  return s;
}
extern "C" int emu_set_num_sms(int n) { ige::num_sms = n; return 0; }
extern "C" int emu_set_device(int arch, int max_smem) { ige::arch = arch; ige::max_smem = max_smem; return 0; }
extern "C" int emu_igemm_smem_bytes(int dtype, int exact_fp32, int dual) {
  return anyres_fast::implicit_gemm_smem_bytes(dtype, exact_fp32 != 0, dual != 0);
}
extern "C" int emu_igemm_min_arch() { return anyres_fast::implicit_gemm_min_arch(); }
extern "C" int emu_scratch(const int* dims, int dual, int64_t* out) {
  anyres_fast::ImplicitGemmScratch sc;
  const int rc = anyres_fast::implicit_gemm_scratch(shape_of(dims), dual != 0, &sc);
  out[0] = sc.channels_padded; out[1] = sc.staged_elements; out[2] = sc.workspace_floats;
  return rc;
}
// ptrs: x, pre, pre_map, weight, weight_sq, post, out, staged, staged_sq, workspace
static anyres_fast::ImplicitGemmOperands operands_of(void* const* q, int64_t workspace_floats) {
  anyres_fast::ImplicitGemmOperands o;
  o.x = q[0]; o.pre = static_cast<const float*>(q[1]); o.pre_map = q[2]; o.weight = q[3]; o.weight_sq = q[4];
  o.post = static_cast<const float*>(q[5]); o.out = q[6]; o.staged = q[7]; o.staged_sq = q[8];
  o.workspace = static_cast<float*>(q[9]); o.workspace_floats = workspace_floats;
  return o;
}
extern "C" int emu_modulated_igemm(const int* dims, void* const* ptrs, int64_t workspace_floats, int dtype,
                                   int exact_fp32) {
  return anyres_fast::modulated_conv2d_igemm(shape_of(dims), operands_of(ptrs, workspace_floats), DType(dtype),
                                             exact_fp32 != 0, nullptr);
}
extern "C" int emu_style_fused_igemm(const int* dims, void* const* ptrs, int64_t workspace_floats, int exact,
                                     float eps, int dtype, int exact_fp32) {
  return anyres_fast::style_fused_conv2d_igemm(shape_of(dims), operands_of(ptrs, workspace_floats), exact != 0, eps,
                                               DType(dtype), exact_fp32 != 0, nullptr);
}

// The WMMA rules on their own: one warp loads a tf32 A fragment from 32-byte aligned memory with the
// given element offset and ldm (the documented rule: pointer 256-bit aligned, ldm a multiple of 4 floats).
extern "C" long emu_fragment_load(int offset_elements, int ldm) {
  emu::error_count = 0;
  emu::first_error.clear();
  alignas(128) static float tile[64 * 64];
  ige::launch(dim3(1, 1, 1), 32, 0, [&] {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8, nvcuda::wmma::precision::tf32,
                           nvcuda::wmma::row_major> a;
    nvcuda::wmma::load_matrix_sync(a, tile + offset_elements, unsigned(ldm));
  });
  return emu::error_count;
}
'''


def _build(directory: Path):
    cxx = shutil.which("g++")
    cuda_inc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    if cxx is None or not (cuda_inc / "cuda_runtime.h").exists():
        pytest.skip("needs g++ and the CUDA headers for the host emulation of the kernel")
    (directory / "harness.cpp").write_text(_HARNESS)
    # -ffp-contract=off: no fused multiply-adds beyond the kernel's explicit fmaf.
    cmd = [cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-w", "-x", "c++", "-pthread",
           "-DANYRES_FAST_HOST_EMULATION", "-DANYRES_FAST_HOST_EMULATION_THREADS", f"-I{CSRC}",
           "-isystem", str(cuda_inc), "-shared", "-fPIC", str(directory / "harness.cpp"),
           "-o", str(directory / "libemu.so")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"g++ failed:\n{done.stderr[-6000:]}"
    lib = ctypes.CDLL(str(directory / "libemu.so"))
    lib.emu_first_error.restype = ctypes.c_char_p
    lib.emu_mma_macs.restype = ctypes.c_longlong
    for name in ("emu_error_count", "emu_wmma_calls", "emu_cp_async_copies", "emu_fragment_load", "emu_trace_length"):
        getattr(lib, name).restype = ctypes.c_long
    return lib


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


def _guarded_empty(shape, dtype):
    n = 1
    for s in shape:
        n *= s
    buf = torch.full((n + 2 * GUARD,), float("nan"), dtype=dtype)
    return buf, buf[GUARD:GUARD + n].view(shape)


class _EmulatedExtension:
    """Stands in for the extension: the bindings' functions with the same arguments, on host memory.
    Outputs are written into NaN-poisoned, guarded buffers: every element must be written, no guard
    touched, and the emulation must report no rule violation."""

    def __init__(self, lib):
        self.lib = lib
        self.calls = []  # (name, kwargs) of every igemm call, for the tests that look at arguments

    def check(self):
        errors = self.lib.emu_error_count()
        assert errors == 0, f"{errors} emulation errors, first: {self.lib.emu_first_error().decode()}"
        assert self.lib.emu_max_block_threads() == THREADS, "the CTAs did not run as 128 threads"

    def _finish(self, rc, buf, body, out):
        assert rc == 0, f"launcher returned {rc}"
        assert torch.isnan(buf[:GUARD].float()).all() and torch.isnan(buf[-GUARD:].float()).all(), \
            "write out of bounds"
        assert not torch.isnan(body.float()).any(), "output elements left unwritten"
        out.copy_(body)

    def modulated_conv2d_demod(self, weight, styles, d, eps, stream):
        # not the kernel under test (warp shuffles): its float32 math
        d.copy_(mc.demod_coefficients(weight.float(), styles.float(), eps))

    def _scratch(self, dims, dual, dtype):
        """What the binding allocates: (staged, staged_sq or None, workspace or None, workspace_floats)."""
        sizes = (ctypes.c_int64 * 3)()
        assert self.lib.emu_scratch(dims, int(dual), sizes) == 0
        staged = torch.full((sizes[1],), float("nan"), dtype=dtype)  # poisoned: the stage kernel writes it all
        staged_sq = torch.full((sizes[1],), float("nan"), dtype=dtype) if dual else None
        workspace = torch.full((sizes[2],), float("nan")) if sizes[2] else None
        self.last_workspace_floats = sizes[2]
        return sizes[0], staged, staged_sq, workspace, sizes[2]

    @staticmethod
    def _dims(x, out, weight_gemm, padding, mode):
        b, c, h, w = x.shape
        return (ctypes.c_int * 11)(b, c, h, w, out.shape[1], out.shape[2], out.shape[3], weight_gemm.shape[1],
                                   weight_gemm.shape[2], padding, mode)

    def modulated_conv2d_igemm(self, input, weight_gemm, pre, post, out, mode, padding, exact_fp32, stream):
        self.calls.append(("modulated_conv2d_igemm", weight_gemm))
        assert input.is_contiguous() and weight_gemm.is_contiguous() and out.is_contiguous()
        assert pre.dtype == torch.float32 and post.dtype == torch.float32 and stream == 0
        assert weight_gemm.dtype == input.dtype == out.dtype and weight_gemm.shape[0] == out.shape[1]
        dims = self._dims(input, out, weight_gemm, padding, mode)
        cp, staged, _, workspace, wf = self._scratch(dims, False, input.dtype)
        assert weight_gemm.shape[3] == cp, "weight_gemm is not padded to the kernel's channel multiple"
        assert weight_gemm.data_ptr() % 16 == 0, "the binding refuses a weight_gemm that is not 16-byte aligned"
        buf, body = _guarded_empty(tuple(out.shape), out.dtype)
        ptrs = (ctypes.c_void_p * 10)(*(_ptr(t).value for t in (input, pre, None, weight_gemm, None, post, body,
                                                                  staged, None, workspace)))
        rc = self.lib.emu_modulated_igemm(dims, ptrs, ctypes.c_int64(wf), DTYPE_CODE[input.dtype], int(exact_fp32))
        self._finish(rc, buf, body, out)

    def style_fused_conv2d_igemm(self, x, weight_gemm, weight_sq_gemm, style_map, out, mode, padding, exact, eps,
                                 exact_fp32, stream):
        self.calls.append(("style_fused_conv2d_igemm", weight_gemm))
        assert x.is_contiguous() and weight_gemm.is_contiguous() and style_map.is_contiguous() and stream == 0
        assert weight_gemm.dtype == x.dtype == style_map.dtype == out.dtype == weight_sq_gemm.dtype
        assert weight_sq_gemm.shape == weight_gemm.shape
        dims = self._dims(x, out, weight_gemm, padding, mode)
        cp, staged, staged_sq, workspace, wf = self._scratch(dims, exact, x.dtype)
        assert weight_gemm.shape[3] == cp
        assert weight_gemm.data_ptr() % 16 == 0 and (not exact or weight_sq_gemm.data_ptr() % 16 == 0), \
            "the binding refuses GEMM-ready weights that are not 16-byte aligned"
        buf, body = _guarded_empty(tuple(out.shape), out.dtype)
        ptrs = (ctypes.c_void_p * 10)(*(_ptr(t).value for t in (x, None, style_map, weight_gemm,
                                                                  weight_sq_gemm if exact else None, None, body,
                                                                  staged, staged_sq, workspace)))
        rc = self.lib.emu_style_fused_igemm(dims, ptrs, ctypes.c_int64(wf), int(exact), ctypes.c_float(eps),
                                            DTYPE_CODE[x.dtype], int(exact_fp32))
        self._finish(rc, buf, body, out)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The compiled emulation (one g++ build per test session)."""
    ext = _EmulatedExtension(_build(tmp_path_factory.mktemp("igemm_emu")))
    ext.lib.emu_configure(0, -1, -1, 0)
    return ext


@pytest.fixture
def cuda_path(emulated, monkeypatch):
    """Lets the ops' _cuda_forward/_cuda_backward run on CPU tensors with the emulated extension."""
    for module in (mc, sf):
        monkeypatch.setattr(module._dispatch, "extension", lambda: emulated)
        monkeypatch.setattr(module._dispatch, "current_stream", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    emulated.lib.emu_configure(0, -1, -1, 0)
    emulated.calls.clear()
    return emulated


@contextlib.contextmanager
def _math(kind):
    """'tf32' / 'fma' select the kernel's float32 path (exact_fp32 off / on)."""
    saved = mc.EXACT_FP32["enabled"]
    mc.EXACT_FP32["enabled"] = kind == "fma"
    try:
        yield
    finally:
        mc.EXACT_FP32["enabled"] = saved


# (kind, dtype) of the kernel's math paths and the relative error allowed against float64
PATHS = {
    "fma": (torch.float32, 1e-5),
    "tf32": (torch.float32, 4e-3),
    "fp16": (torch.float16, 4e-3),
    "bf16": (torch.bfloat16, 3e-2),
}


def _inputs(b, i, o, h, w, k, dtype, style_shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, i, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(o, i, k, k, generator=g, dtype=torch.float64) / (i * k * k) ** 0.5
    styles = torch.randn(*style_shape, generator=g, dtype=torch.float64) * 0.5 + 1
    # the inputs as the kernel sees them (rounded to dtype), kept in float64 for the references
    return [t.to(dtype).double() for t in (x, weight, styles)]


# (B, I, O, H, W, k, padding, up): odd sizes, K tails (I·k·k not a multiple of 32), several M and N tiles
MOD_CASES = [
    (2, 5, 7, 9, 11, 3, 1, 1),
    (1, 37, 70, 6, 7, 3, 0, 1),
    (2, 3, 9, 5, 4, 3, 0, 2),
    (1, 20, 66, 4, 5, 3, 1, 2),
    (1, 9, 5, 7, 3, 1, 0, 1),
    (1, 9, 5, 4, 3, 1, 0, 2),   # 1x1 up=2: three of the four parity classes have no tap (zero outputs)
]
# every math path meets up=1 and up=2, M and N tails, several M tiles
MOD_RUNS = [(0, "fma"), (0, "fp16"), (1, "fp16"), (2, "fma"), (2, "bf16"), (3, "fp16"), (3, "tf32"), (4, "fp16"),
            (5, "fma")]


def _mod_case_id(run):
    return "B{}I{}O{}_{}x{}_k{}p{}up{}".format(*MOD_CASES[run[0]]) + "-" + run[1]


@pytest.mark.parametrize("run", MOD_RUNS, ids=_mod_case_id)
def test_modulated_forward_and_dx(cuda_path, run):
    """Single accumulator: y = d·conv(x·s, W) (forward geometry) and gxs = conv_adjoint(g·d, W) (the adjoint
    geometry used for dx), against the float64 reference math."""
    case, path = MOD_CASES[run[0]], run[1]
    b, i, o, h, w, k, p, up = case
    dtype, tol = PATHS[path]
    x, weight, styles = _inputs(b, i, o, h, w, k, dtype, (b, i), seed=run[0])
    with _math(path):
        y = mc._cuda_forward(x.to(dtype), weight.to(dtype), styles.float(), True, p, up, 1e-8)
        cuda_path.check()
        ref = mc.modulated_conv2d_ref(x, weight, styles, True, p, up, 1e-8)
        assert y.dtype == dtype and y.shape == ref.shape
        assert rel_error(y, ref) <= tol
        # dx: the adjoint convolution of the kernel, then the same elementwise steps as the CUDA backward
        g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
        d = mc.demod_coefficients(weight.float(), styles.float(), 1e-8)
        gxs = torch.empty(x.shape, dtype=dtype)
        cuda_path.modulated_conv2d_igemm(g, mc.gemm_weight(weight.to(dtype), adjoint=True), d, torch.ones(b, i),
                                         gxs, mc._mode_adjoint(up), p, mc.exact_fp32(), 0)
        cuda_path.check()
        dx_ref = mc.backward_math(g.double(), x, weight, styles, True, p, up, 1e-8)[0]
        assert rel_error(gxs.double() * styles[:, :, None, None], dx_ref) <= tol


@pytest.mark.parametrize("path", ["fma", "tf32"])
def test_modulated_backward_through_the_op_path(cuda_path, path):
    """mc._cuda_backward end to end (dx from the kernel, dW/ds from the reductions) for both geometries."""
    for case in (MOD_CASES[0], MOD_CASES[2]):
        b, i, o, h, w, k, p, up = case
        x, weight, styles = _inputs(b, i, o, h, w, k, torch.float32, (b, i), seed=5)
        g = torch.randn(b, o, mc.output_size(h, k, p, up), mc.output_size(w, k, p, up),
                        generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        with _math(path):
            got = mc._cuda_backward(g.float(), x.float(), weight.float(), styles.float(), True, p, up, 1e-8)
        cuda_path.check()
        want = mc.backward_math(g, x, weight, styles, True, p, up, 1e-8)
        for a, r in zip(got, want):
            assert rel_error(a, r) <= PATHS[path][1]


# (B, I, O, H, W, k, padding, up, demod)
SF_CASES = [
    (2, 6, 9, 7, 9, 3, 1, 1, "exact"),
    (1, 11, 67, 5, 6, 3, 0, 2, "exact"),
    (1, 4, 5, 6, 5, 3, 1, 2, "none"),
    (2, 7, 6, 6, 7, 3, 0, 1, "pointwise"),
]
SF_RUNS = [(0, "fp16"), (0, "fma"), (1, "bf16"), (1, "tf32"), (2, "fp16"), (3, "fma")]


@pytest.mark.parametrize("run", SF_RUNS,
                         ids=lambda r: "B{}I{}O{}_{}x{}_k{}p{}up{}_{}".format(*SF_CASES[r[0]]) + "-" + r[1])
def test_style_fused_forward(cuda_path, run):
    """Per-pixel style; "exact" runs the dual accumulator (Σ W·x·S and Σ W²·S² over the same window)."""
    case, path = SF_CASES[run[0]], run[1]
    b, i, o, h, w, k, p, up, demod = case
    dtype, tol = PATHS[path]
    x, weight, smap = _inputs(b, i, o, h, w, k, dtype, (b, i, h, w), seed=7)
    with _math(path):
        y = sf._cuda_forward(x.to(dtype), weight.to(dtype), smap.to(dtype), p, up, demod, 1e-8)
    cuda_path.check()
    ref = sf.style_fused_conv2d_ref(x, weight, smap, p, up, demod, 1e-8)
    assert y.dtype == dtype and y.shape == ref.shape
    assert rel_error(y, ref) <= tol


def test_thread_order_does_not_change_a_bit(cuda_path):
    """The threads of a CTA share nothing but barrier-separated shared memory: running them in the
    opposite order gives the same bits (dual accumulator, fp16 and exact fp32)."""
    b, i, o, h, w, k, p, up, _ = SF_CASES[1]
    for path in ("fp16", "fma"):
        dtype = PATHS[path][0]
        x, weight, smap = (t.to(dtype) for t in _inputs(b, i, o, h, w, k, dtype, (b, i, h, w), seed=3))
        with _math(path):
            cuda_path.lib.emu_configure(0, -1, -1, 0)
            first = sf._cuda_forward(x, weight, smap, p, up, "exact", 1e-8)
            cuda_path.lib.emu_configure(1, -1, -1, 0)
            second = sf._cuda_forward(x, weight, smap, p, up, "exact", 1e-8)
        cuda_path.check()
        assert torch.equal(first, second)


# ---- mutation checks: the emulation must catch a broken kernel -------------------------------------------

# Cases whose K loop runs several steps (so a missing barrier meets data of another step), fp16 and
# exact fp32, single and dual accumulator.
MUTATION_RUNS = [("fp16", SF_CASES[1]), ("fma", (2, 19, 9, 5, 4, 3, 0, 2, "exact")),
                 ("fp16", (2, 40, 70, 5, 6, 3, 1, 1, "none"))]


def _mutation_errors(ext, reverse, skip_barrier=-1, skip_wait=-1, smem_offset=0, stop_when_caught=False,
                     runs=MUTATION_RUNS):
    """Relative errors of the mutation runs and the emulation's error count (the stand-in's own checks
    are off: a broken kernel may leave NaN or write anywhere inside the output). With stop_when_caught,
    stops after the first run that goes wrong."""
    errors, reported = [], 0
    for path, (b, i, o, h, w, k, p, up, demod) in runs:
        dtype = PATHS[path][0]
        x, weight, smap = _inputs(b, i, o, h, w, k, dtype, (b, i, h, w), seed=11)
        ext.lib.emu_configure(int(reverse), skip_barrier, skip_wait, smem_offset)
        out = torch.empty(b, o, mc.output_size(h, k, p, up), mc.output_size(w, k, p, up), dtype=dtype)
        wd = weight.to(dtype)
        with _math(path), _lenient(ext):
            ext.style_fused_conv2d_igemm(x.to(dtype), mc.gemm_weight(wd), mc.gemm_weight(wd, square=True),
                                         smap.to(dtype), out, mc._mode_forward(up), p, demod == "exact", 1e-8,
                                         mc.exact_fp32(), 0)
        reported += ext.lib.emu_error_count()
        ref = sf.style_fused_conv2d_ref(x, weight, smap, p, up, demod, 1e-8)
        err = rel_error(out, ref) if not torch.isnan(out.float()).any() else float("inf")
        errors.append(err if err == err else float("inf"))
        if stop_when_caught and (reported > 0 or errors[-1] > PATHS["fp16"][1]):
            break
    return errors, reported


def _caught(errors, reported):
    return reported > 0 or max(errors) > PATHS["fp16"][1]


@contextlib.contextmanager
def _lenient(ext):
    saved = ext._finish
    ext._finish = lambda rc, buf, body, out: out.copy_(body)
    try:
        yield
    finally:
        ext._finish = saved


def _lines(fn):
    lines = (ctypes.c_int * 64)()
    n = fn(lines, 64)
    return list(lines[:n])


def test_each_removed_barrier_is_caught(emulated):
    """With any one of the kernel's __syncthreads turned off, some run goes wrong in some thread order."""
    errors, reported = _mutation_errors(emulated, reverse=False, runs=MUTATION_RUNS[:1])
    assert reported == 0 and max(errors) <= PATHS["fp16"][1], errors
    lines = _lines(emulated.lib.emu_barrier_lines)
    assert len(lines) >= 3, f"expected the kernel's barriers, ran {lines}"
    for line in lines:
        caught = False
        for reverse in (False, True):
            caught = _caught(*_mutation_errors(emulated, reverse, skip_barrier=line, stop_when_caught=True))
            if caught:
                break
        assert caught, f"removing the __syncthreads on line {line} went unnoticed"
    emulated.lib.emu_configure(0, -1, -1, 0)


def test_misaligned_fragment_pointer_is_caught(emulated):
    """Planted misalignment: the dynamic shared-memory base shifted by 16 bytes (still fine for 16-byte
    copies, not for WMMA's 256-bit rule) makes every fragment pointer misaligned: reported as an error.
    The rules on their own: a fragment load from base+4 floats or with ldm 6 is an error, base+8 floats
    with ldm 12 is fine."""
    _, reported = _mutation_errors(emulated, reverse=False, smem_offset=16, stop_when_caught=True)
    assert reported > 0 and "256-bit" in emulated.lib.emu_first_error().decode()
    assert emulated.lib.emu_fragment_load(8, 12) == 0
    assert emulated.lib.emu_fragment_load(4, 12) > 0
    assert emulated.lib.emu_fragment_load(8, 6) > 0
    assert "ldm" in emulated.lib.emu_first_error().decode()
    emulated.lib.emu_configure(0, -1, -1, 0)


@pytest.mark.parametrize("num_sms", [1, 1000], ids=["one-pass", "max-split"])
def test_split_k_and_single_pass(cuda_path, num_sms):
    """The split-K plan (partials + reduce kernel) and the single pass give the reference result; the
    workspace is used exactly when K is split (the plan splits when the tiles cannot fill the SMs)."""
    cuda_path.lib.emu_set_num_sms(num_sms)
    try:
        for case, path, demod in (((1, 40, 10, 4, 5, 3, 1, 2, "exact"), "fp16", "exact"), (MOD_CASES[1], "fma", None)):
            dtype, tol = PATHS[path]
            if demod is None:
                b, i, o, h, w, k, p, up = case
                x, weight, styles = _inputs(b, i, o, h, w, k, dtype, (b, i), seed=4)
                with _math(path):
                    y = mc._cuda_forward(x.to(dtype), weight.to(dtype), styles.float(), True, p, up, 1e-8)
                ref = mc.modulated_conv2d_ref(x, weight, styles, True, p, up, 1e-8)
            else:
                b, i, o, h, w, k, p, up, _ = case
                x, weight, smap = _inputs(b, i, o, h, w, k, dtype, (b, i, h, w), seed=4)
                with _math(path):
                    y = sf._cuda_forward(x.to(dtype), weight.to(dtype), smap.to(dtype), p, up, demod, 1e-8)
                ref = sf.style_fused_conv2d_ref(x, weight, smap, p, up, demod, 1e-8)
            cuda_path.check()
            assert (cuda_path.last_workspace_floats > 0) == (num_sms > 1)
            assert rel_error(y, ref) <= tol
    finally:
        cuda_path.lib.emu_set_num_sms(132)


def _issued_macs(b, c, o, ho, wo, k, p, up):
    """Tensor-core multiply-adds the kernel design issues: per CTA tile 64×64, per K step 32 channels of
    one tap, for every (tap, channel chunk) of the CTA's parity class (up=2) or of the whole kernel."""
    cp, total = -(-c // 8) * 8, 0
    classes = [(py, px) for py in (0, 1) for px in (0, 1)] if up == 2 else [None]
    for cls in classes:
        if cls is None:
            hc, wc, taps = ho, wo, k * k
        else:
            hc, wc = (ho - cls[0] + 1) // 2, (wo - cls[1] + 1) // 2
            ty = (k - ((cls[0] + p) & 1) + 1) // 2
            tx = (k - ((cls[1] + p) & 1) + 1) // 2
            taps = ty * tx
        total += -(-b * hc * wc // 64) * -(-o // 64) * taps * -(-cp // 32) * 64 * 64 * 32
    return total


def test_up2_issues_no_multiply_add_on_a_zero_tap(cuda_path):
    """Counted in the emulated tensor cores: up=2 issues exactly the MMAs of its four parity
    sub-convolutions, a quarter of the dense 3×3 count per output (the old kernel ran all 9 taps for
    every output, 3/4 of them on zeros)."""
    b, c, o, h, w, k, p = 1, 32, 64, 8, 8, 3, 1
    per_output = {}
    for up in (1, 2):
        ho, wo = mc.output_size(h, k, p, up), mc.output_size(w, k, p, up)
        x, weight, styles = _inputs(b, c, o, h, w, k, torch.float16, (b, c), seed=9)
        cuda_path.lib.emu_configure(0, -1, -1, 0)
        y = mc._cuda_forward(x.half(), weight.half(), styles.float(), True, p, up, 1e-8)
        cuda_path.check()
        assert rel_error(y, mc.modulated_conv2d_ref(x, weight, styles, True, p, up, 1e-8)) <= PATHS["fp16"][1]
        macs = cuda_path.lib.emu_mma_macs()
        assert macs == _issued_macs(b, c, o, ho, wo, k, p, up)
        per_output[up] = macs / (b * o * ho * wo)
    dense = k * k * c  # MACs per output of a convolution that visits every tap
    assert per_output[1] >= dense
    assert per_output[2] <= 0.3 * dense, per_output  # 2.25 taps of 9 on average, plus N-tile padding


def test_removed_cp_async_wait_is_caught(emulated):
    """Mutation check: without the pipeline's wait (copies land only at a later wait, as they may on the
    hardware), some run reads a stage before its data arrived. The wait after the K loop only retires
    empty groups (a safety net), so removing it changes nothing and is not asserted."""
    emulated.lib.emu_configure(0, -1, -1, 0)
    assert not _caught(*_mutation_errors(emulated, reverse=False, runs=MUTATION_RUNS[:1]))  # records the waits
    lines = _lines(emulated.lib.emu_wait_lines)
    assert len(lines) == 2, lines
    assert _caught(*_mutation_errors(emulated, reverse=False, skip_wait=min(lines), stop_when_caught=True))
    emulated.lib.emu_configure(0, -1, -1, 0)


def test_gemm_weight_is_made_once_per_weight_version(cuda_path):
    """Issue 12: the weight is not permuted and copied on every call while it is unchanged. The kernel
    receives the cached GEMM-ready tensor (same storage on the second call); an in-place update (new
    version) or a new weight tensor gets a fresh, correct copy; a freed weight leaves no entry behind."""
    b, i, o, h, w, k, p, up = MOD_CASES[0]
    x, weight, styles = (t.float() for t in _inputs(b, i, o, h, w, k, torch.float32, (b, i), seed=2))
    weight = torch.nn.Parameter(weight)
    with _math("fma"):
        first = mc._cuda_forward(x, weight, styles, True, p, up, 1e-8)
        second = mc._cuda_forward(x, weight, styles, True, p, up, 1e-8)
        (_, w1), (_, w2) = cuda_path.calls[-2:]
        assert w1.shape == (o, k, k, 8) and w1.data_ptr() == w2.data_ptr() and w1.data_ptr() != weight.data_ptr()
        assert torch.equal(first, second)
        with torch.no_grad():
            weight.mul_(-1)  # what an optimizer step does: in place, version bumped
        third = mc._cuda_forward(x, weight, styles, True, p, up, 1e-8)
        w3 = cuda_path.calls[-1][1]
        assert w3.data_ptr() != w1.data_ptr() and torch.equal(w3[..., :i], weight.detach().permute(0, 2, 3, 1))
        assert rel_error(third, -first) <= 1e-6
    entries = len(mc._gemm_cache)
    del weight
    assert len(mc._gemm_cache) == entries - 1


def test_stand_in_has_the_bindings_signature():
    """The stand-in must take the arguments the real bindings declare, in the same order."""
    for binding, name in (("modulated_conv2d", "modulated_conv2d_igemm"),
                          ("modulated_conv2d", "modulated_conv2d_demod"),
                          ("style_fused_conv2d", "style_fused_conv2d_igemm")):
        src = (CSRC / "bindings" / f"{binding}.cpp").read_text()
        decl = re.search(r'm\.def\("%s".*?\);' % name, src, re.S)
        assert decl, f"{name} not found in the binding"
        declared = re.findall(r'pybind11::arg\("(\w+)"\)', decl.group(0))
        params = list(inspect.signature(getattr(_EmulatedExtension, name)).parameters)[1:]
        assert declared == params, name


def test_shared_memory_table_matches_the_kernel_configurations(emulated):
    """anyres_fast/ops/_arch.py's per-configuration shared memory (what _cuda_unsupported checks against
    each architecture's opt-in maximum) equals the kernel's own Smem<T, dual>::kTotal, and the C++
    launcher refuses exactly the configurations the Python side refuses (issue 28 item 2)."""
    from anyres_fast.ops import _arch
    lib = emulated.lib
    assert lib.emu_igemm_min_arch() == _arch.IGEMM_MIN_ARCH[0] * 10 + _arch.IGEMM_MIN_ARCH[1]
    for dtype, code in DTYPE_CODE.items():
        for exact in (0, 1):
            for dual in (False, True):
                assert lib.emu_igemm_smem_bytes(code, exact, int(dual)) == _arch.igemm_smem_bytes(dtype, dual), \
                    (dtype, exact, dual)
    assert _arch.igemm_smem_bytes(torch.float32, True) == 110592  # the configuration of the issue
    # the launcher's own refusal, per architecture of the table, for the fp32 two-accumulator conv
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(3, 4, 3, 3)
    for (major, minor), smem in _arch.SMEM_OPTIN_BYTES.items():
        lib.emu_set_device(major * 10 + minor, smem)
        try:
            refused = _arch.igemm_refusal((major, minor), smem, torch.float32, True) is not None
            out = torch.empty(1, 3, 3, 3)
            wg = mc.gemm_weight(w)
            dims = emulated._dims(x, out, wg, 0, 0)
            cp, staged, staged_sq, workspace, wf = emulated._scratch(dims, True, torch.float32)
            ptrs = (ctypes.c_void_p * 10)(*(_ptr(t).value for t in (x, None, x, wg, wg, None, out, staged,
                                                                      staged_sq, workspace)))
            rc = lib.emu_style_fused_igemm(dims, ptrs, ctypes.c_int64(wf), 1, ctypes.c_float(1e-8), 0, 0)
            assert (rc != 0) == refused, (major, minor, rc)
        finally:
            lib.emu_set_device(90, 232448)


def test_gemm_weight_view_at_an_offset_is_realigned(cuda_path, monkeypatch):
    """GEMM-ready weights that are contiguous views with a storage offset (not 16-byte aligned): cp.async
    would fault on a GPU (the emulation reports it), so the ops pass an aligned copy (issue 28 item 4)."""
    real = mc.gemm_weight

    def offset_view(weight, adjoint=False, square=False):
        gw = real(weight, adjoint, square)
        view = torch.empty(gw.numel() + 1, dtype=gw.dtype)[1:].view(gw.shape)
        view.copy_(gw)
        assert view.is_contiguous() and view.data_ptr() % 16 != 0
        return view

    monkeypatch.setattr(mc, "gemm_weight", offset_view)
    monkeypatch.setattr(sf, "gemm_weight", offset_view)
    x, weight, styles = _inputs(1, 6, 5, 5, 6, 3, torch.float32, (1, 6), seed=11)
    smap = torch.rand(1, 6, 5, 6, dtype=torch.float64) + 0.5
    with _math("fma"):
        y = mc._cuda_forward(x.float(), weight.float(), styles.float(), True, 1, 1, 1e-8)
        cuda_path.check()
        z = sf._cuda_forward(x.float(), weight.float(), smap.float(), 1, 1, "exact", 1e-8)
        cuda_path.check()
    assert rel_error(y, mc.modulated_conv2d_ref(x, weight, styles, True, 1, 1, 1e-8)) < 1e-5
    assert rel_error(z, sf.style_fused_conv2d_ref(x, weight, smap, 1, 1, "exact", 1e-8)) < 1e-5


# ---- shared-memory access pattern (the access trace, counted as in benchmarks/access_counts.py) -------------

def _traced_forward(cuda_path, path):
    """Site counts {site: (warp instructions, wavefronts, ideal)} of one modulated conv on `path`."""
    sys.path.insert(0, str(CSRC.parent))
    from benchmarks import access_counts as ac
    b, i, o, h, w, k, p, up = 1, 40, 64, 6, 6, 3, 1, 1
    dtype = PATHS[path][0]
    x, weight, styles = _inputs(b, i, o, h, w, k, dtype, (b, i), seed=5)
    with _math(path):
        cuda_path.lib.emu_trace(1)
        mc._cuda_forward(x.to(dtype), weight.to(dtype), styles.float(), True, p, up, 1e-8)
        cuda_path.lib.emu_trace(0)
    cuda_path.check()
    return ac.site_counts(ac.read_trace(cuda_path.lib.emu_trace_length, cuda_path.lib.emu_trace_record))


@pytest.mark.parametrize("path", ["fp16", "fma"])
def test_operand_tiles_are_written_and_read_without_bank_conflicts(cuda_path, path):
    """cp.async's 16-byte stores: a quarter warp (one wavefront) writes 8 distinct bank groups, so every
    store instruction costs its 4 wavefronts (512 bytes). The FMA path reads 16-byte rows: no conflict
    within a quarter warp (4 wavefronts per instruction, broadcasts included); 4-byte reads of 16 rows
    36 words apart would cost 2 per k."""
    counts = _traced_forward(cuda_path, path)
    n, cost, ideal = counts[10]
    assert n > 0 and cost == ideal == 4 * n, counts[10]
    if path == "fma":
        for site in (11, 12):
            n, cost, _ = counts[site]
            assert n > 0 and cost == 4 * n, (site, counts[site])
    else:
        assert 11 not in counts and 12 not in counts
