"""The metrics: fid@R, pfid, scaleinv-fid@k, each with optional KID; real statistics cached on disk.

    fid@R           generated canvases rendered tile by tile at R x R (G.render), reals square-cropped
                    and Lanczos-resized to R x R; both go to the detector as uint8 at R x R (it resizes
                    to 299 itself), as StyleGAN3's metric code feeds it.
    pfid            real HR patches from the training patch sampler (anyres_fast.data.HRPatchDataset)
                    with their (s, v); the i-th generated patch
                    is rendered at exactly the i-th real patch's canvas N and position (G(z, canvas=N,
                    box=(x, y))).
    scaleinv-fid@k  InfinityGAN: images generated at k x the training size (times the field-of-view
                    factor), resized back bilinearly (align_corners=True, as published) to the training
                    size; reals at the training size.

Definitions, settings and the differences from the published code are in docs/metrics.md.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .detectors import Detector, own_cache_dir
from ..utils.files import atomic_write
from ..data import HRPatchDataset, ImageSource
from .real_images import FullImages, ImageListing, RealPatches, collate_skipping, source_fingerprint
from .precision_recall import describe as describe_pr, precision_recall
from .stats import FeatureStats, frechet_distance, kernel_inception_distance

CACHE_VERSION = 2          # 2: pfid reals from anyres_fast.data.HRPatchDataset
_METRIC_RE = re.compile(r"^(?P<kind>fid|pr|pfid-down|scaleinv-fid)@(?P<n>\d+)$|^(?P<plain>pfid|ppr|kid|eqt-int|eqt-frac|eqr)$")
FID_KINDS = ("fid", "pfid", "pfid-down", "scaleinv-fid")       # the metrics KID can go with
PR_KINDS = ("pr", "ppr")                                       # need the VGG16 detector
EQ_KINDS = ("eqt-int", "eqt-frac", "eqr")                      # need no detector and no data
METRIC_NAMES = "fid@R, pfid, pfid-down@R, scaleinv-fid@k, pr@R, ppr, eqt-int, eqt-frac, eqr or kid"


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a --metric list: kind "fid", "pr", "pfid-down" (value = R), "scaleinv-fid" (k),
    or "pfid", "ppr", "eqt-int", "eqt-frac", "eqr" (value None)."""
    kind: str
    value: Optional[int] = None

    @property
    def name(self) -> str:
        return self.kind if self.value is None else f"{self.kind}@{self.value}"


def parse_metric_list(text: str) -> tuple:
    """'fid@1024,pfid,kid' -> ([MetricSpec...], with_kid).

    `kid` adds KID beside every FID of the list; it cannot stand alone.

    Raises:
        ValueError: an unknown name, a zero R/k, a duplicate, or `kid` without an FID metric.
    """
    specs, kid = [], False
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        m = _METRIC_RE.match(item)
        if not m:
            raise ValueError(f"unknown metric {item!r}: expected {METRIC_NAMES}")
        if item == "kid":
            kid = True
            continue
        spec = MetricSpec(m.group("plain")) if m.group("plain") else MetricSpec(m.group("kind"), int(m.group("n")))
        if spec.value is not None and spec.value < 1:
            raise ValueError(f"metric {item!r}: the number must be >= 1")
        if spec in specs:
            raise ValueError(f"metric {item!r} listed twice")
        specs.append(spec)
    if not specs:
        raise ValueError(f"no metric in {text!r}: expected {METRIC_NAMES}")
    if kid and not any(s.kind in FID_KINDS for s in specs):
        raise ValueError(f"kid in {text!r} without an FID metric: kid is computed beside fid@R, pfid, "
                         f"pfid-down@R or scaleinv-fid@k")
    return specs, kid


