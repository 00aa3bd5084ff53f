"""Mutation testing of chosen modules against chosen test files (mutmut), as a killed / survived table.

    python benchmarks/mutation_report.py --modules anyres_fast/models/infinity_canvas.py \\
        --tests python_tests/models/test_infinity_strength.py python_tests/models/test_infinity_cyclic.py

Not part of CI (docs/testing.md, "Mutation testing"): each mutant re-runs the tests that reach the mutated
function, so a module takes minutes. The tool is pinned in scripts/requirements-mutation.txt
(`pip install -r scripts/requirements-mutation.txt` into the dev venv).

How: the package and the tests are copied into a scratch folder (mutmut writes its `mutants/` tree and
a setup.cfg there, never into the checkout), mutmut runs one module at a time with one worker and
pytest `-x`, and `mutmut results --all true` is read back. Per module it prints killed (a test failed),
survived (every test passed), timeout, no-tests (no selected test reaches the mutated function) and the
total; `--list` also prints the surviving mutants' names, and `mutmut show NAME` in the scratch folder
(printed) shows a diff.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# mutmut's result words -> the table's columns
COLUMNS = {"killed": "killed", "survived": "survived", "timeout": "timeout", "no tests": "no-tests",
           "suspicious": "suspicious", "skipped": "skipped", "segfault": "killed", "caught by type check": "killed"}


def _scratch(folder: str, module: str, tests: list, pytest_args: list) -> None:
    """Copy the package and tests into `folder` and write mutmut's configuration there."""
    for name in ("anyres_fast", "python_tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), folder)
    lines = ["[mutmut]", "source_paths = anyres_fast", f"only_mutate = {module}", "also_copy = python_tests",
             "use_git_change_detection = false", "pytest_add_cli_args ="]
    lines += [f"    {a}" for a in pytest_args]
    lines.append("pytest_add_cli_args_test_selection =")
    lines += [f"    {t}" for t in tests]
    with open(os.path.join(folder, "setup.cfg"), "w") as f:
        f.write("\n".join(lines) + "\n")


def parse_results(text: str) -> collections.Counter:
    """Counts per column of `mutmut results --all true` lines ("    name: status")."""
    counts = collections.Counter()
    for line in text.splitlines():
        if ":" not in line:
            continue
        status = line.rsplit(":", 1)[1].strip()
        if status in COLUMNS:
            counts[COLUMNS[status]] += 1
    return counts


def survivors(text: str) -> list:
    return [line.rsplit(":", 1)[0].strip() for line in text.splitlines() if line.rstrip().endswith(": survived")]


def run_module(module: str, tests: list, keep: bool, timeout: int) -> tuple:
    """(Counter, survivor names, scratch folder) of one module."""
    folder = tempfile.mkdtemp(prefix="mutation-")
    _scratch(folder, module, tests, ["-p", "no:cacheprovider", "-x", "-q"])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ANYRES_FAST_EXT="off")
    env.pop("PYTHONPATH", None)          # mutmut puts its mutants/ copy first on sys.path itself
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run(mutmut + ["run", "--max-children", "1"], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=timeout)
    res = subprocess.run(mutmut + ["results", "--all", "true"], cwd=folder, env=env, capture_output=True, text=True)
    if run.returncode != 0 and not res.stdout.strip():
        raise RuntimeError(f"mutmut run failed on {module}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    counts = parse_results(res.stdout)
    names = survivors(res.stdout)
    if not counts:
        raise RuntimeError(f"mutmut checked no mutant of {module} (scratch folder {folder}):\n"
                           f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return counts, names, folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="+", required=True, help="module files to mutate (paths from the repo root)")
    ap.add_argument("--tests", nargs="+", required=True, help="test files that should kill the mutants")
    ap.add_argument("--list", action="store_true", help="print the surviving mutants' names")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folders (for `mutmut show NAME`)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per module (default 3600)")
    args = ap.parse_args(argv)
    for path in args.modules + args.tests:
        if not os.path.isfile(os.path.join(ROOT, path)):
            ap.error(f"{path}: no such file under {ROOT}")
    cols = ["killed", "survived", "timeout", "no-tests", "total", "killed %"]
    rows = []
    for module in args.modules:
        counts, names, folder = run_module(module, args.tests, args.keep, args.timeout)
        total = sum(counts.values())
        rows.append([module] + [counts.get(c, 0) for c in cols[:4]] + [total, f"{100 * counts['killed'] / max(total, 1):.0f}"])
        if args.list:
            for n in names:
                print(f"survived: {n}")
        if args.keep:
            print(f"scratch folder: {folder}")
    width = max(len(r[0]) for r in rows)
    print(f"{'module':<{width}} " + " ".join(f"{c:>9}" for c in cols))
    for r in rows:
        print(f"{r[0]:<{width}} " + " ".join(f"{v:>9}" for v in r[1:]))
    print("tests: " + " ".join(args.tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
