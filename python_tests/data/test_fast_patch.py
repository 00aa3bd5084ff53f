"""The fast HR patch path (JPEG draft decoding of the footprint) against the exact path, for every EXIF
orientation; planted region and scale errors are caught; the parallel listing equals the serial one and
still names bad files; a tiny phase-2 run takes its HR patches from the fast path."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, datasets, fastpatch
from anyres_fast.train import Trainer, TrainOptions
from anyres_fast.train.anyres_recipe import AnyresRecipe

from helpers import BAD_NAMES, micro_config, natural_image, write_images

P = 16                     # patch size; scale_max 1: canvases 16..L, f = L/n up to 32, every reduction occurs
MEAN_LEVELS, MAX_LEVELS = 0.5, 4.0   # docs/data.md: the fast path's budget against the exact path


def _write_jpegs(folder, orientations, size=(611, 509), seed=0):
    """The same stored pixels (a natural image per channel, quality 90) under each EXIF orientation."""
    os.makedirs(folder, exist_ok=True)
    w, h = size
    rgb = np.stack([natural_image(h, w, seed + c) for c in range(3)], 2)
    im = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    for o in orientations:
        exif = Image.Exif()
        exif[0x0112] = o
        im.save(os.path.join(folder, f"o{o}.jpg"), quality=90, exif=exif.tobytes())
    return folder


@pytest.fixture(scope="module")
def oriented(tmp_path_factory):
    return ImageSource(_write_jpegs(str(tmp_path_factory.mktemp("jpegs")), range(1, 9)), min_size=P)


def _compare(source, draws, seed=0):
    """{reduction: (mean, max off the square's edge) |fast - exact| in 8-bit levels} over `draws` keys per image, after
    checking that both paths made the same random choices."""
    fast = HRPatchDataset(source, P, scale_max=1.0, seed=seed)
    exact = HRPatchDataset(source, P, scale_max=1.0, seed=seed, decode="exact")
    diffs = {}
    for index in range(len(source)):
        for draw in range(draws):
            key = (index, index * 1000 + draw)       # different draws per image
            a, b = fast[key], exact[key]
            for k in ("canvas", "box", "crop"):
                assert torch.equal(a[k], b[k]), k
            assert a["flip"] == b["flip"] and int(b["reduction"]) == 0
            d = ((a["image"] - b["image"]).abs() * 127.5).numpy()
            # The square's edge falls inside a reduced pixel (docs/data.md): the one output row or column
            # on that edge is left out of the max (not of the mean).
            n, (x, y) = int(a["canvas"]), a["box"].int().tolist()
            inner = d[:, int(y == 0):P - int(y + P == n), int(x == 0):P - int(x + P == n)]
            diffs.setdefault(int(a["reduction"]), []).append((d.mean(), inner.max()))
    return {r: (float(np.mean([m for m, _ in v])), float(max(x for _, x in v))) for r, v in diffs.items()}


def _within_budget(stats):
    full = stats.get(1, (0.0, 0.0))
    reduced = [v for r, v in stats.items() if r > 1]
    return full[1] <= 1e-3 and all(m <= MEAN_LEVELS and x <= MAX_LEVELS for m, x in reduced)


def test_fast_path_matches_the_exact_path_for_every_orientation(oriented):
    assert sorted({s for s in oriented.listing.sizes}) == [(509, 611), (611, 509)]
    stats = _compare(oriented, draws=25)
    assert set(stats) == {1, 2, 4, 8}, stats         # every reduction was exercised
    assert stats[1][1] <= 1e-3, stats                # r = 1 and native crops: the exact pixels
    assert _within_budget(stats), stats


def test_a_planted_offset_or_wrong_scale_is_caught(oriented, monkeypatch):
    src = oriented
    orig_region = datasets.fast_region

    def shifted(*args, **kw):   # the footprint one reduced pixel off along x, inside the decoded crop
        crop, box, r = orig_region(*args, **kw)
        if box is not None:
            dx = min(1.0, crop.width - box[2]) if crop.width - box[2] >= 0.5 else -min(1.0, box[0])
            box = (box[0] + dx, box[1], box[2] + dx, box[3])
        return crop, box, r
    monkeypatch.setattr(datasets, "fast_region", shifted)
    assert not _within_budget(_compare(src, draws=10))
    monkeypatch.setattr(datasets, "fast_region", orig_region)
    # the map 2 % off the true 1/r (coordinates shrink toward the origin, so the crop stays inside)
    orig_map = fastpatch._to_stored
    monkeypatch.setattr(fastpatch, "_to_stored", lambda lo, hi, n, refl, r: orig_map(lo, hi, n, refl, r * 1.02))
    assert not _within_budget(_compare(src, draws=10))


def test_camera_mpo_jpegs_take_the_fast_path(tmp_path):
    rgb = np.stack([natural_image(200, 260, c) for c in range(3)], 2)
    im = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    (tmp_path / "mpo").mkdir()
    im.save(tmp_path / "mpo" / "cam.jpg", "MPO", save_all=True, append_images=[im.resize((130, 100))], quality=90)
    src = ImageSource(str(tmp_path / "mpo"), min_size=P)
    assert Image.open(os.path.join(src.path, "cam.jpg")).format == "MPO"
    stats = _compare(src, draws=12)
    assert 0 not in stats and stats[1][1] <= 1e-3 and _within_budget(stats), stats


def test_parallel_listing_equals_the_serial_one_and_names_bad_files(tmp_path):
    folder = write_images(str(tmp_path / "data"), [(24 + i % 5, 20 + i % 3) for i in range(40)], bad=True)
    serial = ImageSource(folder, min_size=16, list_workers=1)
    parallel = ImageSource(folder, min_size=16, list_workers=2, progress=False)
    assert len(serial) == 40 and parallel.listing == serial.listing
    assert {b.name for b in parallel.listing.bad} == BAD_NAMES
    reasons = {b.name: b.reason for b in parallel.listing.bad}
    assert reasons["small10.png"].startswith("too small: 10x10") and reasons["truncated.jpg"].startswith("unreadable")
    assert [(w, h) for w, h in parallel.listing.sizes] == [(24 + i % 5, 20 + i % 3) for i in
                                                          sorted(range(40), key=lambda i: f"img{i}.png")]


def test_tiny_phase2_run_takes_hr_patches_from_the_fast_path(tmp_path):
    torch.set_num_threads(1)
    lr = write_images(str(tmp_path / "lr"), [(64, 64), (70, 64)])
    hr = _write_jpegs(str(tmp_path / "hr"), [1, 6], size=(300, 260), seed=3)
    write_images(hr, [], bad=True)
    opts = dict(batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False)
    Trainer(AnyresRecipe(micro_config(phase="fixed", lr_data=lr)),
            TrainOptions(out=str(tmp_path / "p1"), max_steps=1, seed=1, **opts)).run()
    rec = AnyresRecipe(micro_config(phase="patch", lr_data=lr, hr_data=hr, teacher=str(tmp_path / "p1")))
    Trainer(rec, TrainOptions(out=str(tmp_path / "p2"), max_steps=2, seed=2, **opts)).run()
    lines = [json.loads(l) for l in open(tmp_path / "p2" / "stats.jsonl")]
    patch = [l for l in lines if l["patch_batch"] == 1.0]
    assert patch and all(l["data/fast_decode"] == 1.0 and l["data/max_reduction"] >= 1 for l in patch)
    assert all(l["data/prepared"] == 0.0 for l in patch)           # not a prepared set
    rep = json.load(open(tmp_path / "p2" / "data_report.json"))
    assert {f["name"] for f in rep["hr"]["skipped_files"]} == BAD_NAMES and rep["hr"]["images"] == 2
