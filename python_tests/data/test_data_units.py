"""anyres_fast.data unit checks (issue 21): the file filters of scan_image_files, every BadFile branch of
probe_image/_probe_chunk, the pool/serial choice and the progress bar of probe_files, labels, sidecars,
the documented defaults and argument checks of the datasets, the centred crop, the HR item's fields
(transform, dtypes, label) and the fast path's native crop and stale-index fallback."""
import io
import json
import multiprocessing
import os
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler, LRDataset
from anyres_fast.data import datasets as datasets_mod
from anyres_fast.data import sources as sources_mod
from anyres_fast.data.datasets import sample_rng, square_crop, to_model_range
from anyres_fast.data.sources import _probe_chunk, default_list_workers, probe_files, probe_image, scan_image_files

from helpers import RecordingBar


def _png_bytes(w, h, seed=0):
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(b, format="PNG")
    return b.getvalue()


def _jpeg_bytes(w, h, seed=0):
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(b, "JPEG", quality=90)
    return b.getvalue()


def _write(path, data):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ----------------------------------------------------------------------------------------------------
# scan_image_files

def test_scan_folder_skips_hidden_skip_names_and_other_extensions(tmp_path):
    for name in ("a.png", "sub/b.PNG", ".hidden.png", "Thumbs.db", ".DS_Store", "notes.txt", "sub/.x.jpg"):
        _write(tmp_path / name, _png_bytes(4, 4))
    got = scan_image_files(str(tmp_path))
    assert list(got) == ["a.png", "sub/b.PNG"]
    st = os.stat(tmp_path / "a.png")
    assert tuple(got["a.png"]) == (st.st_size, st.st_mtime_ns)


def test_scan_zip_skips_dirs_macosx_hidden_and_other_extensions(tmp_path):
    z = str(tmp_path / "d.zip")
    date = (2020, 1, 2, 3, 4, 6)
    data = _png_bytes(4, 4)
    with zipfile.ZipFile(z, "w") as f:
        for name in ("a.png", "sub/b.PNG", "__MACOSX/a.png", "__MACOSX/._a.png", ".hid.png", "sub/.h.png",
                     "Thumbs.db", "notes.txt"):
            f.writestr(zipfile.ZipInfo(name, date_time=date), data)
        f.writestr(zipfile.ZipInfo("dir.png/", date_time=date), b"")     # a folder with an image-like name
    got = scan_image_files(z)
    assert list(got) == ["a.png", "sub/b.PNG"]
    assert got["a.png"] == (len(data), list(date) + [zlib.crc32(data)])   # docstring: size, [*date_time, CRC]


