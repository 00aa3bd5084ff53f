"""The metric drivers of anyres_fast.metrics.compute (fid@R, pr@R, pfid, ppr, pfid-down@R, scaleinv-fid@k)
against what a user sees and can check independently (issue 21): the progress bars each prints, where the
real-statistics cache and the listing cache are written (docs/metrics.md, "Real-statistics cache"; the
listing cache in `<cache-dir>/listings/`), cache hits, the recorded fields, the devices latents, labels,
canvases and boxes are put on, the real crops (recomputed here), the patch decode path, and every error
message of the drivers."""
from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource
from anyres_fast.metrics import Options, from_module, list_images
from anyres_fast.metrics import compute
from anyres_fast.metrics.compute import (fid_at_resolution, patch_fid, patch_fid_down, patch_precision_recall,
                                         precision_recall_at_resolution, scaleinv_fid)
from anyres_fast.metrics.real_images import RealPatches
from metric_fakes import Recording, ReplayRender, TinyFeatures, expected_pfid_calls, write_images
from test_compute_units import FixedClock, WindowRender, seeded_latents

HR_SIZES = [(48, 40), (40, 56), (64, 64), (44, 44), (50, 42)]      # short sides >= 32 (pfid-down@32)


def uint8_images(count, side, seed=1):
    return torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def assert_bar(err, desc, n, total=None):
    """tqdm's last drawing of the bar `desc` reads `desc: 100%|...| n/n [..., <rate> img/s]` (tqdm redraws
    the line with \\r; a slow rate is written s/img)."""
    total = n if total is None else total
    states = [s for s in re.split(r"[\r\n]", err) if s.startswith(desc + ":")]
    assert states, f"no progress bar {desc!r} in {err!r}"
    pct = "100%" if n == total else r"\s*\d+%"
    assert re.match(rf"^{re.escape(desc)}: {pct}\|[^|]*\| {n}/{total} \[[^\]]*(img/s|s/img)\]", states[-1]), states[-1]


class Infinity:
    """The InfinityGenerator API scaleinv-fid codes against: render(z_g, height, width, seed=...); records
    each call's latent, sizes and seed; `size` is the side it returns (normally the one asked for)."""

    def __init__(self, z_dim=4, img_resolution=16, c_dim=0, size=None):
        self.z_dim, self.c_dim, self.size = z_dim, c_dim, size
        if img_resolution is not None:
            self.img_resolution = img_resolution
        self.calls = []

    def canvas_inputs(self, *a, **k):       # marks the InfinityGAN family
        raise AssertionError

    def render(self, z_g, height, width, *, seed=0):
        self.calls.append((z_g, height, width, seed))
        h = self.size or height
        yy = torch.linspace(-1, 1, h).view(1, 1, -1, 1)
        return torch.tanh(torch.zeros(1, 3, 1, 1) + yy + seed / 10).expand(1, 3, h, self.size or width)


# ----------------------------------------------------------------------------------------------------
# Every driver: its progress bars, the cache folder it writes, the listing cache, hits, --no-cache

def _drivers(listing, hr):
    fakes36 = uint8_images(5, 36)
    return {
        "fid@36": (lambda o: fid_at_resolution(ReplayRender(fakes36, resolution=16), DET, listing, 36, o),
                   [("real 36x36", 5), ("fake 36x36", 5)]),
        "pr@36": (lambda o: precision_recall_at_resolution(ReplayRender(fakes36, resolution=16), DET, listing, 36, o),
                  [("real 36x36", 5), ("fake 36x36", 5)]),
        "scaleinv-fid@2": (lambda o: scaleinv_fid(Infinity(), DET, listing, 2, o), [("real 16x16", 5), ("fake x2", 5)]),
        "pfid": (lambda o: patch_fid(Recording(p=16, z_dim=4), DET, hr, o),
                 [("real patches 16", 5), ("fake patches 16", 5)]),
        "ppr": (lambda o: patch_precision_recall(Recording(p=16, z_dim=4), DET, hr, o),
                [("real patches 16", 5), ("fake patches 16", 5)]),
        "pfid-down@32": (lambda o: patch_fid_down(WindowRender(p=16), DET, hr, 32, o),
                         [("real patches 32", 5), ("fake patches 32", 5)]),
    }


DET = from_module(TinyFeatures(), "tiny")


