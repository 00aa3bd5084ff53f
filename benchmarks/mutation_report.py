"""Mutation testing of chosen modules against chosen test files (mutmut), as a killed / survived table.

    python benchmarks/mutation_report.py --modules anyres_fast/models/infinity_canvas.py \\
        --tests python_tests/models/test_infinity_strength.py python_tests/models/test_infinity_cyclic.py

Not part of CI (docs/architecture.md, "Mutation testing"): each mutant re-runs the tests that reach the mutated
function, so a module takes minutes. The tool is pinned in scripts/requirements-mutation.txt
(`pip install -r scripts/requirements-mutation.txt` into the dev venv).

How: the package and the tests are copied into a scratch folder (mutmut writes its `mutants/` tree and
a setup.cfg there, never into the checkout), mutmut runs one module at a time with one worker and
pytest `-x`, and `mutmut results --all true` is read back. Per module it prints killed (a test failed),
survived (every test passed), timeout, no-tests (no selected test reaches the mutated function) and the
total; `--list` also prints the surviving mutants' names, and `mutmut show NAME` in the scratch folder
(printed) shows a diff. `--rerun FOLDER` re-runs only the survivors of a kept folder with more tests
(the "after" table of a "before / after" comparison, at the cost of the survivors only). Each run saves
its verdicts in the folder (`verdicts.json`), and a rerun merges into those saved verdicts, so a mutant
killed by the first run stays killed whatever mutmut keeps when the test selection changes.

`--equivalent FILE` names mutants judged equivalent (same behaviour for every input a caller can give),
one per line as `NAME  reason`; they are counted in their own column and left out of "killed % of the
non-equivalent" (benchmarks/mutation_equivalent.txt holds the ones judged so far, with reasons).
"""
from __future__ import annotations

import argparse
import collections
import json
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


def copy_checkout(folder: str) -> None:
    """Copy the package, the tests and what they read (benchmarks, scripts, pyproject.toml) into `folder`,
    without caches and build outputs, so that a tool can edit the copy and never the checkout."""
    for name in ("anyres_fast", "python_tests") + EXTRA:
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), folder)


def _scratch(folder: str, module: str, tests: list, pytest_args: list) -> None:
    """Copy the package and tests into `folder` and write mutmut's configuration there."""
    copy_checkout(folder)
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


VERDICTS = "verdicts.json"


def save_verdicts(folder: str, verdicts: dict) -> None:
    with open(os.path.join(folder, VERDICTS), "w") as f:
        json.dump(verdicts, f, indent=0, sort_keys=True)


def load_verdicts(folder: str) -> dict:
    """The verdicts a run saved in its scratch folder ({} when it saved none)."""
    path = os.path.join(folder, VERDICTS)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def merge_rerun(before: dict, after: dict, todo: list) -> dict:
    """The first run's verdicts with those of the re-run mutants `todo` replaced by the rerun's (a mutant the
    rerun did not report keeps its first verdict)."""
    merged = dict(before)
    merged.update({n: after.get(n, before[n]) for n in todo})
    return merged


def read_equivalent(path: str | None) -> dict:
    """{mutant name: reason} of an equivalents file (`NAME  reason` per line; # comments, blank lines)."""
    if not path:
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def table_row(module: str, counts: collections.Counter, names: list, equivalent: dict) -> list:
    """[module, killed, survived, equivalent, timeout, no-tests, total, killed %, killed % of non-equivalent].

    Equivalent mutants are taken out of the survivors; the last column is killed / (total - equivalent)."""
    eq = sum(1 for n in names if n in equivalent)
    total = sum(counts.values())
    return [module, counts.get("killed", 0), counts.get("survived", 0) - eq, eq, counts.get("timeout", 0),
            counts.get("no-tests", 0), total, f"{100 * counts['killed'] / max(total, 1):.0f}",
            f"{100 * counts['killed'] / max(total - eq, 1):.0f}"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ANYRES_FAST_EXT="off")
    env.pop("PYTHONPATH", None)          # mutmut puts its mutants/ copy first on sys.path itself
    return env


def pytest_args(deselect: list) -> list:
    return ["-p", "no:cacheprovider", "-x", "-q"] + [a for node in deselect for a in ("--deselect", node)]


