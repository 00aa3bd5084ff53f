"""The inversion memory estimate (used to refuse a photo too large at once) against what autograd really
keeps for a whole region's step, measured independently on a larger region than the estimate's references."""
from __future__ import annotations

import pytest
import torch

from anyres_fast.models import infinity_inversion as inv
from anyres_fast.models.infinity import InfinityGenerator
from anyres_fast.models.perceptual import build_lpips


@pytest.mark.parametrize("lpips", [False, True])
def test_estimate_matches_the_saved_tensors_of_a_large_region(lpips, one_thread):
    torch.manual_seed(0)
    G = InfinityGenerator(patch_size=29, z_dim=8, local_dim=2, mapping_layers=1, channel_base=64,
                          channel_max=8).eval().requires_grad_(False)
    lp = build_lpips("random", torch.device("cpu")) if lpips else None
    canvas = inv.plan_canvas(G, 150, 260, [(10, 0, 130, 220)])
    est = inv.estimate_inversion_bytes(G, canvas, lpips_net=lp)

    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    z_l, noises, coords = inv.canvas_inputs(G, canvas, 0)
    z_g = torch.zeros(1, G.z_dim, requires_grad=True)
    ws = torch.zeros(1, G.num_ws, G.z_dim, requires_grad=True)
    z_l.requires_grad_(True)
    for n in noises:
        n.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = inv.render_region(G, canvas, canvas.regions[0], z_g, ws, z_l, noises, coords)
        if lp is not None:
            lp(out, out.detach())
    inputs = 16 * (z_l.numel() + sum(n.numel() for n in noises))
    want = inv.BACKWARD_FACTOR * saved[0] + inputs
    assert abs(est - want) / want < 0.1, (est, want)
