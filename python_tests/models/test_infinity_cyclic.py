"""Cyclic InfinityGAN canvas (docs/infinitygan.md, "Cyclic canvas"): the seam measured against interior
columns, exact periodicity and roll = shifted origin (float64), the coordinates' turn per ring, broken
wraps caught, bad input (CPU, the small random model of helpers.small_infinity)."""
from __future__ import annotations

import math

import pytest
import torch

from anyres_fast.models import infinity as infinity_mod
from anyres_fast.models import infinity_canvas as canvas
from helpers import small_infinity as small

pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: tiny ops run faster on one thread

W, H = 128, 256          # 16 latent columns of 8 pixels; tall, so one column pair averages many pixels
SEEDS = range(8)


def column_steps(img: torch.Tensor) -> tuple:
    """(|last - first| column MAD, mean |c - (c-1)| MAD over the interior adjacent pairs) of (1, C, H, W)."""
    q = img[0].double()
    interior = (q[..., 1:] - q[..., :-1]).abs().mean().item()
    seam = (q[..., 0] - q[..., -1]).abs().mean().item()
    return seam, interior


def seam_ratio(G, cyclic: bool) -> float:
    """Mean over SEEDS of seam MAD / interior MAD for the W-wide window at origin 0."""
    ratios = []
    for seed in SEEDS:
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        img = G.render(z, H, W, top=-H // 2, seed=seed, patch_batch=64, progress=False,
                       cyclic_width=W if cyclic else None)
        s, i = column_steps(img)
        ratios.append(s / i)
    return sum(ratios) / len(ratios)


def test_seam_equals_interior_columns_and_a_broken_wrap_is_caught(monkeypatch):
    G = small()
    good = seam_ratio(G, cyclic=True)
    assert abs(good - 1) <= 0.10, good
    # The same window of the ordinary canvas: its last and first columns are unrelated.
    assert seam_ratio(G, cyclic=False) > 1.5
    # A broken wrap: coordinates periodic, but z_l and noise not taken modulo the ring.
    monkeypatch.setattr(canvas, "wrap", lambda index, period: index)
    assert seam_ratio(G, cyclic=True) > 1.5


