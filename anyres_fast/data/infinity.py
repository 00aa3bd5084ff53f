"""InfinityGAN training data: full images of the training size, p x p patches and their coordinates.

What the published InfinityGAN trains on (docs/infinitygan_training.md):
- reals: a square centre crop of each image, Lanczos-resized to the "full" size F (197 for the
  101-pixel patch), x-flipped with probability 1/2, then a random p x p crop; the crop's vertical
  offset y in [0, F - p] is the real's vertical coordinate label 2 y / (F - p) - 1 in [-1, 1] that
  the discriminator's auxiliary head regresses;
- fakes: their coordinate windows (vertical offset in [0, V) latent rows, horizontal offset that wraps
  around the period, +-half-step jitter, label 2 r / (V - 1) - 1) are drawn by the generator's
  `InfinityGenerator.training_coords`, since the coordinate system belongs to the model.

Randomness follows the rest of anyres_fast.data: a sample is addressed by a key (index, draw) and all
its random choices come from `sample_rng(seed, draw)`, so samples do not depend on workers, ranks or
prefetching and a resumed run sees the same stream. Imports no model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from PIL import Image

from .datasets import lanczos_float, sample_rng, square_crop, to_model_range
from .sources import ImageSource

# Sizes of the published models: patch -> full training image (the 101 model trains on 197 images).
FULL_SIZE = {101: 197, 197: 389, 389: 773}


def full_size_for(patch: int) -> int:
    """Full training-image size of a patch size: the published table, else about 2p - 5.

    Args:
        patch: p.

    Returns:
        F >= p.
    """
    return FULL_SIZE.get(int(patch), 2 * int(patch) - 5 if patch > 8 else 2 * int(patch))


def vertical_label(offset: float, span: float) -> float:
    """Vertical coordinate label in [-1, 1] of a window at `offset` out of [0, span] (0 when span is 0)."""
    return 0.0 if span <= 0 else 2.0 * float(offset) / float(span) - 1.0


def crop_patch(full: np.ndarray, patch: int, rng: np.random.Generator) -> tuple:
    """A random p x p crop of a (C, F, F) array and its vertical label.

    Args:
        full: (C, F, F) array (any dtype).
        patch: p <= F.
        rng: the sample's generator.

    Returns:
        (patch (C, p, p) array, top, left, label) with label = vertical_label(top, F - p).

    Raises:
        ValueError: p > F.
    """
    f = full.shape[-1]
    if patch > f or patch > full.shape[-2]:
        raise ValueError(f"crop_patch: patch {patch} larger than the image {tuple(full.shape[-2:])}")
    top = int(rng.integers(0, full.shape[-2] - patch + 1))
    left = int(rng.integers(0, f - patch + 1))
    return full[:, top:top + patch, left:left + patch], top, left, vertical_label(top, full.shape[-2] - patch)


class InfinityPatchDataset(torch.utils.data.Dataset):
    """Reals for InfinityGAN: p x p crops of full images of size F and their vertical label.

    Item key (index, draw) -> dict:
        image (3, p, p) float32 in [-1, 1]; coord_v: float32 scalar, the vertical label in [-1, 1];
        box: (2,) int64 (left, top) of the patch in the F x F image; flip: bool.

    Args:
        source: an ImageSource (short sides >= p; smaller ones are upsampled to F like the rest).
        patch: p (101, 197, 389 for the published models; any size >= 8 works).
        full: F (None: `full_size_for(patch)`).
        xflip: flip with probability 1/2.
        seed: run seed of the counter-based randomness.

    Raises:
        ValueError: F < p or an empty source.
    """

    def __init__(self, source: ImageSource, patch: int, full: Optional[int] = None, xflip: bool = True,
                 seed: int = 0):
        full = full_size_for(patch) if full is None else int(full)
        if full < patch:
            raise ValueError(f"InfinityPatchDataset: full size {full} is smaller than the patch {patch}")
        if len(source) == 0:
            raise ValueError(f"{source.path}: no usable images ({len(source.listing.bad)} skipped)")
        self.source, self.patch, self.full, self.xflip, self.seed = source, int(patch), full, xflip, seed

    def __len__(self) -> int:
        return len(self.source)

    def full_image(self, index: int, flip: bool = False) -> np.ndarray:
        """(3, F, F) float32 in [0, 255]: centred square crop, Lanczos resize to F, optional flip."""
        sq, _ = square_crop(self.source.load_rgb(index), None)
        if flip:
            sq = sq.transpose(Image.FLIP_LEFT_RIGHT)
        if sq.size[0] == self.full:
            return np.asarray(sq, dtype=np.float32).transpose(2, 0, 1)
        return lanczos_float(sq, self.full)

    def __getitem__(self, key) -> dict:
        index, draw = key
        rng = sample_rng(self.seed, draw)
        flip = bool(self.xflip and rng.random() < 0.5)
        arr, top, left, label = crop_patch(self.full_image(index, flip), self.patch, rng)
        return {"image": to_model_range(arr), "coord_v": torch.tensor(label, dtype=torch.float32),
                "box": torch.tensor([left, top], dtype=torch.int64), "flip": flip}
