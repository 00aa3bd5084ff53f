"""anyres_fast.metrics.compute against computations written here (issue 21): pr@R, ppr and pfid-down@R
end to end (features recomputed independently, precision/recall by a brute-force k-NN loop), every result field, every error message, and the small helpers (to_uint8, the metric
list parser, the statistics cache, append_jsonl)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from anyres_fast.metrics import Options, StatsCache, from_module, list_images
from anyres_fast.metrics import compute
from anyres_fast.metrics.compute import (append_jsonl, parse_metric_list, patch_fid_down, patch_precision_recall,
                                         precision_recall_at_resolution, scaleinv_postprocess, to_uint8)
from metric_fakes import ReplayRender, TinyFeatures, expected_pfid_calls, real_images_at, write_images


def brute_pr(real, fake, k):
    """Improved precision/recall (Kynkäänniemi et al. 2019) by explicit loops over float16-rounded
    features, distances rounded to float16 as the published code does (docs/metrics.md)."""
    real = np.asarray(real, np.float16).astype(np.float64)
    fake = np.asarray(fake, np.float16).astype(np.float64)

    def dist(a, b):
        return np.float16(np.sqrt(((a - b) ** 2).sum()))

    def covered(manifold, probes):
        radii = [sorted(dist(a, b) for b in manifold)[k] for a in manifold]
        return np.mean([any(dist(q, m) <= r for m, r in zip(manifold, radii)) for q in probes])

    return float(covered(real, fake)), float(covered(fake, real))


def seeded_latents(seed, z_dim, counts):
    """Latents batch by batch from one torch.Generator seeded with `seed` (the metrics' latent stream)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n, z_dim, generator=gen) for n in counts])


class FixedClock:
    """Stand-in for compute's `time` module: time() steps through given values (then repeats the last),
    gmtime is the epoch."""

    def __init__(self, *values):
        self.values = list(values)

    def time(self):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]

    @staticmethod
    def strftime(fmt, t=None):
        import time as _t
        return _t.strftime(fmt, t if t is not None else _t.localtime())

    @staticmethod
    def gmtime():
        import time as _t
        return _t.gmtime(0)


class KwReplay(ReplayRender):
    """ReplayRender that records render's latents and keyword arguments."""

    def __init__(self, images, **kw):
        super().__init__(images, **kw)
        self.z, self.kw = [], []

    def render(self, z, size, **kwargs):
        self.z.append(z.clone())
        self.kw.append({k: v for k, v in kwargs.items() if k != "c"})
        return super().render(z, size, **kwargs)


