"""`anyres-fast doctor`: versions, GPU, CUDA extension status and build log path; `--gpu` runs the
kernels' self-checks (anyres_fast/ops/selfcheck.py) on every visible GPU and prints their table.

A diagnostic command: whatever the environment (a bad ANYRES_FAST_* variable, a failing build), it
reports and never crashes.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys


def _nvcc_version() -> str:
    from ..ops._extension import _cuda_home
    home = _cuda_home()
    nvcc = shutil.which("nvcc") or (f"{home}/bin/nvcc" if home else None)
    if not nvcc:
        return "not found"
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    release = [line for line in out.splitlines() if "release" in line]
    return release[0].strip() if release else out.strip()[:80]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build", action="store_true", help="build (if needed) and import the extension")
    parser.add_argument("--rebuild", action="store_true", help="with --build: rebuild even if cached")
    parser.add_argument("--gpu", action="store_true",
                        help="run every kernel's self-check on every visible GPU (forward and backward, each "
                             "dtype, against the float64 reference) and print the table; builds if needed")


NO_GPU_LINE = ("doctor --gpu: no CUDA GPU is visible (torch.cuda.is_available() is False), so no kernel "
               "self-check ran; run it on the GPU machine (plain `anyres-fast doctor` reports this one)")


def _gpu_checks() -> int:
    """`doctor --gpu`: the self-check table per visible GPU; 1 when there is none or a kernel fails."""
    import torch

    from ..ops import _arch, _extension, selfcheck
    if not torch.cuda.is_available():
        print(NO_GPU_LINE)
        return 1
    try:
        _extension.get(required=True)
    except Exception as exc:  # report, never crash
        print(f"gpu checks    the extension is unavailable ({exc}); nothing was run")
        return 1
    rc = 0
    for i in range(torch.cuda.device_count()):
        device = torch.device("cuda", i)
        print(f"gpu checks    {selfcheck.device_section(device)} (verdicts: {selfcheck.file_path()})")
        print(f"  {'op':<20} {'check':<34} {'forward':>9} {'backward':>9} {'tolerance':>9}  verdict")
        for op, key, v in selfcheck.report_rows(device):
            fmt = lambda e: "-" if e is None else f"{e:.2e}"
            status = "ok" if v["ok"] else f"FAILED: {v['error']}"
            print(f"  {op:<20} {key:<34} {fmt(v['forward']):>9} {fmt(v['backward']):>9} "
                  f"{fmt(v['tolerance']):>9}  {status}")
            rc = rc if v["ok"] else 1
        cap = _arch.device_capability(device)
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            for dual in (False, True):
                reason = _arch.igemm_unsupported(device, dtype, dual)
                if reason:
                    print(f"  refused by design on sm_{cap[0]}{cap[1]}: {reason}")
    if rc:
        print(f"  a kernel failed: impl='auto' runs the reference for it; {selfcheck.REPORT_HINT}")
    return rc


def main(args: argparse.Namespace) -> int:
    """Print the environment report.

    Args:
        args: `build` (build and import the extension), `rebuild` (ignore the cache) and `gpu` (run the
            kernel self-checks on every visible GPU and print their table).

    Returns:
        0, or 1 when an ANYRES_FAST_* variable is malformed, the requested build failed, or with `gpu`:
        no GPU is visible (one line says so) or a kernel failed its self-check.
    """
    import torch

    from ..ops import _extension

    if getattr(args, "gpu", False) and not torch.cuda.is_available():
        print(NO_GPU_LINE)
        return 1
    print(f"python        {platform.python_version()} ({sys.executable})")
    print(f"torch         {torch.__version__} (built with CUDA {torch.version.cuda})")
    print(f"nvcc          {_nvcc_version()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"gpu {i}         {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB")
    else:
        print("gpu           none (ops run their PyTorch reference; the extension can still be built)")
    status = _extension.status()
    print(f"extension     mode={status['mode']} archs={';'.join(status['archs'])}")
    for problem in status["problems"]:
        print(f"  PROBLEM     {problem}")
    print(f"  build dir   {status['build_dir']}")
    rc = 1 if status["problems"] else 0
    if args.build:
        if status["problems"]:
            print("  BUILD SKIPPED: fix the environment variable(s) above first")
            rc = 1
        else:
            try:
                module = _extension.build(force=args.rebuild)
                print(f"  built+imported {module.__file__}")
                print(f"  bound ops   {', '.join(module.bound_ops) or '(none)'}")
                print(f"  cuda runtime {module.cuda_runtime_version()}")
            except Exception as exc:  # a diagnostic reports every failure instead of crashing
                print(f"  BUILD FAILED: {type(exc).__name__}: {exc}")
                rc = 1
    else:
        print(f"  built       {status['built']}" + ("" if status["built"] else " (run `anyres-fast doctor --build`)"))
    if status["build_dir"] != "unknown":
        print(f"  build log   {status['build_dir']}/build.log")
    from ..ops.conv_choice import report_lines  # impl="auto" table of the convolutions
    print("\n".join(report_lines()))
    if getattr(args, "gpu", False):
        rc = max(rc, _gpu_checks())
    return rc
