"""Real images for the metrics: folder listing and full images at R (fid@R), HR patches (pfid).

Semantics (docs/metrics.md):

- fid@R reads a folder (searched recursively) of files with an image extension Pillow knows. Its
  fingerprint hashes every file's relative path, size and modification time, so the real-statistics
  cache is invalidated when a file is added, removed or rewritten. Images: RGB, square crop (centre,
  or seeded random per image), Lanczos (Pillow) resize to R x R. Images whose square side is < R are
  skipped and reported (the published code asserts).
- pfid's real patches are the training patch sampler's, `anyres_fast.data.HRPatchDataset` addressed
  by `KeySampler` keys (docs/data.md); `RealPatches` quantises them to the detector's uint8 input and
  records (image, canvas N, x, y, flip) per sample; `source_fingerprint` keys the cache.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..data import HRPatchDataset, ImageSource, KeySampler
from ..data.sources import scan_image_files
from ..utils.images import to_rgb8

Image.MAX_IMAGE_PIXELS = 933_120_000        # large HR photos are legitimate input here

@dataclass(frozen=True)
class ImageListing:
    """Files of a dataset folder or zip, sorted, with a fingerprint of (relative path, size, mtime_ns)
    (zip: name, size, date and CRC of each member)."""
    root: str
    files: tuple
    fingerprint: str
    kind: str = "folder"

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.files[i])

    def open(self, i: int) -> Image.Image:
        """Image i fully decoded as RGB (raises OSError/ValueError on unreadable files)."""
        if self.kind == "zip":
            with zipfile.ZipFile(self.root) as z:
                data = z.read(self.files[i])
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return to_rgb8(im)
        return open_rgb(self.path(i))

    def __len__(self) -> int:
        return len(self.files)


def _listing(root: str, kind: str) -> ImageListing:
    """The ImageListing of a folder or zip from data.sources.scan_image_files (the one walker); the
    fingerprint hashes each name with its stamp (folder: size, mtime_ns; zip: size, date, CRC)."""
    entries = scan_image_files(root)
    if not entries:
        raise ValueError(f"{root}: no image files found" + (" in the zip" if kind == "zip" else ""))
    h = hashlib.sha256()
    for name, stamp in entries.items():
        h.update(f"{name}\0{stamp}\n".encode())
    files = tuple(n if kind == "zip" else n.replace("/", os.sep) for n in entries)
    return ImageListing(root=os.path.abspath(root), files=files, fingerprint=h.hexdigest(), kind=kind)


def list_images(root: str) -> ImageListing:
    """List the images of a folder (recursively) or of a .zip archive.

    Args:
        root: the folder or zip file.

    Returns:
        ImageListing with files sorted by relative path (zip: member name).

    Raises:
        FileNotFoundError: root is neither a folder nor a zip file.
        ValueError: it holds no image files.
    """
    if os.path.isfile(root) and zipfile.is_zipfile(root):
        return _listing(root, "zip")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a folder or .zip file")
    return _listing(root, "folder")


def open_rgb(path: str) -> Image.Image:
    """Open an image fully decoded as RGB (raises OSError/ValueError on unreadable files)."""
    with Image.open(path) as im:
        im.load()
        return to_rgb8(im)


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
            im = self.listing.open(i)
        except Exception as exc:        # corrupt or unreadable: skip and report, never crash the run
            return None, i, f"unreadable ({type(exc).__name__})"
        rng = np.random.default_rng([self.seed, i])
        box = square_box(im.width, im.height, self.crop, rng)
        side = box[2] - box[0]
        if side < self.size:
            return None, i, f"square side {side} < {self.size}"
        im = im.crop(box).resize((self.size, self.size), Image.LANCZOS)   # crop first, as published
        return to_chw_uint8(im), i, None


class RealPatches(torch.utils.data.Dataset):
    """pfid's real HR patches: `num` samples of the training patch sampler, as detector input.

    Sample k is item KeySampler(len(source), seed, 1).key(k) = (image, draw k) of
    `anyres_fast.data.HRPatchDataset`: images are cycled, each cycle in a seeded random order, and every
    random choice of sample k comes from (seed, k), so the set is deterministic per index (the cached
    records stay valid) and does not depend on loader workers.

    Items are (uint8 (3, p, p) tensor, record (5,) int64 tensor (image, canvas N, x, y, flip), None),
    or (None, k, reason) when the file cannot be read any more. The float [-1, 1] patch is quantised
    with the fakes' convention x * 127.5 + 128, clamped and truncated to uint8: as the patch is
    a / 127.5 - 1 for the clipped float Lanczos value a in [0, 255], this rounds a to the nearest
    integer (a native-size crop gives back the file's pixels exactly).

    Args:
        dataset: the HRPatchDataset (its source, p, scale bounds, crop mode, flip and seed).
        num: how many patches.
    """

    def __init__(self, dataset: HRPatchDataset, num: int):
        self.dataset, self.num = dataset, int(num)
        self.keys = KeySampler(len(dataset), dataset.seed, global_batch=1)

    def __len__(self) -> int:
        return self.num

    def key(self, k: int) -> tuple:
        """(image index, draw) of sample k."""
        return self.keys.key(k)

    def __getitem__(self, k: int):
        index, draw = self.key(k)
        try:
            item = self.dataset[(index, draw)]
        except Exception as exc:        # a file changed or vanished since the listing: skip and report
            name = self.dataset.source.listing.names[index]
            return None, k, f"{name}: unreadable ({type(exc).__name__})"
        patch = (item["image"] * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        x, y = (int(v) for v in item["box"])
        record = torch.tensor([index, int(item["canvas"]), x, y, int(item["flip"])], dtype=torch.int64)
        return patch, record, None


def source_fingerprint(source: ImageSource) -> str:
    """sha256 of an ImageSource's files: its path, min_size and each file's name, byte size and mtime
    (zip: name, size, date, CRC), usable and skipped alike, so changing, adding or removing a file
    changes it.

    Raises:
        OSError: a listed file vanished since the listing.
    """
    h = hashlib.sha256(f"{source.path}\0{source.kind}\0{source.min_size}\n".encode())
    names = sorted(list(source.listing.names) + [b.name for b in source.listing.bad])
    if source.kind == "zip":
        with zipfile.ZipFile(source.path) as z:
            infos = {i.filename: i for i in z.infolist()}
        stamps = [(infos[n].file_size, tuple(infos[n].date_time), infos[n].CRC) for n in names]
    else:
        stamps = [(st.st_size, st.st_mtime_ns) for st in (os.stat(os.path.join(source.path, n)) for n in names)]
    for name, stamp in zip(names, stamps):
        h.update(f"{name}\0{stamp}\n".encode())
    return h.hexdigest()


def collate_skipping(batch: list) -> tuple:
    """DataLoader collate for (tensor or None, meta, reason) items: (images or None, metas, reasons)."""
    kept = [b for b in batch if b[0] is not None]
    reasons = [(b[1], b[2]) for b in batch if b[0] is None]
    images = torch.stack([b[0] for b in kept]) if kept else None
    metas = [b[1] for b in kept]
    return images, metas, reasons
