"""anyres_fast.data, checked against computations written here (issue 21): the KeySampler's per-epoch
permutations and rank slices, the boundaries of the size filters, and every input of the listing cache
(change it -> the file is probed again, leave it -> no probe)."""
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler
from anyres_fast.data import sources as sources_mod


def _png(path, w, h, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)


def _png_bytes(w, h, seed=0):
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(b, format="PNG", compress_level=0)
    return b.getvalue()


# ----------------------------------------------------------------------------------------------------
# KeySampler

def _stream(n, seed, global_batch, steps, rank=0, world=1, start=0):
    s = KeySampler(n, seed, global_batch, rank, world, start)
    return [k for _ in range(steps) for k in s.next_keys()]


def test_key_sampler_each_epoch_is_a_new_permutation_deterministic_in_the_seed():
    n, epochs = 11, 6
    # A batch of 4 does not divide 11: steps straddle epoch boundaries.
    keys = _stream(n, seed=3, global_batch=4, steps=-(-n * epochs // 4))
    assert [d for _, d in keys] == list(range(len(keys)))          # draw = global position k
    idx = [i for i, _ in keys]
    perms = [tuple(idx[e * n:(e + 1) * n]) for e in range(epochs)]
    for p in perms:
        assert sorted(p) == list(range(n))                          # every epoch visits every image once
    assert len(set(perms)) == epochs                                # a new order every epoch
    assert perms[0] != tuple(range(n))                              # shuffled, not the identity
    # The same seed gives the same stream; another seed another one (first epoch already differs).
    assert _stream(n, 3, 4, 16) == keys[:64]
    other = [i for i, _ in _stream(n, 4, 4, 16)]
    assert tuple(other[:n]) != perms[0] and other != idx[:64]
    # An epoch's order is a function of (seed, epoch) alone, not of the epochs read before it.
    fresh = KeySampler(n, 3, 4)
    assert [fresh.key(k)[0] for k in range(4 * n, 5 * n)] == list(perms[4])
    assert [fresh.key(k)[0] for k in range(0, n)] == list(perms[0])


def test_key_sampler_rank_slices_partition_every_global_batch():
    n, gb, world, steps = 13, 6, 3, 9
    b = gb // world
    single = _stream(n, 8, gb, steps)
    per_rank = [KeySampler(n, 8, gb, r, world) for r in range(world)]
    for step in range(steps):
        batch = single[step * gb:(step + 1) * gb]
        got = [s.next_keys() for s in per_rank]
        for r in range(world):
            assert got[r] == batch[r * b:(r + 1) * b]               # rank r: slice [r b, (r + 1) b)
        flat = [k for g in got for k in g]
        assert sorted(d for _, d in flat) == list(range(step * gb, (step + 1) * gb))   # disjoint, complete
    # Resuming at a position continues every rank's stream.
    resumed = KeySampler(n, 8, gb, 2, world, start=4 * gb)
    assert resumed.next_keys() == single[4 * gb + 2 * b: 4 * gb + 3 * b]
    with pytest.raises(ValueError, match="not divisible"):
        KeySampler(n, 8, 7, 0, 2)


# ----------------------------------------------------------------------------------------------------
# Size filters

@pytest.mark.parametrize("w,h", [(32, 50), (50, 32), (31, 50), (50, 31), (32, 32), (31, 31)])
def test_min_size_accepts_the_short_side_at_the_limit_and_rejects_one_below(tmp_path, w, h):
    _png(str(tmp_path / "d" / "x.png"), w, h)
    src = ImageSource(str(tmp_path / "d"), min_size=32)
    if min(w, h) >= 32:
        assert src.listing.names == ["x.png"] and src.listing.sizes == [(w, h)] and not src.listing.bad
    else:
        assert src.listing.names == [] and [b.name for b in src.listing.bad] == ["x.png"]
        assert "too small" in src.listing.bad[0].reason and f"{w}x{h}" in src.listing.bad[0].reason


def test_hr_canvas_bounds_at_and_around_the_lower_limit():
    p = 16
    ds = HRPatchDataset.__new__(HRPatchDataset)
    ds.resolution, ds.scale_max, ds.scale_min, ds.xflip, ds.random_crop = p, 0.5, None, False, False
    lo = p / 0.5
    for side in range(int(lo) - 3, int(lo) + 4):
        b = ds.size_bounds(side)
        # Independent: [p / scale_max, side] when it is not empty, else the native side.
        assert b == ((lo, float(side)) if side >= lo else (float(side), float(side))), side
        rng = np.random.default_rng(side)
        ns = {ds.draw(rng, side, side + 5)[2] for _ in range(300)}
        want = set(range(int(lo), side + 1)) if side >= lo else {side}
        assert ns <= want and (min(ns), max(ns)) == (min(want), max(want)), (side, ns)
    ds.scale_min = 0.25                                      # upper bound p / scale_min = 64
    assert ds.size_bounds(100) == (32.0, 64.0) and ds.size_bounds(64) == (32.0, 64.0)
    assert ds.size_bounds(63) == (32.0, 63.0)


# ----------------------------------------------------------------------------------------------------
# Listing cache: what invalidates it

@pytest.fixture
def probes(monkeypatch):
    """Names the listing decodes (sources.probe_image; small sources are probed in this process)."""
    seen = []
    orig = sources_mod.probe_image
    monkeypatch.setattr(sources_mod, "probe_image", lambda name, *a: seen.append(name) or orig(name, *a))
    return seen


def _again(probes, *args, **kw):
    probes.clear()
    src = ImageSource(*args, **kw)
    return src, sorted(probes)


def test_listing_cache_each_file_stamp_field_invalidates_only_that_file(tmp_path, probes):
    data, cache = tmp_path / "data", str(tmp_path / "cache")
    for i in range(3):
        _png(str(data / f"{i}.png"), 40, 40, seed=i)
    ImageSource(str(data), cache_dir=cache)
    assert sorted(probes) == ["0.png", "1.png", "2.png"]
    assert _again(probes, str(data), cache_dir=cache)[1] == []                 # unchanged: hit
    # mtime only (same bytes)
    st = os.stat(data / "0.png")
    os.utime(data / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    assert _again(probes, str(data), cache_dir=cache)[1] == ["0.png"]
    assert _again(probes, str(data), cache_dir=cache)[1] == []
    # byte size only (mtime restored)
    st = os.stat(data / "1.png")
    with open(data / "1.png", "ab") as f:
        f.write(b"\0" * 7)                                  # trailing bytes after IEND: still a readable PNG
    os.utime(data / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(data / "1.png").st_mtime_ns == st.st_mtime_ns
    assert _again(probes, str(data), cache_dir=cache)[1] == ["1.png"]
    # added: only the new file; removed: no probe, and it leaves the listing and the cache file
    _png(str(data / "3.png"), 40, 40, seed=3)
    assert _again(probes, str(data), cache_dir=cache)[1] == ["3.png"]
    os.remove(data / "2.png")
    src, seen = _again(probes, str(data), cache_dir=cache)
    assert seen == [] and src.listing.names == ["0.png", "1.png", "3.png"]
    import json
    assert sorted(json.load(open(src.cache_path))["files"]) == ["0.png", "1.png", "3.png"]
    # A file that comes back with the old name and new content is probed (its stamp differs).
    _png(str(data / "2.png"), 60, 40, seed=9)
    src, seen = _again(probes, str(data), cache_dir=cache)
    assert seen == ["2.png"] and src.listing.sizes[src.listing.names.index("2.png")] == (60, 40)


def test_listing_cache_key_min_size_path_and_format(tmp_path, probes, monkeypatch):
    data, cache = tmp_path / "data", str(tmp_path / "cache")
    _png(str(data / "a.png"), 40, 32, seed=0)
    _png(str(data / "b.png"), 40, 31, seed=1)
    src = ImageSource(str(data), cache_dir=cache, min_size=32)
    assert src.listing.names == ["a.png"]
    # min_size: another entry; the cached "too small" verdict of 31 is not reused at min_size 31.
    src31, seen = _again(probes, str(data), cache_dir=cache, min_size=31)
    assert seen == ["a.png", "b.png"] and src31.listing.names == ["a.png", "b.png"]
    assert src31.cache_path != src.cache_path
    assert _again(probes, str(data), cache_dir=cache, min_size=32)[1] == []     # both entries kept
    assert _again(probes, str(data), cache_dir=cache, min_size=31)[1] == []
    # path: a copy of the folder elsewhere has its own entry.
    import shutil
    shutil.copytree(data, tmp_path / "copy")
    assert _again(probes, str(tmp_path / "copy"), cache_dir=cache, min_size=32)[1] == ["a.png", "b.png"]
    # format: a cache written by another listing format is not read.
    current = sources_mod.CACHE_FORMAT
    monkeypatch.setattr(sources_mod, "CACHE_FORMAT", "anyres_fast.listing/999")
    assert _again(probes, str(data), cache_dir=cache, min_size=32)[1] == ["a.png", "b.png"]
    # a cache file whose "source" is another folder (a renamed run folder) is not trusted
    monkeypatch.setattr(sources_mod, "CACHE_FORMAT", current)
    other = ImageSource(str(tmp_path / "copy"), cache_dir=cache, min_size=32).cache_path
    mine = ImageSource(str(data), cache_dir=cache, min_size=32).cache_path
    shutil.copy(other, mine)
    probes.clear()
    assert _again(probes, str(data), cache_dir=cache, min_size=32)[1] == ["a.png", "b.png"]


def test_labels_are_read_fresh_with_a_cached_listing(tmp_path, probes):
    import json
    data, cache = tmp_path / "data", str(tmp_path / "cache")
    _png(str(data / "a.png"), 40, 40, seed=0)
    _png(str(data / "b.png"), 40, 40, seed=1)
    (data / "dataset.json").write_text(json.dumps({"labels": [["a.png", 0], ["b.png", 2]]}))
    ImageSource(str(data), cache_dir=cache, use_labels=False)
    src, seen = _again(probes, str(data), cache_dir=cache, use_labels=True)
    assert seen == [] and src.c_dim == 3 and src.label(1).tolist() == [0, 0, 1]      # one-hot of class 2
    (data / "dataset.json").write_text(json.dumps({"labels": [["a.png", 1], ["b.png", 0]]}))
    src, seen = _again(probes, str(data), cache_dir=cache, use_labels=True)
    assert seen == [] and src.c_dim == 2 and src.label(0).tolist() == [0, 1]
    assert ImageSource(str(data), cache_dir=cache, use_labels=False).labels is None


def test_listing_cache_zip_member_crc_and_date_invalidate(tmp_path, probes):
    z, cache = str(tmp_path / "d.zip"), str(tmp_path / "cache")

    def write(members):
        with zipfile.ZipFile(z, "w") as f:
            for name, data, date in members:
                f.writestr(zipfile.ZipInfo(name, date_time=date), data)

    d0 = (2020, 1, 1, 0, 0, 0)
    a, b = _png_bytes(40, 40, 0), _png_bytes(40, 40, 1)
    assert len(a) == len(b)                                  # same size: only the CRC tells them apart
    write([("a.png", a, d0), ("b.png", b, d0)])
    ImageSource(z, cache_dir=cache)
    assert _again(probes, z, cache_dir=cache)[1] == []
    write([("a.png", b, d0), ("b.png", b, d0)])              # same size, same date, other bytes
    assert _again(probes, z, cache_dir=cache)[1] == ["a.png"]
    write([("a.png", b, d0), ("b.png", b, (2021, 1, 1, 0, 0, 0))])   # same bytes, other date
    assert _again(probes, z, cache_dir=cache)[1] == ["b.png"]
