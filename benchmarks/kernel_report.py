"""Static kernel report: what the compiler made of every kernel, for sm_90. Counts, not timings.

    python benchmarks/kernel_report.py [--csrc DIR] [--arch 90] [--out FILE.md] [--loops] [--only REGEX] [--jobs N]

Compiles each `csrc/kernels/*.cu` to a cubin with the extension's flags (`nvcc -O3 -lineinfo`, ptxas -v),
disassembles it (`nvdisasm -g`) and prints one row per kernel variant (template instantiation):
  regs, spills, static + dynamic shared memory, threads per CTA (from __launch_bounds__, else the launcher's
  value), theoretical occupancy on sm_90 (64 warps, 64K registers, 228 KB shared memory, 32 CTAs per SM);
  and the static instruction mix of its inner loops: the innermost SASS loops (a backward branch to a
  label) that contain FMAs or MMAs, summed: FFMA and HMMA counts, shared loads (LDS/LDSM), global loads
  (LDG, with the widths seen), other instructions, 64-bit division calls, and shared/global loads per FMA
  (per MMA for tensor-core loops). `--loops REGEX` also lists every such loop of the matching variants with its source line.
Then a table of multiply-adds per output for the shapes the models use (from the launchers' tiling).

Needs nvcc (and cuobjdump/nvdisasm: CUDA's own, else the copies shipped in the triton wheel). No GPU.
Static counts only: they say what each thread executes per loop trip, not how fast it runs.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# sm_90 limits for the occupancy estimate (CUDA occupancy calculator rules)
SM90 = dict(max_warps=64, max_ctas=32, regs=65536, reg_unit=256, smem=228 * 1024, smem_reserved=1024,
            smem_unit=128)
# threads per CTA of kernels without __launch_bounds__ (their launchers' constant)
DEFAULT_THREADS = {"lanczos_resample": 256, "weight_energy_kernel": 256, "demod_kernel": 256}


def tool(name: str) -> str | None:
    """CUDA's own tool, else the one on PATH, else the copy in the triton wheel (same NVIDIA binaries)."""
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    if (cuda_home / "bin" / name).exists():
        return str(cuda_home / "bin" / name)
    if shutil.which(name):
        return shutil.which(name)
    try:
        import triton  # noqa: F401
        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if cand.exists():
            return str(cand)
    except Exception:  # triton missing or broken: no fallback
        pass
    return None


# ----------------------------------------------------------------------------------------------------
# ptxas -v and SASS parsing

@dataclass
class Loop:
    line: str              # source file:line of most of its FMAs (or of its first instruction)
    instrs: int = 0
    ffma: int = 0
    hmma: int = 0
    lds: int = 0           # shared-memory load instructions (LDS*, LDSM*)
    ldg: int = 0           # global load instructions (LDG*, LD.E*, and LDGSTS*: cp.async global->shared)
    ldg_widths: set = field(default_factory=set)
    sts: int = 0
    stg: int = 0
    calls: int = 0         # CALL (64-bit integer division subroutines and the like)

    def add(self, op: str):
        self.instrs += 1
        base = op.split(".")[0]
        if base in ("FFMA", "FFMA2"):
            self.ffma += 1
        elif base == "HMMA":
            self.hmma += 1
        elif base in ("LDS", "LDSM"):
            self.lds += 1
        elif base in ("LDG", "LD", "LDGSTS"):
            self.ldg += 1
            self.ldg_widths.add(load_width(op))
        elif base == "STS":
            self.sts += 1
        elif base in ("STG", "ST"):
            self.stg += 1
        elif base == "CALL":
            self.calls += 1


def load_width(op: str) -> int:
    """Bits per thread of a global load mnemonic (LDG.E.128 -> 128, LDG.E.U16 -> 16, LDG.E -> 32,
    LDGSTS.E.BYPASS.128 -> 128)."""
    for part in op.split(".")[1:]:
        m = re.fullmatch(r"[US]?(8|16|32|64|128)", part)
        if m:
            return int(m.group(1))
    return 32


@dataclass
class Function:
    name: str
    regs: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    static_smem: int = 0
    max_threads: int = 0
    loops: list = field(default_factory=list)   # innermost loops holding FMAs/MMAs


def parse_ptxas(text: str) -> dict[str, Function]:
    funcs: dict[str, Function] = {}
    cur = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '?([\w$]+)'?", line)
        if m:
            cur = funcs.setdefault(m.group(1), Function(m.group(1)))
            continue
        m = re.search(r"Function properties for '?([\w$]+)'?", line)
        if m:
            cur = funcs.get(m.group(1))  # device functions (not kernels) are not reported
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur.spill_stores, cur.spill_loads = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur.regs = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            cur.static_smem = int(m.group(1))
    return funcs