@dataclass
class Options:
    """Settings shared by the metrics (all recorded with each result).

    num: generated images (published: 50,000). max_real: cap on real images/patches for full-image
    metrics (None: all, as published); pfid draws `num_real` patches (default num). batch: images per
    generator call. tile_batch: tiles per synthesis pass in G.render. seed: latents and real sampling.
    precision: "fp16" (StyleGAN3's default path on CUDA, as published) or "fp32". crop: square crop of
    reals, "center" or "random" (seeded). kid_subsets / kid_subset_size: published 100 / 1000.
    """
    num: int = 50_000
    max_real: Optional[int] = None
    num_real: Optional[int] = None
    batch: int = 4
    tile_batch: int = 8
    seed: int = 0
    precision: str = "fp16"
    crop: str = "center"
    workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Optional[str] = None
    use_cache: bool = True
    progress: bool = True
    kid: bool = False
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    # pfid
    scale_max: float = 1.0
    scale_min: Optional[float] = None
    xflip: bool = False
    # scaleinv-fid
    train_size: Optional[int] = None
    fov_scale: float = 1.0
    # precision / recall (published pr50k3: k = 3, blocks of 10,000 x 10,000)
    pr_k: int = 3
    pr_row_batch: int = 10_000
    pr_col_batch: int = 10_000
    # equivariance (published: translations up to 1/8 of the image, rotations up to 1 x pi)
    translate_max: float = 0.125
    rotate_max: float = 1.0
    # conditional generators: draws `count` labels (B, c_dim) for the metrics that support them
    labels: Optional[Callable[[int], torch.Tensor]] = None

    def recorded(self) -> dict:
        d = {k: getattr(self, k) for k in ("num", "max_real", "num_real", "batch", "tile_batch", "seed",
                                           "precision", "crop", "kid", "kid_subsets", "kid_subset_size")}
        d["device"] = str(self.device)
        return d


# ----------------------------------------------------------------------------------------------------
# Real-statistics cache

class StatsCache:
    """Real feature statistics on disk, one .npz per key (dataset fingerprint + settings + detector).

    Files are written to a temporary name and renamed; they hold only arrays (loaded with
    allow_pickle=False). Default folder: <ANYRES_FAST_CACHE or ~/.cache/anyres_fast>/metrics.
    """

    def __init__(self, folder: Optional[str] = None, enabled: bool = True):
        self.folder = folder or os.path.join(own_cache_dir(), "metrics")
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fields: dict) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, tag: str, fields: dict) -> str:
        return os.path.join(self.folder, f"{tag}-{self.key(fields)[:24]}.npz")

    def load(self, tag: str, fields: dict) -> Optional[dict]:
        """The cached arrays, or None (disabled, absent or unreadable)."""
        if not self.enabled:
            return None
        p = self.path(tag, fields)
        if os.path.isfile(p):
            try:
                with np.load(p, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                self.hits += 1
                return arrays
            except (OSError, ValueError):
                pass                        # a damaged cache file is recomputed and replaced
        self.misses += 1
        return None

    def save(self, tag: str, fields: dict, arrays: dict) -> Optional[str]:
        """Write arrays atomically; returns the path (None when disabled)."""
        if not self.enabled:
            return None
        os.makedirs(self.folder, exist_ok=True)
        p = self.path(tag, fields)
        return atomic_write(p, lambda f: np.savez(f, **arrays))


# ----------------------------------------------------------------------------------------------------
# Helpers

def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in about [-1, 1] -> uint8 with StyleGAN's x * 127.5 + 128, clamped."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _latents(gen: torch.Generator, count: int, z_dim: int) -> torch.Tensor:
    return torch.randn(count, z_dim, generator=gen)


def _fp32(opts: Options) -> bool:
    return opts.precision == "fp32"


def _real_stats(tag: str, fields: dict, dataset, opts: Options, cache: StatsCache, detector: Detector,
                desc: str, keep: Optional[bool] = None) -> tuple:
    """(FeatureStats, records or None, skipped list, cache_hit) of a real dataset, through the cache.
    keep: keep every feature vector (default opts.kid; precision/recall need them)."""
    keep = opts.kid if keep is None else keep
    fields = dict(fields, detector=detector.sha256, keep_features=keep, version=CACHE_VERSION)
    cached = cache.load(tag, fields)
    if cached is not None:
        stats = FeatureStats.from_arrays(cached)
        records = cached.get("records")
        skipped = json.loads(str(cached["skipped"])) if "skipped" in cached else []
        return stats, records, skipped, True
    stats = FeatureStats(keep_features=keep)
    records, skipped = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(opts.batch, 16), shuffle=False,
                                         num_workers=opts.workers, collate_fn=collate_skipping)
    with tqdm(total=len(dataset), desc=desc, unit="img", disable=not opts.progress) as bar:
        for images, metas, reasons in loader:
            skipped += [[str(a), str(b)] for a, b in reasons]
            if images is not None:
                stats.append(detector(images))
                records += [np.asarray(m) for m in metas]
            bar.update(len(metas) + len(reasons))
    if not stats.num_items:
        raise ValueError(f"{desc}: no usable real image ({len(skipped)} skipped, e.g. {skipped[:3]})")
    arrays = stats.to_arrays()
    arrays["skipped"] = np.asarray(json.dumps(skipped))
    rec = np.stack(records) if records and np.asarray(records[0]).ndim == 1 else None
    if rec is not None:
        arrays["records"] = rec
    cache.save(tag, fields, arrays)
    return stats, rec, skipped, False


