"""benchmarks/mutation_report.py without running mutmut: its reading of `mutmut results --all true` and
the configuration it writes into the scratch folder (the run itself takes minutes; docs/architecture.md)."""
import configparser
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import mutation_report as mr  # noqa: E402

RESULTS = """    anyres_fast.m.x_f__mutmut_1: killed
    anyres_fast.m.x_f__mutmut_2: survived
    anyres_fast.m.x_g__mutmut_1: no tests
    anyres_fast.m.x_g__mutmut_2: timeout
    anyres_fast.m.x_g__mutmut_3: segfault
    anyres_fast.m.x_h__mutmut_1: survived
"""


def test_results_are_counted_per_column_and_survivors_named():
    st = mr.statuses(RESULTS)
    assert st["anyres_fast.m.x_g__mutmut_1"] == "no tests" and len(st) == 6
    counts = mr.parse_results(RESULTS)
    assert dict(counts) == {"killed": 2, "survived": 2, "no-tests": 1, "timeout": 1}
    assert mr.survivors(RESULTS) == ["anyres_fast.m.x_f__mutmut_2", "anyres_fast.m.x_h__mutmut_1"]
    assert mr.parse_results(st) == counts                        # a statuses dict reads the same


def test_scratch_config_selects_the_module_and_the_tests(tmp_path):
    mr._scratch_config(str(tmp_path), "anyres_fast/models/x.py", ["python_tests/a.py", "python_tests/b.py"],
                       ["-x", "-q"])
    cfg = configparser.ConfigParser()
    cfg.read(tmp_path / "setup.cfg")
    m = cfg["mutmut"]
    assert m["source_paths"] == "anyres_fast" and m["only_mutate"] == "anyres_fast/models/x.py"
    assert m["pytest_add_cli_args_test_selection"].split() == ["python_tests/a.py", "python_tests/b.py"]
    assert m["pytest_add_cli_args"].split() == ["-x", "-q"]
    assert "python_tests" in m["also_copy"].split() and m["use_git_change_detection"] == "false"


def test_a_rerun_keeps_the_first_run_s_verdicts_and_replaces_only_the_rerun_ones(tmp_path):
    first = mr.statuses(RESULTS)
    mr.save_verdicts(str(tmp_path), first)
    assert mr.load_verdicts(str(tmp_path)) == first
    assert mr.load_verdicts(str(tmp_path / "none")) == {}
    todo = ["anyres_fast.m.x_f__mutmut_2", "anyres_fast.m.x_g__mutmut_1", "anyres_fast.m.x_h__mutmut_1"]
    # mutmut after a changed test selection reports only some mutants, and forgets the first verdicts
    after = {"anyres_fast.m.x_f__mutmut_2": "killed", "anyres_fast.m.x_g__mutmut_1": "survived"}
    merged = mr.merge_rerun(first, after, todo)
    assert merged["anyres_fast.m.x_f__mutmut_1"] == "killed"           # first run's kill kept
    assert merged["anyres_fast.m.x_g__mutmut_2"] == "timeout"
    assert merged["anyres_fast.m.x_f__mutmut_2"] == "killed"           # rerun verdict replaces
    assert merged["anyres_fast.m.x_g__mutmut_1"] == "survived"
    assert merged["anyres_fast.m.x_h__mutmut_1"] == "survived"         # not reported: first verdict stays
    assert dict(mr.parse_results(merged)) == {"killed": 3, "survived": 2, "timeout": 1}


def test_equivalent_mutants_leave_the_survivors_and_the_non_equivalent_percentage(tmp_path):
    eq = tmp_path / "eq.txt"
    eq.write_text("# judged by hand\n\nanyres_fast.m.x_h__mutmut_1  dtype default: float64 either way\n")
    equivalent = mr.read_equivalent(str(eq))
    assert equivalent == {"anyres_fast.m.x_h__mutmut_1": "dtype default: float64 either way"}
    counts = mr.parse_results(RESULTS)
    row = mr.table_row("m.py", counts, mr.survivors(RESULTS), equivalent)
    # killed 2, survived 2 - 1 equivalent, timeout 1, no-tests 1, total 6, 2/6 = 33 %, 2/5 = 40 %
    assert row == ["m.py", 2, 1, 1, 1, 1, 6, "33", "40"]
    assert mr.read_equivalent(None) == {}