def test_scan_and_source_refuse_a_plain_file(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("not a zip")
    with pytest.raises(FileNotFoundError, match="x.txt: not a folder or a .zip file"):
        scan_image_files(str(p))
    with pytest.raises(FileNotFoundError, match="x.txt: not a folder or a .zip file"):
        ImageSource(str(p))


# ----------------------------------------------------------------------------------------------------
# probe_image / _probe_chunk

def test_probe_image_each_bad_branch_names_the_file_and_the_reason():
    empty = probe_image("e.png", b"", 1)
    assert (empty.name, empty.reason) == ("e.png", "empty file (0 bytes)")
    junk = probe_image("j.png", b"hello, not an image", 1)
    assert junk.name == "j.png" and junk.reason == "not an image Pillow can read (unknown or corrupt format)"
    small = probe_image("s.png", _png_bytes(5, 7), 7)           # short side 5 < 7
    assert small.name == "s.png" and small.reason.startswith("too small: 5x7")
    assert probe_image("ok.png", _png_bytes(5, 7), 5) == (5, 7)   # short side == min_size is accepted
    trunc = _jpeg_bytes(64, 64)[:300]                            # a header Pillow identifies, the scan cut
    try:                                                          # the exception class Pillow raises here
        with Image.open(io.BytesIO(trunc)) as im:
            im.load()
        want = None
    except Exception as exc:
        want = type(exc).__name__
    bad = probe_image("t.jpg", trunc, 1)
    assert want is not None and bad.name == "t.jpg" and bad.reason.startswith(f"unreadable: {want}: ")


def test_probe_chunk_reports_a_vanished_file_and_goes_on(tmp_path):
    _write(tmp_path / "b.png", _png_bytes(6, 4))
    out = _probe_chunk(str(tmp_path), "dir", ["gone.png", "b.png"], 1)
    assert len(out) == 2 and out[1] == (6, 4)
    assert out[0].name == "gone.png" and out[0].reason.startswith("unreadable: FileNotFoundError: ")


# ----------------------------------------------------------------------------------------------------
# default_list_workers / probe_files

def test_default_list_workers_affinity_and_cpu_count_fallback(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_list_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert default_list_workers() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)       # platforms without it
    for cpus, want in ((None, 1), (1, 1), (3, 3)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cpus: c)
        assert default_list_workers() == want


_FakeBar = RecordingBar


class _FakePool:
    """Runs the tasks in this process and records how probe_files built the pool."""
    made = []

    def __init__(self, max_workers=None, mp_context=None):
        self.max_workers, self.mp_context = max_workers, mp_context
        _FakePool.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def submit(self, fn, *args):
        import concurrent.futures
        fut = concurrent.futures.Future()
        fut.set_result(fn(*args))
        return fut


@pytest.fixture
def fakes(monkeypatch):
    _FakeBar.made.clear()
    _FakePool.made.clear()
    monkeypatch.setattr(sources_mod, "tqdm", _FakeBar)
    monkeypatch.setattr(sources_mod.concurrent.futures, "ProcessPoolExecutor", _FakePool)
    return _FakeBar.made, _FakePool.made


def _zip_of(tmp_path, n):
    z = str(tmp_path / "many.zip")
    with zipfile.ZipFile(z, "w") as f:
        for i in range(n):
            f.writestr(f"{i:03d}.png", _png_bytes(3 + i % 4, 3, seed=i))
    return z, [f"{i:03d}.png" for i in range(n)]


def test_probe_files_pool_choice_context_and_results(tmp_path, fakes, monkeypatch):
    bars, pools = fakes
    asked = []                        # the start method asked for (None: the platform default, not fork on 3.14)
    orig_ctx = multiprocessing.get_context
    monkeypatch.setattr(sources_mod.multiprocessing, "get_context", lambda m=None: asked.append(m) or orig_ctx(m))
    z, names = _zip_of(tmp_path, 40)
    want = {n: (3 + i % 4, 3) for i, n in enumerate(names)}
    assert probe_files(z, "zip", names, 1, workers=1) == want and pools == []        # one worker: this process
    assert probe_files(z, "zip", names[:31], 1, workers=2) == {n: want[n] for n in names[:31]} and pools == []
    got = probe_files(z, "zip", names[:32], 1, workers=2)                           # PARALLEL_FROM files: a pool
    assert got == {n: want[n] for n in names[:32]} and len(pools) == 1
    assert pools[0].max_workers == 2                                                # min(workers, 2 chunks)
    if "fork" in multiprocessing.get_all_start_methods():
        assert isinstance(pools[0].mp_context, multiprocessing.context.ForkContext) and asked == ["fork"]
    assert probe_files(z, "zip", names, 1, workers=5) == want and pools[1].max_workers == 3   # 3 chunks of 16
    assert probe_files(z, "zip", names, 1, workers=0) == want and len(pools) == 2   # clamped to 1: no pool
    for b in bars:                                                                  # every file counted once
        assert b.closed and sum(b.updates) == b.kw["total"]
    assert bars[0].kw["total"] == 40 and "many.zip" in bars[0].kw["desc"] and bars[0].kw["unit"] == "file"


def test_probe_files_progress_option(tmp_path, fakes):
    bars, _ = fakes
    z, names = _zip_of(tmp_path, 3)
    for progress, disable in ((None, None), (True, False), (False, True)):   # None: tqdm decides (a terminal)
        probe_files(z, "zip", names, 1, workers=1, progress=progress)
        assert bars[-1].kw["disable"] is disable and bars[-1].kw["leave"] is False


def test_real_process_pool_lists_a_zip(tmp_path):
    z, names = _zip_of(tmp_path, 33)
    got = probe_files(z, "zip", names, 1, workers=2, progress=False)
    assert got == {n: (3 + i % 4, 3) for i, n in enumerate(names)}


def test_image_source_passes_list_workers_and_progress(tmp_path, fakes):
    bars, pools = fakes
    z, names = _zip_of(tmp_path, 40)
    src = ImageSource(z, list_workers=1)
    assert len(src) == 40 and pools == [] and bars[-1].kw["disable"] is None
    ImageSource(z, list_workers=3, progress=False)
    assert pools[-1].max_workers == 3 and bars[-1].kw["disable"] is True


# ----------------------------------------------------------------------------------------------------
# ImageSource: defaults, labels, sidecars, zip handle, report

def test_source_defaults_min_size_1_and_no_labels(tmp_path):
    _write(tmp_path / "a.png", _png_bytes(1, 1))
    (tmp_path / "dataset.json").write_text("not json")          # only read with use_labels=True
    src = ImageSource(str(tmp_path))
    assert src.listing.names == ["a.png"] and src.labels is None and src.c_dim == 0
    lab = src.label(0)
    assert lab.shape == (0,) and lab.dtype == np.float32
    assert src.report() == {"source": str(tmp_path), "images": 1, "skipped": 0, "skipped_files": []}
    with pytest.raises(ValueError, match=r"dataset.json: expected \{\"labels\""):
        ImageSource(str(tmp_path), use_labels=True)


def test_labels_null_malformed_missing_and_dtype(tmp_path):
    for n in "abcde":
        _write(tmp_path / f"{n}.png", _png_bytes(2, 2))
    lj = tmp_path / "dataset.json"
    lj.write_text(json.dumps({"labels": None}))
    assert ImageSource(str(tmp_path), use_labels=True).labels is None
    lj.write_text(json.dumps({"labels": 5}))
    with pytest.raises(ValueError, match="dataset.json: expected"):
        ImageSource(str(tmp_path), use_labels=True)
    lj.write_text(json.dumps({"labels": [["a.png", 0]]}))        # 4 images without a label: 3 named
    with pytest.raises(ValueError, match=r"no label for \['b.png', 'c.png', 'd.png'\] \(4 images\)"):
        ImageSource(str(tmp_path), use_labels=True)
    lj.write_text(json.dumps({"labels": [[f"{n}.png", [i, 0.5]] for i, n in enumerate("abcde")]}))   # vectors as given
    src = ImageSource(str(tmp_path), use_labels=True)
    assert src.labels.dtype == np.float32 and src.label(3).tolist() == [3.0, 0.5]
    lj.write_text(json.dumps({"labels": [[f"{n}.png", i % 2] for i, n in enumerate("abcde")]}))     # classes: one-hot
    src = ImageSource(str(tmp_path), use_labels=True)
    assert src.labels.dtype == np.float32 and src.labels.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]]