def _fake_stats(num: int, opts: Options, detector: Detector, make_batch: Callable[[int, int], torch.Tensor],
                desc: str, keep: Optional[bool] = None) -> FeatureStats:
    """Features of `num` generated images; make_batch(start, count) returns uint8 (count, 3, H, W)."""
    stats = FeatureStats(keep_features=opts.kid if keep is None else keep, max_items=num)
    with tqdm(total=num, desc=desc, unit="img", disable=not opts.progress) as bar:
        for start in range(0, num, opts.batch):
            count = min(opts.batch, num - start)
            stats.append(detector(make_batch(start, count)))
            bar.update(count)
    return stats


def _result(name: str, real: FeatureStats, fake: FeatureStats, opts: Options, detector: Detector,
            settings: dict, started: float, cache_hit: bool, skipped: list) -> dict:
    mu_r, s_r = real.mean_cov()
    mu_f, s_f = fake.mean_cov()
    out = {"metric": name, "fid": frechet_distance(mu_f, s_f, mu_r, s_r)}
    if opts.kid:
        kid, kid_std = kernel_inception_distance(real.features(), fake.features(), opts.kid_subsets,
                                                 opts.kid_subset_size, opts.seed)
        out.update(kid=kid, kid_std=kid_std)
    out.update(num_fake=fake.num_items, num_real=real.num_items, real_skipped=len(skipped),
               real_skipped_examples=skipped[:5], real_stats_cache="hit" if cache_hit else "miss",
               settings=dict(opts.recorded(), **settings), detector=detector.describe(),
               seconds=round(time.time() - started, 3),
               time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__)
    return out


_FAMILY_MARK = {"anyres": ("zoom", "an any-resolution Generator"), "infinity": ("canvas_inputs", "an InfinityGenerator")}


def _check_generator(G, family: str, opts: Optional[Options] = None) -> None:
    """ValueError unless G is of the family the metric renders with (both families call it `render`),
    and, for a conditional G, the labels to draw from are given (opts.labels)."""
    if getattr(G, "c_dim", 0) and (opts is None or opts.labels is None):
        raise ValueError("a conditional generator (c_dim > 0) needs labels: give the labelled dataset "
                         "(dataset.json) the labels are drawn from" if opts is not None else
                         "conditional generators (c_dim > 0) are not supported by this metric")
    mark, name = _FAMILY_MARK[family]
    if not hasattr(G, mark):
        raise ValueError(f"this metric needs {name}; got a {type(G).__name__}")


# ----------------------------------------------------------------------------------------------------
# The metrics

def fid_at_resolution(G, detector: Detector, listing: ImageListing, resolution: int, opts: Options,
                      cache: Optional[StatsCache] = None) -> dict:
    """fid@R: G.render at canvas R vs reals Lanczos-resized to R.

    Args:
        G: an any-resolution Generator (needs z_dim, img_resolution, render).
        detector: the feature network.
        listing: real images (for R above the generator size, the HR set, as published).
        resolution: R (>= G.img_resolution).
        opts: settings (num, batch, tile_batch, seed, ...).
        cache: real-statistics cache (default: the user cache).

    Returns:
        The result dict (metric, fid[, kid, kid_std], counts, settings, detector, time, ...).

    Raises:
        ValueError: R below the generator size, or no usable real image.
    """
    started = time.time()
    cache = cache or StatsCache(opts.cache_dir, opts.use_cache)
    _check_generator(G, "anyres", opts)
    if resolution < G.img_resolution:
        raise ValueError(f"fid@{resolution}: R must be >= the generator size {G.img_resolution}")
    real, skipped, hit = _full_image_stats(listing, resolution, opts, cache, detector)
    fake = _fake_stats(opts.num, opts, detector, _render_batches(G, resolution, opts), f"fake {resolution}x{resolution}")
    return _result(f"fid@{resolution}", real, fake, opts, detector,
                   dict(resolution=resolution, real_root=listing.root, real_fingerprint=listing.fingerprint,
                        generator_size=G.img_resolution, tiles_per_image=math.ceil(resolution / G.img_resolution) ** 2),
                   started, hit, skipped)