def rerun_survivors(folder: str, module: str, tests: list, timeout: int, children: int = 1,
                    deselect: list = ()) -> tuple:
    """Re-run only the survivors (and no-tests mutants) of a kept scratch folder with more test files.

    With a superset of the first run's tests, a mutant killed then is killed now, so the merged table
    equals a full run and costs only the survivors. Returns (Counter, survivor names, folder)."""
    mutmut = [sys.executable, "-m", "mutmut"]
    before = load_verdicts(folder) or statuses(subprocess.run(mutmut + ["results", "--all", "true"], cwd=folder,
                                                              env=_env(), capture_output=True, text=True).stdout)
    todo = [n for n, s in before.items() if s in ("survived", "no tests", "not checked")]   # not checked: an aborted rerun
    for dst in (os.path.join(folder, "python_tests"), os.path.join(folder, "mutants", "python_tests")):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "python_tests"), dst, ignore=shutil.ignore_patterns("__pycache__"))
    _scratch_config(folder, module, tests, pytest_args(deselect))
    shutil.copy(os.path.join(folder, "setup.cfg"), os.path.join(folder, "mutants", "setup.cfg"))
    if todo:
        subprocess.run(mutmut + ["run", "--max-children", str(children)] + todo, cwd=folder, env=_env(), capture_output=True,
                       text=True, timeout=timeout)
    after = statuses(subprocess.run(mutmut + ["results", "--all", "true"], cwd=folder, env=_env(),
                                    capture_output=True, text=True).stdout)
    merged = merge_rerun(before, after, todo)
    save_verdicts(folder, merged)
    return parse_results(merged), survivors(merged), folder


def run_module(module: str, tests: list, keep: bool, timeout: int, children: int = 1, deselect: list = ()) -> tuple:
    """(Counter, survivor names, scratch folder) of one module."""
    folder = tempfile.mkdtemp(prefix="mutation-")
    _scratch(folder, module, tests, pytest_args(deselect))
    env = _env()
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run(mutmut + ["run", "--max-children", str(children)], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=timeout)
    res = subprocess.run(mutmut + ["results", "--all", "true"], cwd=folder, env=env, capture_output=True, text=True)
    if run.returncode != 0 and not res.stdout.strip():
        raise RuntimeError(f"mutmut run failed on {module}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    verdicts = statuses(res.stdout)
    save_verdicts(folder, verdicts)
    counts = parse_results(verdicts)
    names = survivors(verdicts)
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
    ap.add_argument("--deselect", nargs="+", default=[], metavar="NODE",
                    help="test ids left out (pytest --deselect), e.g. a slow end-to-end test whose kills are "
                         "also made by faster ones")
    ap.add_argument("--children", type=int, default=1, help="mutmut worker processes (default 1)")
    ap.add_argument("--equivalent", metavar="FILE", default=None,
                    help="mutants judged equivalent, `NAME  reason` per line (e.g. benchmarks/mutation_equivalent.txt)")
    ap.add_argument("--rerun", metavar="FOLDER", default=None,
                    help="a scratch folder kept by an earlier --keep run of the one module: re-run only its "
                         "survivors with --tests (a superset of that run's tests) and print the merged table")
    args = ap.parse_args(argv)
    for path in args.modules + args.tests:
        if not os.path.isfile(os.path.join(ROOT, path)):
            ap.error(f"{path}: no such file under {ROOT}")
    cols = ["killed", "survived", "equivalent", "timeout", "no-tests", "total", "killed %", "of non-eq %"]
    equivalent = read_equivalent(args.equivalent)
    rows = []
    if args.rerun and len(args.modules) != 1:
        ap.error("--rerun takes the one module of that scratch folder")
    for module in args.modules:
        if args.rerun:
            counts, names, folder = rerun_survivors(args.rerun, module, args.tests, args.timeout, args.children,
                                                   args.deselect)
        else:
            counts, names, folder = run_module(module, args.tests, args.keep, args.timeout, args.children,
                                               args.deselect)
        rows.append(table_row(module, counts, names, equivalent))
        if args.list:
            for n in names:
                print(f"equivalent: {n}  ({equivalent[n]})" if n in equivalent else f"survived: {n}")
        if args.keep:
            print(f"scratch folder: {folder}")
    width = max(len(r[0]) for r in rows)
    print(f"{'module':<{width}} " + " ".join(f"{c:>9}" for c in cols))
    for r in rows:
        print(f"{r[0]:<{width}} " + " ".join(f"{v:>9}" for v in r[1:]))
    print("tests: " + " ".join(args.tests) + "".join(f" --deselect {n}" for n in args.deselect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
