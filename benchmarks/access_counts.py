"""Shared-memory and global access counts of two kernels, per warp-wide instruction. Counts, not timings.

    python benchmarks/access_counts.py [--csrc DIR] [--kernel filtered_lrelu|implicit_gemm|all]

Compiles the real kernel sources with g++ as the multi-thread host emulation (csrc/kernels/host_emulation.h:
each CTA runs as its real threads) with the access trace on, and groups the trace into warp instructions:
the n-th access of one trace site by each of 32 consecutive threads of a CTA. Traced sites:
  filtered_lrelu: its down pass (stage 4), one CTA of each StyleGAN3 layer kind (window loads of the
  upsampled tile, fd tap loads, the s_mid staging, the output stores);
  implicit_gemm: the operand tiles of the convolution GEMM (cp.async stores into shared memory, and the
  exact-fp32 FMA path's A and B loads; WMMA fragment loads are not traced: their per-lane addresses are
  not documented), for one modulated 3x3 convolution.
For every site it prints, summed over the instructions:
  shared memory: wavefronts (32 banks of 4 bytes; lanes reading the same word share it; 8-byte accesses
  are served per half warp, 16-byte ones per quarter warp) against the ideal, ceil(bytes / 128) each;
  global memory: 32-byte sectors touched against the ideal, ceil(bytes / 32) each.
A ratio of 1.00 is conflict-free / fully coalesced (a 16-byte broadcast counts one wavefront per quarter
warp). The model is the usual one for sm_80/sm_90 shared memory and L1/L2 sectors; it counts the
accesses as the source writes them (the SASS may merge some: nvcc turns the 12 broadcast fd tap loads of
a filter row into 3 LDS.128). Needs g++ and the CUDA headers, no GPU.
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITES = {0: ("s_act window loads", "shared"), 1: ("fd tap loads", "shared"), 2: ("s_mid stores", "shared"),
         3: ("s_mid loads", "shared"), 4: ("output stores", "global"),
         10: ("cp.async stores (A, B tiles)", "shared"), 11: ("FMA A loads", "shared"), 12: ("FMA B loads", "shared")}

HARNESS = r'''
#include "kernels/filtered_lrelu.cu"
#include <vector>
namespace emu = anyres_fast::emulation;
static std::vector<float> x_buf, y_buf, fu_buf, fd_buf, bias_buf;

// One filtered_lrelu forward (no sign record) of a 1 x 1 x in x in plane with all-ones filters, traced.
extern "C" int trace_run(int up, int down, int fu_w, int fu_h, int fu_sep, int fd_w, int fd_h, int fd_sep, int in,
                         int out, int pad) {
  x_buf.assign(size_t(in) * in, 0.5f);
  y_buf.assign(size_t(out) * out, 0.f);
  fu_buf.assign(size_t(fu_w) * fu_h, 1.f);
  fd_buf.assign(size_t(fd_w) * fd_h, 1.f);
  bias_buf.assign(1, 0.f);
  anyres_fast::FilteredLReluParams p{};
  p.x = x_buf.data(); p.x_stride_n = int64_t(in) * in; p.x_stride_c = int64_t(in) * in; p.x_stride_h = in;
  p.x_stride_w = 1; p.N = 1; p.C = 1; p.in_h = in; p.in_w = in; p.bias = bias_buf.data();
  p.fu = fu_buf.data(); p.fu_w = fu_w; p.fu_h = fu_h; p.fu_separable = fu_sep != 0;
  p.fd = fd_buf.data(); p.fd_w = fd_w; p.fd_h = fd_h; p.fd_separable = fd_sep != 0;
  p.y = y_buf.data(); p.out_h = out; p.out_w = out;
  p.up = up; p.down = down; p.pad_x0 = pad; p.pad_y0 = pad; p.sign_mode = 0;
  p.gain = 1.f; p.slope = 0.2f; p.clamp = -1.f;
  emu::trace.clear();
  emu::trace_on = true;
  const int rc = anyres_fast::filtered_lrelu_launch(p, anyres_fast::DType::f32, nullptr);
  emu::trace_on = false;
  return rc;
}
extern "C" long trace_length() { return long(emu::trace.size()); }
// record i: CTA, thread, site, seq, byte offset from the shared-memory base (shared sites) or y (global), bytes
extern "C" void trace_record(long i, int64_t* out) {
  const emu::Access& a = emu::trace[size_t(i)];
  const uintptr_t base = a.site == 4 ? reinterpret_cast<uintptr_t>(y_buf.data())
                                     : reinterpret_cast<uintptr_t>(emu::shared_memory);
  out[0] = a.block; out[1] = a.thread; out[2] = a.site; out[3] = a.seq; out[4] = int64_t(a.address - base);
  out[5] = a.bytes;
}
'''


IGEMM_HARNESS = r'''
#include "kernels/modulated_conv2d.cu"
#include <vector>
namespace emu = anyres_fast::emulation;
static std::vector<unsigned char> buffers[7];

static void* zeros(int i, int64_t bytes) {
  buffers[i].assign(size_t(bytes > 0 ? bytes : 16), 0);
  return buffers[i].data();
}

// One modulated_conv2d GEMM (dtype 0 f32, 1 f16, 2 bf16; exact_fp32: the FMA path) of zeros, traced.
extern "C" int trace_run(int dtype, int exact_fp32, int batch, int channels, int size, int m_out, int k) {
  anyres_fast::ImplicitGemmShape s;
  s.batch = batch; s.channels = channels; s.h_in = size; s.w_in = size; s.m_out = m_out; s.h_out = size;
  s.w_out = size; s.kh = k; s.kw = k; s.pad = k / 2; s.mode = 0;
  anyres_fast::ImplicitGemmScratch sc;
  if (int rc = anyres_fast::implicit_gemm_scratch(s, false, &sc)) return rc;
  const int64_t e = dtype == 0 ? 4 : 2;
  anyres_fast::ImplicitGemmOperands o;
  o.x = zeros(0, batch * channels * int64_t(size) * size * e);
  o.pre = static_cast<const float*>(zeros(1, batch * channels * int64_t(4)));
  o.weight = zeros(2, m_out * int64_t(k) * k * sc.channels_padded * e);
  o.post = static_cast<const float*>(zeros(3, batch * m_out * int64_t(4)));
  o.out = zeros(4, batch * m_out * int64_t(size) * size * e);
  o.staged = zeros(5, sc.staged_elements * e);
  o.workspace = static_cast<float*>(zeros(6, sc.workspace_floats * 4));
  o.workspace_floats = sc.workspace_floats;
  emu::trace.clear();
  emu::trace_on = true;
  const int rc = anyres_fast::modulated_conv2d_igemm(s, o, anyres_fast::DType(dtype), exact_fp32 != 0, nullptr);
  emu::trace_on = false;
  return rc;
}
extern "C" long trace_length() { return long(emu::trace.size()); }
extern "C" void trace_record(long i, int64_t* out) {
  const emu::Access& a = emu::trace[size_t(i)];
  out[0] = a.block; out[1] = a.thread; out[2] = a.site; out[3] = a.seq;
  out[4] = int64_t(a.address - reinterpret_cast<uintptr_t>(emu::shared_memory)); out[5] = a.bytes;
}
'''


@dataclass(frozen=True)
class GemmCase:
    name: str
    dtype: int     # anyres_fast::DType: 0 f32, 1 f16, 2 bf16
    exact_fp32: bool
    batch: int = 1
    channels: int = 64
    size: int = 8
    m_out: int = 64
    k: int = 3


GEMM_CASES = [
    GemmCase("conv 64->64 3x3, fp32 FMA (exact)", 0, True),
    GemmCase("conv 64->64 3x3, fp32 TF32", 0, False),
    GemmCase("conv 64->64 3x3, fp16", 1, False),
    GemmCase("conv 64->64 3x3, bf16", 2, False),
]


@dataclass(frozen=True)
class Case:
    name: str
    up: int
    down: int
    fu: tuple      # (w, h, separable)
    fd: tuple
    tile: int      # output size = the launcher's tile: one CTA, no output outside the image
    pad: int


CASES = [
    Case("R layer, up 2: 12x12 radial fd", 2, 2, (12, 12, 1), (12, 12, 0), 32, 11),
    Case("R layer, up 4: 12x12 radial fd", 4, 2, (24, 24, 1), (12, 12, 0), 32, 11),
    Case("T layer, up 2: separable fd", 2, 2, (12, 12, 1), (12, 12, 1), 32, 11),
    Case("down 4: separable 24-tap fd", 2, 4, (12, 12, 1), (24, 24, 1), 16, 11),
]


def build(csrc: Path, directory: Path, harness: str = HARNESS):
    """The emulation library of csrc's filtered_lrelu.cu (or of `harness`'s kernels; g++, -O1)."""
    cxx = shutil.which("g++")
    cuda_inc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    if cxx is None or not (cuda_inc / "cuda_runtime.h").exists():
        raise SystemExit("access_counts: needs g++ and the CUDA headers (CUDA_HOME)")
    (directory / "trace.cpp").write_text(harness)
    cmd = [cxx, "-std=c++20", "-O1", "-w", "-x", "c++", "-pthread", "-DANYRES_FAST_HOST_EMULATION",
           "-DANYRES_FAST_HOST_EMULATION_THREADS", f"-I{csrc}", "-isystem", str(cuda_inc), "-shared", "-fPIC",
           str(directory / "trace.cpp"), "-o", str(directory / "libtrace.so")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"access_counts: g++ failed on {csrc} (is it a checkout's csrc/?):\n{done.stderr[-3000:]}")
    lib = ctypes.CDLL(str(directory / "libtrace.so"))
    lib.trace_length.restype = ctypes.c_long
    return lib


def run_case(lib, case):
    """The trace of `case` (a Case or GemmCase): list of (cta, thread, site, seq, offset, bytes)."""
    if isinstance(case, GemmCase):
        rc = lib.trace_run(case.dtype, int(case.exact_fp32), case.batch, case.channels, case.size, case.m_out, case.k)
    else:
        rc = lib.trace_run(case.up, case.down, *case.fu, *case.fd, case.tile, case.tile, case.pad)
    if rc != 0:
        raise RuntimeError(f"{case.name}: launcher returned {rc}")
    return read_trace(lib.trace_length, lib.trace_record)


def read_trace(length, record) -> list:
    """The trace through a harness's two C functions: length() records, record(i, int64[6]) fills one."""
    rec = (ctypes.c_int64 * 6)()
    out = []
    for i in range(length()):
        record(ctypes.c_long(i), rec)
        out.append(tuple(rec))
    return out