def pfid_source(hr, patch: int, cache: Optional["StatsCache"] = None) -> ImageSource:
    """The ImageSource pfid samples from, with min_size = p (HRPatchDataset needs short sides >= p).

    Args:
        hr: an ImageSource (its min_size must be >= p), an ImageListing or a folder / .zip path.
        patch: p, the generator size.
        cache: its folder also holds the source's listing cache (`<folder>/listings`) when enabled.

    Returns:
        ImageSource.

    Raises:
        FileNotFoundError: the path is not a folder or zip. ValueError: min_size < p.
    """
    if isinstance(hr, ImageSource):
        if hr.min_size < patch:
            raise ValueError(f"{hr.path}: pfid needs an ImageSource with min_size >= p = {patch}, got {hr.min_size}")
        return hr
    root = hr.root if isinstance(hr, ImageListing) else str(hr)
    cache_dir = os.path.join(cache.folder, "listings") if cache is not None and cache.enabled else None
    return ImageSource(root, cache_dir=cache_dir, min_size=patch)


def _labels(G, opts: Options, count: int) -> Optional[torch.Tensor]:
    """Labels for `count` samples of a conditional generator (None for an unconditional one)."""
    if not getattr(G, "c_dim", 0):
        return None
    c = torch.as_tensor(opts.labels(count), dtype=torch.float32)
    if c.shape != (count, G.c_dim):
        raise ValueError(f"labels: expected ({count}, {G.c_dim}), got {tuple(c.shape)}")
    return c.to(opts.device)


def _patch_pairs(G, detector: Detector, hr, opts: Options, cache: StatsCache, size: int, keep: bool,
                 label: str) -> tuple:
    """Real size x size HR patches from the training sampler and the generated patches paired with them.

    size = p: pfid / ppr (one G call per patch). size > p: pfid-down@size, each fake rendered tile by
    tile as the window (x, y, size, size) of canvas N (G.render), so the patch is synthesised at
    `size` pixels; the detector then resizes it itself (to 299 for Inception), as the published
    patch metric feeds larger patches.

    Returns:
        (real stats, fake stats, settings dict, cache hit, skipped list).
    """
    p = G.img_resolution
    num_real = opts.num_real or opts.num
    source = pfid_source(hr, size, cache)
    dataset = HRPatchDataset(source, size, scale_max=opts.scale_max, scale_min=opts.scale_min,
                             random_crop=opts.crop == "random", xflip=opts.xflip, seed=opts.seed,
                             decode="exact")   # the reference pixels: metric values stay comparable
    reals = RealPatches(dataset, num_real)
    fingerprint = source_fingerprint(source)
    fields = dict(metric="pfid", sampler="anyres_fast.data.HRPatchDataset+KeySampler", listing=fingerprint,
                  patch=size, num_real=num_real, scale_max=opts.scale_max, scale_min=opts.scale_min,
                  xflip=opts.xflip, crop=opts.crop, seed=opts.seed)
    real, records, skipped, hit = _real_stats(f"pfid{size}", fields, reals, opts, cache, detector,
                                              f"real patches {size}", keep=keep)
    skipped = [[b.name, b.reason] for b in source.listing.bad] + list(skipped)
    if records is None or len(records) == 0:
        raise ValueError(f"{label}: no real patch records")
    gen = torch.Generator().manual_seed(opts.seed)

    def make_batch(start: int, count: int) -> torch.Tensor:
        # Fake i reuses record i (cycled when there are more fakes than real patches).
        recs = records[[(start + j) % len(records) for j in range(count)]]
        z = _latents(gen, count, G.z_dim).to(opts.device)
        c = _labels(G, opts, count)
        if size == p:
            canvas = torch.tensor(recs[:, 1], dtype=torch.float64, device=opts.device)
            box = torch.tensor(recs[:, 2:4], dtype=torch.float64, device=opts.device)
            with torch.no_grad():
                return to_uint8(G(z, c, canvas=canvas, box=box, force_fp32=_fp32(opts)))
        out = []
        for j, (_, n, x, y, _flip) in enumerate(recs.tolist()):
            out.append(G.render(z[j:j + 1], int(n), c=None if c is None else c[j:j + 1],
                                window=(int(x), int(y), size, size), tile_batch=opts.tile_batch, progress=False,
                                out_dtype=torch.uint8, force_fp32=_fp32(opts)))
        return torch.cat(out)

    fake = _fake_stats(opts.num, opts, detector, make_batch, f"fake patches {size}", keep=keep)
    sizes = records[:, 1]
    settings = dict(patch=size, generator_size=p, scale_max=opts.scale_max, scale_min=opts.scale_min,
                    xflip=opts.xflip, sampler="anyres_fast.data.HRPatchDataset", real_root=source.path,
                    real_fingerprint=fingerprint,
                    canvas_sizes=[int(sizes.min()), int(np.median(sizes)), int(sizes.max())])
    if size != p:
        settings.update(tiles_per_patch=math.ceil(size / p) ** 2,
                        downsample=f"the detector's own resize of the {size}x{size} uint8 patch")
    return real, fake, settings, hit, skipped


