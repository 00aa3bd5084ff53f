"""benchmarks/planted_bugs.py: every planted line still exists in today's source, and planting, running and
restoring work on a small made-up package (the full run takes minutes; docs/architecture.md)."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks import planted_bugs as pb  # noqa: E402


@pytest.mark.parametrize("plant", pb.PLANTS, ids=lambda p: f"{p.area}: {p.bug}")
def test_every_plant_changes_one_place_of_todays_source(plant):
    source = (REPO / plant.path).read_text()
    assert source.count(plant.old) == 1, "the source moved on: update this entry of benchmarks/planted_bugs.py"
    bugged = pb.planted(source, plant)
    assert bugged != source and len(bugged) == len(source) - len(plant.old) + len(plant.new)
    for t in plant.tests:
        assert (REPO / t).is_file(), t


def test_plants_are_distinct_and_cover_the_issue_s_areas():
    assert len({(p.path, p.old, p.new) for p in pb.PLANTS}) == len(pb.PLANTS)
    areas = {p.area for p in pb.PLANTS}
    assert {"sampling", "size filter", "listing cache", "G_ema", "teacher loss", "ranks", "checkpoints",
            "InfinityGAN windows", "canvas seeds", "converter numerics", "statistics cache", "KID",
            "placements", "record to render", "optimised variables"} <= areas


def test_planted_refuses_text_that_is_missing_or_repeated():
    p = pb.Plant("a", "b", "m.py", "x = 1", "x = 2", ())
    assert pb.planted("y = 0\nx = 1\n", p) == "y = 0\nx = 2\n"
    for source, n in (("y = 0\n", 0), ("x = 1\nx = 1\n", 2)):
        with pytest.raises(ValueError, match=f"m.py: the text to plant for 'b' occurs {n} times, not once"):
            pb.planted(source, p)


def test_first_failure_reads_pytest_s_short_summary():
    out = "..F\n=== short test summary info ===\nFAILED t/test_m.py::test_f - assert 2 == 1\nERROR t/x.py::y\n"
    assert pb.first_failure(out) == "t/test_m.py::test_f"
    assert pb.first_failure("ERROR t/x.py::y - boom\n") == "t/x.py::y"
    assert pb.first_failure("3 passed\n") == ""


def test_run_plant_catches_a_real_bug_misses_a_harmless_one_and_restores_the_file(tmp_path):
    (tmp_path / "pkg_m.py").write_text("def f():\n    return 1  # one\n")
    (tmp_path / "test_m.py").write_text("from pkg_m import f\n\n\ndef test_f():\n    assert f() == 1\n")
    real = pb.Plant("a", "returns 2", "pkg_m.py", "return 1", "return 2", ("test_m.py",))
    harmless = pb.Plant("a", "comment", "pkg_m.py", "# one", "# two", ("test_m.py",))
    r = pb.run_plant(str(tmp_path), real)
    assert r["caught"] and r["test"] == "test_m.py::test_f" and r["seconds"] > 0
    assert (tmp_path / "pkg_m.py").read_text() == "def f():\n    return 1  # one\n"
    r = pb.run_plant(str(tmp_path), harmless)
    assert not r["caught"] and r["test"] == ""
    assert (tmp_path / "pkg_m.py").read_text() == "def f():\n    return 1  # one\n"
    text = pb.table([real, harmless], [{"caught": True, "test": "test_m.py::test_f", "seconds": 1.34},
                                       {"caught": False, "test": "", "seconds": 0.5}])
    assert "| a | returns 2 (`pkg_m.py`) | yes | test_m.py::test_f | 1.3 |" in text
    assert "| a | comment (`pkg_m.py`) | **no** | - | 0.5 |" in text and text.endswith("caught 1 of 2")
