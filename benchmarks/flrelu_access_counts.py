"""Memory-access counts of filtered_lrelu's down pass (stage 4), per warp-wide instruction. Counts, not timings.

    python benchmarks/flrelu_access_counts.py [--csrc DIR]

Compiles the real kernel source with g++ as the multi-thread host emulation (csrc/kernels/host_emulation.h:
one CTA = 256 real threads), runs one CTA of each StyleGAN3 layer kind with the access trace on, and groups
the trace into warp instructions: the n-th access of one trace site by each of 32 consecutive threads. For
every site it prints, summed over the CTA's instructions:
  shared memory: wavefronts (32 banks of 4 bytes; lanes reading the same word share it; 8-byte accesses
  are served per half warp, 16-byte ones per quarter warp) against the ideal, ceil(bytes / 128) each;
  global memory: 32-byte sectors touched against the ideal, ceil(bytes / 32) each.
A ratio of 1.00 is conflict-free / fully coalesced. The model is the usual one for sm_80/sm_90 shared
memory and L1/L2 sectors; it counts the accesses as the source writes them (the SASS may merge some:
nvcc turns the 12 broadcast fd tap loads of a filter row into 3 LDS.128). Needs g++ and the CUDA headers,
no GPU.
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
         3: ("s_mid loads", "shared"), 4: ("output stores", "global")}

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


def build(csrc: Path, directory: Path):
    """The emulation library of csrc's filtered_lrelu.cu (g++, -O1, 256 threads per CTA)."""
    cxx = shutil.which("g++")
    cuda_inc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    if cxx is None or not (cuda_inc / "cuda_runtime.h").exists():
        raise SystemExit("flrelu_access_counts: needs g++ and the CUDA headers (CUDA_HOME)")
    (directory / "trace.cpp").write_text(HARNESS)
    cmd = [cxx, "-std=c++20", "-O1", "-w", "-x", "c++", "-pthread", "-DANYRES_FAST_HOST_EMULATION",
           "-DANYRES_FAST_HOST_EMULATION_THREADS", f"-I{csrc}", "-isystem", str(cuda_inc), "-shared", "-fPIC",
           str(directory / "trace.cpp"), "-o", str(directory / "libtrace.so")]
    subprocess.run(cmd, check=True, capture_output=True)
    lib = ctypes.CDLL(str(directory / "libtrace.so"))
    lib.trace_length.restype = ctypes.c_long
    return lib


def run_case(lib, case: Case):
    """The trace of `case`: list of (cta, thread, site, seq, offset, bytes)."""
    rc = lib.trace_run(case.up, case.down, *case.fu, *case.fd, case.tile, case.tile, case.pad)
    if rc != 0:
        raise RuntimeError(f"{case.name}: launcher returned {rc}")
    rec = (ctypes.c_int64 * 6)()
    out = []
    for i in range(lib.trace_length()):
        lib.trace_record(ctypes.c_long(i), rec)
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
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(args.csrc.resolve(), Path(tmp))
        print("| case | accesses | warp instructions | wavefronts / sectors | ideal | ratio |")
        print("|---|---|---|---|---|---|")
        for case in CASES:
            for site, (n, cost, ideal) in site_counts(run_case(lib, case)).items():
                label, space = SITES[site]
                unit = "wavefronts" if space == "shared" else "sectors"
                print(f"| {case.name} | {label} | {n} | {cost} {unit} | {ideal} | {cost / ideal:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