def test_pr_at_resolution_equals_brute_force_on_independent_features_with_every_field(tmp_path, monkeypatch):
    sizes = [(40, 36), (36, 44), (50, 50), (36, 36), (60, 40), (36, 38), (44, 40)]
    data = write_images(tmp_path / "real", sizes + [(20, 20)])          # the last is too small: skipped
    listing = list_images(str(data))
    net = TinyFeatures()
    det = from_module(net, "tiny")
    reals = real_images_at(list_images(str(write_images(tmp_path / "ok", sizes))), 36)
    real_feats = det(reals).numpy()
    G = KwReplay(reals, shift=60, resolution=32)
    fake_feats = det((reals.int() + 60).clamp(0, 255).to(torch.uint8)).numpy()
    seen = []
    orig = compute.precision_recall
    monkeypatch.setattr(compute, "precision_recall", lambda *a: seen.append(a) or orig(*a))
    monkeypatch.setattr(compute, "time", FixedClock(100.0, 101.23456))
    opts = Options(num=7, batch=3, progress=False, pr_k=2, pr_row_batch=3, pr_col_batch=5, seed=7,
                   precision="fp32", tile_batch=5, cache_dir=str(tmp_path / "cache"))
    r = precision_recall_at_resolution(G, det, listing, 36, opts)
    (real, fake, k, rows, cols), = seen
    assert (k, rows, cols) == (2, 3, 5)
    np.testing.assert_allclose(real, real_feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake, fake_feats, rtol=1e-5, atol=1e-6)
    want_p, want_r = brute_pr(real, fake, 2)
    assert (r["precision"], r["recall"]) == (want_p, want_r)
    assert r["metric"] == "pr@36" and r["num_fake"] == 7 and r["num_real"] == 7
    assert r["real_skipped"] == 1 and r["real_skipped_examples"][0][0] == "7"
    assert "20 < 36" in r["real_skipped_examples"][0][1]
    assert r["real_stats_cache"] == "miss" and r["seconds"] == 1.235
    assert r["time"] == "1970-01-01T00:00:00Z" and r["torch"] == torch.__version__
    assert r["detector"] == det.describe()
    s = r["settings"]
    assert (s["nhood_size"], s["row_batch"], s["col_batch"]) == (2, 3, 5)
    assert (s["resolution"], s["generator_size"], s["real_root"], s["real_fingerprint"]) == \
        (36, 32, listing.root, listing.fingerprint)
    assert s["device"] == "cpu" and s["num"] == 7 and s["precision"] == "fp32"
    # Latents from a generator seeded with opts.seed, the settings reach G.render.
    want_z = seeded_latents(7, 4, [3, 3, 1])
    torch.testing.assert_close(torch.cat(G.z), want_z, rtol=0, atol=0)
    assert all(kw["force_fp32"] is True and kw["tile_batch"] == 5 and not kw["progress"]
               and kw["out_dtype"] == torch.uint8 for kw in G.kw)
    # opts.cache_dir is the default cache: the real features were written there, a rerun hits them
    # (with the same skipped file reported).
    assert os.listdir(tmp_path / "cache")
    monkeypatch.setattr(compute, "time", FixedClock(0.0, 0.0))
    again = precision_recall_at_resolution(KwReplay(reals, shift=60, resolution=32), det, listing, 36, opts)
    assert again["real_stats_cache"] == "hit" and again["real_skipped"] == 1
    assert again["real_skipped_examples"] == r["real_skipped_examples"]
    assert (again["precision"], again["recall"]) == (want_p, want_r)
    # max_real caps the reals; fp16 (the default) is force_fp32=False.
    monkeypatch.setattr(compute, "time", FixedClock(0.0, 0.0))
    G2 = KwReplay(reals, shift=60, resolution=32)
    capped = precision_recall_at_resolution(G2, det, listing, 36, Options(num=7, batch=7, progress=False,
                                                                          max_real=4, use_cache=False))
    assert capped["num_real"] == 4 and all(kw["force_fp32"] is False for kw in G2.kw)
    with pytest.raises(ValueError, match=r"^pr@16: R must be >= the generator size 32$"):
        precision_recall_at_resolution(G, det, listing, 16, opts)


def test_disabled_cache_writes_nothing_and_a_conditional_generator_needs_labels(tmp_path):
    data = write_images(tmp_path / "real", [(36, 36)] * 5)
    listing = list_images(str(data))
    det = from_module(TinyFeatures(), "tiny")
    reals = real_images_at(listing, 36)
    opts = Options(num=5, batch=5, progress=False, pr_k=2, cache_dir=str(tmp_path / "cache"), use_cache=False)
    precision_recall_at_resolution(ReplayRender(reals, resolution=36), det, listing, 36, opts)   # R == p is allowed
    assert not (tmp_path / "cache").exists()
    cond = ReplayRender(reals, resolution=36)
    cond.c_dim = 2
    with pytest.raises(ValueError, match=r"^a conditional generator \(c_dim > 0\) needs labels: give the "
                                         r"labelled dataset \(dataset.json\) the labels are drawn from$"):
        precision_recall_at_resolution(cond, det, listing, 36, opts)
    with pytest.raises(ValueError, match=r"^this metric needs an any-resolution Generator; got a Painterless$"):
        precision_recall_at_resolution(type("Painterless", (), {"img_resolution": 8, "c_dim": 0})(), det,
                                       listing, 36, opts)


class WindowRender(torch.nn.Module):
    """Any-resolution stand-in for pfid-down: records render's (z, canvas, window, c, kwargs); paints
    a ramp that depends on z and the window (uint8)."""

    def __init__(self, p=16, c_dim=0):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = 4, c_dim, p
        self.calls = []

    def render(self, z, size, *, window, c=None, **kw):
        self.calls.append((z.clone(), size, tuple(window), c, kw))
        x0, y0, w, h = window
        xs = torch.arange(x0, x0 + w, dtype=torch.float32).view(1, 1, 1, -1) / size
        img = torch.tanh(xs + z[:, :3, None, None]).expand(z.shape[0], 3, h, w) * 120 + 128
        return img.clamp(0, 255).to(torch.uint8)

    def zoom(self, *a, **k):       # marks the any-resolution family
        raise AssertionError


