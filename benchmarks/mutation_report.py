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
(printed) shows a diff. `--rerun FOLDER` re-runs only the survivors of a kept folder with more tests
(the "after" table of a "before / after" comparison, at the cost of the survivors only).
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
EXTRA = ("benchmarks", "scripts")       # some tests import or run files from these
# mutmut's result words -> the table's columns
COLUMNS = {"killed": "killed", "survived": "survived", "timeout": "timeout", "no tests": "no-tests",
           "suspicious": "suspicious", "skipped": "skipped", "segfault": "killed", "caught by type check": "killed"}


def _scratch(folder: str, module: str, tests: list, pytest_args: list) -> None:
    """Copy the package and tests into `folder` and write mutmut's configuration there."""
    for name in ("anyres_fast", "python_tests") + EXTRA:
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), folder)
    _scratch_config(folder, module, tests, pytest_args)


def _scratch_config(folder: str, module: str, tests: list, pytest_args: list) -> None:
    lines = ["[mutmut]", "source_paths = anyres_fast", f"only_mutate = {module}", "also_copy ="] + [f"    {d}" for d in ("python_tests",) + EXTRA] + [
             "use_git_change_detection = false", "timeout_multiplier = 3.0", "timeout_constant = 5.0",
             "pytest_add_cli_args ="]
    lines += [f"    {a}" for a in pytest_args]
    lines.append("pytest_add_cli_args_test_selection =")
    lines += [f"    {t}" for t in tests]
    with open(os.path.join(folder, "setup.cfg"), "w") as f:
        f.write("\n".join(lines) + "\n")


def statuses(text: str) -> dict:
    """{mutant name: status} of `mutmut results --all true` lines ("    name: status")."""
    out = {}
    for line in text.splitlines():
        if ":" in line:
            name, status = line.rsplit(":", 1)
            out[name.strip()] = status.strip()
    return out


def parse_results(text) -> collections.Counter:
    """Counts per column of `mutmut results --all true` output (or of a statuses() dict)."""
    st = statuses(text) if isinstance(text, str) else text
    return collections.Counter(COLUMNS[s] for s in st.values() if s in COLUMNS)


def survivors(text) -> list:
    st = statuses(text) if isinstance(text, str) else text
    return [n for n, s in st.items() if s == "survived"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ANYRES_FAST_EXT="off")
    env.pop("PYTHONPATH", None)          # mutmut puts its mutants/ copy first on sys.path itself
    return env


def rerun_survivors(folder: str, module: str, tests: list, timeout: int) -> tuple:
    """Re-run only the survivors (and no-tests mutants) of a kept scratch folder with more test files.

    With a superset of the first run's tests, a mutant killed then is killed now, so the merged table
    equals a full run and costs only the survivors. Returns (Counter, survivor names, folder)."""
    mutmut = [sys.executable, "-m", "mutmut"]
    before = statuses(subprocess.run(mutmut + ["results", "--all", "true"], cwd=folder, env=_env(),
                                     capture_output=True, text=True).stdout)
    todo = [n for n, s in before.items() if s in ("survived", "no tests")]
    for dst in (os.path.join(folder, "python_tests"), os.path.join(folder, "mutants", "python_tests")):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "python_tests"), dst, ignore=shutil.ignore_patterns("__pycache__"))
    _scratch_config(folder, module, tests, ["-p", "no:cacheprovider", "-x", "-q"])
    shutil.copy(os.path.join(folder, "setup.cfg"), os.path.join(folder, "mutants", "setup.cfg"))
    if todo:
        subprocess.run(mutmut + ["run", "--max-children", "1"] + todo, cwd=folder, env=_env(), capture_output=True,
                       text=True, timeout=timeout)
    after = statuses(subprocess.run(mutmut + ["results", "--all", "true"], cwd=folder, env=_env(),
                                    capture_output=True, text=True).stdout)
    merged = dict(before)
    merged.update({n: after.get(n, before[n]) for n in todo})
    return parse_results(merged), survivors(merged), folder


def run_module(module: str, tests: list, keep: bool, timeout: int) -> tuple:
    """(Counter, survivor names, scratch folder) of one module."""
    folder = tempfile.mkdtemp(prefix="mutation-")
    _scratch(folder, module, tests, ["-p", "no:cacheprovider", "-x", "-q"])
    env = _env()
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
    ap.add_argument("--rerun", metavar="FOLDER", default=None,
                    help="a scratch folder kept by an earlier --keep run of the one module: re-run only its "
                         "survivors with --tests (a superset of that run's tests) and print the merged table")
    args = ap.parse_args(argv)
    for path in args.modules + args.tests:
        if not os.path.isfile(os.path.join(ROOT, path)):
            ap.error(f"{path}: no such file under {ROOT}")
    cols = ["killed", "survived", "timeout", "no-tests", "total", "killed %"]
    rows = []
    if args.rerun and len(args.modules) != 1:
        ap.error("--rerun takes the one module of that scratch folder")
    for module in args.modules:
        if args.rerun:
            counts, names, folder = rerun_survivors(args.rerun, module, args.tests, args.timeout)
        else:
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
