"""`anyres-fast doctor`: versions, GPU, CUDA extension status and build log path.

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


def main(args: argparse.Namespace) -> int:
    """Print the environment report.

    Args:
        args: `build` (build and import the extension) and `rebuild` (ignore the cache).

    Returns:
        0, or 1 when an ANYRES_FAST_* variable is malformed or the requested build failed.
    """
    import torch

    from ..ops import _extension

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
    return rc