def test_sidecars_never_unpickle(tmp_path):
    d = tmp_path / "d"
    _write(d / "a.png", _png_bytes(2, 2))
    np.save(d / "a.png.ok.npy", np.arange(3))
    np.save(d / "a.png.obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    z = str(tmp_path / "d.zip")
    with zipfile.ZipFile(z, "w") as f:
        for n in ("a.png", "a.png.ok.npy", "a.png.obj.npy"):
            f.write(d / n, n)
    for src in (ImageSource(str(d)), ImageSource(z)):
        assert src.read_sidecar("a.png", ".ok.npy").tolist() == [0, 1, 2]
        assert src.read_sidecar("a.png", ".obj.npy") is None       # an object array needs pickle: refused
        assert src.read_sidecar("a.png", ".none.npy") is None


def test_zip_handle_one_per_process(tmp_path):
    z, _ = _zip_of(tmp_path, 2)
    src = ImageSource(z)
    h = src._zip_handle()
    assert src._zip_handle() is h                                 # reused in this process
    src._zip_pid = -1                                             # as seen from another (forked) process
    assert src._zip_handle() is not h


# ----------------------------------------------------------------------------------------------------
# datasets: helpers, defaults, argument checks

def test_sample_rng_depends_on_the_seed_and_masks_it_to_32_bits():
    a = sample_rng(1, 5).random(4)
    assert not np.array_equal(a, sample_rng(2, 5).random(4))
    assert np.array_equal(a, sample_rng(1 + 2 ** 32, 5).random(4))


def test_square_crop_centred_random_and_square():
    img = Image.fromarray(np.arange(4 * 11 * 3, dtype=np.uint8).reshape(4, 11, 3))
    sq, box = square_crop(img, None)
    assert box == (3, 0, 4) and all(type(v) is int for v in box)                  # (11 - 4) // 2
    assert np.array_equal(np.asarray(sq), np.asarray(img)[:, 3:7])
    sq, box = square_crop(img.transpose(Image.TRANSPOSE), None)                   # 4 x 11: top = 3
    assert box == (0, 3, 4)
    img2 = Image.fromarray(np.zeros((14, 10, 3), np.uint8))
    assert square_crop(img2, None)[1] == (0, 2, 10)                               # 4 // 2, not 4 // 3
    rng = np.random.default_rng(0)
    lefts = {square_crop(img, rng)[1][0] for _ in range(300)}
    tops = {square_crop(img.transpose(Image.TRANSPOSE), rng)[1][1] for _ in range(300)}
    assert lefts == set(range(8)) and tops == set(range(8))                       # every position, no other
    sq4 = Image.fromarray(np.zeros((6, 6, 3), np.uint8))
    assert square_crop(sq4, rng)[1] == (0, 0, 6) and square_crop(sq4, None)[1] == (0, 0, 6)


def test_to_model_range_is_float32_for_any_input_dtype():
    for a in (np.array([[[0.0, 255.0, 300.0]]]), np.array([[[0, 255, 51]]], dtype=np.uint8)):
        t = to_model_range(a)
        assert t.dtype == torch.float32
    assert torch.allclose(to_model_range(np.array([[[0.0, 255.0, 300.0, -5.0]]])),
                          torch.tensor([[[-1.0, 1.0, 1.0, -1.0]]]))


def _folder(tmp_path, sizes, labels=None, fmt="png"):
    d = tmp_path / "imgs"
    for i, (w, h) in enumerate(sizes):
        _write(d / f"{i}.{fmt}", _png_bytes(w, h, seed=i) if fmt == "png" else _jpeg_bytes(w, h, seed=i))
    if labels is not None:
        (d / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.{fmt}", c] for i, c in enumerate(labels)]}))
    return ImageSource(str(d), use_labels=labels is not None)


def _same(a, b):
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_lr_defaults_and_options(tmp_path):
    src = _folder(tmp_path, [(20, 12)])
    native = np.asarray(src.load_rgb(0), dtype=np.float32).transpose(2, 0, 1)
    windows = [to_model_range(native[:, :, l:l + 12]) for l in range(9)]
    default = LRDataset(src, 12)
    explicit = LRDataset(src, 12, random_crop=True, xflip=True, seed=0)
    keys = [(0, d) for d in range(24)]
    assert all(_same(default[k], explicit[k]) for k in keys)                      # docs/data.md defaults
    # random crop without flip: each item is one 12 x 12 window of the image, several positions occur
    got = [LRDataset(src, 12, random_crop=True, xflip=False)[k]["image"] for k in keys]
    pos = {next(i for i, w in enumerate(windows) if torch.equal(g, w)) for g in got}
    assert len(pos) > 2
    assert all(torch.equal(LRDataset(src, 12, random_crop=False, xflip=False)[k]["image"], windows[4]) for k in keys)
    assert any(not _same(default[k], LRDataset(src, 12, random_crop=True, xflip=False)[k]) for k in keys)
    assert any(not _same(default[k], LRDataset(src, 12, random_crop=False, xflip=True)[k]) for k in keys)
    assert any(not _same(default[k], LRDataset(src, 12, seed=1)[k]) for k in keys)


def test_dataset_argument_checks_name_the_bad_value(tmp_path):
    src = _folder(tmp_path, [(16, 16)])
    empty = ImageSource(str(tmp_path / "imgs"), min_size=17)
    with pytest.raises(ValueError, match=r"no usable images \(1 skipped\)"):
        LRDataset(empty, 8)
    with pytest.raises(ValueError, match=r"no usable images \(1 skipped\)"):
        HRPatchDataset(empty, 8)
    with pytest.raises(ValueError, match="decode must be one of .*got 'slow'"):
        HRPatchDataset(src, 8, decode="slow")
    with pytest.raises(ValueError, match="oversampling must be >= 1, got 0.5"):
        HRPatchDataset(src, 8, oversampling=0.5)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=f"scale_max must be in \\(0, 1\\], got {bad}"):
            HRPatchDataset(src, 8, scale_max=bad)
    for bad in (0, 0.6):
        with pytest.raises(ValueError, match=f"scale_min must be in \\(0, scale_max\\], got {bad}"):
            HRPatchDataset(src, 8, scale_max=0.5, scale_min=bad)
    HRPatchDataset(src, 8, oversampling=1)                      # the limits themselves are accepted
    HRPatchDataset(src, 8, oversampling=1.5, scale_max=1.0)
    HRPatchDataset(src, 8, scale_max=0.5, scale_min=0.5)
    with pytest.raises(ValueError, match="batch 7 is not divisible by the number of processes 2"):
        KeySampler(4, 0, 7, 0, 2)


def test_hr_defaults_match_the_documented_values(tmp_path):
    src = _folder(tmp_path, [(40, 30)])
    default = HRPatchDataset(src, 8)
    explicit = HRPatchDataset(src, 8, scale_max=0.5, scale_min=None, random_crop=True, xflip=True, seed=0)
    keys = [(0, d) for d in range(12)]
    assert all(_same(default[k], explicit[k]) for k in keys)
    assert any(not _same(default[k], HRPatchDataset(src, 8, seed=1)[k]) for k in keys)


def test_hr_draw_centred_crop_positions():
    ds = HRPatchDataset.__new__(HRPatchDataset)
    ds.resolution, ds.scale_max, ds.scale_min, ds.xflip, ds.random_crop = 4, 1.0, None, False, False
    rng = np.random.default_rng(0)
    for (w, h), want in (((11, 4), (3, 0)), ((4, 11), (0, 3)), ((14, 4), (5, 0)), ((4, 14), (0, 5))):
        _, (left, top, side), *_ = ds.draw(rng, w, h)
        assert (left, top, side) == (*want, 4) and type(left) is int and type(top) is int


# ----------------------------------------------------------------------------------------------------
# HRPatchDataset items

def test_hr_item_fields_transform_and_label(tmp_path):
    src = _folder(tmp_path, [(40, 30), (33, 50)], labels=[2, 0])
    ds = HRPatchDataset(src, 8, scale_max=1.0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)             # the documented float32 fields must not follow it
    try:
        items = [(i, ds[(i, d)]) for i in range(2) for d in range(6)]
    finally:
        torch.set_default_dtype(old)
    for i, it in items:
        n, (x, y) = float(it["canvas"]), it["box"].tolist()
        s = 8 / n
        vx, vy = (x + 4) / n * 2 - 1, (y + 4) / n * 2 - 1       # the patch centre in [-1, 1] canvas units
        want = torch.tensor([[s, 0, vx / 2], [0, s, vy / 2], [0, 0, 1]], dtype=torch.float32)
        assert torch.allclose(it["transform"], want, atol=1e-6)
        for k in ("transform", "s", "v", "image", "c"):
            assert it[k].dtype == torch.float32, k
        assert it["crop"].dtype == torch.int64 and it["reduction"].dtype == torch.int64
        assert torch.allclose(it["s"], torch.tensor(s, dtype=torch.float32))
        assert torch.allclose(it["v"], torch.tensor([vx, vy], dtype=torch.float32))
        assert it["c"].tolist() == ([0, 0, 1] if i == 0 else [1, 0, 0])


def test_fast_native_crop_equals_the_exact_path(tmp_path):
    src = _folder(tmp_path, [(40, 30)], fmt="jpg")
    # p / scale_max = 32 > side 30: always the native square, a plain crop (no Lanczos box)
    fast = HRPatchDataset(src, 8, scale_max=0.25, decode="fast")
    exact = HRPatchDataset(src, 8, scale_max=0.25, decode="exact")
    for d in range(8):
        a, b = fast[(0, d)], exact[(0, d)]
        assert float(a["canvas"]) == 30 and int(a["reduction"]) == 1
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["box"], b["box"])