def patch_fid(G, detector: Detector, hr, opts: Options, cache: Optional[StatsCache] = None) -> dict:
    """pfid: real HR patches with their (s, v) vs generated patches at the same (s, v), pair by pair.

    Real patch k is sample (KeySampler key k) of the training sampler `anyres_fast.data.HRPatchDataset`
    (p = G.img_resolution, opts.scale_max / scale_min / crop / xflip / seed), quantised to uint8 for
    the detector. Its record (image, canvas N, top-left (x, y), flip) is cached with the real
    statistics, so a later run pairs its fakes with the same records. Fake i is
    G(z_i, canvas=N_i, box=(x_i, y_i)) (records cycled when num > num_real).

    Args:
        G: an any-resolution Generator (called as G(z, c, canvas=..., box=...)).
        detector: the feature network.
        hr: the HR images: ImageSource, ImageListing or folder / .zip path (see pfid_source).
        opts: settings (scale_min, scale_max, xflip, crop, num, num_real, labels, ...).
        cache: real-statistics cache.

    Returns:
        The result dict (settings hold the sampler's settings and the canvas sizes min/median/max).

    Raises:
        ValueError: bad scale bounds, no usable HR image (short side >= p), or no readable patch.
    """
    started = time.time()
    cache = cache or StatsCache(opts.cache_dir, opts.use_cache)
    _check_generator(G, "anyres", opts)
    real, fake, settings, hit, skipped = _patch_pairs(G, detector, hr, opts, cache, G.img_resolution,
                                                      opts.kid, "pfid")
    return _result("pfid", real, fake, opts, detector, settings, started, hit, skipped)


def patch_fid_down(G, detector: Detector, hr, size: int, opts: Options, cache: Optional[StatsCache] = None) -> dict:
    """pfid-down@R: pfid on R x R patches synthesised at R pixels, downsampled by the detector.

    Real patch k is the training sampler's sample k at patch size R (canvas N in
    [R / opts.scale_max, min(L, R / opts.scale_min)]); fake k is the window (x_k, y_k, R, R) of canvas
    N_k rendered tile by tile (G.render, ceil(R/p)^2 synthesis passes). Both reach the detector as uint8
    R x R images, which it resizes (NVIDIA's Inception: to 299), as the any-resolution code feeds its
    larger patches; high-resolution defects are averaged away by that resize, which is what the
    paper's pFID (down) shows.

    Args:
        G: an any-resolution Generator (needs render).
        detector: the feature network.
        hr: the HR images (ImageSource with min_size >= R, ImageListing or path).
        size: R (>= the generator size).
        opts: settings (scale bounds relative to R, num, num_real, tile_batch, ...).
        cache: real-statistics cache.

    Returns:
        The result dict (metric "pfid-down@R").

    Raises:
        ValueError: R below the generator size, no usable HR image (short side >= R), bad scale bounds.
    """
    started = time.time()
    cache = cache or StatsCache(opts.cache_dir, opts.use_cache)
    _check_generator(G, "anyres", opts)
    if size < G.img_resolution:
        raise ValueError(f"pfid-down@{size}: R must be >= the generator size {G.img_resolution}")
    real, fake, settings, hit, skipped = _patch_pairs(G, detector, hr, opts, cache, size, opts.kid,
                                                      f"pfid-down@{size}")
    return _result(f"pfid-down@{size}", real, fake, opts, detector, settings, started, hit, skipped)


