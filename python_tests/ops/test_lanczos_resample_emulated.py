"""lanczos_resample CUDA kernels run on the CPU: csrc/kernels/lanczos_resample.cu compiled with g++ in host
emulation (-DANYRES_FAST_HOST_EMULATION: every launch runs its (block, thread) pairs serially) and driven
through the op's Python CUDA path (_cuda_forward / _cuda_backward) with a stand-in for the extension.
Checks the kernels' table formulas, index math and pass layout against the float64 reference without a
GPU: forward, backward, mask, per-sample boxes, poisoned outputs, out-of-bounds writes."""
import contextlib
import ctypes
import inspect
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import assert_close_to_reference, missing_toolchain, rel_error

from anyres_fast.ops import lanczos_resample_ref

# the package re-exports the function under the module's name, so fetch the module itself
from anyres_fast.ops import lanczos_resample_op as lz

CSRC = Path(__file__).resolve().parents[2] / "csrc"
ELEM_TYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # lanczos::ElemType codes
GUARD = 64  # elements of poison either side of every output and table buffer

# The binding's forward/backward (csrc/bindings/lanczos_resample.cpp) without torch: the same tables,
# float32 intermediate, launcher calls and pass order, on host memory. Tables start poisoned (NaN
# weights, out-of-range indices) and sit between guard zones that must come back untouched.
_HARNESS = r'''
#include "kernels/lanczos_resample.cu"

#include <cstring>
#include <vector>

namespace {
namespace lz = anyres_fast::lanczos;
constexpr size_t kGuard = %(guard)d;
constexpr int32_t kBadIndex = -1000003;

template <typename T>
struct Guarded {
  std::vector<T> v;
  T fill;
  Guarded(size_t n, T fill) : v(n + 2 * kGuard, fill), fill(fill) {}
  T* data() { return v.data() + kGuard; }
  bool intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (std::memcmp(&v[i], &fill, sizeof(T)) || std::memcmp(&v[v.size() - 1 - i], &fill, sizeof(T))) return false;
    return true;
  }
};

struct Tables {
  Guarded<int32_t> lo, count, inv_begin, inv_end;
  Guarded<float> weights;
  lz::AxisTables view;
  Tables(int64_t batch, int in_size, int out_size, int taps, bool inverse)
      : lo(batch * out_size, kBadIndex), count(batch * out_size, kBadIndex),
        inv_begin(inverse ? batch * in_size : 0, kBadIndex), inv_end(inverse ? batch * in_size : 0, kBadIndex),
        weights(batch * out_size * taps, NAN) {
    view.lo = lo.data();
    view.count = count.data();
    view.weights = weights.data();
    if (inverse) {
      view.inv_begin = inv_begin.data();
      view.inv_end = inv_end.data();
    }
    view.in_size = in_size;
    view.out_size = out_size;
    view.taps = taps;
    view.k_major = !inverse;
  }
  bool intact() const {
    return lo.intact() && count.intact() && inv_begin.intact() && inv_end.intact() && weights.intact();
  }
};

constexpr int kGuardBroken = -1;
}  // namespace

#define RUN(call) do { if (int rc = (call)) return rc; } while (0)

extern "C" void emu_set_max_blocks(unsigned n) { lz::emulation::max_blocks = n; }
size_t fused_smem = 48 * 1024;  // the binding's limit; 0 forces the two-pass forward
extern "C" void emu_set_fused_smem(int64_t n) { fused_smem = size_t(n); }
int last_fused = 0;  // did the last forward run the fused kernel?
extern "C" int emu_last_fused() { return last_fused; }

extern "C" int emu_forward(int type, const void* x, const double* boxes, int64_t b, int64_t c, int64_t h, int64_t w,
                           int64_t ho, int64_t wo, void* y, uint8_t* valid_rows, uint8_t* valid_cols, int a,
                           int antialias, int taps_y, int taps_x) {
  Tables rows(b, h, ho, taps_y, false), cols(b, w, wo, taps_x, false);
  rows.view.valid = valid_rows;
  cols.view.valid = valid_cols;
  RUN(lz::compute_tables(boxes, b, 0, a, antialias, cols.view, nullptr));
  RUN(lz::compute_tables(boxes, b, 1, a, antialias, rows.view, nullptr));
  const int fused = lz::resample_fused(type, x, y, b, c, h, w, ho, wo, rows.view, cols.view, fused_smem, nullptr);
  last_fused = fused != lz::kNotFused;
  if (fused != lz::kNotFused) return fused ? fused : (rows.intact() && cols.intact() ? 0 : kGuardBroken);
  Guarded<float> tmp(b * c * h * wo, NAN);
  RUN(lz::resample_axis(type, x, lz::kF32, tmp.data(), b * c * h, c * h, 1, cols.view, nullptr));
  RUN(lz::resample_axis(lz::kF32, tmp.data(), type, y, b * c, c, wo, rows.view, nullptr));
  return rows.intact() && cols.intact() && tmp.intact() ? 0 : kGuardBroken;
}

extern "C" int emu_backward(int type, const void* grad, const double* boxes, int64_t b, int64_t c, int64_t h,
                            int64_t w, int64_t ho, int64_t wo, void* dx, int a, int antialias, int taps_y,
                            int taps_x) {
  Tables rows(b, h, ho, taps_y, true), cols(b, w, wo, taps_x, true);
  RUN(lz::compute_tables(boxes, b, 0, a, antialias, cols.view, nullptr));
  RUN(lz::compute_tables(boxes, b, 1, a, antialias, rows.view, nullptr));
  RUN(lz::compute_inverse_ranges(b, cols.view, nullptr));
  RUN(lz::compute_inverse_ranges(b, rows.view, nullptr));
  Guarded<float> tmp(b * c * h * wo, NAN);
  RUN(lz::resample_axis_transpose(type, grad, lz::kF32, tmp.data(), b * c, c, wo, rows.view, nullptr));
  RUN(lz::resample_axis_transpose(lz::kF32, tmp.data(), type, dx, b * c * h, c * h, 1, cols.view, nullptr));
  return rows.intact() && cols.intact() && tmp.intact() ? 0 : kGuardBroken;
}
''' % {"guard": GUARD}


