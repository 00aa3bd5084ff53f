"""Units of the run pictures (train/plots.py): the series each panel draws, read back from the matplotlib
figure, against the values written into tiny stats.jsonl / metrics.jsonl / sample files in the test;
titles, axis labels, file names, the kimg of metric lines (docs/metrics.md, "Plots"), and what happens
with missing, empty or unreadable inputs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from anyres_fast.train import plots
from anyres_fast.train.plots import (VALUE_KEYS, metric_kimg, plot_losses, plot_metrics, plot_run, plot_samples,
                                     read_jsonl, step_to_kimg)


@pytest.fixture
def figures(monkeypatch):
    """Every figure plots.py saves, with its path (the PNG is still written)."""
    saved = []
    real = plots._save

    def record(fig, path):
        saved.append((fig, path))
        return real(fig, path)
    monkeypatch.setattr(plots, "_save", record)
    return saved


def _lines(path, objs):
    with open(path, "w", encoding="utf-8") as f:
        for o in objs:
            f.write((o if isinstance(o, str) else json.dumps(o)) + "\n")
    return str(path)


def _panels(fig):
    """{title: (xlabel, x, y, marker)} of the visible axes, in their order."""
    out = {}
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        lines = ax.get_lines()
        x, y = (lines[0].get_xdata(), lines[0].get_ydata()) if lines else ([], [])
        out[ax.get_title()] = (ax.get_xlabel(), list(map(float, x)), list(map(float, y)),
                               lines[0].get_marker() if lines else None)
    return out


# -- reading -------------------------------------------------------------------------------------------
def test_read_jsonl_skips_blank_unreadable_and_non_object_lines(tmp_path):
    p = _lines(tmp_path / "s.jsonl", [{"a": 1}, "", "   ", "[1, 2]", "3", '"text"', '{"broken', {"b": 2.5},
                                      "  {\"c\": null}  "])
    assert read_jsonl(p) == [{"a": 1}, {"b": 2.5}, {"c": None}]
    assert read_jsonl(str(tmp_path / "missing.jsonl")) == []
    assert read_jsonl(str(tmp_path)) == []          # a folder is not a file
    (tmp_path / "u.jsonl").write_text('{"name": "\u00e9t\u00e9"}\n', encoding="utf-8")
    assert read_jsonl(str(tmp_path / "u.jsonl")) == [{"name": "\u00e9t\u00e9"}]


def test_step_to_kimg_interpolates_between_and_extrapolates_beyond():
    # a resumed run: kimg is not proportional to step (batch 4 up to step 10, then batch 8)
    stats = [{"step": 20, "kimg": 0.12}, {"step": 10, "kimg": 0.04}, {"step": 10, "kimg": 0.04},
             {"step": 15, "kimg": 0.08}, {"step": "30", "kimg": 9.0}, {"step": 40, "kimg": float("nan")},
             {"step": True, "kimg": 1.0}, {"kimg": 5.0}, {"step": 50}]
    f = step_to_kimg(stats)
    assert f(10) == pytest.approx(0.04) and f(15) == pytest.approx(0.08) and f(20) == pytest.approx(0.12)
    assert f(12.5) == pytest.approx(0.06) and f(17.5) == pytest.approx(0.10)     # linear between
    assert f(30) == pytest.approx(30 * 0.12 / 20)                                 # beyond: last kimg per step
    assert isinstance(f(12.5), float) and isinstance(f(30), float)
    one = step_to_kimg([{"step": 8, "kimg": 0.032}])
    assert one(4) == pytest.approx(0.016) and one(16) == pytest.approx(0.064)     # one point: proportional
    zero = step_to_kimg([{"step": 0, "kimg": 0.0}])
    assert zero(0) == 0.0 and zero(100) == 0.0
    assert step_to_kimg([]) is None and step_to_kimg([{"step": 1}, {"kimg": 2}]) is None


def test_metric_kimg_precedence_and_weights_path_forms():
    f = step_to_kimg([{"step": 100, "kimg": 0.4}, {"step": 500, "kimg": 2.0}])
    assert metric_kimg({"kimg": 1.25, "step": 100, "weights": "step00000500"}, f) == 1.25   # kimg first
    assert metric_kimg({"kimg": 3}, None) == 3.0                                            # needs no table
    assert metric_kimg({"step": 500, "weights": "step00000100"}, f) == pytest.approx(2.0)   # then step
    assert metric_kimg({"kimg": True, "step": 100}, f) == pytest.approx(0.4)   # a bool is not a number
    assert metric_kimg({"kimg": float("inf"), "step": "x", "weights": "/r/step-500"}, f) == pytest.approx(2.0)
    for w in ("/r/export/step00000500", "/r/checkpoints/checkpoint-00000500.pt", "/r/step-500", "/r/step_500",
              "/r/export/step00000500/", "checkpoint00000500"):
        assert metric_kimg({"weights": w}, f) == pytest.approx(2.0), w
    # the file name's step wins over the folders'; the last one in the name; else the path's
    assert metric_kimg({"weights": "/r/step00000100/checkpoint-00000500.pt"}, f) == pytest.approx(2.0)
    assert metric_kimg({"weights": "/r/step100-step500.pkl"}, f) == pytest.approx(2.0)
    assert metric_kimg({"weights": "/runs/step00000100/G.pkl"}, f) == pytest.approx(0.4)
    assert metric_kimg({"weights": "/r/G.pkl"}, f) is None
    assert metric_kimg({}, f) is None
    assert metric_kimg({"weights": "/r/step-500"}, None) is None


# -- losses.png ------------------------------------------------------------------------------------------
def test_plot_losses_one_panel_per_numeric_key_against_kimg(tmp_path, figures):
    stats = [{"step": 2, "kimg": 0.008, "G/loss": 0.7, "D/loss": 1.4, "aug/p": 0.0, "sec_per_kimg": 900.0,
              "note": "text", "flag": True, "bad": float("nan"), "Augment/p": 0.5, "Timing/sec": 2.0},
             {"step": 4, "kimg": 0.016, "G/loss": 0.6, "D/loss": 1.3, "R1": 0.2},
             {"step": 6, "G/loss": 99.0},                         # no kimg: not drawn
             {"step": 8, "kimg": 0.032, "G/loss": 0.5, "aug/p": 0.1}]
    out = str(tmp_path / "l.png")
    assert plot_losses(stats, out) == out
    with Image.open(out) as im:
        assert im.format == "PNG"
    assert os.listdir(tmp_path) == ["l.png"]                       # no temporary file left behind
    (fig, path), = figures
    assert path == out
    panels = _panels(fig)
    # G's panels first, then D's, then the rest by name
    assert list(panels) == ["G/loss", "D/loss", "Augment/p", "R1", "Timing/sec", "aug/p", "sec_per_kimg"]
    assert panels["G/loss"][1:3] == ([0.008, 0.016, 0.032], [0.7, 0.6, 0.5])
    assert panels["D/loss"][1:3] == ([0.008, 0.016], [1.4, 1.3])
    assert panels["aug/p"][1:3] == ([0.008, 0.032], [0.0, 0.1])
    assert panels["R1"][1:3] == ([0.016], [0.2])
    assert all(v[0] == "kimg" for v in panels.values())
    assert all(v[3] == "." for v in panels.values())               # few points: each marked
    assert fig.get_suptitle() == "training statistics (stats.jsonl)"
    # 7 panels on a grid of 3 columns: two axes left hidden
    assert len(fig.axes) == 9 and sum(not ax.get_visible() for ax in fig.axes) == 2


def test_plot_losses_long_series_without_markers_and_a_title(tmp_path, figures):
    stats = [{"step": s, "kimg": s / 100, "G/loss": 1.0 / (s + 1)} for s in range(50)]
    plot_losses(stats, str(tmp_path / "l.png"), title="run7")
    (fig, _), = figures
    label, x, y, marker = _panels(fig)["G/loss"]
    assert x == [s / 100 for s in range(50)] and y == [1.0 / (s + 1) for s in range(50)]
    assert marker in ("None", "", None)
    assert fig.get_suptitle() == "run7"
    assert len(fig.axes) == 1


def test_plot_losses_nothing_to_plot(tmp_path, figures):
    for stats in ([], [{"step": 1, "kimg": 0.1}], [{"step": 1, "G/loss": 1.0}], [{"kimg": 0.1, "x": "a"}]):
        assert plot_losses(stats, str(tmp_path / "l.png")) is None
    assert figures == [] and not os.path.exists(tmp_path / "l.png")


# -- metrics.png -----------------------------------------------------------------------------------------
def test_plot_metrics_series_titles_and_kimg(tmp_path, figures):
    convert = step_to_kimg([{"step": 10, "kimg": 0.04}, {"step": 20, "kimg": 0.08}])
    lines = [{"metric": "fid@64", "fid": 200.0, "kid": 0.1, "step": 20},
             {"metric": "fid@64", "fid": 250.0, "kid": 0.2, "weights": "/r/step00000010"},
             {"metric": "eqt", "psnr": 40.0, "kimg": 0.5},
             {"metric": "pr", "precision": 0.3, "recall": True, "other": 5.0, "kimg": 1.0},
             {"fid": 7.0, "kimg": 0.1},                          # no metric name
             {"metric": "fid@64", "fid": "n/a", "step": 30}]     # no value
    out = str(tmp_path / "m.png")
    assert plot_metrics(lines, convert, out) == out
    (fig, path), = figures
    panels = _panels(fig)
    assert list(panels) == sorted(panels, key=lambda t: tuple(t.split(": ")))
    assert set(panels) == {"fid@64: fid", "fid@64: kid", "eqt: psnr (dB)", "pr: precision", "?: fid"}
    # sorted by kimg: the line of step 10 (0.04 kimg) before the one of step 20
    assert panels["fid@64: fid"][:3] == ("kimg", [0.04, 0.08], [250.0, 200.0])
    assert panels["fid@64: kid"][:3] == ("kimg", [0.04, 0.08], [0.2, 0.1])
    assert panels["eqt: psnr (dB)"][:3] == ("kimg", [0.5], [40.0])
    assert panels["?: fid"][:3] == ("kimg", [0.1], [7.0])
    assert all(v[3] == "o" for v in panels.values())
    assert fig.get_suptitle() == "metrics (metrics.jsonl)"
    assert set(VALUE_KEYS) == {"fid", "kid", "precision", "recall", "psnr"}


def test_plot_metrics_without_kimg_uses_the_file_order(tmp_path, figures):
    lines = [{"metric": "fid", "fid": 3.0, "weights": "/r/G.pkl"},
             {"metric": "kid", "kid": 1.0},
             {"metric": "fid", "fid": 2.0, "step": 7},      # a step, but no table to convert it
             {"metric": "fid", "fid": 1.0, "kimg": 0.0}]    # one known kimg is not enough for the series
    plot_metrics(lines, None, str(tmp_path / "m.png"), title="T")
    (fig, _), = figures
    panels = _panels(fig)
    assert panels["fid: fid"][:3] == ("result # (no kimg known)", [0.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert panels["kid: kid"][:3] == ("result # (no kimg known)", [1.0], [1.0])
    assert fig.get_suptitle() == "T"
    assert len(fig.axes) == 2


def test_plot_metrics_nothing_to_plot(tmp_path, figures):
    assert plot_metrics([], None, str(tmp_path / "m.png")) is None
    assert plot_metrics([{"metric": "fid", "kimg": 1.0, "fid": None, "other": 3.0}], None, str(tmp_path / "m.png")) is None
    assert figures == [] and not os.path.exists(tmp_path / "m.png")


# -- samples.png -----------------------------------------------------------------------------------------
def _grids(folder, steps, size=(8, 24)):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for s in steps:
        a = np.full((*size, 3), s % 256, dtype=np.uint8)
        a[0, 0] = (1, 2, 3)
        name = f"step{s}.png" if s < 100 else f"step{s:08d}.png"
        Image.fromarray(a).save(folder / name)
        arrays[s] = a
    return arrays


def test_plot_samples_oldest_first_labelled_with_step_and_kimg(tmp_path, figures):
    arrays = _grids(tmp_path / "samples", [9, 10, 200])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "samples" / "steps.png")    # not a grid name
    (tmp_path / "samples" / "step5.png.txt").write_text("x")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "samples" / "grid12.png")
    convert = step_to_kimg([{"step": 10, "kimg": 0.04}])
    out = str(tmp_path / "s.png")
    assert plot_samples(str(tmp_path / "samples"), convert, out) == out
    (fig, _), = figures
    axes = fig.axes
    assert [ax.get_title(loc="left") for ax in axes] == ["step 9, 0.036 kimg", "step 10, 0.040 kimg",
                                                        "step 200, 0.800 kimg"]
    for ax, s in zip(axes, (9, 10, 200)):
        assert np.array_equal(np.asarray(ax.images[0].get_array()), arrays[s])
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    assert fig.get_suptitle() == "sample grids over training (samples/step*.png)"


def test_plot_samples_at_most_max_frames_evenly_spaced_with_the_first_and_newest(tmp_path, figures):
    _grids(tmp_path / "samples", range(1, 11))
    plot_samples(str(tmp_path / "samples"), None, str(tmp_path / "s.png"), max_frames=4, title="T")
    (fig, _), = figures
    shown = [int(ax.get_title(loc="left").split()[1]) for ax in fig.axes]
    # 10 grids, 4 frames: indices round(linspace(0, 9, 4)) = 0, 3, 6, 9
    assert shown == [1, 4, 7, 10]
    assert [ax.get_title(loc="left") for ax in fig.axes][0] == "step 1"          # no kimg table
    assert fig.get_suptitle() == "T"
    figures.clear()
    plot_samples(str(tmp_path / "samples"), None, str(tmp_path / "s.png"), max_frames=10)
    assert len(figures[0][0].axes) == 10


def test_plot_samples_grey_and_rgba_grids_are_shown_as_rgb(tmp_path, figures):
    d = tmp_path / "samples"
    d.mkdir()
    grey = np.arange(32, dtype=np.uint8).reshape(4, 8)
    Image.fromarray(grey).save(d / "step1.png")
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(d / "step2.png")
    plot_samples(str(d), None, str(tmp_path / "s.png"))
    (fig, _), = figures
    a, b = (np.asarray(ax.images[0].get_array()) for ax in fig.axes)
    assert a.shape == (4, 8, 3) and np.array_equal(a, np.repeat(grey[..., None], 3, axis=2))
    assert b.shape == (6, 6, 3) and np.array_equal(b[..., 0], np.full((6, 6), 200))


def test_plot_samples_without_grids(tmp_path, figures):
    assert plot_samples(str(tmp_path / "none"), None, str(tmp_path / "s.png")) is None
    (tmp_path / "empty").mkdir()
    assert plot_samples(str(tmp_path / "empty"), None, str(tmp_path / "s.png")) is None
    assert figures == []


# -- the run ---------------------------------------------------------------------------------------------
def test_plot_run_names_files_and_titles_after_the_run(tmp_path, figures):
    run = tmp_path / "myrun"
    run.mkdir()
    _lines(run / "stats.jsonl", [{"step": 10, "kimg": 0.04, "G/loss": 1.0}, {"step": 20, "kimg": 0.08, "G/loss": 0.5}])
    _lines(run / "metrics.jsonl", [{"metric": "fid", "fid": 9.0, "step": 20}])
    _grids(run / "samples", [10, 20])
    paths = plot_run(str(run) + "/")
    assert paths == [str(run / "plots" / n) for n in ("losses.png", "metrics.png", "samples.png")]
    assert sorted(os.listdir(run / "plots")) == ["losses.png", "metrics.png", "samples.png"]
    assert [f.get_suptitle() for f, _ in figures] == [
        "myrun: training statistics", "myrun: metrics", "myrun: sample grids"]
    assert _panels(figures[1][0])["fid: fid"][:3] == ("kimg", [0.08], [9.0])      # step 20 through stats.jsonl
    assert figures[2][0].axes[1].get_title(loc="left") == "step 20, 0.080 kimg"


def test_plot_run_out_folder_metrics_files_and_frames(tmp_path, figures):
    run = tmp_path / "r"
    run.mkdir()
    _lines(run / "metrics.jsonl", [{"metric": "ignored", "fid": 1.0}])
    m1 = _lines(tmp_path / "a.jsonl", [{"metric": "fid", "fid": 5.0, "kimg": 1.0}])
    m2 = _lines(tmp_path / "b.jsonl", [{"metric": "fid", "fid": 4.0, "kimg": 2.0}])
    _grids(run / "samples", [1, 2, 3, 4, 5])
    out = tmp_path / "pics" / "deep"
    paths = plot_run(str(run), out=str(out), metrics_files=[m1, m2], max_frames=2)
    assert paths == [str(out / "metrics.png"), str(out / "samples.png")]        # no stats: no losses.png
    panels = _panels(figures[0][0])
    assert list(panels) == ["fid: fid"] and panels["fid: fid"][1:3] == ([1.0, 2.0], [5.0, 4.0])
    assert [ax.get_title(loc="left") for ax in figures[1][0].axes] == ["step 1", "step 5"]
    assert not os.path.exists(run / "plots")


def test_plot_run_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert plot_run(str(tmp_path / "empty")) == []
    assert os.path.isdir(tmp_path / "empty" / "plots")
    with pytest.raises(FileNotFoundError, match=r"nope: not a folder"):
        plot_run(str(tmp_path / "nope"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        plot_run(str(tmp_path / "file"))


def test_save_removes_the_temporary_file_when_writing_fails(tmp_path):
    class Broken:
        def savefig(self, name, format):
            assert format == "png" and name.startswith(str(tmp_path / "x.png") + ".tmp-")
            with open(name, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        plots._save(Broken(), str(tmp_path / "x.png"))
    assert os.listdir(tmp_path) == []


def test_every_panel_keeps_its_size_whatever_the_number_of_panels(tmp_path):
    """The figure grows with the grid (columns x rows of equal panels), so a panel with many neighbours is
    as readable as a panel alone: the PNG is the one-panel PNG times the grid's columns and rows."""
    def size(keys, fn):
        path = str(tmp_path / f"{fn}{len(keys)}.png")
        if fn == "l":
            plot_losses([{"step": 1, "kimg": 0.1, **dict.fromkeys(keys, 1.0)}], path)
        else:
            plot_metrics([{"metric": k, "fid": 1.0, "kimg": 0.1} for k in keys], None, path)
        with Image.open(path) as im:
            return im.size
    for fn in ("l", "m"):
        w1, h1 = size(["a"], fn)
        assert size(["a", "b"], fn) == (2 * w1, h1)
        assert size(["a", "b", "c"], fn) == (3 * w1, h1)
        assert size(["a", "b", "c", "d"], fn) == (3 * w1, 2 * h1)
        assert w1 > h1 > 100


