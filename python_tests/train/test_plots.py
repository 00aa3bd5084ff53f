"""Run pictures (anyres_fast.train.plots) and `anyres-fast plot`: kimg of metric lines, PNGs written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyres_fast import cli
from anyres_fast.train.plots import metric_kimg, plot_run, read_jsonl, step_to_kimg


def fake_run(folder, steps=(10, 20, 30, 40), batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "stats.jsonl", "w") as f:
        for i, s in enumerate(range(2, steps[-1] + 1, 2)):
            f.write(json.dumps({"G/loss_adv": 0.7 - 0.001 * i, "D/loss": 1.4 + 0.01 * np.sin(i), "step": s,
                                "kimg": s * batch / 1000, "sec_per_kimg": 900.0}) + "\n")
        f.write('{"truncated line\n')                      # a line being written: skipped
    (folder / "samples").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for s in steps:
        Image.fromarray(rng.integers(0, 255, (64, 192, 3), dtype=np.uint8)).save(folder / "samples" / f"step{s:08d}.png")
    with open(folder / "metrics.jsonl", "w") as f:
        for s in steps[1:]:
            f.write(json.dumps({"metric": "fid@64", "fid": 300.0 - s, "kid": 0.2, "weights": f"/x/export/step{s:08d}"}) + "\n")
            f.write(json.dumps({"metric": "eqt-int", "psnr": 40 + s / 10, "step": s}) + "\n")
            f.write(json.dumps({"metric": "pr@64", "precision": 0.1, "recall": 0.05, "kimg": s * batch / 1000}) + "\n")
    return folder


def test_metric_lines_get_their_kimg_from_kimg_step_or_the_weights_path():
    stats = [{"step": 10, "kimg": 0.04}, {"step": 20, "kimg": 0.08}]
    convert = step_to_kimg(stats)
    assert convert(15) == pytest.approx(0.06) and convert(40) == pytest.approx(0.16)
    assert metric_kimg({"kimg": 1.5}, convert) == 1.5
    assert metric_kimg({"step": 20}, convert) == pytest.approx(0.08)
    assert metric_kimg({"weights": "/r/checkpoints/checkpoint-00000010"}, convert) == pytest.approx(0.04)
    assert metric_kimg({"weights": "/r/G"}, convert) is None
    assert metric_kimg({"step": 20}, None) is None


def test_plot_run_writes_three_pngs_and_the_command_prints_them(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert len(read_jsonl(str(run / "stats.jsonl"))) == 20
    paths = plot_run(str(run))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["losses.png", "metrics.png", "samples.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "pics"), "--frames", "2"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "pics" / n) for n in ("losses.png", "metrics.png", "samples.png")]
    assert cli.main(["plot", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["plot", str(tmp_path / "empty")]) == 2
    assert "nothing to plot" in capsys.readouterr().err