def _guarded(shape, dtype, fill):
    """(buffer, body): a flat poisoned buffer and its middle, shaped `shape`, with GUARD elements either side."""
    n = 1
    for s in shape:
        n *= s
    buf = torch.full((n + 2 * GUARD,), fill, dtype=dtype)
    return buf, buf[GUARD:GUARD + n].view(shape)


def _poison_kept(values, fill):
    return bool(torch.isnan(values.float()).all()) if fill != fill else bool((values == fill).all())


class _EmulatedExtension:
    """Stands in for the extension: the binding's two functions with the same arguments. Outputs are written
    into poisoned, guarded buffers first; every element must be overwritten and no guard touched."""

    def __init__(self, lib):
        self.lib = lib

    def _check_inputs(self, t, boxes):
        assert t.device.type == "cpu" and t.is_contiguous() and t.dtype in ELEM_TYPE
        assert boxes.dtype == torch.float64 and boxes.is_contiguous() and boxes.shape == (t.shape[0], 4)

    def lanczos_resample_forward(self, x, boxes, y, valid_rows, valid_cols, a, antialias, taps_y, taps_x, stream):
        self._check_inputs(x, boxes)
        assert y.dtype == x.dtype and y.is_contiguous() and stream == 0
        (b, c, h, w), (ho, wo) = x.shape, y.shape[2:]
        y_buf, y_out = _guarded(tuple(y.shape), y.dtype, float("nan"))
        rows_buf, rows_out = _guarded((b, ho), torch.uint8, 7)
        cols_buf, cols_out = _guarded((b, wo), torch.uint8, 7)
        p = lambda t: ctypes.c_void_p(t.data_ptr())
        rc = self.lib.emu_forward(ELEM_TYPE[x.dtype], p(x), p(boxes), b, c, h, w, ho, wo, p(y_out), p(rows_out),
                                  p(cols_out), a, int(antialias), taps_y, taps_x)
        assert rc == 0, f"launchers returned {rc} (-1: a table or intermediate guard was overwritten)"
        for buf, fill in ((y_buf, float("nan")), (rows_buf, 7), (cols_buf, 7)):
            assert _poison_kept(buf[:GUARD], fill) and _poison_kept(buf[-GUARD:], fill), "write out of bounds"
        assert not torch.isnan(y_out).any(), "forward left output elements unwritten"
        assert bool((rows_out <= 1).all() & (cols_out <= 1).all()), "valid_rows/valid_cols left unwritten"
        y.copy_(y_out)
        valid_rows.copy_(rows_out.bool())
        valid_cols.copy_(cols_out.bool())

    def lanczos_resample_backward(self, grad, boxes, dx, a, antialias, taps_y, taps_x, stream):
        self._check_inputs(grad, boxes)
        assert dx.dtype == grad.dtype and dx.is_contiguous() and stream == 0
        (b, c, h, w), (ho, wo) = dx.shape, grad.shape[2:]
        dx_buf, dx_out = _guarded(tuple(dx.shape), dx.dtype, float("nan"))
        p = lambda t: ctypes.c_void_p(t.data_ptr())
        rc = self.lib.emu_backward(ELEM_TYPE[grad.dtype], p(grad), p(boxes), b, c, h, w, ho, wo, p(dx_out), a,
                                   int(antialias), taps_y, taps_x)
        assert rc == 0, f"launchers returned {rc} (-1: a table or intermediate guard was overwritten)"
        assert _poison_kept(dx_buf[:GUARD], float("nan")) and _poison_kept(dx_buf[-GUARD:], float("nan"))
        assert not torch.isnan(dx_out).any(), "backward left dx elements unwritten"
        dx.copy_(dx_out)


