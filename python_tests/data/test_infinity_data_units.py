"""anyres_fast.data.infinity unit checks (issue 21): the full-size table and its fallback, the vertical
label's span-1 case, crop_patch's ranges (brute force over seeds, non-square arrays included since it checks
both sides) and its error message, and InfinityPatchDataset's documented defaults, fields, dtypes, the
no-resize path of full_image and its argument errors. Expected values follow docs/infinitygan_training.md."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.data import ImageSource
from anyres_fast.data.datasets import sample_rng
from anyres_fast.data.infinity import FULL_SIZE, InfinityPatchDataset, crop_patch, full_size_for, vertical_label


def _save(path, arr):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(arr).save(path)


def _pixels(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------
# full_size_for / vertical_label

def test_full_size_for_the_published_table_and_the_fallback_rule():
    # docs/infinitygan_training.md: F = 197, 389, 773 for p = 101, 197, 389.
    assert FULL_SIZE == {101: 197, 197: 389, 389: 773}
    for p, f in ((101, 197), (197, 389), (389, 773)):
        assert full_size_for(p) == f and full_size_for(float(p)) == f
    # Off the table the docstring's rule: the table's own F = 2p - 5 (exact for all three) for p > 8;
    # below that 2p, so a tiny patch still has vertical room (F - p = p).
    for p in (9, 10, 20, 64, 100, 300):
        assert full_size_for(p) == 2 * p - 5, p
    for p in (2, 5, 8):
        assert full_size_for(p) == 2 * p, p
    assert all(full_size_for(p) >= p for p in range(1, 400))


def test_vertical_label_span_one_has_both_ends():
    # 2 offset / span - 1: a span of one row still maps its two offsets to -1 and +1.
    assert vertical_label(0, 1) == -1.0 and vertical_label(1, 1) == 1.0
    assert vertical_label(1, 4) == -0.5 and vertical_label(0, -3) == 0.0


# ----------------------------------------------------------------------------------------------------
# crop_patch

def _numbered(h, w):
    """(3, h, w) array whose pixel value is 1000 * row + col, so a crop tells where it came from."""
    grid = 1000 * np.arange(h)[:, None] + np.arange(w)[None, :]
    return np.broadcast_to(grid.astype(np.float32), (3, h, w))


@pytest.mark.parametrize("h,w", [(7, 7), (9, 6), (6, 9)])
def test_crop_patch_reaches_every_offset_and_only_valid_ones(h, w):
    p = 4
    full = _numbered(h, w)
    seen = set()
    for seed in range(300):
        patch, top, left, label = crop_patch(full, p, np.random.default_rng(seed))
        assert patch.shape == (3, p, p)
        assert 0 <= top <= h - p and 0 <= left <= w - p, (top, left)
        assert patch[0, 0, 0] == 1000 * top + left and patch[0, -1, -1] == 1000 * (top + p - 1) + left + p - 1
        # The label is over the vertical span (rows), not the horizontal one.
        assert label == pytest.approx(2 * top / (h - p) - 1, abs=1e-12)
        seen.add((top, left))
    # Brute force: every (top, left) in [0, H - p] x [0, W - p], ends included, occurs.
    assert seen == {(t, l) for t in range(h - p + 1) for l in range(w - p + 1)}


def test_crop_patch_a_patch_as_large_as_a_side_is_allowed():
    for h, w in ((5, 7), (7, 5), (5, 5)):
        patch, top, left, label = crop_patch(_numbered(h, w), 5, np.random.default_rng(0))
        assert patch.shape == (3, 5, 5)
        if h == 5:
            assert top == 0 and label == 0.0          # span 0: the label is 0
        if w == 5:
            assert left == 0


@pytest.mark.parametrize("h,w", [(5, 7), (7, 5), (5, 5)])
def test_crop_patch_refuses_a_patch_larger_than_either_side_and_names_both(h, w):
    with pytest.raises(ValueError, match=rf"^crop_patch: patch 6 larger than the image \({h}, {w}\)$"):
        crop_patch(_numbered(h, w), 6, np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------------
# InfinityPatchDataset

def _source(tmp_path, h=12, w=12, name="d"):
    _save(tmp_path / name / "a.png", _pixels(h, w))
    return ImageSource(str(tmp_path / name))


def test_dataset_defaults_are_the_documented_ones(tmp_path):
    src = _source(tmp_path)
    ds = InfinityPatchDataset(src, 8)
    assert (ds.full, ds.xflip, ds.seed, len(ds)) == (full_size_for(8), True, 0, 1)
    explicit = InfinityPatchDataset(src, 8, full=16, xflip=True, seed=0)
    flips = []
    for draw in range(40):
        a, b = ds[(0, draw)], explicit[(0, draw)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["box"], b["box"]) and a["flip"] == b["flip"]
        # The flip is the sample's first draw of sample_rng(seed, draw), probability 1/2.
        assert a["flip"] == (sample_rng(0, draw).random() < 0.5)
        flips.append(a["flip"])
    assert 5 < sum(flips) < 35
    # seed=1 is a different stream.
    other = InfinityPatchDataset(src, 8, seed=1)
    assert [other[(0, d)]["flip"] for d in range(40)] != flips
    # xflip=False never flips.
    assert not any(InfinityPatchDataset(src, 8, xflip=False)[(0, d)]["flip"] for d in range(40))


def test_dataset_item_fields_and_dtypes_even_under_a_float64_default(tmp_path):
    ds = InfinityPatchDataset(_source(tmp_path), 8, full=13, seed=5)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        item = ds[(0, 3)]
    finally:
        torch.set_default_dtype(saved)
    # The documented item: coord_v a float32 scalar, box (2,) int64 (left, top), image (3, p, p) float32.
    assert item["coord_v"].dtype == torch.float32 and item["coord_v"].shape == ()
    assert item["box"].dtype == torch.int64 and item["box"].shape == (2,)
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 8, 8)
    left, top = item["box"].tolist()
    assert item["coord_v"].item() == pytest.approx(2 * top / (13 - 8) - 1, abs=1e-7)
    whole = ds.full_image(0, item["flip"])
    want = np.clip(whole[:, top:top + 8, left:left + 8], 0, 255) / 127.5 - 1
    np.testing.assert_allclose(item["image"].numpy(), want, atol=1e-6)


@pytest.mark.parametrize("h,w", [(16, 16), (16, 20), (22, 16)])
def test_full_image_at_the_training_size_is_the_centre_crop_pixels(tmp_path, h, w):
    px = _pixels(h, w, seed=1)
    ds = InfinityPatchDataset(_source_from(tmp_path, px), 8, full=16)
    top, left = (h - 16) // 2, (w - 16) // 2                           # the centred square
    want = px[top:top + 16, left:left + 16].transpose(2, 0, 1).astype(np.float32)
    got = ds.full_image(0)
    assert got.dtype == np.float32 and got.shape == (3, 16, 16)
    np.testing.assert_array_equal(got, want)                          # no resize: the pixels themselves
    np.testing.assert_array_equal(ds.full_image(0, flip=True), want[:, :, ::-1])


def _source_from(tmp_path, px):
    _save(tmp_path / "s" / "a.png", px)
    return ImageSource(str(tmp_path / "s"))


def test_full_equal_to_patch_is_allowed_and_gives_the_whole_image(tmp_path):
    ds = InfinityPatchDataset(_source(tmp_path), 8, full=8, xflip=False)
    item = ds[(0, 0)]
    assert item["box"].tolist() == [0, 0] and item["coord_v"].item() == 0.0


def test_dataset_argument_errors_name_the_values(tmp_path):
    src = _source(tmp_path)
    with pytest.raises(ValueError, match=r"^InfinityPatchDataset: full size 7 is smaller than the patch 8$"):
        InfinityPatchDataset(src, 8, full=7)
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    empty = ImageSource(str(tmp_path / "bad"))
    path = str(tmp_path / "bad")
    with pytest.raises(ValueError, match=rf"^{re.escape(path)}: no usable images \(1 skipped\)$"):
        InfinityPatchDataset(empty, 8)