def test_roll_equals_shifted_origin_and_the_canvas_repeats_exactly():
    G = small().double()
    z = torch.randn(1, G.z_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    Wc = 48                                                  # 6 latent columns: 2 patches and a partial one
    kw = dict(seed=11, cyclic_width=Wc, dtype=torch.float64, patch_batch=4, progress=False)
    base = G.render(z, 30, Wc, top=-15, **kw)
    assert base.dtype == torch.float64 and base.std() > 0.05
    for k in (1, 5, 8, 21, 47):                              # any shift, also not a whole latent column
        shifted = G.render(z, 30, Wc, top=-15, left=k, **kw)
        assert (shifted - torch.roll(base, -k, dims=3)).abs().max().item() <= 1e-12, k
    # Any window: three turns of the ring starting left of the origin are the ring three times.
    wide = G.render(z, 30, 3 * Wc, top=-15, left=-2 * Wc, **kw)
    for t in range(3):
        assert (wide[..., t * Wc:(t + 1) * Wc] - base).abs().max().item() <= 1e-12
    # The ring is not the ordinary canvas (the wrap changes what the columns see).
    plain = G.render(z, 30, Wc, top=-15, seed=11, dtype=torch.float64, progress=False)
    assert (plain - base).abs().max().item() > 0.05


def test_inputs_live_on_the_ring():
    G = small()
    L = 10
    z_l, coords, noises = G.canvas_inputs(3, 0, 0, 7, 7 + 2 * L, ring=L)
    R = G.ss_margin
    # z_l / coordinate column j is canvas column j - R; columns L apart are bit-identical.
    assert torch.equal(z_l[..., :L], z_l[..., L:2 * L]) and torch.equal(coords[..., :L], coords[..., L:2 * L])
    for spec, n in zip(G.texture_synthesizer.specs, noises):
        p = spec.step * L
        assert n.shape[-1] > p and torch.equal(n[..., :n.shape[-1] - p], n[..., p:]), spec.index
    # Within one turn the values are fresh (no shorter period).
    assert not torch.equal(z_l[..., :L - 1], z_l[..., 1:L])
    # Canvas columns [0, L) of the ring are those of the ordinary canvas (wrapped indices, same hash).
    ordinary, _, _ = G.canvas_inputs(3, 0, R, 7, L - 2 * R)
    assert torch.equal(z_l[..., R:R + L], ordinary)


def _angle_steps(G, L, cols):
    c = infinity_mod.coordinate_grid(G.config, torch.zeros(1), cols.double(), ring=L)[0]
    ang = torch.atan2(c[2, 0].double(), c[1, 0].double())
    return torch.remainder(ang[1:] - ang[:-1], 2 * math.pi)


def test_coordinates_turn_once_per_ring_and_a_closed_range_is_caught(monkeypatch):
    G = small()
    L = 16
    cols = torch.arange(-3, 2 * L + 3)                        # crosses the seam twice
    steps = _angle_steps(G, L, cols)
    # float32 coordinates: the step is 2 pi / L everywhere, across the seam included.
    assert torch.allclose(steps, torch.full_like(steps, 2 * math.pi / L), atol=1e-5)
    # With L = T - 1 the ring's coordinates are the ordinary canvas's (the training frequency).
    T1 = G.config.hori_period - 1
    cols = torch.arange(-5, 60)
    ring = infinity_mod.coordinate_grid(G.config, torch.zeros(1), cols.double(), ring=T1)
    plain = infinity_mod.coordinate_grid(G.config, torch.zeros(1), cols.double())
    assert (ring - plain).abs().max().item() <= 1e-5
    # A closed range (-pi .. pi over L columns, so the first and last columns share an angle) is caught.
    c0 = infinity_mod._pixel_offset(G.depth)
    monkeypatch.setattr(infinity_mod, "horizontal_angle", lambda cfg, c, ring=None: math.pi * (
        2.0 * (torch.remainder(c.double(), ring) - c0) / (ring - 1) - 1.0))
    bad = _angle_steps(G, L, torch.arange(-3, 2 * L + 3))
    assert not torch.allclose(bad, torch.full_like(bad, 2 * math.pi / L), atol=1e-5)


def test_bad_cyclic_widths_get_clear_errors():
    G = small()                                               # 21-pixel patch, 8 pixels per latent column
    z = torch.randn(1, G.z_dim)
    with pytest.raises(ValueError, match="at least one 21-pixel patch wide"):
        G.render(z, 8, 16, cyclic_width=16, progress=False)
    with pytest.raises(ValueError, match=r"multiple of 8 pixels .*e\.g\. 24 or 32"):
        G.render(z, 8, 30, cyclic_width=30, progress=False)
    with pytest.raises(ValueError, match="e.g. 24$"):
        G.render(z, 8, 22, cyclic_width=22, progress=False)
    with pytest.raises(ValueError, match="must be an int"):
        G.render(z, 8, 24, cyclic_width=24.0, progress=False)
    with pytest.raises(ValueError, match="not available on a cyclic canvas"):
        G.render(torch.randn(2, G.z_dim), 8, 24, cyclic_width=24, style_centres=[(0, 0), (9, 3)], progress=False)
    with pytest.raises(ValueError, match="float64 model"):
        G.render(z, 8, 24, cyclic_width=24, dtype=torch.float64, progress=False)


# ----------------------------------------------------------------------------------------------------
# The cyclic inversion canvas (inbetween --cyclic)

def test_inversion_ring_is_the_generate_ring():
    """A cyclic inversion canvas holding the seeded canvas's ring values renders what G.render renders."""
    from anyres_fast.models import infinity_inversion as inv

    G = small()
    s = 2 ** G.depth
    Hh, Wc, t = 40, 64, -3                                  # output 40 x 64, first z_S row -3 of the seeded canvas
    cv = inv.plan_canvas(G, Hh, Wc, [(0, 0, Hh, Wc)], cyclic=True)
    L, R, (zh, _) = cv.ring, G.ss_margin, cv.zs
    assert L == Wc // s and cv.to_dict()["ring"] == L
    # The seeded canvas's inputs over more than one turn; ring column m is canvas latent column m.
    z_l, coords, noises = G.canvas_inputs(7, t, 0, zh, 3 * L, ring=L)
    ring_noise = [n[..., :st * L] for n, st in zip(noises, (sp.step for sp in G.texture_synthesizer.specs))]
    z_g = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2))
    rec = inv.InversionRecord(z_g, G.styles(z_g), z_l[..., R:R + L], ring_noise, coords[..., R:R + L], cv, {}, {},
                              G.config.to_dict())
    got = inv.render(G, rec, seed=123)                       # the region covers everything: no fresh values
    want = G.render(z_g, Hh, Wc, top=s * t, left=0, seed=7, cyclic_width=Wc, progress=False)
    assert got.shape == want.shape and want.std() > 0.05
    assert (got - want).abs().max().item() <= 1e-5
    # A record from the ordinary canvas is another canvas (the ring is part of what --record checks).
    assert inv.plan_canvas(G, Hh, Wc, [(0, 0, Hh, Wc)]).to_dict() != cv.to_dict()


def test_cyclic_inversion_closes_the_ring_with_one_photo():
    from anyres_fast.models import infinity_inversion as inv

    G = small()
    g = torch.Generator().manual_seed(0)
    target = (torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(24, 24), mode="bilinear",
                                              align_corners=False) * 2 - 1)
    cv = inv.plan_canvas(G, 24, 64, [(0, 0, 24, 24)], cyclic=True)
    rec = inv.invert(G, cv, [target], inv.InversionSettings(steps=8, lpips_weight=0), progress=False)
    assert rec.z_l.shape[-1] == cv.ring and rec.coords.shape[-1] == cv.ring
    for n, sp in zip(rec.noises, G.texture_synthesizer.specs):
        assert n.shape[-1] == sp.step * cv.ring
    a, b = inv.render(G, rec, seed=0), inv.render(G, rec, seed=1)
    assert abs(inv.psnr(a[..., :24], target) - rec.psnr[0]) < 1e-6
    torch.testing.assert_close(a[..., :24], b[..., :24], atol=1e-5, rtol=0)   # the photo: the same for every seed
    assert (a[..., 30:40] - b[..., 30:40]).abs().mean() > 0.01                  # between its two sides: new
    # The new content's right end reads the photo's latents across the ring: the columns just left of the
    # seam depend on the record's window, i.e. differ from a canvas whose photo latents are redrawn.
    z_l, noises = inv.mixed_inputs(G, rec, 0)
    fresh, fresh_noises, _ = inv.canvas_inputs(G, cv, 0)
    other = inv.render_region(G, cv, inv.whole(cv), rec.z_g, rec.ws, fresh, fresh_noises, rec.coords)
    assert (a[..., -3:] - other[..., -3:]).abs().max() > 0.01