def test_pfid_down_result_fields_labels_latents_and_render_settings(tmp_path, monkeypatch):
    data = write_images(tmp_path / "hr", [(200, 150), (130, 180), (260, 240)])
    det = from_module(TinyFeatures(), "tiny")
    drawn = []

    def labels(count):
        c = torch.eye(3, dtype=torch.int64)[torch.arange(len(drawn), len(drawn) + count) % 3]
        drawn.append(c)
        return c

    G = WindowRender(p=16, c_dim=3)
    kw = dict(scale_max=40 / 60, scale_min=40 / 200, seed=5)
    opts = Options(num=5, num_real=4, batch=2, progress=False, tile_batch=3, precision="fp32", labels=labels,
                   use_cache=False, **kw)
    r = patch_fid_down(G, det, str(data), 40, opts)
    want = expected_pfid_calls(data, 40, 4, random_crop=False, xflip=False, **kw)
    want = [want[i % 4] for i in range(5)]                                   # records cycled
    assert [(n, w) for _, n, w, _, _ in G.calls] == [(int(n), (int(x), int(y), 40, 40)) for n, (x, y) in want]
    z = torch.cat([c[0] for c in G.calls])
    torch.testing.assert_close(z, seeded_latents(5, 4, [2, 2, 1]), rtol=0, atol=0)
    got_c = torch.cat([c[3] for c in G.calls])
    assert got_c.dtype == torch.float32 and torch.equal(got_c, torch.cat(drawn).float())
    assert all(c[3].shape == (1, 3) for c in G.calls)
    assert all(c[4]["tile_batch"] == 3 and c[4]["force_fp32"] is True and not c[4]["progress"]
               and c[4]["out_dtype"] == torch.uint8 for c in G.calls)
    s = r["settings"]
    canv = sorted(int(n) for n, _ in want[:4])
    assert r["metric"] == "pfid-down@40" and r["num_fake"] == 5 and r["num_real"] == 4
    assert s["tiles_per_patch"] == 9 and "40x40" in s["downsample"] and s["patch"] == 40
    assert s["generator_size"] == 16 and s["scale_max"] == kw["scale_max"] and s["scale_min"] == kw["scale_min"]
    assert s["xflip"] is False and s["real_root"] == str(data) and s["sampler"] == "anyres_fast.data.HRPatchDataset"
    assert s["canvas_sizes"] == [canv[0], int(np.median(canv)), canv[-1]]
    assert "real_fingerprint" in s
    with pytest.raises(ValueError, match=r"^pfid-down@8: R must be >= the generator size 16$"):
        patch_fid_down(G, det, str(data), 8, opts)
    bad = Options(num=2, batch=2, progress=False, use_cache=False, labels=lambda n: torch.zeros(n, 4), **kw)
    with pytest.raises(ValueError, match=r"^labels: expected \(2, 3\), got \(2, 4\)$"):
        patch_fid_down(WindowRender(p=16, c_dim=3), det, str(data), 40, bad)


def test_ppr_equals_brute_force_and_calls_the_generator_with_float64_canvas_and_box(tmp_path, monkeypatch):
    data = write_images(tmp_path / "hr", [(200, 150), (130, 180), (160, 160)])
    det = from_module(TinyFeatures(), "tiny")
    calls = []

    class G(torch.nn.Module):
        z_dim, img_resolution = 6, 32          # no c_dim attribute: an unconditional generator

        def forward(self, z, c=None, *, canvas, box, **kw):
            calls.append((z.clone(), c, canvas, box, kw))
            ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32)
            return torch.tanh(z[:, :3, None, None] + ramp * canvas.view(-1, 1, 1, 1).float() / 100)

        def zoom(self, *a, **k):
            raise AssertionError

    seen = []
    orig = compute.precision_recall
    monkeypatch.setattr(compute, "precision_recall", lambda *a: seen.append(a) or orig(*a))
    kw = dict(scale_max=0.5, scale_min=0.25, seed=3)
    opts = Options(num=6, batch=4, progress=False, pr_k=2, use_cache=False, **kw)
    r = patch_precision_recall(G(), det, str(data), opts)
    (real, fake, k, _, _), = seen
    assert k == 2 and real.shape == (6, 12) and fake.shape == (6, 12)
    assert (r["precision"], r["recall"]) == brute_pr(real, fake, 2)
    assert r["metric"] == "ppr" and r["settings"]["nhood_size"] == 2 and "tiles_per_patch" not in r["settings"]
    want = expected_pfid_calls(data, 32, 6, random_crop=False, xflip=False, **kw)
    got = [(float(n), (float(b[0]), float(b[1]))) for _, _, cv, bx, _ in calls for n, b in zip(cv, bx)]
    assert got == want
    assert all(cv.dtype == torch.float64 and bx.dtype == torch.float64 and c is None and kw_["force_fp32"] is False
               for _, c, cv, bx, kw_ in calls)
    torch.testing.assert_close(torch.cat([c[0] for c in calls]),
                               seeded_latents(3, 6, [4, 2]), rtol=0, atol=0)
    # The fakes' features are those of the generator's images quantised with to_uint8.
    recorded = list(calls)        # (G appends to `calls` again below)
    imgs = torch.cat([to_uint8(G().forward(z, canvas=cv, box=bx)) for z, _, cv, bx, _ in recorded])
    np.testing.assert_allclose(fake, det(imgs).numpy(), rtol=1e-5, atol=1e-6)


