"""InfinityGenerator's configuration and input checks against their documented rules: the patch-size
formula 2^d ts - 5 (2^d - 1) and its inverse, every refusal of InfinityConfig at its boundary, and the
shape checks of G_S inputs (each dimension on its own, messages naming the argument)."""
from __future__ import annotations

import re

import pytest
import torch

from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator, depth_for
from anyres_fast.train.infinity_recipe import TINY_G

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


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return InfinityGenerator(InfinityConfig(**TINY_G)).eval()


def test_structure_input_checks_name_the_argument_and_each_dimension(G):
    n = G.min_zs_size() + 2 * G.ss_margin                        # smallest z_l: z_S >= min_zs_size
    zd, ld = G.z_dim, G.local_dim
    z_g = torch.randn(2, zd)
    ok = G.structure(z_g, torch.randn(2, ld, n, n))
    assert ok.shape == (2, ld, n - 2 * G.ss_margin, n - 2 * G.ss_margin)
    for h, w in ((n - 1, n), (n, n - 1)):
        with pytest.raises(ValueError, match=re.escape(f"InfinityGenerator: z_l must be at least {n}x{n} "
                                                       f"(z_S >= {G.min_zs_size()}), got {(h, w)}")):
            G.structure(z_g, torch.randn(2, ld, h, w))
    with pytest.raises(ValueError, match=rf"^InfinityGenerator: z_g must have shape \(B, {zd}\), got \(2, {zd - 1}\)$"):
        G.structure(torch.randn(2, zd - 1), torch.randn(2, ld, n, n))
    with pytest.raises(ValueError, match=rf"^InfinityGenerator: z_l must have shape \(2, {ld}, \*, \*\), got \(2, {ld - 1}, "):
        G.structure(z_g, torch.randn(2, ld - 1, n, n))
    good = torch.randn(1, 3, n, n + 1)
    assert G.structure(z_g, torch.randn(2, ld, n, n + 1), good).shape[0] == 2    # one coordinate map for the batch
    for bad in (torch.randn(3, n, n + 1), torch.randn(1, 2, n, n + 1), torch.randn(1, 3, n + 1, n + 1),
                torch.randn(1, 3, n, n), torch.randn(3, 3, n, n + 1)):
        with pytest.raises(ValueError, match=re.escape(f"InfinityGenerator: coords must be (B, 3, {n}, {n + 1}), "
                                                       f"got {tuple(bad.shape)}")):
            G.structure(z_g, torch.randn(2, ld, n, n + 1), bad)


ROW = re.compile(r"^(\S+)\s+(.+?)\s+(\d+)\s+(\d+)\s+(\d+)->(\d+)\s+([\d,]+)$")


def test_schedule_table_rows_are_the_layers_a_training_patch_passes_through(G):
    # Record every layer's input/output size and channels in one real forward of a training patch.
    seen = {}

    def hook(name):
        def record(module, args, out):
            seen[name] = (args[0].shape[-1], out.shape[-1], args[0].shape[1], out.shape[1])
        return record

    mods = {f"G_S.{i}": b for i, b in enumerate(G.structure_synthesizer.blocks)}
    mods.update({f"G_T.conv{s.index}": c for s, c in zip(G.texture_synthesizer.specs, G.texture_synthesizer.convs)})
    mods.update({f"G_T.torgb{p}": t for p, t in enumerate(G.texture_synthesizer.torgbs)})
    handles = [m.register_forward_hook(hook(name)) for name, m in mods.items()]
    try:
        n = G.config.zl_size
        with torch.no_grad():
            img = G(torch.randn(1, G.z_dim), torch.randn(1, G.local_dim, n, n))
    finally:
        for h in handles:
            h.remove()
    assert img.shape[-1] == G.patch_size
    lines = G.schedule_table().splitlines()
    assert formula(2, 11) == G.patch_size == 29                           # TINY_G: depth 2, ts_input 11
    assert lines[0] == (f"InfinityGenerator: patch 29 = 2^2 * 11 - 5 * (2^2 - 1); z_g 16, z_l 8 x "
                        f"{11 + 2 * 2 * 1}^2; W+ {G.num_ws}")                # z_l = ts + 2 layers x radius 1 per side
    rows = {m.group(1): m.groups()[1:] for m in map(ROW.match, lines[2:]) if m}
    assert set(rows) == set(mods)
    for name, (kind, n_in, n_out, c_in, c_out, params) in rows.items():
        size_in, size_out, ch_in, ch_out = seen[name]
        if name.startswith("G_T.torgb"):
            assert (int(n_in), int(n_out)) == (size_in, size_in)          # 1x1: the size it reads
            assert int(c_out) == 3 and int(c_in) == ch_in
        else:
            coords = 3 if name.startswith("G_S") else 0                   # G_S concatenates the 3 coordinates
            assert (int(n_in), int(n_out), int(c_in), int(c_out)) == (size_in, size_out, ch_in + coords, ch_out), name
        assert int(params.replace(",", "")) == sum(p.numel() for p in mods[name].parameters()), name
        assert kind.startswith({"G_S": "valid 7x7", "G_T.c": "up 3x3" if size_out > size_in else "valid 3x3",
                                "G_T.t": "1x1, W+ "}[name[:3] if name.startswith("G_S") else name[:5]]), (name, kind)
    total = sum(p.numel() for p in G.parameters())
    assert lines[-1].endswith(f"total {total:,} ({total / 1e6:.2f}M)")
    mapping = sum(p.numel() for p in G.mapping_network.parameters())
    assert lines[-2] == f"mapping: 2 x fc 16, {mapping:,} params"
