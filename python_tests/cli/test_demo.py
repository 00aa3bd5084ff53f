"""The README's first command: `anyres-fast demo` trains both phases on scikit-image's photos and renders
the result at three canvas sizes (here with fewer steps than the default, to keep the suite short)."""
import json
import os
import subprocess
import sys

from PIL import Image


def test_demo_trains_both_phases_and_renders(tmp_path):
    env = dict(os.environ, ANYRES_FAST_EXT="off", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "anyres_fast", "demo", "--out", str(tmp_path), "--device", "cpu",
                          "--fixed-steps", "2", "--patch-steps", "2"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    sizes = {tuple(p["size"]) for p in summary["photos"]}
    assert len(summary["photos"]) >= 8 and len(sizes) >= 6          # real photos of mixed sizes
    for phase in ("phase1", "phase2"):
        assert summary[phase]["stats"]["step"] == 2
        assert (tmp_path / phase / "checkpoints").is_dir()
    assert summary["phase2"]["stats"]["G/loss_total"] > 0
    for size, path in summary["renders"].items():
        assert Image.open(path).size == (int(size), int(size))
    assert len(summary["renders"]) == 3
    grid = Image.open(summary["sample_grids"][0])
    assert grid.size[1] == 5 * 64                                   # base + 2 canvas sizes x (downsized, zoom)
    assert "kimg" in run.stderr and "tile" in run.stderr            # progress bars
