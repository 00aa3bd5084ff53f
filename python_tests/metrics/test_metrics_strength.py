"""Metrics against computations written here (issue 21): every field of the real-statistics cache key
(enumerated from what the metric actually asks the cache, so a new field without a test here fails),
and KID's settings reaching an independent KID (the published unbiased MMD^2 with the cubic kernel)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from anyres_fast.metrics import (Options, StatsCache, fid_at_resolution, from_module, kernel_inception_distance,
                                 list_images, patch_fid)
from anyres_fast.metrics import compute
from metric_fakes import Recording, TinyFeatures, write_images


# ----------------------------------------------------------------------------------------------------
# Independent KID (StyleGAN3 metrics/kernel_inception_distance.py, written out; fake subset drawn first)

def published_kid(real, fake, num_subsets, max_subset_size, seed):
    """(mean, std) over subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    d = real.shape[1]
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    rng = np.random.default_rng(seed)
    per = []
    for _ in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        per.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
    return float(np.mean(per)), float(np.std(per)), per


def test_kid_subsets_and_subset_size_change_the_result_as_the_published_computation():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((30, 6)), rng.standard_normal((25, 6)) * 1.2 + 0.3
    for subsets, size, seed in [(1, 5, 0), (4, 5, 0), (4, 12, 0), (4, 12, 3), (7, 1000, 1), (2, 2, 9)]:
        mean, std = kernel_inception_distance(real, fake, subsets, size, seed)
        want_mean, want_std, _ = published_kid(real, fake, subsets, size, seed)
        assert mean == pytest.approx(want_mean, rel=1e-10, abs=1e-14), (subsets, size, seed)
        assert std == pytest.approx(want_std, rel=1e-8, abs=1e-14), (subsets, size, seed)
    # More subsets: the first k subset values are those of fewer subsets (same draws, continued).
    _, _, per = published_kid(real, fake, 6, 8, 2)
    for k in range(1, 7):
        assert kernel_inception_distance(real, fake, k, 8, 2)[0] == pytest.approx(np.mean(per[:k]), rel=1e-10)
    # Every setting moves the value (so a setting that does not reach the computation is caught).
    base = kernel_inception_distance(real, fake, 4, 8, 2)[0]
    for changed in [(5, 8, 2), (4, 9, 2), (4, 8, 3)]:
        assert kernel_inception_distance(real, fake, *changed)[0] != base, changed
    # A subset size above both sets is capped at the smaller set (25).
    assert kernel_inception_distance(real, fake, 3, 25, 1) == kernel_inception_distance(real, fake, 3, 10_000, 1)


class Painter:
    """Any-resolution generator stand-in: render(z, size) paints a smooth image from z (uint8)."""
    img_resolution, z_dim, c_dim = 32, 4, 0

    def render(self, z, size, **kw):
        yy = torch.linspace(-1, 1, size).view(1, 1, size, 1)
        xx = torch.linspace(-1, 1, size).view(1, 1, 1, size)
        img = torch.tanh(z[:, :3, None, None] + z[:, 3:4, None, None] * yy + xx)
        return (img * 120 + 128).clamp(0, 255).to(torch.uint8)

    def zoom(self, *a, **k):       # marks the any-resolution family
        raise AssertionError


