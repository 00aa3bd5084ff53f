"""`anyres-fast outpaint` and `anyres-fast inbetween` end to end (random-weight tiny generator)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.models import infinity_inversion as inv
from anyres_fast.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data

    d = tmp_path_factory.mktemp("in")
    Image.fromarray(skimage.data.astronaut()).resize((32, 32), Image.LANCZOS).save(d / "astro.png")
    Image.fromarray(skimage.data.coffee()).resize((48, 32), Image.LANCZOS).save(d / "coffee.png")
    Image.fromarray(skimage.data.astronaut()).resize((20, 20)).save(d / "small.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d


def _png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64)


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def test_outpaint_size_region_seam_and_record(photos, tmp_path, one_thread, capsys):
    out = tmp_path / "op"
    args = ["outpaint", "--weights", "random:preset=tiny", "--image", str(photos / "astro.png"), "--width", "70",
            "--height", "36", "--place", "left", "--steps", "15", "--lpips", "random", "--seeds", "0-1",
            "--no-progress", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    src = _png(photos / "astro.png")
    imgs = [_png(out / f"outpaint_seed000{s}.png") for s in (0, 1)]
    for img, entry in zip(imgs, report["outputs"]):
        assert img.shape == (36, 70, 3)
        got = _psnr(img[2:34, :32], src)                                   # photo centred vertically, at the left
        assert abs(got - entry["psnr"][0]) < 1e-6 and abs(got - report["inversion_psnr"][0]) < 1e-6
        seam = entry["seams"][0]
        assert seam["seam"] == pytest.approx(np.abs(img[:, 32] - img[:, 31]).mean(), abs=1e-6)
        assert seam["inside"] and seam["seam"] < 3 * seam["inside_mean"]   # no cut at the seam
    np.testing.assert_array_equal(imgs[0][2:34, :32], imgs[1][2:34, :32])  # the photo region: same for all seeds
    assert np.abs(imgs[0][:, -8:] - imgs[1][:, -8:]).mean() > 1            # new content: one per seed

    # The record is accepted later: no inversion, same photo region, a new seed.
    rec = inv.InversionRecord.load(str(out / "inversion.pt"))
    assert rec.settings["steps"] == 15 and rec.sources == [str(photos / "astro.png")]
    again = tmp_path / "op2"
    assert main(args[:-3] + ["--record", str(out / "inversion.pt"), "--seeds", "7", "--out", str(again)]) == 0
    np.testing.assert_array_equal(_png(again / "outpaint_seed0007.png")[2:34, :32], imgs[0][2:34, :32])
    wider = [("80" if a == "70" else a) for a in args[:-2]]
    assert main(wider + ["--record", str(out / "inversion.pt"), "--out", str(again)]) == 2
    assert "another output size or placement" in capsys.readouterr().err


def test_inbetween_both_ends_and_one_canvas(photos, tmp_path, one_thread):
    out = tmp_path / "ib"
    assert main(["inbetween", "--weights", "random:preset=tiny", "--left", str(photos / "astro.png"), "--right",
                 str(photos / "coffee.png"), "--width", "96", "--steps", "10", "--lpips", "random", "--seeds", "3",
                 "--no-progress", "--out", str(out)]) == 0
    img = _png(out / "inbetween_seed0003.png")
    assert img.shape == (32, 96, 3)
    entry = json.loads((out / "report.json").read_text())["outputs"][0]
    assert abs(_psnr(img[:, :32], _png(photos / "astro.png")) - entry["psnr"][0]) < 1e-6
    assert abs(_psnr(img[:, -48:], _png(photos / "coffee.png")) - entry["psnr"][1]) < 1e-6
    assert len(entry["seams"]) == 2 and os.path.isfile(out / "inversion.pt")


@pytest.mark.parametrize("argv, message", [
    (["outpaint", "--image", "{d}/small.png", "--width", "64"], "smaller than the model's 29x29 patch"),
    (["outpaint", "--image", "{d}/astro.png", "--width", "31"], "--width 31: smaller than the photo's width 32"),
    (["outpaint", "--image", "{d}/broken.jpg", "--width", "64"], "cannot read the image"),
    (["outpaint", "--image", "{d}/missing.png", "--width", "64"], "no such file"),
    (["inbetween", "--left", "{d}/astro.png", "--right", "{d}/coffee.png", "--width", "79"],
     "smaller than the two photos side by side (32 + 48 = 80)"),
    (["inbetween", "--left", "{d}/astro.png", "--right", "{d}/broken.jpg", "--width", "200"], "--right"),
])
def test_bad_input_is_one_clear_line(photos, tmp_path, capsys, argv, message):
    argv = [a.format(d=photos) for a in argv] + ["--weights", "random:preset=tiny", "--lpips", "random",
                                                 "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_random_weights_spec_like_generate():
    from anyres_fast.cli import weights as weights_arg
    from anyres_fast.cli.args import CommandError
    from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
    from anyres_fast.train.infinity_recipe import TINY_G

    assert weights_arg.resolve("random", "infinity").config.patch_size == 101      # the published model
    w = weights_arg.resolve("random:preset=tiny,seed=3,z_dim=32", "infinity")
    assert (w.config, w.seed) == (InfinityConfig(**{**TINY_G, "z_dim": 32}), 3)
    torch.manual_seed(0)
    want = InfinityGenerator(InfinityConfig(**TINY_G)).state_dict()
    got = weights_arg.load(weights_arg.resolve("random:preset=tiny", "infinity"), "cpu").state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    for bad, msg in (("random:bogus=1", "unknown option"), ("random:preset=big", "only preset"),
                     ("random:seed=x", "must be a number"), ("randomly", "no such file or folder")):
        with pytest.raises(CommandError, match=msg):
            weights_arg.resolve(bad, "infinity")
