"""Peak resident memory of the tiled file writers (`generate --format dzi|tiff`) against the image size.

    python benchmarks/bench_export_memory.py [--sizes 2048,8192] [--cli-sizes 512,1024,2048]

Each measurement runs in its own process (peak RSS from os.wait4, so nothing of one run leaks into the
next). Two kinds:
- writer: anyres_fast.serve.export with a synthetic tile source (seeded noise per tile, no model): the
  memory of the pyramid writers themselves, at sizes a CPU cannot render with a generator;
- cli: `python -m anyres_fast generate --format ...` with a narrow random any-resolution generator
  (random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8) on the CPU, and the PNG output for
  comparison (which holds the whole image).
Prints a markdown table; a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

WEIGHTS = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"

WRITER = r'''
import sys, numpy as np
from anyres_fast.serve import export
size, fmt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def tile(x, y, w, h):
    return np.random.default_rng(x * 100003 + y).integers(0, 256, (h, w, 3), dtype=np.uint8)
export.write_pyramid(fmt, tile, size, size, out, 256, False)
'''


def peak_rss_mib(cmd: list, env: dict) -> tuple:
    """(peak RSS in MiB, seconds) of one child process; raises on failure."""
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, time.time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2048,8192", help="writer sizes (square, pixels)")
    parser.add_argument("--cli-sizes", default="512,1024,2048", help="generate sizes (square, pixels)")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            for fmt in ("dzi", "tiff"):
                rss, sec = peak_rss_mib([sys.executable, "-c", WRITER, str(size), fmt,
                                         os.path.join(tmp, f"w{size}{fmt}")], env)
                rows.append(("writer (synthetic tiles)", f"{size}²", fmt, rss, sec))
        for size in map(int, args.cli_sizes.split(",")):
            for fmt in ("png", "dzi", "tiff"):
                cmd = [sys.executable, "-m", "anyres_fast", "generate", "--weights", WEIGHTS, "--size", str(size),
                       "--format", fmt, "--out", os.path.join(tmp, f"c{size}{fmt}"), "--device", "cpu",
                       "--no-progress"]
                rss, sec = peak_rss_mib(cmd, env)
                rows.append(("generate (random narrow model)", f"{size}²", fmt, rss, sec))
    print("| what | size | format | peak RSS (MiB) | seconds |")
    print("|---|---|---|---|---|")
    for what, size, fmt, rss, sec in rows:
        print(f"| {what} | {size} | {fmt} | {rss:.0f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