def test_kid_settings_reach_the_metric_and_equal_the_published_kid(tmp_path, monkeypatch):
    data = write_images(tmp_path / "real", [(40, 36), (36, 44), (50, 50), (36, 36), (60, 40), (36, 36)] * 2)
    listing = list_images(str(data))
    det = from_module(TinyFeatures(), "tiny")
    seen = []
    orig = compute.kernel_inception_distance
    monkeypatch.setattr(compute, "kernel_inception_distance",
                        lambda *a, **k: seen.append((a, k)) or orig(*a, **k))
    results = {}
    for subsets, size, seed in [(3, 5, 0), (6, 5, 0), (3, 9, 0), (3, 5, 4)]:
        opts = Options(num=10, batch=5, progress=False, kid=True, kid_subsets=subsets, kid_subset_size=size,
                       seed=seed, use_cache=False)
        r = fid_at_resolution(Painter(), det, listing, 36, opts)
        (real, fake, *rest), kw = seen[-1]
        assert real.shape == (12, 12) and fake.shape == (10, 12)
        want_mean, want_std, _ = published_kid(np.asarray(real, np.float64), np.asarray(fake, np.float64),
                                               subsets, size, seed)
        assert r["kid"] == pytest.approx(want_mean, rel=1e-9) and r["kid_std"] == pytest.approx(want_std, rel=1e-7)
        results[(subsets, size, seed)] = r["kid"]
    assert len(set(results.values())) == len(results)              # each setting changed the value
    # Without --kid there is no KID and the computation is not run.
    n = len(seen)
    r = fid_at_resolution(Painter(), det, listing, 36, Options(num=10, batch=5, progress=False, use_cache=False))
    assert "kid" not in r and len(seen) == n


# ----------------------------------------------------------------------------------------------------
# Every field of the real-statistics cache key

@pytest.fixture
def asked(monkeypatch):
    """(tag, fields) of every StatsCache.load call."""
    calls = []
    orig = StatsCache.load
    monkeypatch.setattr(StatsCache, "load", lambda self, tag, fields: calls.append((tag, dict(fields)))
                        or orig(self, tag, fields))
    return calls


def _other_detector():
    net = TinyFeatures()
    with torch.no_grad():
        net.c1.weight[0, 0, 0, 0] += 0.5
    return from_module(net, "tiny")


def _check_every_field(run, base, recipes, constants, same, asked, monkeypatch):
    """run(**kw) -> result; recipes: field -> kw change, or change(monkeypatch) -> undo for global state
    (one whose undo does nothing must come last), or (change, other fields it changes by design);
    same: changes that must hit the base entry."""
    first = run(**base)
    assert first["real_stats_cache"] == "miss"
    tag0, fields0 = asked[-1]
    # Every field the metric keys its cache by has a recipe below (or is a constant of the metric).
    assert set(fields0) == set(recipes) | set(constants), sorted(set(fields0) ^ (set(recipes) | set(constants)))
    assert run(**base)["real_stats_cache"] == "hit"                        # unchanged -> hit
    for change in same:                                                    # settings outside the key
        assert run(**{**base, **change})["real_stats_cache"] == "hit", change
    for name, change in recipes.items():
        change, also = change if isinstance(change, tuple) else (change, set())
        if callable(change):
            undo = change(monkeypatch)
            kw = base
        else:
            undo, kw = None, {**base, **change}
        r = run(**kw)
        tag, fields = asked[-1]
        differs = {k for k in set(fields) | set(fields0) if fields.get(k) != fields0.get(k)}
        assert differs == {name} | also, (name, differs)                   # the recipe changes that field
        assert r["real_stats_cache"] == "miss", name                       # ... and that misses
        assert run(**kw)["real_stats_cache"] == "hit", name                # ... and is cached in turn
        if undo is not None:
            undo()
    # Constants of the metric still reach the key: changing any value changes the file name.
    for name in fields0:
        assert StatsCache.key({**fields0, name: "something else"}) != StatsCache.key(fields0), name


def _rewrite_one_file(folder, sizes):
    def change(monkeypatch):
        write_images(folder, sizes, seed=99)
        return lambda: None
    return change


def _version(monkeypatch):
    old = compute.CACHE_VERSION
    monkeypatch.setattr(compute, "CACHE_VERSION", old + 100)
    return lambda: monkeypatch.setattr(compute, "CACHE_VERSION", old)


