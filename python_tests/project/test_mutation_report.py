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