@pytest.mark.parametrize("name", ["fid@36", "pr@36", "scaleinv-fid@2", "pfid", "ppr", "pfid-down@32"])
def test_each_driver_shows_its_bars_and_uses_the_cache_folder_it_is_given(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(tmp_path / "home"))      # the default cache: must stay unused
    monkeypatch.chdir(tmp_path)
    data = write_images(tmp_path / "hr", HR_SIZES)
    run, bars = _drivers(list_images(str(data)), str(data))[name]
    cache_dir = tmp_path / "c"
    opts = Options(num=5, batch=2, seed=3, pr_k=2, cache_dir=str(cache_dir))       # progress on: the default
    capsys.readouterr()
    first = run(opts)
    err = capsys.readouterr().err
    for desc, n in bars:
        assert_bar(err, desc, n)
    assert first["metric"] == name and first["real_stats_cache"] == "miss"
    assert [f for f in os.listdir(cache_dir) if f.endswith(".npz")]
    if name in ("pfid", "ppr", "pfid-down@32"):
        # The HR source's listing cache sits beside the statistics (docs/metrics.md).
        assert [f for f in os.listdir(cache_dir / "listings") if f.startswith("listing-")]
    assert sorted(os.listdir(tmp_path)) == ["c", "hr"]          # nothing in the default cache or the cwd
    # A rerun reads the cached real statistics; progress off prints nothing.
    again = run(dataclasses.replace(opts, progress=False))
    assert again["real_stats_cache"] == "hit" and capsys.readouterr().err == ""
    # --no-cache: nothing is written anywhere.
    off = run(dataclasses.replace(opts, progress=False, use_cache=False, cache_dir=str(tmp_path / "c2")))
    assert off["real_stats_cache"] == "miss" and capsys.readouterr().err == ""      # (real and fake bars off)
    assert sorted(os.listdir(tmp_path)) == ["c", "hr"]


# ----------------------------------------------------------------------------------------------------
# fid@R / pr@R

def test_fid_and_pr_fields_skips_across_real_batches_and_the_clock(tmp_path, monkeypatch, capsys):
    # 6 too-small files then 12 usable ones: 18 reals load as batches of 16 and 2, the skips in the first.
    good = [(40, 36), (36, 44), (50, 50), (36, 36), (60, 40), (36, 38), (44, 40), (38, 38), (36, 50),
            (45, 36), (40, 40), (37, 39)]
    data = write_images(tmp_path / "real", [(20, 20)] * 6 + good)
    listing = list_images(str(data))
    want_skips = [[str(i), "square side 20 < 36"] for i in range(5)]
    monkeypatch.setattr(compute, "time", FixedClock(100.0, 101.23456))
    opts = Options(num=4, batch=3, seed=2, pr_k=2, use_cache=False)
    capsys.readouterr()
    r = fid_at_resolution(ReplayRender(uint8_images(4, 36), resolution=16), DET, listing, 36, opts)
    err = capsys.readouterr().err
    assert_bar(err, "real 36x36", 18)          # every file counted once, usable or skipped
    assert_bar(err, "fake 36x36", 4)
    assert r["metric"] == "fid@36" and math.isfinite(r["fid"])
    assert (r["num_real"], r["num_fake"], r["real_skipped"]) == (12, 4, 6)
    assert r["real_skipped_examples"] == want_skips                       # the first 5 of 6
    assert r["seconds"] == 1.235 and r["time"] == "1970-01-01T00:00:00Z" and r["torch"] == torch.__version__
    s = r["settings"]
    assert (s["resolution"], s["real_root"], s["real_fingerprint"], s["generator_size"]) == \
        (36, listing.root, listing.fingerprint, 16)
    assert s["tiles_per_image"] == 9                                      # ceil(36 / 16) ** 2
    pr = precision_recall_at_resolution(ReplayRender(uint8_images(4, 36), resolution=16), DET, listing, 36,
                                        dataclasses.replace(opts, progress=False))
    assert (pr["num_real"], pr["real_skipped"], pr["real_skipped_examples"]) == (12, 6, want_skips)
    with pytest.raises(ValueError, match=r"^fid@8: R must be >= the generator size 16$"):
        fid_at_resolution(ReplayRender(uint8_images(4, 8), resolution=16), DET, listing, 8, opts)


def test_no_usable_real_image_names_the_count_and_the_first_three(tmp_path):
    listing = list_images(str(write_images(tmp_path / "small", [(20, 20), (20, 24), (30, 20), (22, 22)])))
    want = [["0", "square side 20 < 36"], ["1", "square side 20 < 36"], ["2", "square side 20 < 36"]]
    msg = f"real 36x36: no usable real image (4 skipped, e.g. {want})"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        fid_at_resolution(ReplayRender(uint8_images(2, 36), resolution=16), DET, listing, 36,
                          Options(num=2, progress=False, use_cache=False))


