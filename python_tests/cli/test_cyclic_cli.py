"""`anyres-fast generate --model infinity --cyclic` and `anyres-fast inbetween --cyclic` from the command a
user types (random-weight tiny InfinityGAN: 29-pixel patches, 4 pixels per latent column)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "random:preset=tiny"


def _png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import skimage.data

    d = tmp_path_factory.mktemp("in")
    Image.fromarray(skimage.data.astronaut()).resize((32, 32), Image.LANCZOS).save(d / "astro.png")
    return d / "astro.png"


def test_generate_cyclic_strip_wraps(tmp_path, capsys):
    base = ["generate", "--model", "infinity", "--weights", TINY, "--seeds", "0", "--height", "64", "--width", "160",
            "--device", "cpu", "--no-progress"]
    rc, out, err = run_cli(base + ["--cyclic", "--out", str(tmp_path / "a")], capsys)
    assert rc == 0, err
    img = _png(tmp_path / "a" / "seed0000_160x64_cyclic.png")
    assert img.shape == (64, 160, 3) and "seed0000_160x64_cyclic.png" in out
    # Moving the origin by k columns rolls the ring: the same 8-bit pixels, wrapped (float32 patches placed
    # differently may round a value at a quantisation step the other way: at most 1 level, rarely).
    rc, _, err = run_cli(base + ["--cyclic", "--left", "37", "--out", str(tmp_path / "b")], capsys)
    assert rc == 0, err
    diff = np.abs(_png(tmp_path / "b" / "seed0000_160x64_cyclic.png") - np.roll(img, -37, axis=1))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # Seam: last | first column like the interior pairs; the ordinary canvas's window has a cut there.
    interior = np.abs(img[:, 1:] - img[:, :-1]).mean()
    assert np.abs(img[:, 0] - img[:, -1]).mean() < 1.5 * interior
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "c")], capsys)
    plain = _png(tmp_path / "c" / "seed0000_160x64.png")
    assert rc == 0 and np.abs(plain[:, 0] - plain[:, -1]).mean() > 2 * interior


def test_inbetween_cyclic_closes_the_ring_with_one_photo(photo, tmp_path, capsys):
    out = tmp_path / "ib"
    argv = ["inbetween", "--weights", TINY, "--cyclic", "--left", str(photo), "--width", "96", "--steps", "6",
            "--lpips", "random", "--seeds", "0-1", "--no-progress", "--out", str(out)]
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["cyclic"] is True and report["size"] == [96, 32]
    imgs = [_png(out / f"inbetween_seed000{s}.png") for s in (0, 1)]
    src = _png(photo)
    for img, entry in zip(imgs, report["outputs"]):
        assert img.shape == (32, 96, 3)
        psnr = 10 * np.log10(255.0 ** 2 / np.mean((img[:, :32] - src) ** 2))
        assert abs(psnr - entry["psnr"][0]) < 1e-6
        right, ring = entry["seams"]                         # photo | new content, and last | first column
        assert right["seam"] == pytest.approx(np.abs(img[:, 32] - img[:, 31]).mean(), abs=1e-6)
        assert ring["seam"] == pytest.approx(np.abs(img[:, 0] - img[:, -1]).mean(), abs=1e-6)
    np.testing.assert_array_equal(imgs[0][:, :32], imgs[1][:, :32])
    assert np.abs(imgs[0][:, 40:88] - imgs[1][:, 40:88]).mean() > 1      # the middle: one per seed
    # The record is for this ring only: the same photo and width without --cyclic is another canvas.
    plain = ["inbetween", "--weights", TINY, "--left", str(photo), "--right", str(photo), "--width", "96",
             "--lpips", "random", "--record", str(out / "inversion.pt"), "--no-progress", "--out", str(tmp_path / "x")]
    rc, _, err = run_cli(plain, capsys)
    assert rc == 2 and "another output size or placement" in err
    rc, _, err = run_cli(argv[:-3] + ["--record", str(out / "inversion.pt"), "--seeds", "0", "--out",
                                      str(tmp_path / "again")], capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(_png(tmp_path / "again" / "inbetween_seed0000.png"), imgs[0])


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "infinity", "--cyclic", "--height", "16", "--width", "28"],
     "--cyclic --width 28: a cyclic canvas must be at least one 29-pixel patch wide"),
    (["generate", "--model", "infinity", "--cyclic", "--height", "16", "--width", "66"],
     "--cyclic --width 66: a cyclic canvas must be a multiple of 4 pixels (2^depth, one latent column of this "
     "model), e.g. 64 or 68"),
    (["generate", "--model", "infinity", "--cyclic", "--height", "16", "--width", "64", "--fuse", "1,2",
      "--centres", "1,1;30,1"], "--cyclic with --fuse"),
    (["inbetween", "--cyclic", "--left", "{p}", "--right", "{p}", "--width", "96"], "drop --right"),
    (["inbetween", "--left", "{p}", "--width", "96"], "--right is required (or --cyclic"),
    (["inbetween", "--cyclic", "--left", "{p}", "--width", "98"], "must be a multiple of 4 pixels"),
    (["inbetween", "--cyclic", "--left", "{p}", "--width", "28"], "smaller than the --left photo's width 32"),
])
def test_bad_cyclic_input_is_one_clear_line(photo, tmp_path, capsys, argv, message):
    argv = [a.format(p=photo) for a in argv] + ["--weights", TINY, "--out", str(tmp_path / "o")]
    if argv[0] == "inbetween":
        argv += ["--lpips", "random"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()                     # refused before anything was written


def test_cyclic_with_an_any_resolution_generator_is_one_line(tmp_path, capsys):
    from helpers import run_cli
    rc, _, err = run_cli(["generate", "--weights", "random:64,channel_base=256,channel_max=8", "--size", "64",
                          "--cyclic", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "--cyclic" in err and "InfinityGAN" in err and len(err.strip().splitlines()) == 1
