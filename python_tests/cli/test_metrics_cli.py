"""`anyres-fast metrics` end to end on CPU: missing detector message, a TorchScript detector file, JSON lines."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast import cli
from anyres_fast.metrics.detectors import file_sha256
from anyres_fast.models import Generator
from helpers import ScriptedTiny


def images(folder, sizes, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny random generator saved once for the module (its images need not look like anything)."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    Generator(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8).save_pretrained(
        str(folder / "G"))
    return folder


@pytest.fixture
def setup(tmp_path, monkeypatch, weights):
    # Empty caches: nothing is found unless the test puts it there.
    for var, sub in (("HOME", "home"), ("TORCH_HOME", "torch"), ("ANYRES_FAST_CACHE", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("DNNLIB_CACHE_DIR", raising=False)
    (tmp_path / "run").symlink_to(weights / "G", target_is_directory=True)     # a save_pretrained folder
    data = images(tmp_path / "lr", [(64, 64), (70, 64), (64, 90)], seed=1)
    hr = images(tmp_path / "hr", [(150, 120), (200, 200), (96, 130)], seed=2)
    return tmp_path, data, hr


def test_missing_detector_stops_with_the_file_names_and_no_traceback(setup, capsys, monkeypatch):
    tmp_path, data, _ = setup

    def no_model(*a, **k):
        raise AssertionError("the model must not be built before the arguments are checked")

    monkeypatch.setattr(Generator, "from_pretrained", no_model)
    code = cli.main(["metrics", "--weights", str(tmp_path / "run"), "--metric", "fid@128,kid", "--data", data,
                     "--num", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "inception-2015-12-05.pt" in err and "pt_inception-2015-12-05-6726825d.pth" in err
    assert "https://nvlabs-fi-cdn.nvidia.com/" in err and "--detector" in err
    assert str(tmp_path / "home" / ".cache" / "dnnlib" / "downloads") in err       # where it looked
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err
    # A path that does not exist names that path.
    code = cli.main(["metrics", "--weights", str(tmp_path / "run"), "--metric", "pfid", "--data", data,
                     "--detector", str(tmp_path / "nope.pt"), "--device", "cpu"])
    assert code == 2 and "nope.pt: no such file" in capsys.readouterr().err


def test_bad_metric_name_is_one_line(setup, capsys):
    tmp_path, data, _ = setup
    code = cli.main(["metrics", "--weights", str(tmp_path / "run"), "--metric", "fid@256,kidd", "--data", data])
    err = capsys.readouterr().err
    assert code == 2 and "unknown metric 'kidd'" in err and "Traceback" not in err


def test_end_to_end_with_a_torchscript_detector_appends_json_lines(setup, capsys):
    tmp_path, data, hr = setup
    det = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(ScriptedTiny()), str(det))
    argv = ["metrics", "--weights", str(tmp_path / "run"), "--metric", "fid@80,pfid,kid", "--data", data,
            "--hr-data", hr, "--num", "2", "--num-real", "3", "--batch", "2", "--tile-batch", "8",
            "--detector", str(det), "--kid-subsets", "3", "--kid-subset-size", "2", "--device", "cpu",
            "--precision", "fp32", "--workers", "0", "--cache-dir", str(tmp_path / "stats"), "--no-progress"]
    with pytest.warns(UserWarning, match="differs from the published"):
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "fid@80: fid" in out and "pfid: fid" in out
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["metric"] for l in lines] == ["fid@80", "pfid"]
    for l in lines:
        assert math.isfinite(l["fid"]) and math.isfinite(l["kid"]) and l["num_fake"] == 2
        assert l["detector"]["kind"] == "nvidia-torchscript" and l["detector"]["sha256"] == file_sha256(str(det))
        assert l["detector"]["sha256_matches_published"] is False
        assert l["settings"]["num"] == 2 and l["settings"]["precision"] == "fp32" and l["time"].endswith("Z")
        assert l["real_stats_cache"] == "miss" and l["weights"].endswith("run")
    fid80, pfid = lines
    assert fid80["settings"]["tiles_per_image"] == 4 and fid80["num_real"] == 3     # HR set, all >= 80
    assert fid80["settings"]["real_root"] == str((tmp_path / "hr").resolve())
    assert pfid["num_real"] == 3 and pfid["settings"]["patch"] == 64
