"""One image reader for every command and dataset (anyres_fast/utils/images.py): 16-bit and float
greyscale scaled (not clipped to white), EXIF orientation applied, palette/alpha/CMYK converted, and
the training source, the metrics' reals and the outpaint photo all read a file the same way."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from anyres_fast.data import ImageSource
from anyres_fast.metrics.real_images import list_images
from anyres_fast.utils.images import to_rgb8


def _grey_ramp(h=40, w=56):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(xx * 4 + yy, 0, 255).astype(np.uint8)


def test_16_bit_grey_equals_the_8_bit_picture_within_one_level(tmp_path):
    g8 = _grey_ramp()
    g16 = (g8.astype(np.uint16) * 257)               # the same picture at 16 bits (255 -> 65535)
    Image.fromarray(g8).save(tmp_path / "a8.png")
    Image.fromarray(g16).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I;16")
    assert np.asarray(Image.open(tmp_path / "a16.png").convert("RGB")).mean() > 250  # Pillow alone: white
    a8 = np.asarray(to_rgb8(Image.open(tmp_path / "a8.png"))).astype(int)
    a16 = np.asarray(to_rgb8(Image.open(tmp_path / "a16.png"))).astype(int)
    assert np.abs(a8 - a16).max() <= 1 and a8.std() > 20
    # The training source and the metrics' listing read it the same way.
    src = ImageSource(str(tmp_path))
    by_name = {n: np.asarray(src.load_rgb(i)).astype(int) for i, n in enumerate(src.listing.names)}
    assert np.abs(by_name["a16.png"] - by_name["a8.png"]).max() <= 1
    listing = list_images(str(tmp_path))
    reals = {f: np.asarray(listing.open(i)).astype(int) for i, f in enumerate(listing.files)}
    assert np.abs(reals["a16.png"] - a8).max() <= 1


def test_float_images_and_other_modes(tmp_path):
    f = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    got = np.asarray(to_rgb8(Image.fromarray(f, mode="F")))
    np.testing.assert_array_equal(got[..., 0], np.floor(f.astype(np.float64) * 255 + 0.5).astype(np.uint8))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    assert np.asarray(to_rgb8(Image.fromarray(rgba, "RGBA")))[0, 0].tolist() == [200, 0, 0]   # alpha dropped
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))                                          # pure red
    assert np.asarray(to_rgb8(cmyk))[0, 0].tolist() == [255, 0, 0]
    pal = Image.fromarray(np.full((4, 4, 3), (10, 20, 30), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.asarray(to_rgb8(pal))[0, 0].tolist() == [10, 20, 30]


def test_exif_orientation_is_applied_everywhere(tmp_path):
    a = np.zeros((30, 50, 3), np.uint8)
    a[:, :10] = 255                                  # a white band on the left of the stored pixels
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6                                 # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    up = np.asarray(to_rgb8(Image.open(tmp_path / "rot.jpg")))
    assert up.shape == (50, 30, 3) and up[:10].mean() > 200 and up[-10:].mean() < 50   # band now on top
    src = ImageSource(str(tmp_path))
    assert tuple(src.listing.sizes[0]) == (30, 50)                      # (width, height) upright
    assert np.asarray(src.load_rgb(0)).shape == (50, 30, 3)


def test_outpaint_photo_reader_matches(tmp_path):
    from anyres_fast.cli.editing import read_image

    g8 = _grey_ramp()
    Image.fromarray(g8).save(tmp_path / "p8.png")
    Image.fromarray(g8.astype(np.uint16) * 257).save(tmp_path / "p16.png")
    x8, x16 = read_image(str(tmp_path / "p8.png"), "--image"), read_image(str(tmp_path / "p16.png"), "--image")
    assert torch.allclose(x8, x16, atol=1.01 / 127.5) and x8.std() > 0.1