def test_fid_cache_key_every_field_misses_when_changed(tmp_path, asked, monkeypatch):
    sizes = [(40, 36), (36, 44), (50, 50), (36, 36), (60, 40), (36, 38)]
    data = write_images(tmp_path / "real", sizes)
    cache = StatsCache(str(tmp_path / "cache"))
    det, det2 = from_module(TinyFeatures(), "tiny"), _other_detector()

    def run(resolution=36, detector=det, **opt):
        o = Options(**{"num": 4, "batch": 4, "progress": False, **opt})
        return fid_at_resolution(Painter(), detector, list_images(str(data)), resolution, o, cache)

    base = dict(crop="random", seed=1)
    recipes = {
        "resolution": {"resolution": 40},
        "crop": ({"crop": "center", "seed": 1}, {"seed"}),              # centre crops key no seed
        "n_real": {"max_real": 4},
        "detector": {"detector": det2},
        "keep_features": {"kid": True, "kid_subsets": 2, "kid_subset_size": 3},
        "version": _version,
        "seed": {"seed": 2},
        "listing": _rewrite_one_file(tmp_path / "real", sizes),       # last: the files stay changed
    }
    _check_every_field(run, base, recipes, {"metric"},
                       [{"num": 3}, {"batch": 2}, {"precision": "fp32"}], asked, monkeypatch)
    # The seed is part of the key only for random crops: centre crops of any seed share one entry.
    run(crop="center", seed=5)
    assert run(crop="center", seed=6)["real_stats_cache"] == "hit"
    assert asked[-1][1]["seed"] is None


def test_pfid_cache_key_every_field_misses_when_changed(tmp_path, asked, monkeypatch):
    sizes = [(200, 150), (130, 180), (160, 140)]
    write_images(tmp_path / "hr", sizes)
    cache = StatsCache(str(tmp_path / "cache"))
    det, det2 = from_module(TinyFeatures(), "tiny"), _other_detector()

    def run(p=64, detector=det, **opt):
        o = Options(**{"num": 3, "batch": 4, "progress": False, "seed": 11, "scale_max": 0.5, **opt})
        return patch_fid(Recording(p=p), detector, str(tmp_path / "hr"), o, cache)

    recipes = {
        "patch": ({"p": 48}, {"listing"}),            # p is the source's min_size, in its fingerprint
        "num_real": {"num_real": 2},
        "scale_max": {"scale_max": 0.75},
        "scale_min": {"scale_min": 0.4},
        "xflip": {"xflip": True},
        "crop": {"crop": "random"},
        "seed": {"seed": 12},
        "detector": {"detector": det2},
        "keep_features": {"kid": True, "kid_subsets": 2, "kid_subset_size": 2},
        "version": _version,
        "listing": _rewrite_one_file(tmp_path / "hr", sizes),         # last: the files stay changed
    }
    _check_every_field(run, {}, recipes, {"metric", "sampler"}, [{"batch": 2}], asked, monkeypatch)


def test_kid_defaults_smaller_real_set_and_every_input_check():
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((9, 4)), rng.standard_normal((14, 4)) + 0.2
    # Fewer reals than fakes: the subset size is capped by the real set (9), not only by the fake set.
    for size in (5, 9, 50):
        got = kernel_inception_distance(real, fake, 3, size, 2)
        want = published_kid(real, fake, 3, size, 2)[:2]
        assert got == pytest.approx(want, rel=1e-10), size
    # The defaults are the published 100 subsets of at most 1000, seed 0.
    assert kernel_inception_distance(real, fake) == pytest.approx(published_kid(real, fake, 100, 1000, 0)[:2],
                                                                  rel=1e-10)
    for bad in [(real[0], fake), (real, fake[0]), (real[:, :3], fake), (real, fake[:, :3])]:
        with pytest.raises(ValueError, match=r"expected \(N, D\) arrays with equal D"):
            kernel_inception_distance(*bad)
    for args in [(real[:1], fake, 2, 5), (real, fake[:1], 2, 5), (real, fake, 2, 1), (real, fake, 0, 5)]:
        with pytest.raises(ValueError, match="needs >= 2 items per set and num_subsets >= 1"):
            kernel_inception_distance(*args)
    assert np.isfinite(kernel_inception_distance(real[:2], fake[:2], 1, 2)[0])      # 2 items are enough