def _pr_result(name: str, real: FeatureStats, fake: FeatureStats, opts: Options, detector: Detector,
               settings: dict, started: float, cache_hit: bool, skipped: list) -> dict:
    pr = precision_recall(real.features(), fake.features(), opts.pr_k, opts.pr_row_batch, opts.pr_col_batch)
    out = {"metric": name, "precision": pr["precision"], "recall": pr["recall"]}
    out.update(num_fake=fake.num_items, num_real=real.num_items, real_skipped=len(skipped),
               real_skipped_examples=skipped[:5], real_stats_cache="hit" if cache_hit else "miss",
               settings=dict(opts.recorded(), **describe_pr(opts.pr_k, opts.pr_row_batch, opts.pr_col_batch),
                             **settings),
               detector=detector.describe(), seconds=round(time.time() - started, 3),
               time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__)
    return out


def precision_recall_at_resolution(G, detector: Detector, listing: ImageListing, resolution: int, opts: Options,
                                   cache: Optional[StatsCache] = None) -> dict:
    """pr@R: improved precision/recall (k = opts.pr_k) of canvases rendered at R vs reals resized to R.

    The images are those of fid@R (same latents, same real crops and resize); the features are the
    VGG16 detector's (StyleGAN's pr50k3_full uses up to 200,000 reals and 50,000 fakes).

    Args:
        G: an any-resolution Generator (render).
        detector: the VGG16 detector (load_vgg16) or a stand-in.
        listing: real images.
        resolution: R (>= the generator size).
        opts: settings (num, max_real, pr_k, pr_row_batch, pr_col_batch, labels, ...).
        cache: real-feature cache (all features are kept).

    Returns:
        The result dict (metric "pr@R", precision, recall, counts, settings, detector).

    Raises:
        ValueError: R below the generator size, no usable real image, k or fewer items in a set.
    """
    started = time.time()
    cache = cache or StatsCache(opts.cache_dir, opts.use_cache)
    _check_generator(G, "anyres", opts)
    if resolution < G.img_resolution:
        raise ValueError(f"pr@{resolution}: R must be >= the generator size {G.img_resolution}")
    real, skipped, hit = _full_image_stats(listing, resolution, opts, cache, detector, keep=True)
    fake = _fake_stats(opts.num, opts, detector, _render_batches(G, resolution, opts),
                       f"fake {resolution}x{resolution}", keep=True)
    return _pr_result(f"pr@{resolution}", real, fake, opts, detector,
                      dict(resolution=resolution, real_root=listing.root, real_fingerprint=listing.fingerprint,
                           generator_size=G.img_resolution), started, hit, skipped)


def patch_precision_recall(G, detector: Detector, hr, opts: Options, cache: Optional[StatsCache] = None) -> dict:
    """ppr: precision/recall on pfid's patches (the same real patches and (s, v)-paired fakes).

    Args:
        G: an any-resolution Generator.
        detector: the VGG16 detector or a stand-in.
        hr: the HR images (as patch_fid).
        opts: settings (as patch_fid, plus pr_k / pr_row_batch / pr_col_batch).
        cache: real-feature cache.

    Returns:
        The result dict (metric "ppr", precision, recall, ...).
    """
    started = time.time()
    cache = cache or StatsCache(opts.cache_dir, opts.use_cache)
    _check_generator(G, "anyres", opts)
    real, fake, settings, hit, skipped = _patch_pairs(G, detector, hr, opts, cache, G.img_resolution, True, "ppr")
    return _pr_result("ppr", real, fake, opts, detector, settings, started, hit, skipped)


def _render_batches(G, resolution: int, opts: Options) -> Callable[[int, int], torch.Tensor]:
    """make_batch for full canvases at R: latents (and labels) from a generator seeded with opts.seed."""
    gen = torch.Generator().manual_seed(opts.seed)

    def make_batch(start: int, count: int) -> torch.Tensor:
        z = _latents(gen, count, G.z_dim)
        c = _labels(G, opts, count)
        kwargs = {} if c is None else {"c": c}
        return G.render(z, resolution, tile_batch=opts.tile_batch, progress=False, out_dtype=torch.uint8,
                        force_fp32=_fp32(opts), **kwargs)

    return make_batch