def parse_max_threads(elf_dump: str) -> dict[str, int]:
    """EIATTR_MAX_THREADS (__launch_bounds__) per function from `cuobjdump -elf`."""
    out, cur = {}, None
    lines = elf_dump.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*\.nv\.info\.([\w$]+)", line)
        if m:
            cur = m.group(1)
        if "EIATTR_MAX_THREADS" in line and cur:
            for nxt in lines[i + 1:i + 4]:
                v = re.search(r"Value:\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", nxt)
                if v:
                    out[cur] = int(v.group(1), 16) * int(v.group(2), 16) * int(v.group(3), 16)
                    break
    return out


_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\b(.*);")
_LABEL = re.compile(r"^(\.L_x_\d+|\$[\w$]+):")
_SRC = re.compile(r'//## File "([^"]+)", line (\d+)')


def parse_sass(text: str) -> dict[str, list]:
    """Function name -> list of items: ("label", name) | ("instr", op, operands, "file:line")."""
    funcs: dict[str, list] = {}
    cur, src = None, "?"
    for line in text.splitlines():
        m = re.match(r"^\.text\.([\w$]+):", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            src = "?"
            continue
        if cur is None:
            continue
        m = _SRC.search(line)
        if m:
            src = f"{Path(m.group(1)).name}:{m.group(2)}"
            continue
        m = _LABEL.match(line)
        if m:
            cur.append(("label", m.group(1)))
            continue
        m = _INSTR.match(line)
        if m:
            cur.append(("instr", m.group(2), m.group(3), src))
    return funcs


def loop_spans(items: list) -> list[tuple[int, int]]:
    """Loops = spans from a label to a later branch back to it."""
    label_pos = {it[1]: i for i, it in enumerate(items) if it[0] == "label"}
    spans = set()
    for i, it in enumerate(items):
        if it[0] == "instr" and it[1].startswith("BRA"):
            m = re.search(r"\((\.L_x_\d+)\)", it[2])
            if m and m.group(1) in label_pos and label_pos[m.group(1)] < i:
                spans.add((label_pos[m.group(1)], i))
    return sorted(spans)


def _stats(items: list, a: int, b: int, skip=()) -> Loop:
    loop = Loop(line="?")
    fma_lines: dict[str, int] = {}
    for i in range(a, b + 1):
        it = items[i]
        if it[0] != "instr" or any(s0 <= i <= s1 for s0, s1 in skip):
            continue
        loop.add(it[1])
        if it[1].startswith(("FFMA", "HMMA")):
            fma_lines[it[3]] = fma_lines.get(it[3], 0) + 1
    if fma_lines:
        loop.line = max(fma_lines, key=fma_lines.get)
    return loop


def innermost_loops(items: list) -> list[Loop]:
    """The inner loops: loops holding FFMA/HMMA instructions that contain no other such loop. Each gets
    `outer`: the instructions (and calls) of its enclosing loop outside its nested loops, i.e. the
    per-trip overhead of the loop that steps over outputs (None when there is no enclosing loop)."""
    spans = loop_spans(items)
    fma = [s for s in spans if (lambda st: st.ffma or st.hmma)(_stats(items, *s))]
    inner = [s for s in fma if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in fma)]
    loops = []
    for s in inner:
        loop = _stats(items, *s)
        parents = [o for o in spans if o != s and o[0] <= s[0] and s[1] <= o[1]]
        loop.outer, loop.outer_span = None, None
        if parents:
            p = min(parents, key=lambda o: o[1] - o[0])
            nested = [o for o in spans if o != p and p[0] <= o[0] and o[1] <= p[1]]
            loop.outer, loop.outer_span = _stats(items, *p, skip=nested), p
        loops.append(loop)
    return loops


