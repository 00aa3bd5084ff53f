"""Compile every kernel for each target architecture and print the matrix: arch x kernel, built / stub /
refused by design (docs/build.md §6). Compile only: no GPU, no torch build of the extension.

    python scripts/arch_matrix.py [--archs 75,80,86,89,90] [--jobs 2] [--out FILE.md]

Each `csrc/kernels/*.cu` is compiled to a cubin per arch with the extension's device flags
(`nvcc -O3 -lineinfo`, ptxas -v). A kernel is "built" when ptxas compiled its body and "stub" when the
arch guard left it empty (the implicit-GEMM conv_kernel below sm_80: a stub uses no barrier, the real
kernel does). The conv rows also say what anyres_fast/ops/_arch.py refuses by design on that arch (shared
memory beyond the opt-in maximum, or below sm_80). Exits 1 when a file fails to compile or a kernel's
build state disagrees with the design (the CI check). Needs nvcc.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.kernel_report import demangle, short_variant, tool  # noqa: E402

ALL_ARCHS = ("75", "80", "86", "89", "90")


def compile_ptxas(cu: Path, arch: str, workdir: Path) -> tuple[str, float]:
    """(ptxas -v output, seconds) of one file for one arch; raises RuntimeError on a compile error."""
    cubin = workdir / f"{cu.stem}.sm_{arch}.cubin"
    cmd = [tool("nvcc"), "-std=c++20", "-O3", "-lineinfo", "-Xptxas", "-v", "-cubin", f"-arch=sm_{arch}",
           f"-I{ROOT / 'csrc'}", str(cu), "-o", str(cubin)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed on {cu.name} for sm_{arch}:\n{done.stderr[-3000:]}")
    return done.stderr + done.stdout, time.perf_counter() - start


def kernels_of(ptxas: str) -> dict[str, int]:
    """mangled kernel name -> barriers used, from ptxas -v."""
    found, current = {}, None
    for line in ptxas.splitlines():
        m = re.search(r"Compiling entry function '?([\w$]+)'?", line)
        if m:
            current = m.group(1)
            found[current] = 0
            continue
        m = re.search(r"used (\d+) barriers", line)
        if m and current is not None:
            found[current] = int(m.group(1))
    return found


def conv_config(variant: str):
    """(dtype, dual) of a conv_kernel<T, Math, dual> variant name, else None."""
    m = re.match(r"conv_kernel<(\w+),[^,]*,(true|false)>", variant)
    if not m:
        return None
    import torch
    dtype = {"float": torch.float32, "half": torch.float16, "bf16": torch.bfloat16}[m.group(1)]
    return dtype, m.group(2) == "true"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ALL_ARCHS), help="comma list, e.g. 75,86")
    parser.add_argument("--jobs", type=int, default=2, help="parallel nvcc processes")
    parser.add_argument("--out", type=Path, help="also write the matrix (markdown) here")
    args = parser.parse_args(argv)
    if tool("nvcc") is None:
        print("arch_matrix: no nvcc on this machine")
        return 1
    from anyres_fast.ops import _arch

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    sources = sorted((ROOT / "csrc" / "kernels").glob("*.cu"))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        jobs = {(cu.name, a): pool.submit(compile_ptxas, cu, a, Path(tmp)) for cu in sources for a in archs}
        failures = []
        results = {}
        for key, job in jobs.items():
            try:
                results[key] = job.result()
            except RuntimeError as exc:
                failures.append(str(exc))
    wall = time.perf_counter() - start
    for f in failures:
        print(f)
    per_arch: dict[str, dict[str, int]] = {a: {} for a in archs}
    for (_, a), (text, _) in results.items():
        per_arch[a].update(kernels_of(text))
    names = demangle(sorted({k for d in per_arch.values() for k in d}))
    variants = sorted({short_variant(names[k]) for k in names})
    rows, mismatches = [], []
    for v in variants:
        cells = []
        for a in archs:
            state = None
            for mangled, barriers in per_arch[a].items():
                if short_variant(names[mangled]) == v:
                    stub = v.startswith("conv_kernel<") and barriers == 0
                    state = "stub" if stub else "built"
            cap = (int(a[:-1]), int(a[-1]))
            cfg = conv_config(v)
            if cfg is not None:
                expect_stub = cap < _arch.IGEMM_MIN_ARCH
                if state is not None and (state == "stub") != expect_stub:
                    mismatches.append(f"{v} on sm_{a}: {state}, designed {'stub' if expect_stub else 'built'}")
                smem = _arch.SMEM_OPTIN_BYTES.get(cap)
                if smem is not None and state == "built" and _arch.igemm_refusal(cap, smem, *cfg):
                    state = f"built, refused (needs {_arch.igemm_smem_bytes(*cfg)} B smem > {smem})"
                elif state == "stub":
                    state = "stub, refused (needs sm_80)"
            cells.append(state or "-")
        rows.append([v] + cells)
    header = ["kernel variant"] + [f"sm_{a}" for a in archs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    compile_s = sum(t for _, t in results.values())
    lines.append("")
    lines.append(f"{len(sources)} files x {len(archs)} archs compiled in {wall:.0f} s wall "
                 f"({compile_s:.0f} s of nvcc, {args.jobs} jobs)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for m in mismatches:
        print("MISMATCH:", m)
    return 1 if failures or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
