"""Improved precision and recall (Kynkäänniemi et al. 2019) on VGG16 features: pr@R and ppr.

Definition (k-NN manifolds, k = 3 as StyleGAN's `pr50k3`):
- the manifold of a set A is the union of balls around each a_i with radius r_i = the distance from a_i
  to its k-th nearest neighbour in A (a_i itself, at distance 0, not counted: the (k+1)-th smallest
  of its distances to all of A);
- precision = the fraction of generated features inside the real manifold;
  recall = the fraction of real features inside the generated manifold;
- a probe q is inside when d(q, a_i) <= r_i for some i.

As in the published code the features are rounded to float16 before any distance, distances are
computed in blocks of `row_batch` x `col_batch` (10,000 x 10,000) and rounded to float16, and each
radius is the float16 rounding of the (k+1)-th smallest distance. Distances are computed here in
float32 from the float16 features (the published code runs cdist in float16 on the GPU; ours also runs
on a CPU, where cdist has no float16).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

NHOOD_SIZE = 3
ROW_BATCH = 10_000
COL_BATCH = 10_000


def _distances(rows: torch.Tensor, cols: torch.Tensor, col_batch: int) -> torch.Tensor:
    """Euclidean distances (len(rows), len(cols)), float16-rounded, computed col_batch columns at a time."""
    out = [torch.cdist(rows, cols[start:start + col_batch]).to(torch.float16)
           for start in range(0, cols.shape[0], col_batch)]
    return torch.cat(out, dim=1)


def manifold_radii(features: torch.Tensor, k: int = NHOOD_SIZE, row_batch: int = ROW_BATCH,
                   col_batch: int = COL_BATCH) -> torch.Tensor:
    """Radius of each point's ball: distance to its k-th nearest other point (float16 values).

    Args:
        features: (N, D) float tensor (rounded to float16 first, as published); N > k.
        k: neighbourhood size.
        row_batch, col_batch: block sizes of the distance computation.

    Returns:
        (N,) float32 tensor holding float16-representable radii.
    """
    x = features.to(torch.float16).to(torch.float32)
    radii = []
    for start in range(0, x.shape[0], row_batch):
        d = _distances(x[start:start + row_batch], x, col_batch).to(torch.float32)
        radii.append(d.kthvalue(k + 1, dim=1).values.to(torch.float16))
    return torch.cat(radii).to(torch.float32)


def inside_manifold(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor,
                    row_batch: int = ROW_BATCH, col_batch: int = COL_BATCH) -> torch.Tensor:
    """Which probes lie in at least one ball (d(q, m_i) <= r_i).

    Args:
        manifold: (N, D) features defining the balls.
        radii: (N,) radii from manifold_radii.
        probes: (M, D) features to test.
        row_batch, col_batch: block sizes.

    Returns:
        (M,) bool tensor.
    """
    m = manifold.to(torch.float16).to(torch.float32)
    q = probes.to(torch.float16).to(torch.float32)
    r = radii.to(torch.float16).to(torch.float32)
    hits = []
    for start in range(0, q.shape[0], row_batch):
        d = _distances(q[start:start + row_batch], m, col_batch).to(torch.float32)
        hits.append((d <= r.unsqueeze(0)).any(dim=1))
    return torch.cat(hits)


def precision_recall(real, fake, k: int = NHOOD_SIZE, row_batch: int = ROW_BATCH,
                     col_batch: int = COL_BATCH) -> dict:
    """Improved precision and recall of generated features against real ones.

    Args:
        real: (N_r, D) real features (array or tensor), N_r > k.
        fake: (N_f, D) generated features, N_f > k.
        k: neighbourhood size (published: 3).
        row_batch, col_batch: block sizes of the distance computation (published: 10,000 each).

    Returns:
        {"precision": float, "recall": float}.

    Raises:
        ValueError: not 2-D, different widths, or a set with k or fewer items.
    """
    real = torch.as_tensor(np.asarray(real, dtype=np.float32))
    fake = torch.as_tensor(np.asarray(fake, dtype=np.float32))
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall: expected (N, D) features of equal D, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision_recall: each set needs more than k = {k} items, got {real.shape[0]} real "
                         f"and {fake.shape[0]} generated")
    out = {}
    for name, manifold, probes in (("precision", real, fake), ("recall", fake, real)):
        radii = manifold_radii(manifold, k, row_batch, col_batch)
        hits = inside_manifold(manifold, radii, probes, row_batch, col_batch)
        out[name] = int(hits.sum()) / hits.numel()       # exact fraction (the published float32 mean rounds)
    return out


def describe(k: int = NHOOD_SIZE, row_batch: int = ROW_BATCH, col_batch: int = COL_BATCH,
             extra: Optional[dict] = None) -> dict:
    """The settings recorded with a precision/recall result."""
    d = {"nhood_size": k, "row_batch": row_batch, "col_batch": col_batch, "feature_dtype": "float16",
         "distance_dtype": "float32 rounded to float16"}
    d.update(extra or {})
    return d
