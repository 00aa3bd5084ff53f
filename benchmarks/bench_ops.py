"""Op benchmarks: one table of forward and forward+backward times, GB/s and ratios to the baseline.

    python benchmarks/bench_ops.py [--ops filtered_lrelu,lanczos_resample] [--quick] [--out FILE.md]

Each op contributes `benchmarks/op_cases/<op>.py` with `cases(device, quick) -> list[Case]`.
Runs on the GPU when one is present (CUDA vs reference vs alternatives), else on the CPU (reference
only, for a smoke run).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import op_cases  # noqa: E402
from benchmarks._harness import format_table, report, run_case  # noqa: E402


def available_ops() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(op_cases.__path__) if not m.name.startswith("_"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default="all", help=f"comma list from {available_ops()} or 'all'")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and iterations (smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)

    names = available_ops() if args.ops == "all" else args.ops.split(",")
    unknown = set(names) - set(available_ops())
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}; available: {available_ops()}")
    device = torch.device(args.device)
    rows = []
    for name in names:
        module = importlib.import_module(f"benchmarks.op_cases.{name}")
        for case in module.cases(device, args.quick):
            rows += run_case(case, device, quick=args.quick)
            print(f"  done: {case.op} {case.shape} {case.dtype}", file=sys.stderr, flush=True)
    report("bench_ops", device, "Ratios: baseline time / impl time (>1 = faster than the baseline named per op).",
           format_table(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