def test_to_uint8_is_x_times_127_5_plus_128_clamped():
    x = torch.tensor([-1.5, -1.004, -1.0, -0.3, 0.0, 0.5, 1.0, 1.003, 1.01, 3.0])
    want = np.clip(x.numpy().astype(np.float64) * 127.5 + 128, 0, 255).astype(np.uint8)
    got = to_uint8(x)
    assert got.dtype == torch.uint8 and got.tolist() == want.tolist()


def test_parse_metric_list_every_branch_and_message():
    specs, kid = parse_metric_list(" fid@1 ,, kid ,pfid,scaleinv-fid@2")
    assert [s.name for s in specs] == ["fid@1", "pfid", "scaleinv-fid@2"] and kid
    assert parse_metric_list("fid@64")[1] is False
    for text, msg in [("fid@0", r"^metric 'fid@0': the number must be >= 1$"),
                      ("pfid,fid@8,pfid", r"^metric 'pfid' listed twice$"),
                      (" , ", r"^no metric in ' , ': expected fid@R, "),
                      ("pr@64,kid", r"^kid in 'pr@64,kid' without an FID metric: kid is computed beside fid@R, "
                                    r"pfid, pfid-down@R or scaleinv-fid@k$"),
                      ("fid", r"^unknown metric 'fid': expected ")]:
        with pytest.raises(ValueError, match=msg):
            parse_metric_list(text)


def test_stats_cache_default_folder_counts_pickles_and_key_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(tmp_path / "home"))
    cache = StatsCache()
    assert cache.folder == os.path.join(str(tmp_path / "home"), "metrics")
    assert (cache.hits, cache.misses) == (0, 0)
    fields = {"b": 1, "a": torch.device("cpu")}                 # non-JSON values are keyed by str()
    assert cache.load("t", fields) is None and (cache.hits, cache.misses) == (0, 1)
    p = cache.save("t", fields, {"x": np.arange(3)})
    assert os.path.dirname(p) == cache.folder and os.path.basename(p).startswith("t-")
    assert StatsCache.key({"a": "cpu", "b": 1}) == StatsCache.key({"b": 1, "a": "cpu"}) == StatsCache.key(fields)
    for _ in range(2):
        np.testing.assert_array_equal(cache.load("t", dict(reversed(list(fields.items()))))["x"], np.arange(3))
    assert (cache.hits, cache.misses) == (2, 1)
    # A file holding a pickled object array is not loaded (allow_pickle=False): a miss, recomputed.
    np.savez(p, x=np.array([{"evil": 1}], dtype=object))
    assert cache.load("t", fields) is None and (cache.hits, cache.misses) == (2, 2)
    off = StatsCache(str(tmp_path / "off"), enabled=False)
    assert off.load("t", fields) is None and off.save("t", fields, {"x": np.zeros(1)}) is None
    assert not (tmp_path / "off").exists()


def test_append_jsonl_sorted_keys_and_str_default(tmp_path):
    path = tmp_path / "deep" / "r.jsonl"
    append_jsonl(str(path), {"b": 1, "a": torch.device("cpu")})
    append_jsonl(str(path), {"c": [1, 2]})
    assert path.read_text(encoding="utf-8") == '{"a": "cpu", "b": 1}\n{"c": [1, 2]}\n'


def test_scaleinv_postprocess_keeps_the_centre_of_a_larger_image():
    # 40 x 40 at fov 1.25 -> 32 x 32, centre 16 x 16 (offset 8), resized to 8 x 8.
    x = torch.rand(1, 3, 40, 40)
    scaled = torch.nn.functional.interpolate(x, scale_factor=0.8, mode="bilinear", align_corners=True)
    ref = torch.nn.functional.interpolate(scaled[:, :, 8:24, 8:24], size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(scaleinv_postprocess(x.double(), 8, 2, 1.25), ref, rtol=0, atol=0)