def test_fast_path_sidecar_oversampling_and_stale_fallback(tmp_path):
    prepare = pytest.importorskip("anyres_fast.data.prepare")
    if prepare.jpegtran() is None:
        pytest.skip("needs jpegtran (apt-get install libjpeg-turbo-progs)")
    new, markers = prepare.transcode(_jpeg_bytes(96, 80, seed=3))
    plain, prep, stale = tmp_path / "plain", tmp_path / "prep", tmp_path / "stale"
    for d in (plain, prep, stale):
        _write(d / "a.jpg", new)
    np.save(prep / prepare.sidecar_name("a.jpg"), np.asarray(markers))
    bad = np.asarray(markers).copy()
    bad[:-1] += 1                                      # every restart position off by one, the scan's end kept
    np.save(stale / prepare.sidecar_name("a.jpg"), bad)
    keys = [(0, d) for d in range(10)]
    by = {}
    for name, d in (("plain", plain), ("prep", prep), ("stale", stale)):
        src = ImageSource(str(d), min_size=8)
        for ov in (1.0, 3.0):
            ds = HRPatchDataset(src, 16, scale_max=1.0, oversampling=ov)
            by[name, ov] = [ds[k] for k in keys]
    for ov in (1.0, 3.0):
        for a, b, c in zip(by["plain", ov], by["prep", ov], by["stale", ov]):
            assert not a["prepared"] and b["prepared"] and not c["prepared"]   # no sidecar: not prepared
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
            assert int(a["reduction"]) == int(b["reduction"]) == int(c["reduction"])
    r1 = [int(it["reduction"]) for it in by["prep", 1.0]]
    r3 = [int(it["reduction"]) for it in by["prep", 3.0]]
    assert max(r1) > 1 and r1 != r3                    # r <= f / oversampling: the option is used


def test_key_sampler_draws_one_permutation_per_epoch(monkeypatch):
    calls = []
    orig = np.random.default_rng
    monkeypatch.setattr(datasets_mod.np.random, "default_rng", lambda *a: calls.append(a) or orig(*a))
    s = KeySampler(5, 0, 5)
    for _ in range(3):
        s.next_keys()
    assert len(calls) == 3