def occupancy(regs: int, smem: int, threads: int) -> tuple[int, float]:
    """(CTAs per SM, fraction of the 64 warps) on sm_90."""
    warps = math.ceil(threads / 32)
    per_warp_regs = math.ceil(max(regs, 1) * 32 / SM90["reg_unit"]) * SM90["reg_unit"]
    by_regs = (SM90["regs"] // per_warp_regs) // warps
    by_warps = SM90["max_warps"] // warps
    cta_smem = math.ceil((smem + SM90["smem_reserved"]) / SM90["smem_unit"]) * SM90["smem_unit"]
    by_smem = SM90["smem"] // cta_smem
    ctas = min(by_regs, by_warps, by_smem, SM90["max_ctas"])
    return ctas, ctas * warps / SM90["max_warps"]


def demangle(names: list[str]) -> dict[str, str]:
    filt = shutil.which("c++filt")
    if not filt or not names:
        return {n: n for n in names}
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def short_variant(demangled: str) -> str:
    """'void anyres_fast::(anonymous namespace)::filtered_lrelu_kernel<__half, 2, 2>(...)' ->
    'filtered_lrelu_kernel<half,2,2>'."""
    s = demangled[5:] if demangled.startswith("void ") else demangled
    depth, cut, last_ns = 0, len(s), 0
    for i, ch in enumerate(s):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not s.startswith("(anonymous", i):
            cut = i
            break
        elif ch == ":" and depth == 0 and s[i:i + 2] == "::":
            last_ns = i + 2
    name = s[last_ns:cut]
    for long, short in (("__nv_bfloat16", "bf16"), ("__half", "half"), ("(anyres_fast::igemm::Math)", ""),
                        ("anyres_fast::igemm::Math::", ""), ("anyres_fast::", ""), (" ", "")):
        name = name.replace(long, short)
    return name


# ----------------------------------------------------------------------------------------------------
# Compilation

def compile_kernel(cu: Path, csrc: Path, arch: str, workdir: Path) -> tuple[str, str, str]:
    """(ptxas -v text, SASS text, cuobjdump -elf text) of one .cu file."""
    nvcc = tool("nvcc")
    cubin = workdir / (cu.stem + ".cubin")
    cmd = [nvcc, "-std=c++20", "-O3", "-lineinfo", "-Xptxas", "-v", "-cubin", f"-arch=sm_{arch}", f"-I{csrc}",
           str(cu), "-o", str(cubin)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed on {cu.name}:\n{done.stderr[-3000:]}")
    sass = subprocess.run([tool("nvdisasm"), "-g", "-c", str(cubin)], capture_output=True, text=True, check=True)
    elf = subprocess.run([tool("cuobjdump"), "-elf", str(cubin)], capture_output=True, text=True, check=True)
    return done.stderr + done.stdout, sass.stdout, elf.stdout


# ----------------------------------------------------------------------------------------------------
# Model shapes: dynamic shared memory and multiply-adds per output, from the launchers' tiling

def _flrelu_module(root: Path):
    """anyres_fast.ops.filtered_lrelu of the tree being reported (for its launch plan), or None."""
    sys.path.insert(0, str(root))
    try:
        from anyres_fast.ops import filtered_lrelu_op as mod
        return mod if Path(mod.__file__).resolve().is_relative_to(root) else None
    except Exception:
        return None
    finally:
        sys.path.pop(0)


# (name, up, down, fu taps (int: separable, (h, w): 2-D), fd taps, input side, padding) of StyleGAN3 layers
FLRELU_SHAPES = [
    ("T up2 12/12", 2, 2, 12, 12, 38, (9, 8, 9, 8)),
    ("T up4 24/12", 4, 2, 24, 12, 38, (-6, -9, -6, -9)),
    ("R up2 12/12r", 2, 2, 12, (12, 12), 36, (11, 10, 11, 10)),
    ("bwd of T up4: 12/24", 2, 4, 12, 24, 149, (0, 0, 0, 0)),
    ("ToRGB 1x1", 1, 1, (1, 1), (1, 1), 256, (0, 0, 0, 0)),
]


def _flrelu_rows(fl) -> list[list[str]]:
    """Per model shape: CTA tile, dynamic smem, CTAs/SM, MACs per output, from the tree's launch plan."""
    import torch
    rows = []
    for name, up, down, fu_t, fd_t, size, pads in FLRELU_SHAPES:
        mk = lambda t: torch.ones(t) if isinstance(t, int) else torch.ones(*t)
        fu, fd = mk(fu_t), mk(fd_t)
        geo = fl.geometry((1, 1, size, size), fu, fd, up, down, pads)
        plan = fl.cuda_launch_plan(geo, fu.ndim == 1, fd.ndim == 1, sign_write=True)
        rows.append([name, f"{geo.out_h}x{geo.out_w}", f"{plan['tile_h']}x{plan['tile_w']}",
                     f"{plan['smem_bytes'] / 1024:.1f} KB", f"{plan['macs_per_output']:.1f}", plan["variant"]])
    return rows


def _flrelu_rows_legacy() -> list[list[str]]:
    """The same for a tree whose filtered_lrelu.py has no launch plan (the tiling of the launcher before
    compile-time tap counts: 32x32 tiles (16x16 for down 4), each pass computes every element of its
    region with ceil(taps/up) or taps multiply-adds)."""
    rows = []
    for name, up, down, fu_t, fd_t, size, pads in FLRELU_SHAPES:
        fu_w, fu_h = (fu_t, fu_t) if isinstance(fu_t, int) else (fu_t[1], fu_t[0])
        fd_w, fd_h = (fd_t, fd_t) if isinstance(fd_t, int) else (fd_t[1], fd_t[0])
        sep_u, sep_d = isinstance(fu_t, int), isinstance(fd_t, int)
        buf = size * up + pads[0] + pads[1] - (fu_w - 1)
        out = (buf - fd_w) // down + 1
        tw = th = 16 if down == 4 else 32
        aw, ah = (tw - 1) * down + fd_w, (th - 1) * down + fd_h
        iw, ih = (aw + fu_w - 1 + up - 1) // up, (ah + fu_h - 1 + up - 1) // up
        mid = max(ih * aw if sep_u else 0, ah * tw if sep_d else 0)
        smem = 4 * ((fu_w if sep_u else fu_w * fu_h) + (fd_w if sep_d else fd_w * fd_h) + ih * iw + mid + ah * aw) + ah * aw
        up_macs = (ih * aw + ah * aw) * fu_w / up if sep_u else ah * aw * fu_w * fu_h / up ** 2
        down_macs = (ah * tw + th * tw) * fd_w if sep_d else th * tw * fd_w * fd_h
        rows.append([name, f"{out}x{out}", f"{th}x{tw}", f"{smem / 1024:.1f} KB",
                     f"{(up_macs + down_macs) / (th * tw):.1f}", "runtime taps"])
    return rows


def conv_macs_per_output(channels: int, k: int, up: int) -> tuple[int, float]:
    """(executed, useful) multiply-adds per output element of the implicit-GEMM conv kernel
    (csrc/kernels/implicit_gemm.cuh): K = C·k·k padded to the 32-wide K tile; for up = 2 (transposed
    conv, TConvS2) every tap of the window is executed although only those of one output parity hit an
    input sample. Keep in step with the kernel's schedule."""
    k_total = channels * k * k
    executed = math.ceil(k_total / 32) * 32
    if up == 1:
        return executed, float(k_total)
    taps = sum(len(range(p, k, 2)) for p in range(2)) ** 2 / 4  # mean taps per output parity
    return executed, channels * taps


def lanczos_macs_per_output(in_size: int, out_size: int, a: int = 3) -> float:
    """Multiply-adds per output of one separable pass: the table width (taps) of a shrink by in/out."""
    fs = max(in_size / out_size, 1.0)
    return min(2 * math.ceil(a * fs) + 1, in_size)


# ----------------------------------------------------------------------------------------------------
# Report

def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def build_report(csrc: Path, arch: str, root: Path, show_loops: bool, only: str = "", jobs: int = 4) -> str:
    kernels = [cu for cu in sorted((csrc / "kernels").glob("*.cu")) if not only or re.search(only, cu.stem)]
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = dict(zip(kernels, pool.map(lambda cu: compile_kernel(cu, csrc, arch, Path(tmp)), kernels)))
    rows, loop_rows = [], []
    for cu, (ptxas, sass, elf) in results.items():
        funcs = parse_ptxas(ptxas)
        threads = parse_max_threads(elf)
        code = parse_sass(sass)
        names = demangle(sorted(funcs))
        for mangled in sorted(funcs, key=lambda n: short_variant(names[n])):
            f = funcs[mangled]
            f.loops = innermost_loops(code.get(mangled, []))
            nthreads = threads.get(mangled) or next(
                (v for k, v in DEFAULT_THREADS.items() if k == cu.stem or k in names[mangled]), 0)
            ctas, occ = occupancy(f.regs, f.static_smem, nthreads) if nthreads else (0, 0.0)
            tot = Loop(line="")
            widths = set()
            outers = {lp.outer_span: lp.outer for lp in f.loops if lp.outer}  # each enclosing loop once
            outer_instrs = sum(o.instrs for o in outers.values())
            outer_calls = sum(o.calls for o in outers.values())
            for lp in f.loops:
                for k in ("instrs", "ffma", "hmma", "lds", "ldg", "sts", "stg", "calls"):
                    setattr(tot, k, getattr(tot, k) + getattr(lp, k))
                widths |= lp.ldg_widths
                if show_loops and re.search(show_loops, short_variant(names[mangled])):
                    loop_rows.append([cu.stem, short_variant(names[mangled]), lp.line, lp.instrs, lp.ffma, lp.hmma,
                                      lp.lds, lp.ldg, ",".join(map(str, sorted(lp.ldg_widths))) or "-", lp.calls,
                                      ratio(lp.lds, lp.ffma + lp.hmma),
                                      f"{lp.outer.instrs} / {lp.outer.calls}" if lp.outer else "-"])
            macs = tot.ffma + tot.hmma
            rows.append([cu.stem, short_variant(names[mangled]), f.regs, f.spill_stores + f.spill_loads,
                         f.static_smem, nthreads or "?", f"{occ:.0%}" + ("" if f.static_smem or cu.stem != "filtered_lrelu" else "*"),
                         len(f.loops), tot.instrs, tot.ffma, tot.hmma, tot.lds, tot.ldg,
                         ",".join(map(str, sorted(widths))) or "-", tot.calls, ratio(tot.lds, macs),
                         ratio(tot.ldg, macs), f"{outer_instrs} / {outer_calls}"])
    out = [f"Kernels compiled for sm_{arch} (nvcc -O3 -lineinfo); static counts from the compiler, not timings.",
           "Loop columns sum the innermost SASS loops that hold FMAs/MMAs (per trip of each loop); "
           "outer instrs / calls = instructions and subroutine calls (64-bit division) of the loops enclosing them, "
           "outside any nested loop: the per-output overhead where that loop steps over outputs; "
           "occupancy is theoretical, from registers, static shared memory and threads"
           " (* = plus dynamic shared memory: see the filtered_lrelu table).", "",
           markdown(["file", "variant", "regs", "spill B", "static smem B", "threads", "occupancy", "FMA loops",
                     "loop instrs", "FFMA", "HMMA", "LDS", "LDG", "LDG bits", "div calls", "LDS/FMA", "LDG/FMA",
                     "outer instrs / calls"],
                    rows)]
    if show_loops:
        out += ["", "Inner loops (one row per innermost SASS loop holding FMAs/MMAs; line = source of most FMAs):", "",
                markdown(["file", "variant", "line", "instrs", "FFMA", "HMMA", "LDS", "LDG", "LDG bits", "div calls",
                          "LDS/FMA", "outer instrs / calls"], loop_rows)]
    fl = _flrelu_module(root)
    fl_rows = _flrelu_rows(fl) if fl is not None and hasattr(fl, "cuda_launch_plan") else _flrelu_rows_legacy()
    out += ["", "filtered_lrelu at the StyleGAN3 shapes (forward with sign record; from the launcher's tiling):", "",
            markdown(["shape", "output", "CTA tile", "dynamic smem", "MACs/output", "kernel variant"],
                     fl_rows)]
    conv = []
    for c, k, up in ((512, 3, 1), (512, 3, 2), (512, 1, 1)):
        ex, useful = conv_macs_per_output(c, k, up)
        conv.append([f"C={c}, k={k}, up={up}", ex, f"{useful:.0f}", f"{ex / useful:.2f}"])
    out += ["", "Implicit-GEMM conv (modulated_conv2d / style_fused_conv2d), multiply-adds per output element:", "",
            markdown(["layer", "executed", "useful", "executed/useful"], conv)]
    lz = [[f"{i} -> {o}", lanczos_macs_per_output(i, o)] for i, o in ((1024, 256), (256, 256), (64, 256))]
    out += ["", "lanczos_resample (a=3, antialias), multiply-adds per output per pass:", "",
            markdown(["resize", "MACs/output/pass"], lz)]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csrc", type=Path, default=ROOT / "csrc", help="source tree (default: this checkout)")
    parser.add_argument("--arch", default="90")
    parser.add_argument("--loops", metavar="REGEX", default="",
                        help="also list every inner loop of the variants matching REGEX (e.g. 'half')")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--only", metavar="REGEX", default="",
                        help="report only the csrc/kernels/*.cu files whose stem matches REGEX (e.g. 'lanczos')")
    parser.add_argument("--jobs", type=int, default=4, help="nvcc processes at a time (default 4)")
    parser.add_argument("--skip-without-tools", action="store_true",
                        help="exit 0 (after saying so) when nvcc/nvdisasm/cuobjdump are missing (CI)")
    args = parser.parse_args(argv)
    missing = [t for t in ("nvcc", "nvdisasm", "cuobjdump") if tool(t) is None]
    if missing:
        print(f"kernel_report: {', '.join(missing)} not found (CUDA_HOME, PATH, triton wheel); nothing to report")
        return 0 if args.skip_without_tools else 2
    text = build_report(args.csrc.resolve(), args.arch, args.csrc.resolve().parent, args.loops, args.only,
                        max(1, args.jobs))
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
