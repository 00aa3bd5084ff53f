"""anyres_fast.metrics: Fréchet distance, KID, the real-image readers, the metrics and their cache.

No Inception weights here: a small randomly initialised feature network stands in for the detector.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler
from anyres_fast.metrics import (FeatureStats, Options, RealPatches, StatsCache, fid_at_resolution, frechet_distance,
                                 from_module, kernel_inception_distance, kid_subsets, list_images, patch_fid,
                                 pfid_source, scaleinv_fid, scaleinv_postprocess, scaleinv_sizes)
from anyres_fast.metrics.detectors import load_detector
from anyres_fast.metrics.real_images import FullImages
from metric_fakes import Recording, ReplayRender, TinyFeatures, expected_pfid_calls, real_images_at, write_images


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def random_orthogonal(d, rng):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


# ----------------------------------------------------------------------------------------------------
# Fréchet distance

def test_frechet_equals_closed_form_for_gaussians_with_known_covariances():
    rng = np.random.default_rng(0)
    d = 24
    q = random_orthogonal(d, rng)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T          # same eigenvectors: (S1 S2)^(1/2) = Q diag(sqrt(ab)) Q^T
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert rel(frechet_distance(mu1, s1, mu2, s2), closed) <= 1e-6
    # Singular: half the variances are exactly zero in both (a rank-12 Gaussian in 24-D).
    a[::2], b[1::4] = 0, 0
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    value = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(value) and rel(value, closed) <= 1e-6
    assert abs(frechet_distance(mu1, s1, mu1, s1)) <= 1e-9 * np.trace(s1)


def test_frechet_matches_scipy_sqrtm_formula_on_random_features():
    rng = np.random.default_rng(1)
    d = 32
    x = rng.standard_normal((400, d))
    y = rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) * 0.5 + 0.2
    m1, s1 = x.mean(0), np.cov(x, rowvar=False)
    m2, s2 = y.mean(0), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)                          # the published formula
    ref = float(np.real(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)))
    assert rel(frechet_distance(m1, s1, m2, s2), ref) <= 1e-6


def test_frechet_with_fewer_samples_than_dimensions_is_exact():
    # Sample covariances of 10 and 7 points in 40-D are rank 9 and 6. For centred data X, Y,
    # tr((X'X/n Y'Y/m)^(1/2)) = nuclear norm of X Y' / sqrt(nm): an exact reference without sqrtm.
    rng = np.random.default_rng(2)
    d = 40
    x = rng.standard_normal((10, d)) * 2
    y = rng.standard_normal((7, d)) + 1
    xc, yc = x - x.mean(0), y - y.mean(0)
    s1, s2 = xc.T @ xc / len(x), yc.T @ yc / len(y)
    nuclear = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / math.sqrt(len(x) * len(y))
    ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    value = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert math.isfinite(value) and rel(value, ref) <= 1e-6


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))


def test_feature_stats_mean_cov_and_round_trip():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    st = FeatureStats(keep_features=True, max_items=45)
    for chunk in np.array_split(x, 4):
        st.append(torch.from_numpy(chunk))
    assert st.num_items == 45 and st.is_full()
    mean, cov = st.mean_cov()
    np.testing.assert_allclose(mean, x[:45].astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:45].astype(np.float64), rowvar=False, bias=True), atol=1e-12)
    back = FeatureStats.from_arrays(st.to_arrays())
    np.testing.assert_allclose(back.mean_cov()[1], cov, atol=1e-12)
    np.testing.assert_array_equal(back.features(), x[:45])


# ----------------------------------------------------------------------------------------------------
# KID

def mmd_double_loop(x, y):
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


def test_kid_equals_explicit_double_loop():
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((12, 5)), rng.standard_normal((10, 5)) * 1.3 + 0.4
    # Subsets smaller than the sets: the same draws, MMD^2 by loops.
    mean, std = kernel_inception_distance(real, fake, num_subsets=3, max_subset_size=6, seed=7)
    per = [mmd_double_loop(fake[fi], real[ri]) for fi, ri in kid_subsets(10, 12, 3, 6, seed=7)]
    assert rel(mean, np.mean(per)) <= 1e-10 and rel(std, np.std(per)) <= 1e-8
    # Whole sets of equal size: MMD^2 does not depend on the order a subset is drawn in, so this
    # checks without reusing kid_subsets.
    real10 = real[:10]
    mean_full, _ = kernel_inception_distance(real10, fake, num_subsets=2, max_subset_size=1000, seed=0)
    assert rel(mean_full, mmd_double_loop(fake, real10)) <= 1e-10
    # Identical sets: the unbiased estimate is not 0 (the cross term keeps i == j), but the loops agree.
    assert rel(kernel_inception_distance(real10, real10, 1, 1000)[0], mmd_double_loop(real10, real10)) <= 1e-10


# ----------------------------------------------------------------------------------------------------
# Test data, detector and stand-in generators

def test_fid_identical_near_zero_shifted_larger_and_real_stats_cache(tmp_path):
    data = write_images(tmp_path / "real", [(70, 66), (64, 80), (90, 90), (66, 66), (100, 72), (64, 64),
                                            (80, 70), (75, 75), (120, 64), (64, 99)])
    listing = list_images(str(data))
    net = TinyFeatures()
    det = from_module(net, "tiny")
    reals = real_images_at(listing, 64)
    cache = StatsCache(str(tmp_path / "cache"))
    opts = Options(num=10, batch=4, progress=False, kid=True, kid_subsets=5, kid_subset_size=8)

    same = fid_at_resolution(ReplayRender(reals), det, listing, 64, opts, cache)
    assert same["real_stats_cache"] == "miss" and same["num_real"] == same["num_fake"] == 10
    assert abs(same["fid"]) < 1e-6
    calls = net.calls
    shifted = fid_at_resolution(ReplayRender(reals, shift=60), det, listing, 64, opts, cache)
    assert shifted["real_stats_cache"] == "hit" and net.calls - calls == 3      # 3 fake batches, no real ones
    assert shifted["fid"] > 1e-3 and shifted["fid"] > 1e4 * max(abs(same["fid"]), 1e-12)
    assert shifted["kid"] > same["kid"] + 1e-4
    assert shifted["detector"]["sha256"] == det.sha256 and shifted["settings"]["resolution"] == 64

    # Rewriting one file changes the listing fingerprint: the cache is not used.
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(data / "img003.png")
    listing2 = list_images(str(data))
    assert listing2.fingerprint != listing.fingerprint
    again = fid_at_resolution(ReplayRender(real_images_at(listing2, 64)), det, listing2, 64, opts, cache)
    assert again["real_stats_cache"] == "miss" and abs(again["fid"]) < 1e-6


def test_fid_skips_and_reports_too_small_and_corrupt_images(tmp_path):
    data = write_images(tmp_path / "real", [(70, 70), (40, 90), (64, 64)])
    (data / "broken.png").write_bytes(b"not a png")
    listing = list_images(str(data))
    det = from_module(TinyFeatures(), "tiny")
    good = torch.stack([FullImages(listing, 64)[i][0] for i in (1, 3)])   # sorted: broken, img000, img001, img002
    r = fid_at_resolution(ReplayRender(good), det, listing, 64, Options(num=2, progress=False, use_cache=False))
    assert r["num_real"] == 2 and r["real_skipped"] == 2
    reasons = " ".join(str(s) for s in r["real_skipped_examples"])
    assert "unreadable" in reasons and "square side 40 < 64" in reasons


# ----------------------------------------------------------------------------------------------------
# Patch sampler and pfid

def test_pfid_real_patches_are_the_training_samplers_quantised(tmp_path):
    # Short sides 150, 130, 100, 300 and 50 (< p: skipped by the source); p = 64.
    data = write_images(tmp_path / "hr", [(200, 150), (130, 180), (100, 100), (300, 300), (50, 90)])
    p = 64
    source = pfid_source(str(data), p)
    assert source.min_size == p and [b.name for b in source.listing.bad] == ["img004.png"]
    ds = HRPatchDataset(source, p, scale_max=0.5, scale_min=0.3, random_crop=False, xflip=True, seed=3)
    reals = RealPatches(ds, num=40)
    keys = KeySampler(len(source), 3, global_batch=1)
    sides = [150, 130, 100, 300]
    for k in range(40):
        img, rec, reason = reals[k]
        index, canvas, x, y, flip = (int(v) for v in rec)
        assert reason is None and img.dtype == torch.uint8 and img.shape == (3, p, p)
        assert (index, k) == keys.key(k)                  # the training key stream, draw = sample index
        item = ds[(index, k)]                             # the training sampler's own item for that key
        assert (canvas, x, y, flip) == (int(item["canvas"]), int(item["box"][0]), int(item["box"][1]), int(item["flip"]))
        a = (item["image"] + 1) * 127.5                   # the float Lanczos value in [0, 255]
        assert (img.double() - a.double()).abs().max() <= 0.5 + 1e-4     # rounded to the nearest integer
        side = sides[index]
        if side < 128:                                    # below p / scale_max: used at native size
            assert canvas == side
        else:
            assert 128 <= canvas <= min(side, 213)        # [p / scale_max, min(L, p / scale_min)]
        assert 0 <= x <= canvas - p and 0 <= y <= canvas - p
    assert 100 in {int(reals[k][1][1]) for k in range(40)}      # the 100-px image appeared, natively
    # A native-size patch gives back the file's pixels exactly (no off-by-half in the quantisation).
    k = next(k for k in range(40) if int(reals[k][1][0]) == 2)
    img, rec, _ = reals[k]
    _, _, x, y, flip = (int(v) for v in rec)
    with Image.open(data / "img002.png") as im:
        ref = im.convert("RGB")
    if flip:
        ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
    ref = np.asarray(ref)[y:y + p, x:x + p].transpose(2, 0, 1)
    np.testing.assert_array_equal(img.numpy(), ref)
    # Deterministic per index: a fresh sampler gives the same sample.
    again = RealPatches(HRPatchDataset(pfid_source(str(data), p), p, scale_max=0.5, scale_min=0.3,
                                       random_crop=False, xflip=True, seed=3), num=40)
    assert torch.equal(again[17][0], reals[17][0]) and torch.equal(again[17][1], reals[17][1])
    with pytest.raises(ValueError, match="min_size"):
        pfid_source(ImageSource(str(data), min_size=1), p)


def test_pfid_generates_each_fake_at_the_real_patch_s_v_and_caches_the_records(tmp_path):
    data = write_images(tmp_path / "hr", [(200, 150), (130, 180), (260, 240), (80, 96)])
    rec = Recording()
    opts = Options(num=6, batch=4, progress=False, seed=11, scale_max=0.5, scale_min=None, xflip=True,
                   cache_dir=str(tmp_path / "cache"))
    det = from_module(TinyFeatures(), "tiny")
    result = patch_fid(rec, det, str(data), opts)
    assert result["num_fake"] == 6 and result["num_real"] == 6 and math.isfinite(result["fid"])
    assert result["real_stats_cache"] == "miss" and result["settings"]["sampler"] == "anyres_fast.data.HRPatchDataset"
    expected = expected_pfid_calls(data, 64, 6, scale_max=0.5, scale_min=None, random_crop=False, xflip=True, seed=11)
    assert rec.calls == expected
    assert len({c for c, _ in expected}) > 1              # several scales, so the check means something
    # A second run takes the real patches and their records from the cache and pairs the same way.
    rec2 = Recording()
    again = patch_fid(rec2, det, list_images(str(data)), opts)      # a listing of the same folder works too
    assert again["real_stats_cache"] == "hit" and rec2.calls == expected
    # More fakes than real patches: records are cycled.
    rec3 = Recording()
    patch_fid(rec3, det, str(data), dataclasses.replace(opts, num=8, num_real=3))
    assert rec3.calls == expected[:3] * 2 + expected[:2]
    # A changed sampler setting or a rewritten file invalidates the cached statistics and records.
    moved = patch_fid(Recording(), det, str(data), dataclasses.replace(opts, seed=12))
    assert moved["real_stats_cache"] == "miss"
    write_images(tmp_path / "hr", [(200, 150), (130, 180), (260, 240), (80, 96)], seed=5)
    rec4 = Recording()
    fresh = patch_fid(rec4, det, str(data), opts)
    assert fresh["real_stats_cache"] == "miss"
    assert fresh["settings"]["real_fingerprint"] != result["settings"]["real_fingerprint"]
    # (x, y) on canvas N is the patch with s = p / N and centre v, as the generator's transform sees it.
    from anyres_fast.models import patch_transform
    for n, (x, y) in expected:
        t, scale = patch_transform(64, n, box=(x, y))
        assert t[0, 0, 0].item() == pytest.approx(64 / n) and scale.item() == pytest.approx(n / 64)
        assert 2 * t[0, 0, 2].item() == pytest.approx((x + 32) / n * 2 - 1, abs=1e-6)
        assert 2 * t[0, 1, 2].item() == pytest.approx((y + 32) / n * 2 - 1, abs=1e-6)


# ----------------------------------------------------------------------------------------------------
# scaleinv-fid (InfinityGAN interface, stand-in object)

class StandInInfinity:
    """The InfinityGenerator API the metric codes against: render(z_g, height, width, seed=...)."""
    z_dim, c_dim, img_resolution = 6, 0, 16

    def __init__(self):
        self.calls = []

    def canvas_inputs(self, *args, **kwargs):  # marks the InfinityGAN family for the metrics' family check
        raise AssertionError("scaleinv-fid renders whole images; it never asks for canvas inputs")

    def render(self, z_g, height, width, *, seed=0):
        self.calls.append((tuple(z_g.shape), height, width, seed))
        g = torch.Generator().manual_seed(seed)
        yy = torch.linspace(-1, 1, height).view(1, 1, -1, 1)
        return (torch.tanh(z_g[:, :3].view(1, 3, 1, 1) + yy) * 0.9 + 0.05 * torch.randn(1, 3, height, width, generator=g)).clamp(-1, 1)


def test_scaleinv_fid_sizes_postprocess_and_calls(tmp_path):
    assert scaleinv_sizes(128, 2, 197 / 128) == (394, 256, 128)
    x = torch.rand(2, 3, 50, 50) * 2 - 1
    np.testing.assert_allclose(scaleinv_postprocess(x, 16, 3, 1.0),
                               F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=True), atol=0)
    # fov > 1: scale by 1/fov, keep the centre train_size*k, then resize.
    raw, target, final = scaleinv_sizes(16, 2, 1.5)
    y = torch.rand(1, 3, raw, raw)
    scaled = F.interpolate(y, scale_factor=1 / 1.5, mode="bilinear", align_corners=True)
    off = (scaled.shape[-1] - target) // 2
    ref = F.interpolate(scaled[:, :, off:off + target, off:off + target], size=(16, 16), mode="bilinear",
                        align_corners=True)
    np.testing.assert_allclose(scaleinv_postprocess(y, 16, 2, 1.5), ref, atol=0)

    data = write_images(tmp_path / "real", [(40, 40), (30, 50), (60, 45)])
    G = StandInInfinity()
    opts = Options(num=5, batch=2, progress=False, seed=4, use_cache=False, fov_scale=1.5)
    r = scaleinv_fid(G, from_module(TinyFeatures(), "tiny"), list_images(str(data)), 2, opts)
    assert r["metric"] == "scaleinv-fid@2" and r["num_fake"] == 5 and math.isfinite(r["fid"])
    assert [c[1:] for c in G.calls] == [(48, 48, 4 + i) for i in range(5)]     # ceil(16*2*1.5) = 48, seeds differ
    assert all(c[0] == (1, 6) for c in G.calls)


# ----------------------------------------------------------------------------------------------------
# Detector loading

def test_pytorch_fid_detector_loads_a_state_dict_file_with_weights_only(tmp_path):
    from benchmarks.bench_metrics import random_pytorch_fid_state   # pytorch-fid's layout, random weights

    state = random_pytorch_fid_state(seed=0)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="differs from the published"):
        det = load_detector(str(path))
    assert det.kind == "pytorch-fid" and det.path == str(path)
    assert det.verified is False and det.describe()["sha256_matches_published"] is False   # random weights
    renamed = tmp_path / "my_inception.pth"           # the check is on the bytes, not the name
    torch.save(state, renamed)
    with pytest.warns(UserWarning, match="differs from the published"):
        assert load_detector(str(renamed)).describe()["sha256_matches_published"] is False
    img = torch.randint(0, 256, (1, 3, 40, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats = det(img)
    assert feats.shape == (1, 2048) and torch.isfinite(feats).all()
    # The weights in the network are the file's (one forward only: Inception at 299 is slow on a CPU).
    loaded = det.module.state_dict()
    assert torch.equal(loaded["blocks.0.0.conv.weight"], state["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(loaded["blocks.3.2.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
    with pytest.raises(ValueError, match="TorchScript"):
        load_detector(str(path), kind="nvidia")


@pytest.mark.parametrize("content", [b"garbage\n", b"PK\x03\x04truncated zip", b""])
def test_a_garbage_detector_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "inception.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a detector file|not a TorchScript|expected a state dict") as info:
        load_detector(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