def test_plot_run_redraws_into_the_same_folder_and_shows_8_frames_by_default(tmp_path, figures):
    """`train --plots` redraws after every snapshot (docs/training.md), so a second call overwrites;
    the timeline shows at most 8 grids unless told (docs/metrics.md: --frames 8)."""
    run = tmp_path / "r"
    run.mkdir()
    _lines(run / "stats.jsonl", [{"step": 1, "kimg": 0.004, "G/loss": 1.0}])
    _grids(run / "samples", range(1, 13))
    first = plot_run(str(run))
    second = plot_run(str(run))
    assert first == second == [str(run / "plots" / "losses.png"), str(run / "plots" / "samples.png")]
    assert sorted(os.listdir(run / "plots")) == ["losses.png", "samples.png"]
    assert len(figures[1][0].axes) == len(figures[3][0].axes) == 8
    figures.clear()
    plot_samples(str(run / "samples"), None, str(tmp_path / "s.png"))
    assert len(figures[0][0].axes) == 8


def test_plot_samples_with_a_single_grid(tmp_path, figures):
    arrays = _grids(tmp_path / "samples", [3])
    assert plot_samples(str(tmp_path / "samples"), None, str(tmp_path / "s.png")) == str(tmp_path / "s.png")
    (fig, _), = figures
    (ax,) = fig.axes
    assert ax.get_title(loc="left") == "step 3"
    assert np.array_equal(np.asarray(ax.images[0].get_array()), arrays[3])
