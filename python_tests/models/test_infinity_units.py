"""InfinityGenerator's configuration and input checks against their documented rules: the patch-size
formula 2^d ts - 5 (2^d - 1) and its inverse, every refusal of InfinityConfig at its boundary, and the
shape checks of G_S inputs (each dimension on its own, messages naming the argument)."""
from __future__ import annotations

import re

import pytest
import torch

from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator, depth_for

pytestmark = pytest.mark.usefixtures("one_thread")


def formula(d: int, ts: int) -> int:
    """docs/infinitygan.md: G_T maps a z_S of ts latents to 2^d ts - 5 (2^d - 1) pixels."""
    return 2 ** d * ts - 5 * (2 ** d - 1)


def test_depth_for_inverts_the_formula_for_depths_1_to_15_and_no_other():
    assert depth_for(101) == 4                                   # default ts_input is the published 11
    for ts in (11, 12):
        for d in range(1, 16):
            assert depth_for(formula(d, ts), ts) == d
    with pytest.raises(ValueError, match="is not 2"):
        depth_for(formula(16, 11), 11)                           # beyond the searched depths
    with pytest.raises(ValueError, match="is not 2"):
        depth_for(11, 11)                                        # depth 0 (no layer pair) is not a model
    valid = [formula(d, 12) for d in range(1, 8)]
    with pytest.raises(ValueError, match=re.escape(f"patch_size 100 is not 2^d*12 - 5(2^d - 1) for any depth d "
                                                   f"(valid: {valid} ...)")):
        depth_for(100, 12)


def test_config_refusals_at_each_boundary():
    with pytest.raises(ValueError, match=r"^InfinityGenerator: z_dim must be an int >= 1, got True$"):
        InfinityConfig(z_dim=True)
    cfg = InfinityConfig(patch_size=formula(1, 3), ts_input=3, channel_base=1)   # the smallest ts_input
    assert (cfg.ts_input, cfg.depth) == (3, 1)
    with pytest.raises(ValueError, match=r"^InfinityGenerator: ts_input must be >= 3, got 2$"):
        InfinityConfig(patch_size=formula(1, 2), ts_input=2)
    # depth 4: the last pair has channel_base // 2^3 channels, so 8 is the smallest base
    assert InfinityConfig(channel_base=8).channel_base == 8
    with pytest.raises(ValueError, match=r"channel_base 7 leaves no channels in the last of 4 layer pairs .*"
                                         r"use >= 8$"):
        InfinityConfig(channel_base=7)
    for name in ("coord_cut", "coord_hori_occupancy", "mapping_lr_multiplier"):
        for bad in (0, 0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValueError, match=rf"^InfinityGenerator: {name} must be a finite number > 0, "
                                                 rf"got {re.escape(repr(bad))}$"):
                InfinityConfig(**{name: bad})


SMALL = dict(patch_size=21, ts_input=7, z_dim=8, local_dim=4, ss_layers=2, ss_radius=1, mapping_layers=2,
             channel_base=16, channel_max=4)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return InfinityGenerator(InfinityConfig(**SMALL)).eval()


def test_structure_input_checks_name_the_argument_and_each_dimension(G):
    n = G.min_zs_size() + 2 * G.ss_margin                        # smallest z_l: z_S >= min_zs_size
    z_g = torch.randn(2, 8)
    ok = G.structure(z_g, torch.randn(2, 4, n, n))
    assert ok.shape == (2, 4, n - 2 * G.ss_margin, n - 2 * G.ss_margin)
    for h, w in ((n - 1, n), (n, n - 1)):
        with pytest.raises(ValueError, match=re.escape(f"InfinityGenerator: z_l must be at least {n}x{n} "
                                                       f"(z_S >= {G.min_zs_size()}), got {(h, w)}")):
            G.structure(z_g, torch.randn(2, 4, h, w))
    with pytest.raises(ValueError, match=r"^InfinityGenerator: z_g must have shape \(B, 8\), got \(2, 7\)$"):
        G.structure(torch.randn(2, 7), torch.randn(2, 4, n, n))
    with pytest.raises(ValueError, match=r"^InfinityGenerator: z_l must have shape \(2, 4, \*, \*\), got \(2, 3, "):
        G.structure(z_g, torch.randn(2, 3, n, n))
    good = torch.randn(1, 3, n, n + 1)
    assert G.structure(z_g, torch.randn(2, 4, n, n + 1), good).shape[0] == 2    # one coordinate map for the batch
    for bad in (torch.randn(3, n, n + 1), torch.randn(1, 2, n, n + 1), torch.randn(1, 3, n + 1, n + 1),
                torch.randn(1, 3, n, n), torch.randn(3, 3, n, n + 1)):
        with pytest.raises(ValueError, match=re.escape(f"InfinityGenerator: coords must be (B, 3, {n}, {n + 1}), "
                                                       f"got {tuple(bad.shape)}")):
            G.structure(z_g, torch.randn(2, 4, n, n + 1), bad)
