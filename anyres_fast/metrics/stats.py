"""Feature statistics and the distances computed from them: Fréchet distance (FID) and KID.

Both follow the definitions the published numbers use (StyleGAN2/3's metric code, see docs/metrics.md):
- mean and covariance are accumulated in float64 over all items; the covariance divides by n (not n-1);
- FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2));
- KID = unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
  `num_subsets` random subsets of m = min(n_real, n_fake, max_subset_size) items of each set.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class FeatureStats:
    """Running mean/covariance of feature vectors (float64 sums), optionally keeping every vector.

    Args:
        keep_features: also keep all vectors (float32), needed for KID.
        max_items: stop accepting vectors after this many (extra rows of a batch are dropped).
    """

    def __init__(self, keep_features: bool = False, max_items: Optional[int] = None):
        self.keep_features = keep_features
        self.max_items = max_items
        self.num_items = 0
        self.num_features: Optional[int] = None
        self._sum: Optional[np.ndarray] = None
        self._outer: Optional[np.ndarray] = None
        self._features: list = []

    def is_full(self) -> bool:
        """True when max_items vectors have been added."""
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x) -> None:
        """Add a batch of vectors.

        Args:
            x: (B, D) array or tensor of features (any float dtype; converted to float32 like the
               published code, then summed in float64).

        Raises:
            ValueError: x is not 2-D, its width differs from earlier batches, or it has NaN/inf.
        """
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"FeatureStats.append: expected (B, D) features, got shape {x.shape}")
        if self.num_features is None:
            self.num_features = x.shape[1]
            self._sum = np.zeros(x.shape[1], dtype=np.float64)
            self._outer = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        elif x.shape[1] != self.num_features:
            raise ValueError(f"FeatureStats.append: expected {self.num_features} features, got {x.shape[1]}")
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if x.shape[0] == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError("FeatureStats.append: the detector returned NaN or inf features")
        x64 = x.astype(np.float64)
        self._sum += x64.sum(axis=0)
        self._outer += x64.T @ x64
        self.num_items += x.shape[0]
        if self.keep_features:
            self._features.append(x)

    def mean_cov(self) -> tuple:
        """(mean (D,), covariance (D, D)) in float64; the covariance divides by n.

        Raises:
            ValueError: no vectors were added.
        """
        if not self.num_items:
            raise ValueError("FeatureStats: no features were added")
        mean = self._sum / self.num_items
        cov = self._outer / self.num_items - np.outer(mean, mean)
        return mean, (cov + cov.T) / 2

    def features(self) -> np.ndarray:
        """All vectors (N, D) float32.

        Raises:
            ValueError: keep_features was False.
        """
        if not self.keep_features:
            raise ValueError("FeatureStats: features were not kept (keep_features=False)")
        if not self._features:
            return np.zeros((0, self.num_features or 0), dtype=np.float32)
        return np.concatenate(self._features, axis=0)

    def to_arrays(self) -> dict:
        """The state as plain arrays (for np.savez)."""
        mean, cov = self.mean_cov()
        out = {"mean": mean, "cov": cov, "num_items": np.int64(self.num_items)}
        if self.keep_features:
            out["features"] = self.features()
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "FeatureStats":
        """Inverse of to_arrays (exact: the raw sums are rebuilt from mean and covariance)."""
        n = int(arrays["num_items"])
        mean, cov = np.asarray(arrays["mean"], np.float64), np.asarray(arrays["cov"], np.float64)
        obj = cls(keep_features="features" in arrays)
        obj.num_items, obj.num_features = n, mean.shape[0]
        obj._sum = mean * n
        obj._outer = (cov + np.outer(mean, mean)) * n
        if obj.keep_features:
            obj._features = [np.asarray(arrays["features"], np.float32)]
        return obj


def _clip_roundoff(w: np.ndarray) -> np.ndarray:
    # Eigenvalues below d * eps * max are round-off of exact zeros; their square roots (~1e-8 relative
    # each) would otherwise bias tr(sqrt(.)) for singular covariances.
    tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(_clip_roundoff(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2) (same eigenvalues as S1 S2), both via `eigh`, with eigenvalues below the
    round-off level (d * eps * largest) set to 0. Unlike `scipy.linalg.sqrtm(S1 @ S2)` this needs no added eps, never
    returns complex values and stays exact for singular covariances (fewer samples than dimensions).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric positive semi-definite covariances.

    Returns:
        The distance as a Python float (>= 0 up to round-off).

    Raises:
        ValueError: shapes disagree, or an input has NaN/inf.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes disagree: mu1 {mu1.shape}, sigma1 {s1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {s2.shape}")
    for name, a in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"frechet_distance: {name} has NaN or inf")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(_clip_roundoff(eig)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def kid_subsets(num_fake: int, num_real: int, num_subsets: int, max_subset_size: int, seed: int) -> list:
    """The random subsets KID averages over, in the order the published code draws them.

    Args:
        num_fake, num_real: sizes of the two feature sets.
        num_subsets: how many subset pairs.
        max_subset_size: upper bound on the subset size m.
        seed: seed of the numpy Generator the indices are drawn from.

    Returns:
        A list of (fake_indices, real_indices) pairs of int arrays of length
        m = min(num_fake, num_real, max_subset_size), drawn without replacement (fake first).
    """
    m = min(num_fake, num_real, max_subset_size)
    rng = np.random.default_rng(seed)
    return [(rng.choice(num_fake, m, replace=False), rng.choice(num_real, m, replace=False))
            for _ in range(num_subsets)]


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> tuple:
    """KID: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

    Per subset pair (x = fake subset, y = real subset, m items each):
        MMD^2 = sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] / (m (m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2.

    Args:
        real, fake: (N, D) feature arrays (N >= 2 each).
        num_subsets: number of subset pairs (published: 100).
        max_subset_size: subset size cap (published: 1000).
        seed: seed for the subset draws (see kid_subsets).

    Returns:
        (mean, std) of the per-subset MMD^2 values, Python floats; std is 0 for one subset.

    Raises:
        ValueError: shapes disagree or fewer than 2 items.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"kernel_inception_distance: expected (N, D) arrays with equal D, got "
                         f"{real.shape} and {fake.shape}")
    if min(real.shape[0], fake.shape[0], max_subset_size) < 2 or num_subsets < 1:
        raise ValueError("kernel_inception_distance: needs >= 2 items per set and num_subsets >= 1")
    d = real.shape[1]
    values = []
    for fi, ri in kid_subsets(fake.shape[0], real.shape[0], num_subsets, max_subset_size, seed):
        x, y = fake[fi], real[ri]
        m = x.shape[0]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.sum() / (m * m))
    values = np.asarray(values)
    return float(values.mean()), float(values.std())