def _full_image_stats(listing, resolution: int, opts, cache, detector, keep: Optional[bool] = None) -> tuple:
    """(statistics, skipped files, cache hit) of the real images square-cropped and resized to
    resolution x resolution; fid@R and scaleinv-fid share them (same cache entry for the same size)."""
    n_real = len(listing) if opts.max_real is None else min(opts.max_real, len(listing))
    dataset = FullImages(listing, resolution, crop=opts.crop, seed=opts.seed, indices=range(n_real))
    fields = dict(metric="fid", listing=listing.fingerprint, resolution=resolution, crop=opts.crop,
                  seed=opts.seed if opts.crop == "random" else None, n_real=n_real)
    real, _, skipped, hit = _real_stats(f"fid{resolution}", fields, dataset, opts, cache, detector,
                                        f"real {resolution}x{resolution}", keep=keep)
    return real, skipped, hit


def scaleinv_sizes(train_size: int, k: int, fov_scale: float) -> tuple:
    """(generated side, centre-crop side, final side) of scaleinv-fid@k.

    Generated ceil(train_size * k * fov_scale), scaled by 1/fov_scale and centre-cropped to
    train_size * k, then resized to train_size (InfinityGAN's evaluation; fov_scale = full training
    image size / real data size, 197/128 for its main model, 1 when both are the same)."""
    target = train_size * k
    return int(math.ceil(target * fov_scale)), target, train_size


def scaleinv_postprocess(images: torch.Tensor, train_size: int, k: int, fov_scale: float) -> torch.Tensor:
    """Generated (B, 3, H, H) float in [-1, 1] at the scaleinv size -> (B, 3, train_size, train_size)."""
    _, target, final = scaleinv_sizes(train_size, k, fov_scale)
    x = images.to(torch.float32)
    if fov_scale != 1:
        x = F.interpolate(x, scale_factor=1 / fov_scale, mode="bilinear", align_corners=True)
        top, left = (x.shape[2] - target) // 2, (x.shape[3] - target) // 2
        x = x[:, :, top:top + target, left:left + target]
    return F.interpolate(x, size=(final, final), mode="bilinear", align_corners=True)


def scaleinv_fid(G, detector: Detector, listing: ImageListing, k: int, opts: Options,
                 cache: Optional[StatsCache] = None) -> dict:
    """scaleinv-fid@k for InfinityGAN-style generators.

    G must provide `z_dim` and `generate(z_g, height, width, seed=...)` returning (1, 3, H, W) in
    [-1, 1] (the InfinityGenerator API); image i uses z_g_i from the seeded latent stream and
    seed = opts.seed + i for its local latents and noise. The training size comes from opts.train_size
    (default G.img_resolution).

    Returns:
        The result dict.
    """
    started = time.time()
    cache = cache or StatsCache(opts.cache_dir, opts.use_cache)
    _check_generator(G, "infinity")
    train_size = opts.train_size or getattr(G, "img_resolution", None)
    if not train_size:
        raise ValueError("scaleinv-fid: give the training image size (--train-size)")
    raw, _, final = scaleinv_sizes(train_size, k, opts.fov_scale)
    real, skipped, hit = _full_image_stats(listing, final, opts, cache, detector)
    gen = torch.Generator().manual_seed(opts.seed)

    def make_batch(start: int, count: int) -> torch.Tensor:
        out = []
        for j in range(count):
            z = _latents(gen, 1, G.z_dim).to(opts.device)
            with torch.no_grad():
                img = G.render(z, raw, raw, seed=opts.seed + start + j)
            if tuple(img.shape) != (1, 3, raw, raw):
                raise ValueError(f"scaleinv-fid: G.render returned {tuple(img.shape)}, expected (1, 3, {raw}, {raw})")
            out.append(scaleinv_postprocess(img, train_size, k, opts.fov_scale))
        return to_uint8(torch.cat(out))

    fake = _fake_stats(opts.num, opts, detector, make_batch, f"fake x{k}")
    return _result(f"scaleinv-fid@{k}", real, fake, opts, detector,
                   dict(k=k, train_size=train_size, fov_scale=opts.fov_scale, generated_size=raw,
                        real_root=listing.root, real_fingerprint=listing.fingerprint),
                   started, hit, skipped)


def append_jsonl(path: str, result: dict) -> None:
    """Append one JSON line; the line is written with one write() call on a file opened for append."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = json.dumps(result, sort_keys=True, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
