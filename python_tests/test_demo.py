"""The README's first command: `anyres-fast demo` runs end to end on the CPU and writes images to look at."""
import json
import os
import subprocess
import sys

from PIL import Image


def test_demo_end_to_end_on_cpu(tmp_path):
    env = dict(os.environ, ANYRES_FAST_EXT="off")
    run = subprocess.run([sys.executable, "-m", "anyres_fast.cli", "demo", "--out", str(tmp_path), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    gen = summary["generator"]
    canvas = Image.open(gen["canvas_png"])
    assert canvas.size == (gen["canvas"], gen["canvas"]) and gen["canvas"] % gen["patch"] != 0
    for key in ("resample_png", "filtered_lrelu_png"):
        assert Image.open(summary["ops"][key]).size[0] > 0
    # Lanczos suppresses the zone plate's aliased rings that naive subsampling keeps.
    rms = summary["ops"]["resample_rms_vs_mean_grey"]
    assert rms["lanczos"] < 0.5 * rms["naive"]
    # A patch rendered on its own agrees with the tiled canvas where they overlap (8-bit units).
    assert gen["overlap_diff_8bit"]["max"] < 10 and gen["overlap_diff_8bit"]["mean"] < 1