def _build(directory, extra_flags=(), extra_source=""):
    cxx = shutil.which("g++")
    cuda_inc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    if cxx is None or not (cuda_inc / "cuda_runtime.h").exists():
        missing_toolchain("needs g++ and the CUDA headers for the host emulation of the kernels")
    d = directory
    (d / "harness.cpp").write_text(_HARNESS + extra_source)
    # -ffp-contract=off: no fused multiply-adds beyond the kernels' explicit fmaf, as on the GPU.
    cmd = [cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-w", "-x", "c++", "-DANYRES_FAST_HOST_EMULATION",
           *extra_flags, f"-I{CSRC}", "-isystem", str(cuda_inc), "-shared", "-fPIC", str(d / "harness.cpp"),
           "-o", str(d / "libemu.so")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"g++ failed:\n{done.stderr[-4000:]}"
    lib = ctypes.CDLL(str(d / "libemu.so"))
    lib.emu_set_max_blocks.argtypes = [ctypes.c_uint]
    lib.emu_set_fused_smem.argtypes = [ctypes.c_int64]
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.emu_forward.argtypes = [ctypes.c_int, ptr, ptr] + [i64] * 6 + [ptr] * 3 + [ctypes.c_int] * 4
    lib.emu_backward.argtypes = [ctypes.c_int, ptr, ptr] + [i64] * 6 + [ptr] + [ctypes.c_int] * 4
    return _EmulatedExtension(lib)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The emulated extension (compiled once per module)."""
    return _build(tmp_path_factory.mktemp("lanczos_emu"))


@pytest.fixture
def cuda_path(emulated, monkeypatch):
    """Lets lz._cuda_forward/_cuda_backward run on CPU tensors with the emulated extension."""
    monkeypatch.setattr(lz._dispatch, "extension", lambda: emulated)
    monkeypatch.setattr(lz._dispatch, "current_stream", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    emulated.lib.emu_set_max_blocks(0)
    emulated.lib.emu_set_fused_smem(48 * 1024)
    return emulated


def test_stand_in_has_the_bindings_signature():
    """The stand-in must take the arguments the real binding declares, in the same order."""
    src = (CSRC / "bindings" / "lanczos_resample.cpp").read_text()
    for name in ("lanczos_resample_forward", "lanczos_resample_backward"):
        decl = re.search(r'm\.def\("%s".*?\);' % name, src, re.S)
        assert decl, f"{name} not found in the binding"
        declared = re.findall(r'pybind11::arg\("(\w+)"\)', decl.group(0))
        params = list(inspect.signature(getattr(_EmulatedExtension, name)).parameters)[1:]
        assert declared == params


# (B, C, H, W, out_hw, boxes (one box, a per-sample list, or None = whole input), a, antialias)
CASES = [
    (2, 3, 37, 53, (19, 11), None, 3, True),                                         # odd sizes, shrink
    (3, 2, 31, 29, (97, 64), None, 3, True),                                         # enlarge > 3x
    (3, 2, 64, 48, (8, 6), [[0, 0, 48, 64], [3.25, 1.5, 40.75, 60.0], [10, 20, 30, 36.5]], 3, True),
    (2, 3, 40, 40, (33, 21), [[-6.5, -3.0, 45.0, 44.0], [1.0, 2.0, 12.0, 39.0]], 3, True),  # beyond the input
    (1, 2, 25, 70, (9, 140), (2.5, 1.0, 66.0, 24.0), 2, True),                       # shrink H, enlarge W
    (2, 1, 45, 33, (20, 15), None, 4, False),                                        # no antialiasing
    (3, 2, 32, 32, (32, 32), [[-16, -8, 48, 56], [0, 0, 32, 32], [-33, -50, 63, 46]], 3, True),
    (1, 1, 1, 7, (3, 4), None, 3, True),                                             # a single row
    (2, 2, 23, 17, (23, 17), [[0.5, 0.25, 17.5, 23.25], [-1, 0, 16, 23]], 1, True),  # shifted, same size
]


def _after_x(seed, b, c, h, w):
    """The generator state _run uses for g (after drawing x), so the baseline sees the same g."""
    gen = torch.Generator().manual_seed(seed)
    torch.rand(b, c, h, w, generator=gen, dtype=torch.float64)
    return gen


def _run(case, dtype, seed):
    """(y, valid_rows, valid_cols, dx) from the emulated kernels and the float64 reference equivalents."""
    b, c, h, w, out_hw, box, a, aa = case
    boxes = lz.boxes_tensor(lz.OP, None if box is None else torch.tensor(box, dtype=torch.float64), b, (h, w))
    taps = (lz.max_taps(boxes, 1, h, out_hw[0], a, aa), lz.max_taps(boxes, 0, w, out_hw[1], a, aa))
    gen = torch.Generator().manual_seed(seed)
    x64 = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64).requires_grad_(True)
    y_ref, m_ref = lanczos_resample_ref(x64, out_hw, box=boxes, a=a, antialias=aa, return_mask=True)
    g = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    (dx_ref,) = torch.autograd.grad(y_ref, x64, g)
    y, rows, cols = lz._cuda_forward(x64.detach().to(dtype), boxes, *out_hw, a, aa, *taps)
    dx = lz._cuda_backward(g.to(dtype), boxes, h, w, a, aa, *taps)
    return (y, rows, cols, dx), (y_ref, m_ref, dx_ref)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_emulated_kernels_match_reference(cuda_path, case, dtype):
    (y, rows, cols, dx), (y_ref, m_ref, dx_ref) = _run(CASES[case], dtype, seed=case)
    assert y.dtype == dtype and y.shape == y_ref.shape and dx.dtype == dtype and dx.shape == dx_ref.shape
    # the same-precision baseline: the reference run in dtype on the CPU (and its autograd)
    b, c, h, w, out_hw, box, a, aa = CASES[case]
    boxes = lz.boxes_tensor(lz.OP, None if box is None else torch.tensor(box, dtype=torch.float64), b, (h, w))
    xb = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(case), dtype=torch.float64)
    xb = xb.to(dtype).requires_grad_(True)
    y_base = lanczos_resample_ref(xb, out_hw, box=boxes, a=a, antialias=aa)
    g = torch.randn(y_ref.shape, generator=_after_x(case, b, c, h, w), dtype=torch.float64)
    (dx_base,) = torch.autograd.grad(y_base, xb, g.to(dtype))
    assert_close_to_reference("forward", y, y_ref, y_base.detach(), dtype)
    assert_close_to_reference("dx", dx, dx_ref, dx_base, dtype)
    assert torch.equal(rows[:, None, :, None] & cols[:, None, None, :], m_ref)


@pytest.mark.parametrize("case", [0, 2, 3, 6, 8])
def test_two_pass_forward_matches_the_fused_one(cuda_path, case):
    """The forward's fallback (two passes through a float32 intermediate in global memory, taken when the
    fused kernel's tables do not fit shared memory) agrees with the fused kernel and the reference."""
    (y, rows, cols, _), (y_ref, _, _) = _run(CASES[case], torch.float32, seed=case)
    assert cuda_path.lib.emu_last_fused() == 1
    cuda_path.lib.emu_set_fused_smem(0)
    (y2, rows2, cols2, _), _ = _run(CASES[case], torch.float32, seed=case)
    assert cuda_path.lib.emu_last_fused() == 0
    assert rel_error(y2, y_ref) <= 1e-5 and rel_error(y, y_ref) <= 1e-5
    assert (y2 - y).abs().max().item() <= 1e-5 * y_ref.abs().max().item()
    assert torch.equal(rows, rows2) and torch.equal(cols, cols2)


@pytest.mark.parametrize("case", [0, 2, 3, 6])
def test_grid_stride_loops_give_the_same_bits(cuda_path, case):
    """With the grid capped at 2 blocks each thread walks many grid-stride indices (the path real launches
    take only at huge sizes); the threads are independent, so the result must not change by a bit."""
    full, _ = _run(CASES[case], torch.float32, seed=case)
    cuda_path.lib.emu_set_max_blocks(2)
    capped, _ = _run(CASES[case], torch.float32, seed=case)
    for a, b in zip(full, capped):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_identity_box_is_exact(cuda_path, dtype):
    """Whole input at the same size: every weight is exactly 1 or 0, so both passes copy bit for bit (the
    public op short-circuits this case, so only a direct call reaches the kernels)."""
    b, c, h, w = 2, 3, 13, 22
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    boxes = lz.boxes_tensor(lz.OP, None, b, (h, w))
    taps = (lz.max_taps(boxes, 1, h, h, 3, True), lz.max_taps(boxes, 0, w, w, 3, True))
    y, rows, cols = lz._cuda_forward(x, boxes, h, w, 3, True, *taps)
    assert torch.equal(y, x) and rows.all() and cols.all()
    assert torch.equal(lz._cuda_backward(x, boxes, h, w, 3, True, *taps), x)


def test_unsupported_element_type_is_an_error_not_a_crash(emulated):
    """Launchers reject element types they have no kernel for (one side of every pass must be float32)."""
    x = torch.rand(1, 1, 4, 4, dtype=torch.float32)
    boxes = lz.boxes_tensor(lz.OP, None, 1, (4, 4))
    y = torch.empty(1, 1, 2, 2, dtype=torch.float32)
    flags = torch.empty(1, 2, dtype=torch.uint8)
    p = lambda t: ctypes.c_void_p(t.data_ptr())
    rc = emulated.lib.emu_forward(9, p(x), p(boxes), 1, 1, 4, 4, 2, 2, p(y), p(flags), p(flags), 3, 1, 4, 4)
    assert rc not in (0, -1)


# The fused forward with every CTA run as its 256 threads taking turns at the barriers
# (csrc/kernels/host_emulation.h): catches a missing barrier or threads racing on shared memory.
_THREADS_SOURCE = r"""
namespace emu = anyres_fast::emulation;
extern "C" void emu_configure(int reverse_order, int skip_barrier_line) {
  emu::reverse_order = reverse_order != 0;
  emu::skip_barrier_line = skip_barrier_line;
  emu::barrier_lines.clear();
  emu::error_count = 0;
}
extern "C" long emu_error_count() { return emu::error_count; }
extern "C" int emu_barrier_lines(int* lines, int capacity) {
  int n = 0;
  for (int line : emu::barrier_lines)
    if (n < capacity) lines[n++] = line;
  return int(emu::barrier_lines.size());
}
"""


@pytest.fixture(scope="module")
def threaded(tmp_path_factory):
    ext = _build(tmp_path_factory.mktemp("lanczos_emu_threads"), ("-pthread", "-DANYRES_FAST_HOST_EMULATION_THREADS"),
                 _THREADS_SOURCE)
    ext.lib.emu_error_count.restype = ctypes.c_long
    return ext


def _fused_forward_error(ext, case):
    b, c, h, w, out_hw, box, a, aa = case
    boxes = lz.boxes_tensor(lz.OP, None if box is None else torch.tensor(box, dtype=torch.float64), b, (h, w))
    taps = (lz.max_taps(boxes, 1, h, out_hw[0], a, aa), lz.max_taps(boxes, 0, w, out_hw[1], a, aa))
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    try:
        y, _, _ = lz._cuda_forward(x.float(), boxes, *out_hw, a, aa, *taps)
    except AssertionError:  # the stand-in found outputs left unwritten (NaN from unwritten shared memory)
        return math.inf
    assert ext.lib.emu_last_fused() == 1
    return rel_error(y, lanczos_resample_ref(x, out_hw, box=boxes, a=a, antialias=aa))


def test_fused_forward_barriers(threaded, monkeypatch):
    """In both thread orders the fused forward matches the reference with its barriers; with any one of them
    removed it goes wrong in at least one order (shrink case: several row sub-batches per tile)."""
    monkeypatch.setattr(lz._dispatch, "extension", lambda: threaded)
    monkeypatch.setattr(lz._dispatch, "current_stream", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    threaded.lib.emu_set_fused_smem(48 * 1024)
    case = (1, 1, 45, 37, (16, 11), None, 3, True)  # one CTA, three row sub-batches
    for reverse in (0, 1):
        threaded.lib.emu_configure(reverse, -1)
        assert _fused_forward_error(threaded, case) <= 1e-5
        assert threaded.lib.emu_error_count() == 0
    lines = (ctypes.c_int * 16)()
    n = threaded.lib.emu_barrier_lines(lines, 16)
    assert n == 3, f"expected the fused kernel's 3 barriers, ran {list(lines[:n])}"
    for line in list(lines[:n]):
        errors = []
        for reverse in (0, 1):
            threaded.lib.emu_configure(reverse, line)
            errors.append(_fused_forward_error(threaded, case))
            if errors[-1] > 1e-5:
                break  # caught: the other order need not run
        assert not all(e <= 1e-5 for e in errors), f"barrier on line {line} removed: errors {errors}"
    threaded.lib.emu_configure(0, -1)


_WINDOWS_SOURCE = r'''
extern "C" int emu_windows(const double* boxes, int64_t batch, int in_size, int out_size, int taps, int a,
                           int32_t* lo, int32_t* count) {
  std::vector<float> weights(size_t(batch) * out_size * taps);
  lz::AxisTables t;
  t.lo = lo; t.count = count; t.weights = weights.data();
  t.in_size = in_size; t.out_size = out_size; t.taps = taps; t.k_major = false;
  return lz::compute_tables(boxes, batch, 0, a, true, t, nullptr);
}
'''


def test_tap_windows_do_not_depend_on_fma_contraction(tmp_path):
    """The table kernel compiled with FMA contraction on (g++ -O2 -mfma -ffp-contract=fast, as ptxas contracts
    a*b+c into DFMA) gives every output row the tap window [lo, lo + count) of the float64 formula of
    docs/ops.md §3.1, each step rounded on its own (issue 28 item 3). Boxes with decimal starts and
    scales put c_i ± a·f + 0.5 on exact integers, where one contraction moves the window by a tap."""
    if "fma" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU has no FMA instructions to contract into")
    lib = _build(tmp_path, ("-O2", "-mfma", "-ffp-contract=fast"), _WINDOWS_SOURCE).lib
    out_size, in_size = 8, 400
    j, m = torch.meshgrid(torch.arange(20, dtype=torch.float64), torch.arange(11, 61, dtype=torch.float64),
                          indexing="ij")
    start = 100 + j.flatten() * 0.05
    end = start + out_size * (m.flatten() * 0.1)
    boxes = torch.stack([start, torch.zeros_like(start), end, torch.ones_like(start)], 1).contiguous()
    batch = boxes.shape[0]
    mismatched = 0
    for a in (1, 2, 3):
        # the float64 formula, every operation rounded (torch runs them one by one)
        scale = (end - start) / out_size
        fs = scale.clamp_min(1.0)
        centre = start[:, None] + (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale[:, None]
        support = (a * fs)[:, None]
        lo_want = torch.floor(centre - support + 0.5).clamp(0, in_size)
        hi_want = torch.floor(centre + support + 0.5).clamp(0, in_size)
        taps = 2 * math.ceil(a * float(fs.max())) + 1
        count_want = (hi_want - lo_want).clamp(0, taps)
        lo = torch.full((batch, out_size), -1, dtype=torch.int32)
        count = torch.full((batch, out_size), -1, dtype=torch.int32)
        rc = lib.emu_windows(ctypes.c_void_p(boxes.data_ptr()), ctypes.c_int64(batch), in_size, out_size, taps, a,
                             ctypes.c_void_p(lo.data_ptr()), ctypes.c_void_p(count.data_ptr()))
        assert rc == 0
        mismatched += int(((lo != lo_want) | (count != count_want)).sum())
    assert mismatched == 0, f"{mismatched} of {3 * batch * out_size} rows have another tap window"
