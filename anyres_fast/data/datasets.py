"""Low-resolution (whole image) and high-resolution (patch) datasets, and the key sampler.

Randomness is counter-based: a dataset item is addressed by a key (index, draw), where `draw` is the
global position of the sample in the run's stream. Every random choice for that sample (crop, flip,
scale, patch position) comes from a generator seeded with (seed, draw). Samples therefore do not depend
on loader workers, ranks or prefetching, and a resumed run sees exactly the samples it would have seen.

HR patch sampling (docs/data.md): x-flip, square crop (random or centred) of side L, target size
n drawn uniformly in [p/scale_max, min(L, p/scale_min)] and rounded (an image with L below the lower
bound is used at its native size), Lanczos-3 resize of the square to n x n, random p x p crop at
integer (x, y). The resize and the crop are one Pillow resize of the crop's footprint (`box=`), which
equals resizing the whole square and cropping: same kernel centres, support and border handling.

Two decode paths (docs/data.md, "Fast patch path"): "exact" decodes the whole file at full resolution
(the reference, used by the metrics); "fast" (the training default) decodes JPEGs at a DCT-domain
reduction where the scale allows and converts only the patch's footprint (fastpatch.py).
"""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..utils.images import upright_size

from .fastpatch import DEFAULT_OVERSAMPLING, fast_region
from .segmented import SIDECAR, NotSegmented, open_segmented
from .sources import ImageSource

DECODE_MODES = ("fast", "exact")
FAST_FORMATS = ("JPEG", "MPO")   # MPO: a camera JPEG with a multi-picture index; frame 0 is the photo