def warp_instructions(trace):
    """{(site, cta, warp, seq): [(lane, offset, bytes), ...]}: the accesses one warp instruction makes."""
    groups = defaultdict(list)
    for cta, thread, site, seq, offset, nbytes in trace:
        groups[(site, cta, thread // 32, seq)].append((thread % 32, offset, nbytes))
    return groups


def shared_wavefronts(accesses) -> int:
    """Wavefronts of one shared-memory instruction: per phase (whole warp for 4-byte accesses, half warps
    for 8, quarter warps for 16), the most distinct 4-byte words that fall in one of the 32 banks."""
    width = max(b for _, _, b in accesses)
    lanes_per_phase = 32 * 4 // max(width, 4)
    phases = defaultdict(lambda: defaultdict(set))
    for lane, offset, nbytes in accesses:
        for word in range(offset // 4, (offset + nbytes + 3) // 4):
            phases[lane // lanes_per_phase][word % 32].add(word)
    return sum(max(len(words) for words in banks.values()) for banks in phases.values())


def distinct_bytes(accesses) -> int:
    return len({o + k for _, o, b in accesses for k in range(b)})


def global_sectors(accesses) -> int:
    """32-byte sectors one global instruction touches."""
    return len({s for _, o, b in accesses for s in range(o // 32, (o + b - 1) // 32 + 1)})


def site_counts(trace):
    """{site: (instructions, cost, ideal cost)}: wavefronts for shared sites, sectors for global ones."""
    totals = defaultdict(lambda: [0, 0, 0])
    for (site, *_), acc in warp_instructions(trace).items():
        t = totals[site]
        t[0] += 1
        if SITES[site][1] == "shared":
            t[1] += shared_wavefronts(acc)
            t[2] += math.ceil(distinct_bytes(acc) / 128)
        else:
            t[1] += global_sectors(acc)
            t[2] += math.ceil(distinct_bytes(acc) / 32)
    return {s: tuple(v) for s, v in sorted(totals.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csrc", type=Path, default=ROOT / "csrc", help="kernel sources (default: this checkout)")
    ap.add_argument("--kernel", choices=("filtered_lrelu", "implicit_gemm", "all"), default="all")
    args = ap.parse_args(argv)
    if not (args.csrc / "kernels" / "filtered_lrelu.cu").is_file():
        ap.error(f"--csrc {args.csrc}: no kernels/filtered_lrelu.cu there (give a checkout's csrc/ folder)")
    groups = {"filtered_lrelu": (HARNESS, CASES), "implicit_gemm": (IGEMM_HARNESS, GEMM_CASES)}
    print("| case | accesses | warp instructions | wavefronts / sectors | ideal | ratio |")
    print("|---|---|---|---|---|---|")
    for name, (harness, cases) in groups.items():
        if args.kernel not in (name, "all"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            lib = build(args.csrc.resolve(), Path(tmp), harness)
            for case in cases:
                for site, (n, cost, ideal) in site_counts(run_case(lib, case)).items():
                    label, space = SITES[site]
                    unit = "wavefronts" if space == "shared" else "sectors"
                    print(f"| {case.name} | {label} | {n} | {cost} {unit} | {ideal} | {cost / ideal:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
