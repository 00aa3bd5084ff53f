"""Units of the fast HR patch path (anyres_fast/data/fastpatch.py; docs/data.md, "Fast patch path"): the
reduction rule r <= f / oversampling, Pillow's draft reduction for small and already decoded images, the
cropped footprint (footprint plus 3 f/r + 2 reduced pixels, clipped to the square) and its Lanczos box
computed by hand, native crops, and the bit-exactness of r = 1 against the exact path."""
import io
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource
from anyres_fast.data.fastpatch import choose_reduction, draft_reduction, fast_region


def _jpeg_bytes(w, h, seed=0, orientation=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = np.sin(x / 4.0)[..., None] * 70 + np.cos(y / 6.0 + seed)[..., None] * 50 + 128
    im = Image.fromarray(np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90, exif=exif.tobytes())
    return b.getvalue()


def _open(data):
    return Image.open(io.BytesIO(data))


def test_choose_reduction_is_the_largest_allowed():
    """docs/data.md: the largest r of 8, 4, 2, 1 with r <= f / oversampling (exact rationals here)."""
    for ov in (1, 1.5, 2, 3, 4.25):
        for k in range(8, 320):
            f = Fraction(k, 8)
            allowed = [r for r in (1, 2, 4, 8) if r * Fraction(ov) <= f]
            assert choose_reduction(float(f), ov) == (max(allowed) if allowed else 1), (float(f), ov)
    # f = L / n is a rounded quotient: one that lands a hair below a threshold still reaches it
    assert choose_reduction(6 - 1e-12) == 2 and choose_reduction(24 - 1e-12) == 8
    assert choose_reduction(6 - 1e-6) == 1


@pytest.mark.parametrize("w,h", [(37, 29), (12, 70), (70, 12), (8, 8), (5, 40), (3, 3)])
def test_draft_reduction_of_small_jpegs(w, h):
    """libjpeg's 1/s (s in 8, 4, 2, 1) through Pillow's draft: the asked r when both sides have >= r pixels,
    else the largest s <= the short side; the image then decodes at ceil(size / s)."""
    data = _jpeg_bytes(w, h)
    for r in (1, 2, 4, 8):
        im = _open(data)
        got = draft_reduction(im, r)
        expected = max(s for s in (1, 2, 4, 8) if s <= r and s <= min(w, h))
        assert got == expected, (r, got)
        assert im.size == (-(-w // got), -(-h // got))
        im.load()
        assert im.size == (-(-w // got), -(-h // got))


def test_draft_reduction_of_images_that_cannot_be_drafted(tmp_path):
    """A decoded JPEG or a PNG is at full resolution: reduction 1, size unchanged."""
    im = _open(_jpeg_bytes(64, 48))
    im.load()
    assert draft_reduction(im, 4) == 1 and im.size == (64, 48)
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as png:
        assert draft_reduction(png, 8) == 1 and png.size == (64, 48)


def test_draft_reduction_of_a_jpeg_drafted_before():
    """Pillow keeps the first draft: a second ask returns that draft's reduction (the one the file then
    decodes at), whatever r it names, r = 1 included."""
    data = _jpeg_bytes(64, 48)
    for first, second in ((4, 2), (2, 8), (8, 1), (1, 4)):
        im = _open(data)
        r1 = draft_reduction(im, first)
        assert draft_reduction(im, second) == (r1 if first > 1 else second)
        got = r1 if first > 1 else second
        im.load()
        assert im.size == (-(-64 // got), -(-48 // got)), (first, second)


def test_draft_reduction_of_a_png_with_a_decoder_config(tmp_path):
    """A PNG's decoderconfig is not a scale (Pillow adds a flag to it for some files): 1 for any r."""
    Image.new("P", (40, 30)).save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as png:
        png.decoderconfig = png.decoderconfig + (5,)
        assert draft_reduction(png, 4) == 1 and draft_reduction(png, 1) == 1 and png.size == (40, 30)


def _expected_region(W, H, choices, p, flip, oversampling=3.0):
    """docs/data.md steps 2-4 by hand for orientation 1: r, then per axis the footprint mapped by 1/r in the
    stored frame (x reflected when flipped), widened by ceil(3 f / r) + 2 and clipped to the square."""
    _, (left, top, side), n, x, y = choices
    f = side / n
    r = max([s for s in (1, 2, 4, 8) if s * oversampling <= f + 1e-9] or [1])
    m = math.ceil(3 * f / r) + 2
    out = []
    for lo, hi, sq_lo, sq_hi, length, refl in ((left + x * f, left + (x + p) * f, left, left + side, W, flip),
                                               (top + y * f, top + (y + p) * f, top, top + side, H, False)):
        if refl:
            lo, hi, sq_lo, sq_hi = length - hi, length - lo, length - sq_hi, length - sq_lo
        g0 = max(math.floor(sq_lo / r), math.floor(lo / r) - m)
        g1 = min(math.ceil(sq_hi / r), math.ceil(hi / r) + m)
        box = (g1 - hi / r, g1 - lo / r) if refl else (lo / r - g0, hi / r - g0)
        out.append((g0, g1, box))
    (x0, x1, bx), (y0, y1, by) = out
    return r, (x0, y0, x1, y1), (bx[0], by[0], bx[1], by[1])


CHOICES = [((31, 0, 150), 20, 0, 0), ((31, 0, 150), 20, 4, 3), ((40, 0, 150), 100, 40, 30),
           ((53, 0, 150), 100, 84, 0), ((0, 0, 150), 24, 8, 8), ((10, 0, 150), 149, 70, 120),
           ((52, 0, 150), 16, 0, 0)]


@pytest.mark.parametrize("flip", [False, True])
def test_fast_region_crops_the_footprint_plus_the_support(flip):
    W, H, p = 203, 150, 16
    data = _jpeg_bytes(W, H, seed=1)
    for (left, top, side), n, x, y in CHOICES:
        choices = (flip, (left, top, side), n, x, y)
        r, (x0, y0, x1, y1), box = _expected_region(W, H, choices, p, flip)
        crop, got_box, got_r = fast_region(_open(data), choices, p)
        assert got_r == r
        assert crop.mode == "RGB" and crop.size == (x1 - x0, y1 - y0), (choices, crop.size)
        assert got_box == pytest.approx(box, abs=1e-9)
        whole = _open(data)
        if r > 1:
            whole.draft(None, (W // r, H // r))
        ref = whole.convert("RGB").crop((x0, y0, x1, y1))
        if flip:
            ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert (np.asarray(crop) == np.asarray(ref)).all()


def test_fast_region_hand_values():
    """Two draws worked by hand (W 203, H 150, square (31, 0, 150), p 16, n 20: f 7.5 -> r 2, margin
    ceil(3 * 3.75) + 2 = 14): x from max(floor(31/2), floor(31/2) - 14) = 15 to min(ceil(181/2),
    ceil(151/2) + 14) = 90; y from 0 to min(75, 60 + 14) = 74."""
    data = _jpeg_bytes(203, 150, seed=1)
    crop, box, r = fast_region(_open(data), (False, (31, 0, 150), 20, 0, 0), 16)
    assert r == 2 and crop.size == (90 - 15, 74 - 0)
    assert box == pytest.approx((15.5 - 15, 0.0, 75.5 - 15, 60.0))
    # n 100 (f 1.5, r 1, margin ceil(4.5) + 2 = 7), x 40: footprint 91..115 in x -> 84..122 cropped
    crop, box, r = fast_region(_open(data), (False, (31, 0, 150), 100, 40, 30), 16)
    assert r == 1 and crop.size == (122 - 84, 45 + 24 + 7 - (45 - 7))
    assert box == pytest.approx((91 - 84, 7.0, 115 - 84, 31.0))


@pytest.mark.parametrize("flip", [False, True])
def test_native_crops_are_the_patch_itself(flip):
    """n == side: r = 1 whatever the oversampling, no Lanczos box, the p x p pixels of the upright flipped
    image (docs/data.md)."""
    data = _jpeg_bytes(90, 60, seed=2, orientation=6)
    upright = _open(data)
    upright = upright.transpose(Image.Transpose.ROTATE_270).convert("RGB")     # orientation 6
    if flip:
        upright = upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert upright.size == (60, 90)
    for (left, top), x, y in [((0, 17), 5, 9), ((0, 30), 44, 0), ((0, 0), 0, 44)]:
        choices = (flip, (left, top, 60), 60, x, y)
        for ov in (3.0, 0.125):
            crop, box, r = fast_region(_open(data), choices, 16, oversampling=ov)
            assert r == 1 and box is None and crop.size == (16, 16)
            ref = upright.crop((left + x, top + y, left + x + 16, top + y + 16))
            assert (np.asarray(crop) == np.asarray(ref)).all()


def test_reduction_one_is_the_exact_path_bit_for_bit(tmp_path):
    """docs/data.md: at r = 1 the fast patch equals the exact path's, for every orientation and flip."""
    src = tmp_path / "hr"
    src.mkdir()
    for o in (1, 2, 6, 7):
        (src / f"o{o}.jpg").write_bytes(_jpeg_bytes(97, 70, seed=o, orientation=o))
    source = ImageSource(str(src), min_size=16, list_workers=1, progress=False)
    fast = HRPatchDataset(source, 16, scale_max=1.0, seed=3)
    exact = HRPatchDataset(source, 16, scale_max=1.0, seed=3, decode="exact")
    seen = 0
    for index in range(len(source)):
        for draw in range(10):
            a, b = fast[(index, draw)], exact[(index, draw)]
            if int(a["reduction"]) == 1:
                seen += 1
                assert torch.equal(a["image"], b["image"]), (index, draw)
    assert seen >= 20