def test_feature_stats_against_numpy_with_max_items_errors_and_round_trip():
    from anyres_fast.metrics import FeatureStats
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((b, 3)) * [1, 2, 3] + [0.5, -1, 2] for b in (4, 5, 6)]
    s = FeatureStats(keep_features=True, max_items=12)
    assert not s.is_full() and s.num_features is None
    s.append(torch.from_numpy(batches[0]))                  # tensors are accepted
    s.append(batches[1])
    assert s.num_items == 9 and not s.is_full()
    s.append(batches[2])                                    # only 3 of these 6 rows fit
    assert s.num_items == 12 and s.is_full() and s.num_features == 3
    s.append(np.full((2, 3), np.nan))                       # full: nothing more is read
    kept = np.concatenate(batches)[:12].astype(np.float32)
    np.testing.assert_array_equal(s.features(), kept)
    mean, cov = s.mean_cov()
    x = kept.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    assert np.array_equal(cov, cov.T)
    back = FeatureStats.from_arrays(s.to_arrays())
    assert back.num_items == 12 and back.num_features == 3 and back.keep_features
    np.testing.assert_array_equal(back.features(), kept)
    for a, b in zip(back.mean_cov(), s.mean_cov()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    plain = FeatureStats()
    plain.append(batches[0])
    arrays = plain.to_arrays()
    assert "features" not in arrays and not FeatureStats.from_arrays(arrays).keep_features
    with pytest.raises(ValueError, match=r"features were not kept \(keep_features=False\)"):
        plain.features()
    assert FeatureStats(keep_features=True).features().shape == (0, 0)
    with pytest.raises(ValueError, match="expected 3 features, got 4"):
        plain.append(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"expected \(B, D\) features, got shape \(3,\)"):
        plain.append(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        plain.append(np.array([[0.0, np.inf, 0.0]]))
    with pytest.raises(ValueError, match="no features were added"):
        FeatureStats().mean_cov()
    unlimited = FeatureStats()
    unlimited.append(np.zeros((50, 2)))
    assert not unlimited.is_full() and unlimited.num_items == 50


def test_frechet_scalars_asymmetric_input_and_every_input_check():
    from anyres_fast.metrics import frechet_distance
    # D = 1 from plain numbers: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2).
    assert frechet_distance(1, 4, 3, 9) == pytest.approx((1 - 3) ** 2 + 4 + 9 - 2 * 6, abs=1e-12)
    assert frechet_distance([1], [[4]], [3], [[9]]) == pytest.approx(1.0 * 4 + 4 + 9 - 12, abs=1e-12)
    # Integer inputs are read as float64; an asymmetric covariance counts by its symmetric part.
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    s1, s2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
    skew = np.triu(np.ones((4, 4)), 1) - np.tril(np.ones((4, 4)), -1)
    mu1, mu2 = np.arange(4), np.arange(4)[::-1]
    sym = frechet_distance(mu1, s1, mu2, s2)
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(w)) @ v.T
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.linalg.eigvalsh(r @ s2 @ r)).sum())
    assert sym == pytest.approx(want, rel=1e-10)
    assert frechet_distance(mu1, s1 + skew, mu2, s2 - 2 * skew) == pytest.approx(sym, rel=1e-10)
    good = [np.zeros(4), s1, np.zeros(4), s2]
    for i, bad in enumerate([np.zeros(3), s1[:3, :3], np.zeros(5), s2[:3]]):
        args = list(good)
        args[i] = bad
        with pytest.raises(ValueError, match="^frechet_distance: shapes disagree: mu1 "):
            frechet_distance(*args)
    for i, name in enumerate(["mu1", "sigma1", "mu2", "sigma2"]):
        args = [x.copy() for x in good]
        args[i].flat[1] = np.nan
        with pytest.raises(ValueError, match=f"^frechet_distance: {name} has NaN or inf$"):
            frechet_distance(*args)