class Inputs(TinyFeatures):
    """TinyFeatures that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return super().forward(x)


def test_fid_random_crop_is_the_seeded_square_of_each_image(tmp_path):
    sizes = [(60, 36), (36, 70), (80, 40)]
    data = write_images(tmp_path / "r", sizes)
    net = Inputs()
    det = from_module(net, "rec")
    net.inputs.clear()                                     # (from_module's own probe call)
    opts = Options(num=2, batch=2, progress=False, use_cache=False, crop="random", seed=9)
    fid_at_resolution(ReplayRender(uint8_images(2, 32), resolution=16), det, list_images(str(data)), 32, opts)
    reals = net.inputs[0]                                  # the reals go through the detector first

    def crop(i, seed, centre=False):
        # Written out from docs/metrics.md: the largest square, at an offset drawn from (seed, index).
        w, h = sizes[i]
        side = min(w, h)
        if centre:
            x0, y0 = (w - side) // 2, (h - side) // 2
        else:
            rng = np.random.default_rng([seed, i])
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        with Image.open(data / f"img{i:03d}.png") as im:
            out = im.convert("RGB").crop((x0, y0, x0 + side, y0 + side)).resize((32, 32), Image.LANCZOS)
        return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)

    want = torch.stack([crop(i, 9) for i in range(3)])
    assert torch.equal(reals, want)
    assert not torch.equal(want, torch.stack([crop(i, 0) for i in range(3)]))          # the seed matters
    assert not torch.equal(want, torch.stack([crop(i, 9, centre=True) for i in range(3)]))


class LabelReplay(ReplayRender):
    def __init__(self, images, **kw):
        super().__init__(images, **kw)
        self.c = []

    def render(self, z, size, **kwargs):
        self.c.append(kwargs.pop("c", None))
        return super().render(z, size, **kwargs)


class PlainRender(ReplayRender):
    """An unconditional generator whose render takes no labels argument at all."""

    def render(self, z, size, *, tile_batch, progress, out_dtype, force_fp32):
        return super().render(z, size, out_dtype=out_dtype)


def test_fid_and_pr_pass_the_drawn_labels_and_no_labels_argument_to_an_unconditional_render(tmp_path):
    data = write_images(tmp_path / "r", [(36, 36)] * 4)
    listing = list_images(str(data))
    drawn = []

    def labels(count):
        c = torch.randint(0, 5, (count, 2), generator=torch.Generator().manual_seed(len(drawn)))
        drawn.append(c)
        return c

    opts = Options(num=4, batch=3, progress=False, use_cache=False, pr_k=2, labels=labels)
    for metric in (fid_at_resolution, precision_recall_at_resolution):
        drawn.clear()
        G = LabelReplay(uint8_images(4, 36), resolution=16)
        G.c_dim = 2
        metric(G, DET, listing, 36, opts)
        assert [c.shape for c in G.c] == [(3, 2), (1, 2)]
        assert all(c.dtype == torch.float32 for c in G.c)
        assert torch.equal(torch.cat(G.c), torch.cat(drawn).float())
        r = metric(PlainRender(uint8_images(4, 36), resolution=16), DET, listing, 36, opts)
        assert r["num_fake"] == 4


def test_fid_counts_at_most_num_fakes_when_the_generator_returns_extra_rows(tmp_path):
    class Extra(ReplayRender):         # one image more than asked for, every call
        def render(self, z, size, **kwargs):
            return super().render(torch.zeros(z.shape[0] + 1, 4), size, **kwargs)

    data = write_images(tmp_path / "r", [(36, 36)] * 3)
    r = fid_at_resolution(Extra(uint8_images(8, 36), resolution=16), DET, list_images(str(data)), 36,
                          Options(num=4, batch=3, progress=False, use_cache=False))
    assert r["num_fake"] == 4


def test_real_loader_gets_the_workers_option(tmp_path, monkeypatch):
    seen = []
    base = torch.utils.data.DataLoader

    class Spy(base):
        def __init__(self, *a, **kw):
            seen.append(kw.get("num_workers"))
            kw["num_workers"] = 0          # same items in the same order, without starting processes here
            super().__init__(*a, **kw)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    data = write_images(tmp_path / "r", [(36, 36)] * 3)
    fid_at_resolution(ReplayRender(uint8_images(2, 36), resolution=16), DET, list_images(str(data)), 36,
                      Options(num=2, progress=False, use_cache=False, workers=3))
    patch_fid(Recording(p=16, z_dim=4), DET, str(data), Options(num=2, progress=False, use_cache=False, workers=2))
    assert seen == [3, 2]


# ----------------------------------------------------------------------------------------------------
# pfid / ppr / pfid-down@R

def _drop_records(folder):
    """Rewrite the one statistics file in `folder` without its patch records (as a file of another layout)."""
    (name,) = [f for f in os.listdir(folder) if f.endswith(".npz")]
    path = os.path.join(folder, name)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "records"}
    assert len(arrays) < len(np.load(path).files)
    np.savez(path, **arrays)


@pytest.mark.parametrize("name", ["pfid", "ppr", "pfid-down@32"])
def test_a_cached_real_set_without_patch_records_is_an_error_naming_the_metric(name, tmp_path):
    data = write_images(tmp_path / "hr", HR_SIZES)
    run, _ = _drivers(None, str(data))[name]
    opts = Options(num=5, batch=5, progress=False, pr_k=2, cache_dir=str(tmp_path / "c"))
    run(opts)
    _drop_records(tmp_path / "c")
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: no real patch records$"):
        run(opts)


def test_pfid_crop_random_one_real_patch_many_records_and_an_exact_size_source(tmp_path):
    data = write_images(tmp_path / "hr", HR_SIZES)
    kw = dict(scale_max=0.5, scale_min=0.25, seed=4)
    base = Options(num=18, batch=9, progress=False, use_cache=False, **kw)
    # crop="random" reaches the training sampler (random crops before scaling), and 18 records
    # (two real batches) pair one by one.
    G = Recording(p=16, z_dim=4)
    patch_fid(G, DET, str(data), dataclasses.replace(base, crop="random"))
    want = expected_pfid_calls(data, 16, 18, random_crop=True, xflip=False, **kw)
    assert G.calls == want
    assert want != expected_pfid_calls(data, 16, 18, random_crop=False, xflip=False, **kw)
    # One real patch: every fake uses its record.
    G = Recording(p=16, z_dim=4)
    r = patch_fid(G, DET, str(data), dataclasses.replace(base, num=3, num_real=1))
    assert r["num_real"] == 1 and G.calls == expected_pfid_calls(data, 16, 1, random_crop=False, xflip=False, **kw) * 3
    # An ImageSource whose min_size is exactly p is used as it is.
    r = patch_fid(Recording(p=16, z_dim=4), DET, ImageSource(str(data), min_size=16), dataclasses.replace(base, num=3))
    assert r["num_real"] == 3
    with pytest.raises(ValueError, match=r"pfid needs an ImageSource with min_size >= p = 16, got 15$"):
        patch_fid(Recording(p=16, z_dim=4), DET, ImageSource(str(data), min_size=15), base)


def test_pfid_real_patches_are_decoded_exactly_not_by_the_fast_jpeg_path(tmp_path):
    # A large JPEG seen at a small canvas: the training sampler's fast path decodes it at a DCT
    # reduction; the metric must use the exact decode (docs/data.md, "Fast patch path").
    folder = tmp_path / "hr"
    write_images(tmp_path / "png", [(256, 256)])
    folder.mkdir()
    Image.open(tmp_path / "png" / "img000.png").save(folder / "a.jpg", quality=90)
    kw = dict(scale_max=16 / 40, scale_min=16 / 40, random_crop=False, xflip=False, seed=1)
    net = Inputs()
    det = from_module(net, "rec")
    net.inputs.clear()                                     # (from_module's own probe call)
    patch_fid(Recording(p=16, z_dim=4), det, str(folder),
              Options(num=3, batch=3, progress=False, use_cache=False, scale_max=kw["scale_max"],
                      scale_min=kw["scale_min"], seed=1))

    def reals(decode):
        ds = RealPatches(HRPatchDataset(ImageSource(str(folder), min_size=16), 16, decode=decode, **kw), 3)
        return torch.stack([ds[k][0] for k in range(3)])

    exact = reals("exact")
    assert torch.equal(net.inputs[0], exact)
    assert not torch.equal(exact, reals("fast"))          # the two paths differ on this file


class DeviceProbe(torch.nn.Module):
    """A conditional any-resolution stand-in that records the devices (and, on the CPU, values) of what
    it is called with and returns CPU images."""

    def __init__(self):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = 4, 2, 16
        self.seen = []

    def forward(self, z, c=None, *, canvas, box, **kw):
        self.seen.append((z, c, canvas, box))
        return torch.zeros(z.shape[0], 3, 16, 16)

    def zoom(self, *a, **k):
        raise AssertionError


@pytest.mark.parametrize("metric", [patch_fid, patch_precision_recall])
def test_pfid_and_ppr_put_latents_labels_canvas_and_box_on_opts_device(metric, tmp_path):
    data = write_images(tmp_path / "hr", HR_SIZES)
    drawn = []

    def labels(count):
        c = torch.arange(2 * count).view(count, 2) + 10 * len(drawn)
        drawn.append(c)
        return c

    opts = Options(num=5, batch=3, progress=False, use_cache=False, pr_k=2, labels=labels, seed=6)
    G = DeviceProbe()
    metric(G, DET, str(data), opts)
    assert torch.equal(torch.cat([c for _, c, _, _ in G.seen]), torch.cat(drawn).float())
    torch.testing.assert_close(torch.cat([z for z, _, _, _ in G.seen]), seeded_latents(6, 4, [3, 2]), rtol=0, atol=0)
    # A "meta" device stands in for a GPU: every tensor handed to G is created on / moved to it.
    G = DeviceProbe()
    metric(G, DET, str(data), dataclasses.replace(opts, device=torch.device("meta")))
    assert {t.device.type for call in G.seen for t in call} == {"meta"}


def test_pfid_down_at_the_generator_size_is_allowed(tmp_path):
    data = write_images(tmp_path / "hr", HR_SIZES)
    G = Recording(p=16, z_dim=4)             # R == p: one generator call per patch, no tiling
    r = patch_fid_down(G, DET, str(data), 16, Options(num=3, batch=3, progress=False, use_cache=False))
    assert r["metric"] == "pfid-down@16" and len(G.calls) == 3 and "tiles_per_patch" not in r["settings"]


# ----------------------------------------------------------------------------------------------------
# scaleinv-fid@k

def test_scaleinv_fid_fields_latents_device_and_messages(tmp_path):
    data = write_images(tmp_path / "r", [(40, 40), (30, 50), (60, 45)])
    listing = list_images(str(data))
    opts = Options(num=3, batch=2, progress=False, seed=5, use_cache=False, fov_scale=1.25)
    G = Infinity(z_dim=4, img_resolution=16)
    r = scaleinv_fid(G, DET, listing, 2, opts)
    s = r["settings"]
    assert (s["k"], s["train_size"], s["fov_scale"], s["generated_size"]) == (2, 16, 1.25, 40)   # ceil(16*2*1.25)
    assert (s["real_root"], s["real_fingerprint"]) == (listing.root, listing.fingerprint)
    # One latent per image from the seeded stream, local seed = opts.seed + i.
    torch.testing.assert_close(torch.cat([z for z, _, _, _ in G.calls]), seeded_latents(5, 4, [1, 1, 1]),
                               rtol=0, atol=0)
    assert [c[1:] for c in G.calls] == [(40, 40, 5), (40, 40, 6), (40, 40, 7)]
    G = Infinity(z_dim=4, img_resolution=16)
    scaleinv_fid(G, DET, listing, 2, dataclasses.replace(opts, device=torch.device("meta")))
    assert {z.device.type for z, _, _, _ in G.calls} == {"meta"}
    # The training size from opts when G does not say; neither: a clear message.
    r = scaleinv_fid(Infinity(img_resolution=None), DET, listing, 1, dataclasses.replace(opts, train_size=8))
    assert r["settings"]["train_size"] == 8 and r["settings"]["generated_size"] == 10
    with pytest.raises(ValueError, match=r"^scaleinv-fid: give the training image size \(--train-size\)$"):
        scaleinv_fid(Infinity(img_resolution=None), DET, listing, 1, opts)
    with pytest.raises(ValueError, match=r"^scaleinv-fid: G.render returned \(1, 3, 24, 24\), "
                                         r"expected \(1, 3, 40, 40\)$"):
        scaleinv_fid(Infinity(size=24), DET, listing, 2, opts)
    with pytest.raises(ValueError, match=r"^conditional generators \(c_dim > 0\) are not supported by this metric$"):
        scaleinv_fid(Infinity(c_dim=3), DET, listing, 2, dataclasses.replace(opts, labels=lambda n: torch.zeros(n, 3)))
