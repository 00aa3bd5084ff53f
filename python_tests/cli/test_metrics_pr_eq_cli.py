"""`anyres-fast metrics` with precision/recall, pfid-down and the equivariance metrics, end to end on CPU."""
from __future__ import annotations

import json
import math
import zipfile

import pytest
import torch

from anyres_fast import cli
from anyres_fast.metrics.detectors import VGG_FILE, VGG_URL, file_sha256
from anyres_fast.models import Generator
from helpers import MICRO_G, write_images
from helpers import ScriptedTiny


def save_generator(folder, c_dim=0):
    torch.manual_seed(0)
    G = Generator(resolution=64, c_dim=c_dim, **MICRO_G)
    G.calibrate_magnitudes_(torch.randn(8, MICRO_G["z_dim"]), torch.eye(c_dim)[torch.arange(8) % c_dim] if c_dim else None)
    G.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var, sub in (("HOME", "home"), ("TORCH_HOME", "torch"), ("ANYRES_FAST_CACHE", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("DNNLIB_CACHE_DIR", raising=False)
    return tmp_path


def test_missing_vgg16_is_one_line_with_file_places_and_url(env, capsys, monkeypatch):
    weights = save_generator(env / "G")
    data = write_images(str(env / "lr"), [(64, 64)] * 4)

    def no_model(*a, **k):
        raise AssertionError("the model must not be built before the detector is found")

    monkeypatch.setattr(Generator, "from_pretrained", no_model)
    code = cli.main(["metrics", "--weights", weights, "--metric", "pr@64", "--data", data, "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert VGG_FILE in err and VGG_URL in err and "--detector-vgg" in err
    assert str(env / "cache" / "detectors" / VGG_FILE) in err
    assert str(env / "home" / ".cache" / "dnnlib" / "downloads") in err
    assert "inception" not in err.lower()                # pr alone does not need the Inception file


def test_pr_ppr_pfid_down_and_equivariance_append_json_lines(env, capsys):
    weights = save_generator(env / "G")
    lr = write_images(str(env / "lr"), [(64, 64), (70, 64), (64, 90), (80, 80), (66, 70)], seed=1)
    hr = write_images(str(env / "hr"), [(150, 140), (200, 200), (160, 130), (140, 170)], seed=2)
    # The LR set as a zip: fid@R and pr@R read zips too.
    lr_zip = env / "lr.zip"
    with zipfile.ZipFile(lr_zip, "w") as z:
        for i in range(5):
            z.write(f"{lr}/img{i}.png", f"img{i}.png")
    det, vgg = env / "inception-2015-12-05.pt", env / VGG_FILE
    torch.jit.save(torch.jit.script(ScriptedTiny()), str(det))
    torch.jit.save(torch.jit.script(ScriptedTiny()), str(vgg))
    out = env / "m.jsonl"
    argv = ["metrics", "--weights", weights, "--metric", "fid@64,pr@64,ppr,pfid-down@128,eqt-int,eqt-frac,eqr",
            "--data", str(lr_zip), "--hr-data", hr, "--num", "4", "--num-real", "4", "--batch", "2",
            "--detector", str(det), "--detector-vgg", str(vgg), "--device", "cpu", "--precision", "fp32",
            "--workers", "0", "--cache-dir", str(env / "stats"), "--no-progress", "--out", str(out)]
    with pytest.warns(UserWarning, match="differs from the published"):
        assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "pr@64: precision" in printed and "eqt-int:" in printed and " dB" in printed
    lines = {l["metric"]: l for l in map(json.loads, out.read_text().splitlines())}
    assert list(lines) == ["fid@64", "pr@64", "ppr", "pfid-down@128", "eqt-int", "eqt-frac", "eqr"]
    assert lines["fid@64"]["num_real"] == 5 and lines["fid@64"]["settings"]["real_root"] == str(lr_zip)
    for name in ("pr@64", "ppr"):
        l = lines[name]
        assert 0 <= l["precision"] <= 1 and 0 <= l["recall"] <= 1 and l["num_fake"] == 4
        assert l["detector"]["kind"] == "nvidia-vgg16-torchscript" and l["detector"]["sha256"] == file_sha256(str(vgg))
        assert l["settings"]["nhood_size"] == 3
    down = lines["pfid-down@128"]
    assert math.isfinite(down["fid"]) and down["settings"]["tiles_per_patch"] == 4
    assert 128 <= down["settings"]["canvas_sizes"][0] and down["settings"]["canvas_sizes"][2] <= 200
    for name in ("eqt-int", "eqt-frac", "eqr"):
        assert math.isfinite(lines[name]["psnr"]) and lines[name]["num_fake"] == 4
    assert lines["eqt-int"]["psnr"] > 30                  # a StyleGAN3-T generator follows integer shifts


def test_equivariance_needs_no_data_and_conditional_models_draw_labels(env, capsys):
    weights = save_generator(env / "G")
    out = env / "m.jsonl"
    assert cli.main(["metrics", "--weights", weights, "--metric", "eqt-int", "--num", "2", "--batch", "2",
                     "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metric"] == "eqt-int"
    # Conditional: labels come from the dataset's dataset.json; without --data it says so.
    cond = save_generator(env / "C", c_dim=3)
    code = cli.main(["metrics", "--weights", cond, "--metric", "eqt-frac", "--num", "2", "--device", "cpu",
                     "--no-progress", "--out", str(out)])
    assert code == 2 and "labels" in capsys.readouterr().err
    data = write_images(str(env / "labelled"), [(64, 64)] * 4, labels=[0, 1, 2, 1])
    assert cli.main(["metrics", "--weights", cond, "--metric", "eqt-frac", "--num", "2", "--batch", "2",
                     "--data", data, "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[-1])["metric"] == "eqt-frac"
    code = cli.main(["metrics", "--weights", weights, "--metric", "fid@64", "--device", "cpu"])
    assert code == 2 and "--data is needed for fid@64" in capsys.readouterr().err
