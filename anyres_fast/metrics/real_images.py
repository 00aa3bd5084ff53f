"""Minimal real-image reading for the metrics: folder listing, full images at R, HR patches with (s, v).

Self-contained stand-in for `anyres_fast.data` (listing + HR patch sampler), written so the metrics do
not wait for it; to be replaced by that package's sampler once it is merged. Semantics (docs/metrics.md):

- A dataset is a folder (searched recursively) of files with an image extension Pillow knows. Its
  fingerprint hashes every file's relative path, size and modification time, so the real-statistics
  cache is invalidated when a file is added, removed or rewritten.
- Full images for fid@R: RGB, square crop (centre, or seeded random per image), Lanczos (Pillow) resize
  to R x R. Images whose square side is < R are skipped and reported (the published code asserts).
- HR patches for pfid (p = patch size): RGB, square crop of side L, target size drawn uniformly in
  [p / scale_max, min(L, p / scale_min)] (scale_min None: up to L), rounded, Lanczos resize of the whole
  square to that size N, random p x p crop at integer (x, y). Recorded: N and (x, y), from which
  s = p / N and v = ((x + p/2) / N * 2 - 1, (y + p/2) / N * 2 - 1). Images with L < p / scale_max
  cannot give a patch and are skipped and reported.
- Every random draw of sample i comes from a numpy Generator seeded with (seed, i), so samples do not
  depend on worker scheduling and a cached set of patch records is reproducible.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

Image.MAX_IMAGE_PIXELS = 933_120_000        # large HR photos are legitimate input here

SKIP_NAMES = {".DS_Store"}


def image_extensions() -> set:
    """Lower-case file extensions (with dot) that Pillow can open."""
    return {ext.lower() for ext in Image.registered_extensions()}


@dataclass(frozen=True)
class ImageListing:
    """Files of a dataset folder, sorted, with a fingerprint of (relative path, size, mtime_ns)."""
    root: str
    files: tuple
    fingerprint: str

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.files[i])

    def __len__(self) -> int:
        return len(self.files)


def list_images(root: str) -> ImageListing:
    """List the images of a folder (recursively).

    Args:
        root: the folder.

    Returns:
        ImageListing with files sorted by relative path.

    Raises:
        FileNotFoundError: root is not a folder.
        ValueError: the folder holds no image files.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a folder")
    exts = image_extensions()
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name in SKIP_NAMES or name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            entries.append((os.path.relpath(full, root), st.st_size, st.st_mtime_ns))
    if not entries:
        raise ValueError(f"{root}: no image files found")
    entries.sort()
    h = hashlib.sha256()
    for rel, size, mtime in entries:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return ImageListing(root=os.path.abspath(root), files=tuple(e[0] for e in entries), fingerprint=h.hexdigest())


