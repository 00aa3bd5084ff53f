"""benchmarks/plot_results.py: the markdown tables of a gpu_check run become one JSON file."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import plot_results  # noqa: E402


def test_tables_of_every_report_land_in_results_json(tmp_path):
    (tmp_path / "bench_render.md").write_text(
        "# bench_render\n\nintro\n\n| canvas | tiles | tile_batch | precision | seconds | peak device MiB |\n"
        "|---|---|---|---|---|---|\n| 1024 | 16 | 8 | fp16 | 0.50 | 900 |\n| 2048 | 64 | 8 | fp16 | - | - |\n\n"
        "|canvas|patches|patch_batch|precision|seconds|\n|---|---|---|---|---|\n| 1024 | 121 | 16 | bf16 | 0.2 |\n")
    (tmp_path / "bench_ops.md").write_text("| op | shape | dtype | impl | fwd+bwd ratio |\n|---|---|---|---|---|\n"
                                           "| filtered_lrelu | 4x512x36x36 | fp16 | cuda | 7.5 |\n")
    assert plot_results.main([str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    render = results["bench_render.md"]
    assert [t["header"][2] for t in render] == ["tile_batch", "patch_batch"]
    assert render[0]["rows"] == [["1024", "16", "8", "fp16", "0.50", "900"], ["2048", "64", "8", "fp16", "-", "-"]]
    assert results["bench_ops.md"][0]["rows"][0][-1] == "7.5"
    # unmeasured cells are gaps, not zeros
    series = plot_results._series(render[0], "canvas", "seconds", ["tile_batch", "precision"])
    assert series == {"tile_batch=8 precision=fp16": [(1024.0, 0.5)]}


def test_usage_error_for_a_missing_folder(tmp_path, capsys):
    assert plot_results.main([str(tmp_path / "nope")]) == 2
    assert "usage" in capsys.readouterr().err