def sample_rng(seed: int, draw: int) -> np.random.Generator:
    """The generator of every random choice for one sample."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(draw)])


def square_crop(img: Image.Image, rng: Optional[np.random.Generator]) -> tuple:
    """(square image, (left, top, side)); rng None: centred, else a random position along the long side."""
    w, h = img.size
    side = min(w, h)
    if rng is None:
        left, top = (w - side) // 2, (h - side) // 2
    else:
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    if (w, h) == (side, side):
        return img, (0, 0, side)
    return img.crop((left, top, left + side, top + side)), (left, top, side)


def lanczos_float(img: Image.Image, size: int, box=None) -> np.ndarray:
    """Pillow Lanczos-3 resize of an RGB image in float32 ('F' mode per channel): (3, size, size) in [0, 255]."""
    chans = []
    for band in img.split():
        f = band.convert("F")
        chans.append(np.asarray(f.resize((size, size), Image.LANCZOS, box=box), dtype=np.float32))
    return np.stack(chans)


def to_model_range(a: np.ndarray) -> torch.Tensor:
    """[0, 255] float/uint8 (C, H, W) -> float32 tensor in [-1, 1]; Lanczos overshoot is clipped to
    [0, 255] first, as an 8-bit resize would."""
    return torch.from_numpy(np.clip(np.ascontiguousarray(a, dtype=np.float32), 0, 255)) / 127.5 - 1


class LRDataset(torch.utils.data.Dataset):
    """Whole images at the generator size p: square crop, Lanczos resize to p x p, optional x-flip.

    Item key (index, draw) -> dict(image (3, p, p) float32 in [-1, 1], c (c_dim,) float32).

    Args:
        source: an ImageSource.
        resolution: p.
        random_crop: random (True) or centred square crop of non-square images.
        xflip: flip horizontally with probability 1/2.
        seed: run seed of the counter-based randomness.
    """

    def __init__(self, source: ImageSource, resolution: int, random_crop: bool = True, xflip: bool = True,
                 seed: int = 0):
        if len(source) == 0:
            raise ValueError(f"{source.path}: no usable images ({len(source.listing.bad)} skipped)")
        self.source, self.resolution, self.random_crop, self.xflip, self.seed = source, resolution, random_crop, xflip, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> dict:
        index, draw = key
        rng = sample_rng(self.seed, draw)
        img = self.source.load_rgb(index)
        sq, _ = square_crop(img, rng if self.random_crop else None)
        flip = bool(self.xflip and rng.random() < 0.5)
        if flip:
            sq = sq.transpose(Image.FLIP_LEFT_RIGHT)
        p = self.resolution
        arr = lanczos_float(sq, p) if sq.size[0] != p else np.asarray(sq, dtype=np.float32).transpose(2, 0, 1)
        return {"image": to_model_range(arr), "c": torch.from_numpy(self.source.label(index).copy())}


class HRPatchDataset(torch.utils.data.Dataset):
    """p x p patches of native-resolution images at a random scale, with their canvas frame.

    Item key (index, draw) -> dict:
        image (3, p, p) float32 in [-1, 1]; c (c_dim,) float32;
        canvas: float32 scalar n (the resized square's side, the canvas size N of the patch);
        box: (2,) float32 (x, y), the patch's top-left pixel on that canvas;
        s: float32 scalar p / n; v: (2,) float32 patch centre in [-1, 1]^2 canvas units;
        transform: (3, 3) float32 [[s, 0, v_x/2], [0, s, v_y/2], [0, 0, 1]];
        crop: (3,) int64 (left, top, side) of the square crop in the (flipped) native image; flip: bool;
        reduction: int64 scalar, the JPEG draft reduction the fast path decoded at (1, 2, 4, 8), 0 for
        the exact path (decode="exact" or a file that is not a JPEG); prepared: bool, only the region's
        MCUs were decoded (a prepared set, prepare.py).

    Args:
        source: an ImageSource whose short sides are >= p (use min_size=p).
        resolution: p.
        scale_max: largest s, so the smallest canvas is p / scale_max (0 < scale_max <= 1).
        scale_min: smallest s (None: down to native resolution, s = p / L).
        random_crop: random (True) or centred square crop.
        xflip: flip with probability 1/2 (before cropping).
        seed: run seed of the counter-based randomness.
        decode: "fast" (JPEGs decoded at a DCT-domain reduction and only around the patch, fastpatch.py)
            or "exact" (every file decoded whole at full resolution; the reference).
        oversampling: fast path: reduced samples kept per output pixel (the reduction r <= f / this).

    Raises:
        ValueError: bad bounds, decode mode or an empty source.
    """

    def __init__(self, source: ImageSource, resolution: int, scale_max: float = 0.5, scale_min: Optional[float] = None,
                 random_crop: bool = True, xflip: bool = True, seed: int = 0, decode: str = "fast",
                 oversampling: float = DEFAULT_OVERSAMPLING):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if not oversampling >= 1:
            raise ValueError(f"oversampling must be >= 1, got {oversampling}")
        if not 0 < scale_max <= 1:
            raise ValueError(f"scale_max must be in (0, 1], got {scale_max}")
        if scale_min is not None and not 0 < scale_min <= scale_max:
            raise ValueError(f"scale_min must be in (0, scale_max], got {scale_min}")
        if len(source) == 0:
            raise ValueError(f"{source.path}: no usable images ({len(source.listing.bad)} skipped)")
        self.source, self.resolution = source, resolution
        self.scale_max, self.scale_min = scale_max, scale_min
        self.random_crop, self.xflip, self.seed = random_crop, xflip, seed
        self.decode, self.oversampling = decode, float(oversampling)

    def __len__(self) -> int:
        return len(self.source)

    def size_bounds(self, side: int) -> tuple:
        """(lo, hi) of the canvas size for a square of `side` pixels; lo == hi == side when it is too small."""
        p = self.resolution
        lo = p / self.scale_max
        hi = side if self.scale_min is None else min(side, p / self.scale_min)
        if hi < lo:
            return float(side), float(side)
        return lo, hi

    def draw(self, rng: np.random.Generator, width: int, height: int) -> tuple:
        """The random choices for one image of native size width x height:
        (flip, (left, top, side) of the square crop, canvas size n, patch corner x, y)."""
        p = self.resolution
        flip = bool(self.xflip and rng.random() < 0.5)
        side = min(width, height)
        if self.random_crop:
            left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        else:
            left, top = (width - side) // 2, (height - side) // 2
        lo, hi = self.size_bounds(side)
        n = int(round(rng.uniform(lo, hi)))
        n = max(p, min(n, side))   # rounding never upsamples nor goes below one patch
        x, y = int(rng.integers(0, n - p + 1)), int(rng.integers(0, n - p + 1))
        return flip, (left, top, side), n, x, y

    def __getitem__(self, key) -> dict:
        index, draw = key
        rng = sample_rng(self.seed, draw)
        p = self.resolution
        arr, choices, reduction, seg = None, None, 0, None
        if self.decode == "fast":
            name = self.source.listing.names[index]
            data = self.source.read_bytes(name)
            im = Image.open(io.BytesIO(data))
            if im.format in FAST_FORMATS:
                markers = self.source.read_sidecar(name, SIDECAR)      # a prepared set (prepare.py)
                seg = open_segmented(data, markers) if markers is not None else None
                choices = self.draw(rng, *upright_size(im))
                try:
                    crop, box, reduction = fast_region(im, choices, p, self.oversampling, segmented=seg)
                except NotSegmented:   # a stale marker index: the whole file instead
                    seg = None
                    im.close()
                    im = Image.open(io.BytesIO(data))
                    crop, box, reduction = fast_region(im, choices, p, self.oversampling)
                arr = (np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) if box is None
                       else lanczos_float(crop, p, box=box))
            im.close()
        if arr is None:
            choices, arr = self.exact_patch(index, rng)
        flip, crop, n, x, y = choices
        s = p / n
        v = ((x + p / 2) / n * 2 - 1, (y + p / 2) / n * 2 - 1)
        t = torch.tensor([[s, 0, v[0] / 2], [0, s, v[1] / 2], [0, 0, 1]], dtype=torch.float32)
        return {"image": to_model_range(arr), "c": torch.from_numpy(self.source.label(index).copy()),
                "canvas": torch.tensor(float(n)), "box": torch.tensor([float(x), float(y)]),
                "s": torch.tensor(s, dtype=torch.float32), "v": torch.tensor(v, dtype=torch.float32),
                "transform": t, "crop": torch.tensor(crop, dtype=torch.int64), "flip": flip,
                "reduction": torch.tensor(reduction, dtype=torch.int64), "prepared": seg is not None}

    def exact_patch(self, index: int, rng: np.random.Generator) -> tuple:
        """The reference path: the whole image decoded at full resolution (upright RGB), flipped, cropped
        to the patch's footprint and resized (module docstring).

        Args:
            index: image index. rng: the sample's generator (draw() is called on it).

        Returns:
            (draw()'s choices, array (3, p, p) float32 in [0, 255] before clipping).
        """
        p = self.resolution
        img = self.source.load_rgb(index)
        flip, crop, n, x, y = choices = self.draw(rng, *img.size)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        left, top, side = crop
        if n == side:      # native resolution: a plain crop
            region = img.crop((left + x, top + y, left + x + p, top + y + p))
            return choices, np.asarray(region, dtype=np.float32).transpose(2, 0, 1)
        # Resize only the patch's footprint plus the kernel support (3 f pixels): cropping first
        # changes nothing (taps outside the square are excluded either way) and decodes less.
        f = side / n
        fx0, fy0, fx1, fy1 = x * f, y * f, (x + p) * f, (y + p) * f
        m = math.ceil(3 * max(f, 1.0)) + 2
        rx0, ry0 = max(0, math.floor(fx0) - m), max(0, math.floor(fy0) - m)
        rx1, ry1 = min(side, math.ceil(fx1) + m), min(side, math.ceil(fy1) + m)
        region = img.crop((left + rx0, top + ry0, left + rx1, top + ry1))
        return choices, lanczos_float(region, p, box=(fx0 - rx0, fy0 - ry0, fx1 - rx0, fy1 - ry0))


class KeySampler:
    """Keys (index, draw) of an endless, per-epoch shuffled stream, sharded per rank.

    Global sample k (k = 0, 1, ...) is image perm_e[k mod n] of epoch e = k // n (perm_e a permutation
    seeded by (seed, e)). Each step consumes `global_batch` samples; rank r takes the slice
    [r * b, (r + 1) * b) of it (b = global_batch / world). The state is one integer, the position.

    Args:
        n: dataset length. seed: run seed. global_batch: samples per step over all ranks.
        rank, world: this process and the number of processes. start: position to start from.
    """

    def __init__(self, n: int, seed: int, global_batch: int, rank: int = 0, world: int = 1, start: int = 0):
        if global_batch % world:
            raise ValueError(f"batch {global_batch} is not divisible by the number of processes {world}")
        self.n, self.seed, self.global_batch, self.rank, self.world = n, seed, global_batch, rank, world
        self.position = start
        self._perm_epoch, self._perm = None, None

    def key(self, k: int) -> tuple:
        e = k // self.n
        if e != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed & 0xFFFFFFFF, 7919, e]).permutation(self.n)
            self._perm_epoch = e
        return int(self._perm[k % self.n]), int(k)

    def next_keys(self) -> list:
        """This rank's keys of the next step; advances the position by one global batch."""
        b = self.global_batch // self.world
        first = self.position + self.rank * b
        keys = [self.key(k) for k in range(first, first + b)]
        self.position += self.global_batch
        return keys