def open_rgb(path: str) -> Image.Image:
    """Open an image fully decoded as RGB (raises OSError/ValueError on unreadable files)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def square_box(width: int, height: int, crop: str, rng: Optional[np.random.Generator]) -> tuple:
    """(left, top, right, bottom) of the largest square: centred, or at a random offset."""
    side = min(width, height)
    if crop == "center":
        x0, y0 = (width - side) // 2, (height - side) // 2
    elif crop == "random":
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
    else:
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    return x0, y0, x0 + side, y0 + side


def to_chw_uint8(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class FullImages(torch.utils.data.Dataset):
    """Images of a listing, square-cropped and Lanczos-resized to size x size (fid@R reals).

    Items are (uint8 (3, size, size) tensor or None, index, skip reason or None).

    Args:
        listing: the dataset.
        size: output side R.
        crop: "center" or "random" (seeded per image with (seed, index)).
        seed: seed for random crops.
        indices: which files (default all).
    """

    def __init__(self, listing: ImageListing, size: int, crop: str = "center", seed: int = 0,
                 indices: Optional[list] = None):
        self.listing, self.size, self.crop, self.seed = listing, size, crop, seed
        self.indices = list(range(len(listing))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            im = open_rgb(self.listing.path(i))
        except Exception as exc:        # corrupt or unreadable: skip and report, never crash the run
            return None, i, f"unreadable ({type(exc).__name__})"
        rng = np.random.default_rng([self.seed, i])
        box = square_box(im.width, im.height, self.crop, rng)
        side = box[2] - box[0]
        if side < self.size:
            return None, i, f"square side {side} < {self.size}"
        im = im.crop(box).resize((self.size, self.size), Image.LANCZOS)   # crop first, as published
        return to_chw_uint8(im), i, None


@dataclass(frozen=True)
class PatchRecord:
    """Where a p x p real patch came from: canvas size N (the resized square) and top-left (x, y)."""
    image: int
    canvas: int
    x: int
    y: int
    flip: bool

    def s_v(self, patch: int) -> tuple:
        """(s, (v_x, v_y)): s = p / N, v = patch centre in [-1, 1]^2 canvas units."""
        n = self.canvas
        return patch / n, ((self.x + patch / 2) / n * 2 - 1, (self.y + patch / 2) / n * 2 - 1)


class PatchSampler(torch.utils.data.Dataset):
    """HR patches with their (s, v), for pfid (module docstring has the exact semantics).

    Items are (uint8 (3, p, p) tensor or None, PatchRecord as a (5,) int64 tensor, skip reason or None).

    Args:
        listing: the HR dataset.
        patch: p.
        num: how many patches (the dataset's length; images are cycled in seeded random order).
        scale_max: largest s = p/N allowed (default 1: the smallest size is p).
        scale_min: smallest s (None: native size, the published `max0`).
        xflip: random horizontal flips (as the training flag).
        crop: square crop "center" or "random".
        seed: seed of every draw.

    Raises:
        ValueError: bad bounds, or no image is large enough.
    """

    def __init__(self, listing: ImageListing, patch: int, num: int, scale_max: float = 1.0,
                 scale_min: Optional[float] = None, xflip: bool = False, crop: str = "center", seed: int = 0):
        if not 0 < scale_max <= 1 or (scale_min is not None and not 0 < scale_min <= scale_max):
            raise ValueError(f"PatchSampler: need 0 < scale_min <= scale_max <= 1, got {scale_min}, {scale_max}")
        self.listing, self.patch, self.num = listing, patch, num
        self.scale_max, self.scale_min, self.xflip, self.crop, self.seed = scale_max, scale_min, xflip, crop, seed
        self.min_side = int(np.ceil(patch / scale_max - 1e-9))
        self.usable, self.skipped = [], []
        for i in range(len(listing)):
            try:
                with Image.open(listing.path(i)) as im:
                    side = min(im.size)
            except Exception as exc:
                self.skipped.append((listing.files[i], f"unreadable ({type(exc).__name__})"))
                continue
            if side < self.min_side:
                self.skipped.append((listing.files[i], f"square side {side} < p/scale_max = {self.min_side}"))
            else:
                self.usable.append(i)
        if not self.usable:
            raise ValueError(f"{listing.root}: no image has a square side >= p/scale_max = {self.min_side}")

    def __len__(self) -> int:
        return self.num

    def image_for(self, k: int) -> int:
        """Image of sample k: cycles through all usable images, each cycle in a seeded random order."""
        n = len(self.usable)
        order = np.random.default_rng([self.seed, 1, k // n]).permutation(n)
        return self.usable[int(order[k % n])]

    def draw(self, k: int, width: int, height: int) -> tuple:
        """(square box, PatchRecord) of sample k for an image of this size (no pixels touched)."""
        rng = np.random.default_rng([self.seed, 2, k])
        box = square_box(width, height, self.crop, rng)
        side = box[2] - box[0]
        lo = self.patch / self.scale_max
        hi = side if self.scale_min is None else min(side, self.patch / self.scale_min)
        canvas = int(round(rng.uniform(lo, hi))) if hi > lo else int(round(lo))
        canvas = min(max(canvas, self.patch), side)
        x = int(rng.integers(0, canvas - self.patch + 1))
        y = int(rng.integers(0, canvas - self.patch + 1))
        flip = bool(self.xflip and rng.random() < 0.5)
        return box, PatchRecord(image=self.image_for(k), canvas=canvas, x=x, y=y, flip=flip)

    def __getitem__(self, k: int):
        i = self.image_for(k)
        try:
            im = open_rgb(self.listing.path(i))
        except Exception as exc:
            return None, torch.full((5,), -1, dtype=torch.int64), f"{self.listing.files[i]}: unreadable ({type(exc).__name__})"
        box, rec = self.draw(k, im.width, im.height)
        im = im.crop(box).resize((rec.canvas, rec.canvas), Image.LANCZOS)
        im = im.crop((rec.x, rec.y, rec.x + self.patch, rec.y + self.patch))
        if rec.flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        meta = torch.tensor([rec.image, rec.canvas, rec.x, rec.y, int(rec.flip)], dtype=torch.int64)
        return to_chw_uint8(im), meta, None


def collate_skipping(batch: list) -> tuple:
    """DataLoader collate for (tensor or None, meta, reason) items: (images or None, metas, reasons)."""
    kept = [b for b in batch if b[0] is not None]
    reasons = [(b[1], b[2]) for b in batch if b[0] is None]
    images = torch.stack([b[0] for b in kept]) if kept else None
    metas = [b[1] for b in kept]
    return images, metas, reasons


def record_from_meta(meta) -> PatchRecord:
    """PatchRecord from the (5,) int tensor/array a PatchSampler item carries."""
    image, canvas, x, y, flip = (int(v) for v in meta)
    return PatchRecord(image=image, canvas=canvas, x=x, y=y, flip=bool(flip))
