"""anyres_fast.data: patch sampler against an independent Lanczos resize + crop, scale bounds, small
images, bad files, listing cache invalidation, zip sources, labels, LR dataset, key sharding."""
import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast import ops
from anyres_fast.data import sources
from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler, LRDataset, sample_rng


def _save(path, w, h, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    # smooth + noise content so resampling errors would show
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / 7.0 + c) * np.cos(yy / 5.0 - c) for c in range(3)], axis=2)
    img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return img


def _bad_files(folder):
    os.makedirs(folder, exist_ok=True)
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(b, format="JPEG")
    open(os.path.join(folder, "truncated.jpg"), "wb").write(b.getvalue()[: len(b.getvalue()) // 2])
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    open(os.path.join(folder, "text.png"), "w").write("this is text, not a PNG\n")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(os.path.join(folder, "small10.png"))
    return {"truncated.jpg", "empty.jpg", "text.png", "small10.png"}


def test_patch_equals_lanczos_resize_then_crop(tmp_path):
    native = _save(str(tmp_path / "hr" / "a.png"), 150, 123)
    src = ImageSource(str(tmp_path / "hr"), min_size=32)
    ds = HRPatchDataset(src, 32, scale_max=0.9, random_crop=True, xflip=True, seed=3)
    seen_flip, sizes = set(), set()
    for draw in range(12):
        item = ds[(0, draw)]
        left, top, side = item["crop"].tolist()
        n, (x, y) = int(item["canvas"]), [int(v) for v in item["box"]]
        img = native[:, ::-1] if item["flip"] else native
        sq = torch.from_numpy(img[top:top + side, left:left + side].astype(np.float64)).permute(2, 0, 1)[None]
        full = ops.lanczos_resample(sq, (n, n), impl="ref")          # resize the whole square, then crop
        want = full[0, :, y:y + 32, x:x + 32].clamp(0, 255) / 127.5 - 1   # 8-bit range, as the dataset
        err = (item["image"].double() - want).abs().max().item()
        assert err <= 1e-5, (draw, n, x, y, err)
        # the recorded transform is the model's (s, v) of that box on a canvas of n pixels
        s, v = item["s"].item(), item["v"].tolist()
        assert s == pytest.approx(32 / n) and v == pytest.approx([(x + 16) / n * 2 - 1, (y + 16) / n * 2 - 1])
        assert item["transform"][0, 0] == pytest.approx(s) and item["transform"][1, 2] == pytest.approx(v[1] / 2)
        seen_flip.add(item["flip"])
        sizes.add(n)
    assert seen_flip == {True, False} and len(sizes) > 3


def test_scale_stays_in_bounds_over_10k_draws():
    class _Src:
        path, listing = "x", None

        def __len__(self):
            return 1
    p, smax, smin = 64, 0.5, 0.1
    ds = HRPatchDataset(_Src(), p, scale_max=smax, scale_min=smin, seed=0)
    lo_seen, hi_seen = 1.0, 0.0
    for k in range(10_000):
        rng = sample_rng(0, k)
        w, h = [int(v) for v in rng.integers(128, 1500, size=2)]
        flip, (left, top, side), n, x, y = ds.draw(rng, w, h)
        s = p / n
        assert side == min(w, h) and 0 <= left <= w - side and 0 <= top <= h - side
        assert n <= side and 0 <= x <= n - p and 0 <= y <= n - p
        # bounds [p/scale_max, min(native, p/scale_min)] up to the rounding of n
        assert p / smax - 0.5 <= n <= min(side, p / smin) + 0.5, (w, h, n)
        assert smin - 1e-3 <= s <= smax + 1e-3
        lo_seen, hi_seen = min(lo_seen, s), max(hi_seen, s)
    assert lo_seen < 0.11 and hi_seen > 0.49     # the whole range is used


def test_image_below_the_lower_bound_is_used_at_native_size(tmp_path):
    _save(str(tmp_path / "hr" / "small.png"), 90, 70)      # short side 70 < p / scale_max = 128
    ds = HRPatchDataset(ImageSource(str(tmp_path / "hr"), min_size=64), 64, scale_max=0.5, seed=0)
    for draw in range(5):
        item = ds[(0, draw)]
        assert item["image"].shape == (3, 64, 64)
        assert int(item["canvas"]) == 70 and item["s"].item() == pytest.approx(64 / 70)


def test_bad_files_are_skipped_and_named(tmp_path):
    bad = _bad_files(str(tmp_path / "d"))
    _save(str(tmp_path / "d" / "sub" / "good.png"), 80, 64)
    src = ImageSource(str(tmp_path / "d"), min_size=32)
    assert src.listing.names == ["sub/good.png"]
    rep = src.report()
    assert rep["images"] == 1 and rep["skipped"] == 4
    assert {f["name"] for f in rep["skipped_files"]} == bad
    reasons = {f["name"]: f["reason"] for f in rep["skipped_files"]}
    assert "0 bytes" in reasons["empty.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert "too small" in reasons["small10.png"]
    # the same from a zip
    zpath = tmp_path / "d.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for root, _, files in os.walk(tmp_path / "d"):
            for f in files:
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, tmp_path / "d"))
    zsrc = ImageSource(str(zpath), min_size=32)
    assert zsrc.listing.names == ["sub/good.png"] and {b.name for b in zsrc.listing.bad} == bad
    assert zsrc.load_rgb(0).size == (80, 64)


def test_listing_cache_lives_outside_the_data_and_is_invalidated(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "run" / "cache"
    for i in range(3):
        _save(str(data / f"{i}.png"), 40, 40, seed=i)
    before = sorted(os.listdir(data))
    probes = []
    orig = sources.probe_image
    monkeypatch.setattr(sources, "probe_image", lambda name, *a: probes.append(name) or orig(name, *a))
    ImageSource(str(data), cache_dir=str(cache))
    assert sorted(probes) == ["0.png", "1.png", "2.png"] and len(os.listdir(cache)) == 1
    assert sorted(os.listdir(data)) == before          # nothing written beside the user's data
    probes.clear()
    assert len(ImageSource(str(data), cache_dir=str(cache))) == 3 and probes == []   # cache hit
    _save(str(data / "3.png"), 40, 40, seed=3)                      # added
    os.remove(data / "0.png")                                       # removed
    _save(str(data / "1.png"), 50, 40, seed=9)                      # changed (size and mtime)
    st = os.stat(data / "1.png")
    os.utime(data / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    src = ImageSource(str(data), cache_dir=str(cache))
    assert sorted(probes) == ["1.png", "3.png"]
    assert src.listing.names == ["1.png", "2.png", "3.png"] and src.listing.sizes[0] == (50, 40)


def test_labels_from_dataset_json(tmp_path):
    for i in range(3):
        _save(str(tmp_path / "d" / f"{i}.png"), 40, 48, seed=i)
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": [["0.png", 2], ["1.png", 0], ["2.png", 1]]}))
    src = ImageSource(str(tmp_path / "d"), use_labels=True)
    assert src.c_dim == 3 and src.label(0).tolist() == [0, 0, 1]
    ds = LRDataset(src, 32, seed=0)
    item = ds[(1, 5)]
    assert item["image"].shape == (3, 32, 32) and item["c"].tolist() == [1, 0, 0]
    assert -1 <= item["image"].min() and item["image"].max() <= 1


def test_lr_dataset_centre_crop_and_flip(tmp_path):
    native = _save(str(tmp_path / "d" / "a.png"), 64, 40)
    ds = LRDataset(ImageSource(str(tmp_path / "d")), 40, random_crop=False, xflip=True, seed=0)
    flips = set()
    for draw in range(8):
        got = ((ds[(0, draw)]["image"] + 1) * 127.5).round().numpy().transpose(1, 2, 0)
        crop = native[:, 12:52]
        flipped = np.array_equal(got, crop[:, ::-1])
        assert flipped or np.array_equal(got, crop)
        flips.add(flipped)
    assert flips == {True, False}


def test_key_sampler_shards_the_global_stream_and_resumes():
    one = KeySampler(10, seed=5, global_batch=4)
    r0, r1 = KeySampler(10, 5, 4, rank=0, world=2), KeySampler(10, 5, 4, rank=1, world=2)
    for _ in range(6):
        assert one.next_keys() == r0.next_keys() + r1.next_keys()
    full = KeySampler(10, 5, 4)
    keys = [full.next_keys() for _ in range(5)]
    resumed = KeySampler(10, 5, 4, start=8)
    assert resumed.next_keys() == keys[2]
    first10 = [i for ks in keys for i, _ in ks][:10]
    assert sorted(first10) == list(range(10))          # an epoch visits every image once
