"""Unit tests of anyres_fast.metrics.precision_recall against hand-made point sets and explicit loops.

Definitions (docs/metrics.md "pr@R and ppr", Kynkaanniemi et al. 2019): features rounded to float16,
distances rounded to float16, radius = the (k+1)-th smallest distance to the whole set (the point itself
first), a probe is inside when d(q, m_i) <= r_i for some i; blocks of row_batch x col_batch distances.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anyres_fast.metrics import precision_recall as pr_mod
from anyres_fast.metrics.precision_recall import (_distances, describe, inside_manifold, manifold_radii,
                                                  precision_recall)


def f16(x) -> float:
    return float(np.float16(x))


def brute_radii(features: np.ndarray, k: int) -> list:
    """Explicit loop: float16 features, float64 distances rounded to float16, (k+1)-th smallest."""
    x = features.astype(np.float16).astype(np.float64)
    radii = []
    for a in x:
        d = sorted(f16(np.sqrt(((a - b) ** 2).sum())) for b in x)
        radii.append(d[k])
    return radii


def test_distances_are_float16_rounded_euclidean_in_column_blocks():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((4, 3)).astype(np.float32) * 10
    cols = rng.standard_normal((5, 3)).astype(np.float32) * 10
    got = _distances(torch.from_numpy(rows), torch.from_numpy(cols), col_batch=2)
    assert got.dtype == torch.float16 and tuple(got.shape) == (4, 5)
    want = [[f16(np.sqrt(((r.astype(np.float64) - c) ** 2).sum())) for c in cols] for r in rows]
    np.testing.assert_array_equal(got.to(torch.float32).numpy(), np.array(want, dtype=np.float32))


def test_manifold_radii_round_features_to_float16_first():
    # Around 1000 float16 has a spacing of 0.5: the features become 1000, 1000.5, 1000.5, 1001, 1001, 1002.
    # By hand, 3rd smallest distance (itself first): 1000: [0, .5, .5, ..] -> 0.5; 1000.5: [0, 0, .5] -> 0.5;
    # 1001: [0, 0, .5] -> 0.5; 1002: [0, 1, 1] -> 1. Unrounded features would give 1000 the radius 0.6.
    feats = np.array([[1000.0], [1000.3], [1000.6], [1000.9], [1001.2], [1002.0]], dtype=np.float32)
    want = brute_radii(feats, k=2)
    assert want == [0.5, 0.5, 0.5, 0.5, 0.5, 1.0]
    got = manifold_radii(torch.from_numpy(feats), k=2, row_batch=4, col_batch=3)
    assert got.dtype == torch.float32                        # documented: float32 holding float16 values
    assert got.tolist() == want


def test_manifold_radii_match_brute_force_on_random_sets():
    rng = np.random.default_rng(5)
    feats = (rng.standard_normal((13, 4)) * 3).astype(np.float32)
    for k, rb, cb in ((1, 5, 4), (3, 13, 13), (4, 2, 7)):
        got = manifold_radii(torch.from_numpy(feats), k=k, row_batch=rb, col_batch=cb)
        assert got.tolist() == brute_radii(feats, k)


def test_inside_manifold_is_inclusive_at_the_radius():
    m = torch.tensor([[0.0, 0.0]])
    r = torch.tensor([1.0])
    probes = torch.tensor([[0.0, 1.0], [0.6, 0.8], [0.0, 1.01], [2.0, 0.0]])
    # d = 1, 1 (0.36 + 0.64), 1.01, 2: the ball includes its boundary (d <= r).
    assert inside_manifold(m, r, probes).tolist() == [True, True, False, False]


def test_inside_manifold_rounds_radii_features_and_probes_to_float16():
    # Radius 0.9999 is 1.0 in float16 (spacing 2**-11 just below 1): a probe at distance 1 is inside.
    assert f16(0.9999) == 1.0
    assert inside_manifold(torch.tensor([[0.0]]), torch.tensor([0.9999]), torch.tensor([[1.0]])).tolist() == [True]
    # Manifold point 1000.3 is 1000.5 in float16: a probe at 1000.5 is at distance 0 < 0.1 (unrounded: 0.2).
    assert f16(1000.3) == 1000.5
    assert inside_manifold(torch.tensor([[1000.3]]), torch.tensor([0.1]), torch.tensor([[1000.5]])).tolist() == [True]
    # The same for the probe side.
    assert inside_manifold(torch.tensor([[1000.5]]), torch.tensor([0.1]), torch.tensor([[1000.3]])).tolist() == [True]
    # A distance that float16 rounds down onto the radius counts as inside: 1.0002 -> 1.0.
    assert f16(1.0002) == 1.0
    assert inside_manifold(torch.tensor([[0.0]]), torch.tensor([1.0]), torch.tensor([[1.0002]])).tolist() == [True]


def test_precision_recall_on_hand_made_sets():
    # Real: 0, 1, 2, 3, 4 on a line; k = 1 -> every real radius is 1.
    real = np.arange(5, dtype=np.float32)[:, None]
    fake = np.array([[0.5], [4.9], [5.0], [10.0], [20.0]], dtype=np.float32)
    # Precision: 0.5 (0.5 from 0), 4.9 (0.9 from 4) and 5.0 (exactly 1 from 4) are inside -> 3/5.
    # Fake radii (k = 1, nearest other fake): 0.5 -> 4.4, 4.9 -> 0.1, 5.0 -> 0.1, 10 -> 5, 20 -> 10.
    # Recall: every real point 0..4 is within 4.4 of 0.5 -> 5/5.
    got = precision_recall(real, fake, k=1, row_batch=2, col_batch=3)
    assert got == {"precision": 3 / 5, "recall": 1.0}
    # Swapping the roles swaps the two numbers (precision of A vs B = recall of B vs A).
    swapped = precision_recall(fake, real, k=1)
    assert swapped == {"precision": 1.0, "recall": 3 / 5}


def test_block_sizes_are_used_for_every_distance_block(monkeypatch):
    shapes = []
    real_cdist = torch.cdist

    def spy(a, b, *args, **kw):
        shapes.append((a.shape[0], b.shape[0]))
        return real_cdist(a, b, *args, **kw)

    monkeypatch.setattr(torch, "cdist", spy)
    rng = np.random.default_rng(8)
    real = rng.standard_normal((7, 3)).astype(np.float32)
    fake = rng.standard_normal((6, 3)).astype(np.float32)
    got = precision_recall(real, fake, k=2, row_batch=2, col_batch=3)
    monkeypatch.undo()
    assert got == precision_recall(real, fake, k=2)          # blocking does not change the answer
    assert shapes and all(rows <= 2 and cols <= 3 for rows, cols in shapes)
    # Every pair is computed exactly once per stage: radii of real (7x7), real covering fake (6x7),
    # radii of fake (6x6), fake covering real (7x6).
    assert sum(r * c for r, c in shapes) == 7 * 7 + 6 * 7 + 6 * 6 + 7 * 6


def test_features_of_any_numeric_array_type_are_converted_to_float32():
    rng = np.random.default_rng(9)
    real = rng.standard_normal((12, 3)).astype(np.float32)
    fake = (rng.standard_normal((10, 3)) + 0.3).astype(np.float32)
    want = precision_recall(real, fake, k=2)
    # np.longdouble has no torch dtype: the input is converted to float32 first (docstring: "array").
    assert precision_recall(real.astype(np.longdouble), fake, k=2) == want
    assert precision_recall(real, fake.astype(np.longdouble), k=2) == want
    assert precision_recall(real.tolist(), torch.from_numpy(fake), k=2) == want


def test_shape_errors_name_both_shapes():
    ok = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"expected \(N, D\) features of equal D, got \(5, 3\) and \(5, 4\)"):
        precision_recall(ok, np.zeros((5, 4), dtype=np.float32), k=2)
    with pytest.raises(ValueError, match=r"expected \(N, D\) features of equal D, got \(5, 3, 1\) and \(5, 3\)"):
        precision_recall(np.zeros((5, 3, 1), dtype=np.float32), ok, k=2)
    with pytest.raises(ValueError, match=r"got \(5, 3\) and \(5,\)"):
        precision_recall(ok, np.zeros(5, dtype=np.float32), k=2)
    with pytest.raises(ValueError, match=r"got \(6, 3, 3\) and \(6, 3\)"):
        precision_recall(np.zeros((6, 3, 3), dtype=np.float32), np.zeros((6, 3), dtype=np.float32), k=2)


def test_set_size_check_counts_items_not_feature_width():
    rng = np.random.default_rng(10)
    # Width 2 <= k = 3 is fine: the check is on the number of items.
    real = rng.standard_normal((10, 2)).astype(np.float32)
    fake = rng.standard_normal((10, 2)).astype(np.float32)
    got = precision_recall(real, fake, k=3)
    assert 0 <= got["precision"] <= 1 and 0 <= got["recall"] <= 1
    with pytest.raises(ValueError, match=r"each set needs more than k = 3 items, got 10 real and 3 generated"):
        precision_recall(rng.standard_normal((10, 5)), rng.standard_normal((3, 5)), k=3)
    with pytest.raises(ValueError, match=r"more than k = 4 items, got 4 real and 9 generated"):
        precision_recall(rng.standard_normal((4, 8)), rng.standard_normal((9, 8)), k=4)


def test_describe_records_the_documented_settings():
    # Module docstring / docs/metrics.md: k = 3, 10,000 x 10,000 blocks, float16 features, float32
    # distances rounded to float16.
    assert describe() == {"nhood_size": 3, "row_batch": 10_000, "col_batch": 10_000, "feature_dtype": "float16",
                          "distance_dtype": "float32 rounded to float16"}
    d = describe(2, 5, 7, extra={"max_real": 100})
    assert d == {"nhood_size": 2, "row_batch": 5, "col_batch": 7, "feature_dtype": "float16",
                 "distance_dtype": "float32 rounded to float16", "max_real": 100}
    assert pr_mod.NHOOD_SIZE == 3
