"""The `anyres-fast` command line.

    anyres-fast doctor [--build]     versions, GPU, extension status and build log path
    anyres-fast demo [--out DIR]     the default end-to-end run (see README)
    anyres-fast generate ...         render images from a generator (anyres-fast generate -h)
"""
from __future__ import annotations

import argparse
import importlib
import platform
import shutil
import subprocess
import sys


def _nvcc_version() -> str:
    from .ops._extension import _cuda_home
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


def doctor(args) -> int:
    import torch

    from .ops import _extension

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
    print(f"  build dir   {status['build_dir']}")
    rc = 0
    if args.build:
        try:
            module = _extension.build(force=args.rebuild)
            print(f"  built+imported {module.__file__}")
            print(f"  bound ops   {', '.join(module.bound_ops) or '(none)'}")
            print(f"  cuda runtime {module.cuda_runtime_version()}")
        except Exception as exc:
            print(f"  BUILD FAILED: {exc}")
            rc = 1
    else:
        print(f"  built       {status['built']}" + ("" if status["built"] else " (run `anyres-fast doctor --build`)"))
    print(f"  build log   {status['build_dir']}/build.log")
    return rc


def demo(args) -> int:
    from . import demo as demo_module
    return demo_module.main(args)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="render images from a generator at any resolution")
    try:
        generate = importlib.import_module("anyres_fast.generate")
    except ImportError as exc:
        p.set_defaults(func=lambda a: print(f"generate is unavailable: {exc}", file=sys.stderr) or 1)
        return
    generate.add_arguments(p)
    p.set_defaults(func=generate.main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anyres-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="environment, GPU and CUDA extension status")
    p.add_argument("--build", action="store_true", help="build (if needed) and import the extension")
    p.add_argument("--rebuild", action="store_true", help="with --build: rebuild even if cached")
    p.set_defaults(func=doctor)
    p = sub.add_parser("demo", help="the default end-to-end run")
    p.add_argument("--out", default="out/demo", help="folder for the demo's images (default out/demo)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.set_defaults(func=demo)
    _add_generate(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
