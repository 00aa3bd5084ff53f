"""Improved precision/recall: brute-force k-NN reference, toy sets, pr@R / ppr / pfid-down wiring, VGG loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anyres_fast.metrics import Options, StatsCache, from_module, list_images
from anyres_fast.metrics.compute import (parse_metric_list, patch_fid_down, patch_precision_recall,
                                         precision_recall_at_resolution)
from anyres_fast.metrics.detectors import DetectorNotFound, VGG_FILE, VGG_URL, load_vgg16
from anyres_fast.metrics.precision_recall import precision_recall
from metric_fakes import Recording, ReplayRender, TinyFeatures, expected_pfid_calls, real_images_at, write_images


def brute_force_pr(real, fake, k=3):
    """Precision/recall by explicit loops over float16-rounded features (as published), float64 distances
    rounded to float16 like the published distance matrix."""
    real = real.astype(np.float16).astype(np.float64)
    fake = fake.astype(np.float16).astype(np.float64)

    def dist(a, b):
        return np.float16(np.sqrt(((a - b) ** 2).sum()))

    def covered(manifold, probes):
        radii = []
        for a in manifold:
            d = sorted(dist(a, b) for b in manifold)      # includes a itself at distance 0
            radii.append(d[k])                            # the k-th nearest other point
        return [any(dist(q, m) <= r for m, r in zip(manifold, radii)) for q in probes]

    return float(np.mean(covered(real, fake))), float(np.mean(covered(fake, real)))


def test_precision_recall_equals_brute_force_knn_with_small_blocks():
    rng = np.random.default_rng(0)
    values = []
    for trial in range(3):
        real = rng.standard_normal((40, 5)).astype(np.float32)
        fake = (rng.standard_normal((33, 5)) * (0.6 + 0.4 * trial) + 0.5).astype(np.float32)
        want = brute_force_pr(real, fake)
        # Blocks smaller than the sets (and not dividing them) exercise the batching.
        got = precision_recall(real, fake, k=3, row_batch=7, col_batch=9)
        assert (got["precision"], got["recall"]) == want
        assert precision_recall(real, fake)["precision"] == want[0]       # one block: the same
        values += want
    assert sum(0 < v < 1 for v in values) >= 4            # fractions, not all 0 or 1: a test that can fail


def test_identical_sets_score_one_and_a_collapsed_set_has_high_precision_low_recall():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((200, 8)).astype(np.float32)
    assert precision_recall(real, real.copy()) == {"precision": 1.0, "recall": 1.0}
    # Mode collapse: every fake sits near one real point, deep inside the real manifold.
    centre = real[0]
    fake = (centre + 0.01 * rng.standard_normal((200, 8))).astype(np.float32)
    pr = precision_recall(real, fake)
    assert pr["precision"] >= 0.95 and pr["recall"] <= 0.05
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], fake)


def test_metric_names_parse():
    specs, kid = parse_metric_list("pr@256,ppr,pfid-down@1024,eqt-int,eqt-frac,eqr,fid@64,kid")
    assert [s.name for s in specs] == ["pr@256", "ppr", "pfid-down@1024", "eqt-int", "eqt-frac", "eqr", "fid@64"]
    assert kid
    with pytest.raises(ValueError, match="without an FID"):
        parse_metric_list("pr@64,kid")
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric_list("pr")


def test_pr_at_resolution_identical_images_is_one_one_and_brightened_lower(tmp_path):
    data = write_images(tmp_path / "real", [(70, 66), (64, 80), (90, 90), (66, 66), (100, 72), (64, 64),
                                            (80, 70), (75, 75)])
    listing = list_images(str(data))
    det = from_module(TinyFeatures(), "tiny")
    reals = real_images_at(listing, 64)
    cache = StatsCache(str(tmp_path / "cache"))
    opts = Options(num=8, batch=4, progress=False)
    same = precision_recall_at_resolution(ReplayRender(reals), det, listing, 64, opts, cache)
    assert same["metric"] == "pr@64" and (same["precision"], same["recall"]) == (1.0, 1.0)
    assert same["settings"]["nhood_size"] == 3 and same["real_stats_cache"] == "miss"
    shifted = precision_recall_at_resolution(ReplayRender(reals, shift=90), det, listing, 64, opts, cache)
    assert shifted["real_stats_cache"] == "hit"
    assert shifted["precision"] + shifted["recall"] < 2.0


def test_ppr_and_pfid_down_pair_fakes_with_the_sampler_records(tmp_path):
    data = write_images(tmp_path / "hr", [(200, 150), (130, 180), (260, 240), (150, 150)])
    det = from_module(TinyFeatures(), "tiny")
    opts = Options(num=5, batch=2, progress=False, seed=3, scale_max=0.5, scale_min=None,
                   cache_dir=str(tmp_path / "cache"))
    rec = Recording(p=32)
    r = patch_precision_recall(rec, det, str(data), opts)
    assert r["metric"] == "ppr" and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert rec.calls == expected_pfid_calls(data, 32, 5, scale_max=0.5, scale_min=None, random_crop=False,
                                            xflip=False, seed=3)


class RecordingRender(torch.nn.Module):
    """Records G.render calls (canvas, window); returns a ramp that depends on the canvas."""

    def __init__(self, p=16):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = 4, 0, p
        self.calls = []

    def render(self, z, size, *, window, out_dtype, **kw):
        self.calls.append((size, tuple(window)))
        x0, y0, w, h = window
        xs = torch.arange(x0, x0 + w, dtype=torch.float32) / size
        img = (xs.view(1, 1, 1, -1) * 255).expand(z.shape[0], 3, h, w)
        assert out_dtype == torch.uint8
        return img.clamp(0, 255).to(torch.uint8)

    def zoom(self, *args, **kwargs):  # marks the any-resolution family for the metrics' family check
        raise AssertionError("pfid-down renders windows with render(window=...)")


class ShapeRecorder(TinyFeatures):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[-2:]))
        return super().forward(x)


def test_pfid_down_renders_each_fake_at_R_on_the_real_patch_canvas_then_the_detector_resizes(tmp_path):
    # p = 16, R = 64: every fake is a 64 x 64 window of canvas N (4 x 4 tiles inside G.render), placed at
    # the training sampler's (N, x, y) for patch size 64; the detector gets 64 x 64 images and resizes.
    data = write_images(tmp_path / "hr", [(200, 150), (130, 180), (260, 240)])
    G = RecordingRender(p=16)
    net = ShapeRecorder()
    det = from_module(net, "tiny")
    opts = Options(num=4, batch=2, progress=False, seed=5, scale_max=64 / 80, scale_min=64 / 200,
                   use_cache=False)
    net.shapes.clear()
    r = patch_fid_down(G, det, str(data), 64, opts)
    assert r["metric"] == "pfid-down@64" and np.isfinite(r["fid"])
    want = expected_pfid_calls(data, 64, 4, scale_max=64 / 80, scale_min=64 / 200, random_crop=False,
                               xflip=False, seed=5)
    assert G.calls == [(int(n), (int(x), int(y), 64, 64)) for n, (x, y) in want]
    assert all(80 <= n <= 200 for n, _ in G.calls) and len({n for n, _ in G.calls}) > 1
    assert set(net.shapes) == {(64, 64)}                  # reals and fakes reach the detector at R
    assert r["settings"]["tiles_per_patch"] == 16 and r["settings"]["patch"] == 64
    with pytest.raises(ValueError, match="generator size"):
        patch_fid_down(G, det, str(data), 8, opts)


def test_missing_vgg16_names_the_file_the_places_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "dnnlib"))
    with pytest.raises(DetectorNotFound) as exc:
        load_vgg16()
    msg = str(exc.value)
    assert VGG_FILE in msg and VGG_URL in msg and str(tmp_path / "dnnlib" / "downloads") in msg
    assert str(tmp_path / "cache" / "detectors") in msg and "\n" not in msg


class LabelledReplay(ReplayRender):
    """ReplayRender of a conditional model: records the labels render is given."""

    def __init__(self, images):
        super().__init__(images)
        self.c_dim, self.labels = 3, []

    def render(self, z, size, c=None, **kwargs):
        self.labels.append(c)
        return super().render(z, size, **kwargs)


def test_conditional_generators_get_the_drawn_labels_and_refuse_without_them(tmp_path):
    data = write_images(tmp_path / "real", [(64, 64)] * 5)
    listing = list_images(str(data))
    det = from_module(TinyFeatures(), "tiny")
    G = LabelledReplay(real_images_at(listing, 64))
    drawn = []

    def labels(count):
        c = torch.eye(3)[torch.arange(len(drawn), len(drawn) + count) % 3]
        drawn.append(c)
        return c

    r = precision_recall_at_resolution(G, det, listing, 64, Options(num=5, batch=2, progress=False, labels=labels,
                                                                    use_cache=False))
    assert r["num_fake"] == 5 and len(G.labels) == 3
    assert all(torch.equal(a, b) for a, b in zip(G.labels, drawn))
    with pytest.raises(ValueError, match="needs labels"):
        precision_recall_at_resolution(LabelledReplay(real_images_at(listing, 64)), det, listing, 64,
                                       Options(num=5, progress=False, use_cache=False))
