"""`anyres-fast generate --panorama` (docs/panorama.md): the 360-degree strip as a PNG, at any valid
height, with --w-interp; misuse is one clear line."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.models import Generator

from helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
MICRO = dict(resolution=64, z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4, mapping_width=8,
             scale_branch=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, kw in (("pano", dict(panorama=True, fov=120.0)), ("odd", dict(panorama=True, fov=50.0)), ("flat", {})):
        torch.manual_seed(0)
        G = Generator(**MICRO, **kw).eval().calibrate_magnitudes_(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
        G.save_pretrained(str(root / name))
        out[name] = (str(root / name), G)
    return out


def _gen(weights, out, *extra):
    return ["generate", "--weights", weights, "--seeds", "0", "--out", str(out), "--device", "cpu", "--no-progress",
            "--precision", "fp32", *extra]


def test_the_strip_is_the_models_render_panorama(models, tmp_path, capsys):
    folder, G = models["pano"]
    rc, text, err = run_cli(_gen(folder, tmp_path, "--panorama", "--height", "128"), capsys)
    assert rc == 0, err
    img = np.asarray(Image.open(tmp_path / "seed0000_pano128.png"))
    assert img.shape == (128, 3 * 128, 3)              # fov 120: three frames per turn
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    want = G.render_panorama(z, 128, progress=False, force_fp32=True, out_dtype=torch.uint8)[0].permute(1, 2, 0)
    assert np.array_equal(img, want.numpy())
    assert "wrote" in text and "360 degrees" in text


def test_w_interp_blends_latents_around_the_ring(models, tmp_path, capsys):
    folder, G = models["pano"]
    rc, text, err = run_cli(_gen(folder, tmp_path, "--panorama", "--w-interp", "64"), capsys)
    assert rc == 0, err
    assert "3 latents" in text                          # 192 pixels / 64
    img = np.asarray(Image.open(tmp_path / "seed0000_pano64_winterp3.png")).astype(np.float64)
    assert img.shape == (64, 192, 3) and img.std() > 5
    # Anchor i is seed + 1000 i: at column 0 the strip is seed 0's, a third of the way round seed 1000's.
    z = torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in (0, 1000)])
    plain = G.render_panorama(z, progress=False, force_fp32=True, out_dtype=torch.uint8).permute(0, 2, 3, 1).double().numpy()
    near = lambda a, b, x: np.abs(a[:, x] - b[:, x]).mean()
    assert near(img, plain[0], 0) < 0.5 * near(plain[1], plain[0], 0)
    assert near(img, plain[1], 64) < 0.5 * near(plain[0], plain[1], 64)
    seam, interior = np.abs(img[:, -1] - img[:, 0]).mean(), np.abs(np.diff(img, axis=1)).mean()
    assert seam < 2 * interior + 1


@pytest.mark.parametrize("model,extra,words", [
    ("flat", ["--panorama"], "is not a panorama model"),
    ("pano", ["--size", "128"], "is a panorama model: pass --panorama"),
    ("pano", ["--panorama", "--size", "128"], "takes --height, not --size/--zoom"),
    ("pano", ["--panorama", "--height", "32"], "--height 32: smaller than the patch size 64"),
    ("odd", ["--panorama", "--height", "72"], "--height 72: not a whole number of pixels per turn at fov 50; use a multiple of 16"),
    ("flat", ["--size", "64", "--w-interp", "10"], "--height/--w-interp: only with --panorama"),
])
def test_misuse_is_one_clear_line(models, tmp_path, capsys, model, extra, words):
    rc, _, err = run_cli(_gen(models[model][0], tmp_path, *extra), capsys)
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
