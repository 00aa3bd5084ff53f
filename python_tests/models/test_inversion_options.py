"""Inversion options and canvas pieces against computations written here (issue 21): each loss term and
weight of one optimisation step against the documented formula (docs/infinitygan_training.md), the
exploration noise and learning-rate schedule, the progress bar and callback, the cyclic canvas (its
inputs, the ring window indices against a brute-force loop, region renders and mixed inputs on the
ring), plan_canvas geometry on a depth-3 model, the memory estimate term by term, and the record's
loading refusals.

The mutated functions are called inside each test body (not in module fixtures), so that per-test call
tracing (mutation testing) attributes them to the tests that check them."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from anyres_fast.models import infinity_inversion as inv
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
from anyres_fast.train.infinity_recipe import TINY_G

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = InfinityGenerator(InfinityConfig(**TINY_G)).eval()
    with torch.no_grad():                    # noise strengths start at 0; make the noise reach the image
        for i, conv in enumerate(G.texture_synthesizer.convs):
            conv.noise_strength.fill_(0.2 + 0.05 * i)
    return G


@pytest.fixture(scope="module")
def G3():
    """A depth-3 model (2^depth = 8 differs from 2 * depth; only its geometry is used)."""
    torch.manual_seed(0)
    return InfinityGenerator(patch_size=53, z_dim=8, local_dim=2, mapping_layers=1, channel_base=64,
                             channel_max=8).eval()


class _Perceptual(torch.nn.Module):
    """A cheap stand-in for LPIPS with a known value: per-sample mean squared difference."""

    def forward(self, x, y):
        return (x - y).square().mean(dim=(1, 2, 3), keepdim=True)


def _targets(canvas, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, r.height, r.width, generator=g) * 2 - 1 for r in canvas.regions]


def _steps(G):
    return [s.step for s in G.texture_synthesizer.specs]


def _n_for(G, size):
    return next(n for n in range(G.min_zs_size(), 300) if G.output_size(n) >= size)


# ----------------------------------------------------------------------------------------------------
# plan_canvas geometry

@pytest.mark.parametrize("box", [(0, 0, 53, 53), (13, 29, 40, 31), (70, 101, 1, 1)])
def test_plan_canvas_depth_3_windows_and_centred_coordinates(G3, box):
    H, W = 71, 140
    c = inv.plan_canvas(G3, H, W, [box])
    r = c.regions[0]
    top, left, h, w = box
    s, R = 8, G3.ss_margin                                   # depth 3: 8 output pixels per latent
    a_y, a_x = top // s, left // s
    off_y, off_x = top - s * a_y, left - s * a_x
    assert (r.a_y, r.a_x, r.off_y, r.off_x) == (a_y, a_x, off_y, off_x)
    assert (r.n_y, r.n_x) == (_n_for(G3, off_y + h), _n_for(G3, off_x + w))
    assert c.zs == (_n_for(G3, H), _n_for(G3, W)) and c.ring == 0
    # The canvas z_l is centred on the frame origin: its coordinates are G's centred ones for that size.
    zh, zw = c.zs
    _, _, coords = inv.canvas_inputs(G3, c, 0)
    torch.testing.assert_close(coords, G3.centred_coords(1, zh + 2 * R, zw + 2 * R), rtol=0, atol=1e-6)


@pytest.mark.parametrize("H,W", [(29, 29), (40, 77), (33, 64)])
def test_plan_canvas_coordinates_are_centred_on_the_frame_origin(G, H, W):
    c = inv.plan_canvas(G, H, W, [(0, 0, H, W)])
    R = G.ss_margin
    zh, zw = c.zs
    z_l, noises, coords = inv.canvas_inputs(G, c, 0)
    torch.testing.assert_close(coords, G.centred_coords(1, zh + 2 * R, zw + 2 * R), rtol=0, atol=1e-6)
    # Shapes: z_l and coordinates carry R more per side; conv k's noise is the layer size of zh x zw.
    assert z_l.shape == (1, G.local_dim, zh + 2 * R, zw + 2 * R)
    assert [tuple(n.shape) for n in noises] == [(1, 1, hh, ww) for hh, ww in
                                                 zip(G.layer_sizes(zh)[1:], G.layer_sizes(zw)[1:])]


def test_plan_canvas_accepts_one_pixel_regions(G):
    c = inv.plan_canvas(G, 10, 12, [(0, 0, 1, 1), (9, 11, 1, 1), (3, 4, 1, 5), (2, 2, 6, 1)])
    assert [(r.height, r.width) for r in c.regions] == [(1, 1), (1, 1), (1, 5), (6, 1)]
    assert (c.regions[1].a_y, c.regions[1].off_y, c.regions[1].a_x, c.regions[1].off_x) == (2, 1, 2, 3)


def test_plan_canvas_cyclic_ring_and_refusals(G, G3):
    c = inv.plan_canvas(G, 33, 64, [(2, 0, 30, 30)], cyclic=True)
    assert c.ring == 64 // 4
    assert inv.plan_canvas(G3, 60, 96, [(0, 0, 53, 53)], cyclic=True).ring == 96 // 8
    assert inv.plan_canvas(G, 33, 64, [(2, 0, 30, 30)]).ring == 0
    with pytest.raises(ValueError, match=r"^width 66: a cyclic canvas must be a multiple of 4 pixels"):
        inv.plan_canvas(G, 33, 66, [(0, 0, 30, 30)], cyclic=True)
    with pytest.raises(ValueError, match=r"^width 100: a cyclic canvas must be a multiple of 8 pixels"):
        inv.plan_canvas(G3, 60, 100, [(0, 0, 53, 53)], cyclic=True)
    with pytest.raises(ValueError, match=r"^width 24: a cyclic canvas must be at least one 29-pixel patch wide$"):
        inv.plan_canvas(G, 33, 24, [(0, 0, 20, 20)], cyclic=True)


# ----------------------------------------------------------------------------------------------------
# canvas_inputs

def test_canvas_inputs_draw_from_the_seed_in_order_and_land_on_the_device(G):
    c = inv.plan_canvas(G, 33, 45, [(0, 0, 30, 30)])
    R = G.ss_margin
    zh, zw = c.zs
    z_l, noises, coords = inv.canvas_inputs(G, c, 7)
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(z_l, torch.randn(1, G.local_dim, zh + 2 * R, zw + 2 * R, generator=g), rtol=0, atol=0)
    for n, hh, ww in zip(noises, G.layer_sizes(zh)[1:], G.layer_sizes(zw)[1:]):
        torch.testing.assert_close(n, torch.randn(1, 1, hh, ww, generator=g), rtol=0, atol=0)
    for ring in (False, True):
        cc = inv.plan_canvas(G, 33, 64, [(0, 0, 30, 30)], cyclic=ring)
        z_m, n_m, c_m = inv.canvas_inputs(G, cc, 7, device="meta")
        assert z_m.device.type == "meta" and c_m.device.type == "meta"
        assert all(n.device.type == "meta" for n in n_m)


def test_cyclic_canvas_inputs_by_hand(G):
    c = inv.plan_canvas(G, 33, 64, [(2, 0, 30, 30)], cyclic=True)
    R, L = G.ss_margin, c.ring
    zh = c.zs[0]
    z_l, noises, coords = inv.canvas_inputs(G, c, 5)
    # docs: z_l and coordinates L columns wide, conv k's noise step_k * L wide, drawn in that order.
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(z_l, torch.randn(1, G.local_dim, zh + 2 * R, L, generator=g), rtol=0, atol=0)
    hs = G.layer_sizes(zh)[1:]
    assert len(noises) == len(_steps(G)) == len(hs)
    for n, st, hh in zip(noises, _steps(G), hs):
        torch.testing.assert_close(n, torch.randn(1, 1, hh, st * L, generator=g), rtol=0, atol=0)
    # Ring column m is canvas latent column m (left = 0); rows are the ordinary canvas rows.
    torch.testing.assert_close(coords, G.coords(zh + 2 * R, L, c.coord_top, 0, ring=L), rtol=0, atol=0)
    flat = G.centred_coords(1, zh + 2 * R, L)
    torch.testing.assert_close(coords[:, 0], flat[:, 0], rtol=0, atol=1e-6)
    # The ring closes: the angle channels are periodic in L (column L would be column 0 again).
    more = G.coords(zh + 2 * R, L + 1, c.coord_top, 0, ring=L)
    torch.testing.assert_close(more[..., L], coords[..., 0], rtol=0, atol=1e-5)
    assert (coords[:, 1:, :, 1] - coords[:, 1:, :, 0]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------
# Ring windows, region renders, mixed inputs

@pytest.mark.parametrize("box", [(2, 0, 30, 30), (0, 37, 31, 27), (1, 50, 29, 14)])
def test_ring_window_indices_against_a_loop(G, box):
    W = 64
    c = inv.plan_canvas(G, 33, W, [box], cyclic=True)
    r, L, R = c.regions[0], c.ring, G.ss_margin
    zl, noise = inv.window_slices(G, r, c.ring)
    assert zl[0] == slice(r.a_y, r.a_y + r.n_y + 2 * R)
    assert zl[1].dtype == torch.int64
    assert zl[1].tolist() == [(r.a_x - R + j) % L for j in range(r.n_x + 2 * R)]
    assert len(noise) == len(_steps(G))
    for (rows, cols), st, hh, ww in zip(noise, _steps(G), G.layer_sizes(r.n_y)[1:], G.layer_sizes(r.n_x)[1:]):
        assert rows == slice(st * r.a_y, st * r.a_y + hh)
        assert cols.tolist() == [(st * r.a_x + i) % (st * L) for i in range(ww)]
    ix = zl[1].tolist()
    assert any(b < a for a, b in zip(ix, ix[1:]))             # every box here wraps (left edge or right edge)


def _gather(t, rows, cols):
    """t[..., rows, cols] with a list of columns, by a loop over the columns."""
    return torch.stack([t[..., rows, j] for j in cols], dim=-1)


def test_cyclic_region_render_and_mixed_inputs_by_hand(G):
    box = (1, 44, 30, 20)                                    # right edge: the window runs past column L
    c = inv.plan_canvas(G, 33, 64, [box], cyclic=True)
    r, L, R = c.regions[0], c.ring, G.ss_margin
    z_l, noises, coords = inv.canvas_inputs(G, c, 3)
    z_g = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1))
    ws = G.styles(z_g)
    cols = [(r.a_x - R + j) % L for j in range(r.n_x + 2 * R)]
    rows = slice(r.a_y, r.a_y + r.n_y + 2 * R)
    hand_noise = []
    for n, st, hh, ww in zip(noises, _steps(G), G.layer_sizes(r.n_y)[1:], G.layer_sizes(r.n_x)[1:]):
        hand_noise.append(_gather(n, slice(st * r.a_y, st * r.a_y + hh), [(st * r.a_x + i) % (st * L) for i in range(ww)]))
    with torch.no_grad():
        want = G.synthesis(z_g, _gather(z_l, rows, cols), ws, _gather(coords, rows, cols), hand_noise)
        got = inv.render_region(G, c, r, z_g, ws, z_l, noises, coords)
    torch.testing.assert_close(got, want[..., r.off_y:r.off_y + r.height, r.off_x:r.off_x + r.width], rtol=0, atol=1e-5)
    # mixed_inputs: the record's values exactly on the window's ring columns, the seed's elsewhere.
    rec = inv.InversionRecord(z_g, ws, z_l + 10, [n + 10 for n in noises], coords, c, {}, {}, G.config.to_dict())
    fresh_z, fresh_n, _ = inv.canvas_inputs(G, c, 8)
    mz, mn = inv.mixed_inputs(G, rec, 8)
    inside = torch.zeros(mz.shape[2:], dtype=torch.bool)
    for j in cols:
        inside[rows, j] = True
    torch.testing.assert_close(mz[:, :, inside], rec.z_l[:, :, inside], rtol=0, atol=0)
    torch.testing.assert_close(mz[:, :, ~inside], fresh_z[:, :, ~inside], rtol=0, atol=0)
    for k, (n, src, fn, st, hh, ww) in enumerate(zip(mn, rec.noises, fresh_n, _steps(G), G.layer_sizes(r.n_y)[1:],
                                                     G.layer_sizes(r.n_x)[1:])):
        ins = torch.zeros(n.shape[2:], dtype=torch.bool)
        for i in range(ww):
            ins[st * r.a_y:st * r.a_y + hh, (st * r.a_x + i) % (st * L)] = True
        torch.testing.assert_close(n[:, :, ins], src[:, :, ins], rtol=0, atol=0, msg=str(k))
        torch.testing.assert_close(n[:, :, ~ins], fn[:, :, ~ins], rtol=0, atol=0, msg=str(k))


def test_put_and_take_with_ring_indices():
    src = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    ix = (slice(1, 3), torch.tensor([4, 0, 1]))
    taken = inv._take(src, ix)
    assert torch.equal(taken, _gather(src, slice(1, 3), [4, 0, 1]))
    assert torch.equal(inv._take(src, (slice(1, 3), slice(0, 2))), src[..., 1:3, 0:2])
    dst = torch.full_like(src, -1.0)
    inv._put(dst, src, ix)
    want = torch.full_like(src, -1.0)
    for j in (4, 0, 1):
        want[:, :, 1:3, j] = src[:, :, 1:3, j]
    assert torch.equal(dst, want)


@pytest.mark.parametrize("hw", [(16, 16), (8, 12)])
def test_lpips_input_is_half_pixel_bilinear(hw):
    # align_corners=False: output sample i reads input position (i + 0.5) / scale - 0.5, clamped.
    h, w = hw
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(0)).double()
    y = inv._lpips_input(x)
    scale = 32 / min(h, w)
    H, W = y.shape[-2:]

    def weights(n_out, n_in):
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        for i in range(n_out):
            p = min(max((i + 0.5) / scale - 0.5, 0.0), n_in - 1)
            lo = int(math.floor(p))
            hi = min(lo + 1, n_in - 1)
            m[i, lo] += 1 - (p - lo)
            m[i, hi] += p - lo
        return m

    want = weights(H, h) @ x @ weights(W, w).T
    torch.testing.assert_close(y, want, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------------------------------
# invert: one step's loss terms against the documented formula

def _start(G, canvas, st):
    """The variables inversion starts from (docs: W+ at the mapped mean, z_g from init_seed + 1, canvas
    z_l and noise from init_seed)."""
    w_mean, w_std = inv.w_statistics(G, st.w_samples)
    z_l, noises, coords = inv.canvas_inputs(G, canvas, st.init_seed)
    z_g = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(st.init_seed + 1))
    ws = w_mean[None, None].repeat(1, G.num_ws, 1)
    return z_g, ws, z_l, noises, coords, w_mean, w_std


def _used(G, canvas, z_l):
    used = torch.zeros(z_l.shape[2:], dtype=torch.bool)
    R = G.ss_margin
    for r in canvas.regions:
        rows = slice(r.a_y, r.a_y + r.n_y + 2 * R)
        if canvas.ring:
            for j in range(r.n_x + 2 * R):
                used[rows, (r.a_x - R + j) % canvas.ring] = True
        else:
            used[rows, r.a_x:r.a_x + r.n_x + 2 * R] = True
    return used


def _terms(G, canvas, targets, st, z_g, ws, z_l, noises, coords, w_mean, w_std, lp, noise=None):
    """Each loss term by the formula of docs/infinitygan_training.md (module docstring); `noise`: the
    exploration offsets (w, z_g, z_l) added to the rendered inputs only."""
    n_w, n_zg, n_zl = noise or (0, 0, 0)
    pix = perc = 0.0
    with torch.no_grad():
        for r, t in zip(canvas.regions, targets):
            out = inv.render_region(G, canvas, r, z_g + n_zg, ws + n_w, z_l + n_zl, noises, coords)
            pix += float(0.5 * (out - t).square().mean()) if st.pixel == "l2" else float((out - t).abs().mean())
            if lp is not None:
                perc += float(lp(inv._lpips_input(out), inv._lpips_input(t)).mean())
    zl = z_l[:, :, _used(G, canvas, z_l)]
    terms = {"pixel": pix, "lpips": perc,
             "zg_prior": float(z_g.mean() ** 2 + (z_g.std() - 1) ** 2),
             "zl_prior": float(zl.mean() ** 2 + (zl.std() - 1) ** 2),
             "w_prior": float((((ws - w_mean) / w_std) ** 2).mean()),
             "noise_reg": float(inv.noise_regularizer(noises))}
    terms["total"] = (st.pixel_weight * pix + st.lpips_weight * perc + st.zg_prior_weight * terms["zg_prior"]
                      + st.zl_prior_weight * terms["zl_prior"] + st.w_prior_weight * terms["w_prior"]
                      + st.noise_reg_weight * terms["noise_reg"])
    return terms


def _check(vals, want):
    for k, v in want.items():
        assert vals[k] == pytest.approx(v, rel=2e-4, abs=1e-7), (k, vals[k], v)


@pytest.mark.parametrize("pixel,cyclic", [("l2", False), ("l1", True)])
def test_two_steps_loss_terms_match_the_formula(G, pixel, cyclic):
    # Two regions (the pixel and perceptual terms sum over them; the z_l prior covers both windows).
    boxes = [(1, 0, 20, 18), (4, 35, 25, 21)]
    canvas = inv.plan_canvas(G, 33, 64, boxes, cyclic=cyclic)
    targets = _targets(canvas)
    # No ramps (lr factor 1 at every step) and no exploration: step 0 is the same in a 1- and a 2-step run,
    # so the 1-step record holds the variables step 1 of the 2-step run starts from.
    st = inv.InversionSettings(steps=2, pixel=pixel, pixel_weight=3.0, lpips_weight=2.0, zg_prior_weight=5.0,
                               zl_prior_weight=7.0, w_prior_weight=11.0, noise_reg_weight=13.0, rampup=0.0,
                               rampdown=0.0, explore_w=0.0, explore_z=0.0, init_seed=4, w_samples=64)
    lp = _Perceptual()
    seen = []
    rec2 = inv.invert(G, canvas, targets, st, progress=False, lpips_net=lp, callback=lambda s, v: seen.append((s, v)))
    st1 = inv.InversionSettings(**{**st.__dict__, "steps": 1})
    rec1 = inv.invert(G, canvas, targets, st1, progress=False, lpips_net=lp)

    z_g, ws, z_l, noises, coords, w_mean, w_std = _start(G, canvas, st)
    want0 = _terms(G, canvas, targets, st, z_g, ws, z_l, noises, coords, w_mean, w_std, lp)
    want1 = _terms(G, canvas, targets, st, rec1.z_g, rec1.ws, rec1.z_l, rec1.noises, rec1.coords, w_mean, w_std, lp)
    assert want1["w_prior"] > 1e-3 and want0["lpips"] > 0       # W+ has left the mean: the W prior is live
    assert [s for s, _ in seen] == [0, 1]
    _check(seen[0][1], want0)
    _check(seen[1][1], want1)
    for k in want0:
        assert rec2.history[k] == [seen[0][1][k], seen[1][1][k]], k
    # After each step the noise maps are renormalised (zero mean, unit std) and G stays frozen.
    for n in rec1.noises:
        assert abs(float(n.mean())) < 1e-5 and abs(float(n.std()) - 1) < 1e-5
    assert all(not p.requires_grad and p.grad is None for p in G.parameters()) and not G.training
    # The first Adam step moves every variable by about its learning rate (m / sqrt(v) = sign(grad)).
    torch.testing.assert_close((rec1.z_g - z_g).abs(), torch.full_like(z_g, st.lr_structure), rtol=1e-3, atol=0)
    torch.testing.assert_close((rec1.ws - ws).abs(), torch.full_like(ws, st.lr_texture), rtol=1e-3, atol=0)
    used = _used(G, canvas, z_l)
    dz = (rec1.z_l - z_l).abs()[:, :, used]
    assert dz.max() <= st.lr_structure * (1 + 1e-4)               # entries with a tiny gradient move less
    assert ((dz - st.lr_structure).abs() < 1e-3 * st.lr_structure).float().mean() > 0.9
    assert torch.equal(rec1.z_l[:, :, ~used], z_l[:, :, ~used])


def test_the_default_ramp_keeps_the_first_step_still(G):
    # Step 0 of the published schedule has learning-rate factor 0 (linear ramp-up from 0): nothing moves
    # but the noise renormalisation.
    canvas = inv.plan_canvas(G, 30, 30, [(0, 0, 30, 30)])
    st = inv.InversionSettings(steps=1, lpips_weight=0.0, w_samples=32, init_seed=2)
    rec = inv.invert(G, canvas, _targets(canvas), st, progress=False)
    z_g, ws, z_l, noises, _, _, _ = _start(G, canvas, st)
    assert torch.equal(rec.z_g, z_g) and torch.equal(rec.ws, ws) and torch.equal(rec.z_l, z_l)
    for n, n0 in zip(rec.noises, noises):
        torch.testing.assert_close(n, (n0 - n0.mean()) / n0.std(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("until", [0.75, 0.0])
def test_exploration_noise_decays_as_documented(G, until):
    # lr 0: the variables stay (but for the noise renormalisation), so each step's pixel term is the
    # render of the start values plus that step's exploration offsets, scaled by (1 - t / until)^2.
    canvas = inv.plan_canvas(G, 30, 30, [(0, 0, 30, 30)])
    targets = _targets(canvas, 1)
    st = inv.InversionSettings(steps=2, lpips_weight=0.0, lr_texture=0.0, lr_structure=0.0, explore_w=0.3,
                               explore_z=0.4, explore_until=until, init_seed=2, w_samples=64)
    seen = []
    inv.invert(G, canvas, targets, st, progress=False, callback=lambda s, v: seen.append(v))
    z_g, ws, z_l, noises, coords, w_mean, w_std = _start(G, canvas, st)
    assert (w_std - 1).abs().max() > 1e-2
    for step in range(2):
        t = step / 2
        e = max(0.0, 1 - t / until) ** 2 if until > 0 else 0.0
        gx = torch.Generator().manual_seed(st.init_seed * 100003 + step)
        n_w = torch.randn(ws.shape, generator=gx) * st.explore_w * w_std * e
        n_zg = torch.randn(z_g.shape, generator=gx) * st.explore_z * e
        n_zl = torch.randn(z_l.shape, generator=gx) * st.explore_z * e
        want = _terms(G, canvas, targets, st, z_g, ws, z_l, noises, coords, w_mean, w_std, None, (n_w, n_zg, n_zl))
        _check(seen[step], want)
        noises = [(n - n.mean()) / n.std() for n in noises]


def test_lpips_is_built_only_with_a_positive_weight_on_the_device(G, monkeypatch):
    canvas = inv.plan_canvas(G, 30, 30, [(0, 0, 30, 30)])
    targets = _targets(canvas)
    calls = []

    def fake(kind, device=None):
        calls.append((kind, device))
        return _Perceptual()

    monkeypatch.setattr(inv, "build_lpips", fake)
    rec = inv.invert(G, canvas, targets, inv.InversionSettings(steps=1, lpips_weight=0.0, w_samples=16),
                     progress=False)
    assert calls == [] and rec.history["lpips"] == [0.0]
    rec = inv.invert(G, canvas, targets, inv.InversionSettings(steps=1, lpips_weight=0.5, lpips="alex",
                                                                w_samples=16), progress=False)
    assert calls == [("alex", torch.device("cpu"))] and rec.history["lpips"][0] > 0
    # A given module is used as it is (the builder is not called).
    other = _Perceptual()
    rec = inv.invert(G, canvas, targets, inv.InversionSettings(steps=1, lpips_weight=0.5, w_samples=16),
                     progress=False, lpips_net=other)
    assert len(calls) == 1


class _Bar:
    """Records what invert asks of tqdm."""
    made = []

    def __init__(self, it, **kw):
        self.it, self.kw, self.postfix, self.closed = it, kw, [], False
        _Bar.made.append(self)

    def __iter__(self):
        return iter(self.it)

    def set_postfix(self, **kw):
        self.postfix.append(kw)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("progress", [True, False, None])
def test_progress_bar_settings_and_postfix(G, monkeypatch, progress):
    import tqdm
    monkeypatch.setattr(tqdm, "tqdm", _Bar)
    _Bar.made = []
    canvas = inv.plan_canvas(G, 30, 30, [(0, 0, 30, 30)])
    kw = {} if progress is None else {"progress": progress}
    rec = inv.invert(G, canvas, _targets(canvas), inv.InversionSettings(steps=2, lpips_weight=1.0, w_samples=16),
                     lpips_net=_Perceptual(), **kw)
    (bar,) = _Bar.made
    shown = progress is not False                                # the default shows the bar
    assert list(bar.it) == [0, 1] and bar.closed
    assert bar.kw == {"desc": "inversion", "unit": "step", "disable": not shown, "leave": False}
    if shown:
        assert bar.postfix == [{"pixel": f"{rec.history['pixel'][i]:.4f}", "lpips": f"{rec.history['lpips'][i]:.4f}",
                                "refresh": False} for i in range(2)]
    else:
        assert bar.postfix == []


# ----------------------------------------------------------------------------------------------------
# Memory estimate, term by term

def _measured(G, side, lp):
    """Saved-for-backward bytes of one side x side region's render and of the perceptual term."""
    ref = inv.plan_canvas(G, side, side, [(0, 0, side, side)])
    r = ref.regions[0]
    z_l, noises, coords = inv.canvas_inputs(G, ref, 0)
    z_g = torch.zeros(1, G.z_dim, requires_grad=True)
    ws = torch.zeros(1, G.num_ws, G.z_dim, requires_grad=True)
    z_l.requires_grad_(True)
    for n in noises:
        n.requires_grad_(True)
    box = [0, 0]

    def pack(t):
        box[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inv.render_region(G, ref, r, z_g, ws, z_l, noises, coords)
    g = box[0]
    box[0] = 0
    if lp is not None:
        x = torch.zeros(1, 3, side, side, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lp(inv._lpips_input(x), inv._lpips_input(x.detach()))
    return G.layer_sizes(r.n_y)[-1] * G.layer_sizes(r.n_x)[-1], g, side * side, box[0]


@pytest.mark.parametrize("with_lp", [False, True])
def test_memory_estimate_term_by_term(G, with_lp):
    # docs (estimate_inversion_bytes): saved bytes measured on a 1- and a 2-patch-side region, extrapolated
    # linearly (slope >= 0, never below the small one) in the finest-layer area (render) and in the pixel
    # area (perceptual), summed over regions, x BACKWARD_FACTOR, plus 4 float32 copies of the canvas inputs.
    lp = _Perceptual() if with_lp else None
    p = G.patch_size
    canvas = inv.plan_canvas(G, 90, 150, [(3, 5, 80, 120), (0, 140, 10, 10)])
    G.train()
    flags = [q.requires_grad for q in G.parameters()]
    est = inv.estimate_inversion_bytes(G, canvas, lpips_net=lp)
    assert G.training and [q.requires_grad for q in G.parameters()] == flags      # state restored
    G.eval().requires_grad_(False)
    (fa0, g0, pa0, l0), (fa1, g1, pa1, l1) = _measured(G, p, lp), _measured(G, 2 * p, lp)
    assert g1 > g0 > 0 and (l1 > l0 > 0 if with_lp else l0 == l1 == 0)

    def lin(a0, b0, a1, b1, a):
        return max(b0, b0 + max(0.0, (b1 - b0) / (a1 - a0)) * (a - a0))

    total = 0.0
    for r in canvas.regions:
        fa = G.layer_sizes(r.n_y)[-1] * G.layer_sizes(r.n_x)[-1]
        total += lin(fa0, g0, fa1, g1, fa) + lin(pa0, l0, pa1, l1, r.height * r.width)
    z_l, noises, _ = inv.canvas_inputs(G, canvas, 0)
    cells = z_l.numel() + sum(n.numel() for n in noises)
    want = inv.BACKWARD_FACTOR * total + 16 * cells
    assert abs(est - want) <= 1, (est, want)
    # The small region is charged no less than one patch's measurement.
    small = inv.plan_canvas(G, 20, 20, [(0, 0, 5, 5)])
    z_s, n_s, _ = inv.canvas_inputs(G, small, 0)
    floor = inv.BACKWARD_FACTOR * (g0 + l0) + 16 * (z_s.numel() + sum(n.numel() for n in n_s))
    assert abs(inv.estimate_inversion_bytes(G, small, lpips_net=lp) - floor) <= 1


# ----------------------------------------------------------------------------------------------------
# Records

def _record(G):
    c = inv.plan_canvas(G, 30, 30, [(0, 0, 30, 30)])
    z_l, noises, coords = inv.canvas_inputs(G, c, 0)
    return inv.InversionRecord(torch.zeros(1, G.z_dim), torch.zeros(1, G.num_ws, G.z_dim), z_l, noises, coords, c,
                               {"steps": 3}, {"total": [1.0, 0.5]}, G.config.to_dict())


def test_record_round_trip_keeps_psnr_and_sources(G, tmp_path):
    rec = _record(G)
    rec.psnr, rec.sources = [12.5, 30.25], ["a.png", "b.png"]
    back = inv.InversionRecord.load(rec.save(str(tmp_path / "r.pt")))
    assert back.psnr == [12.5, 30.25] and back.sources == ["a.png", "b.png"]
    assert back.settings == {"steps": 3} and back.history == {"total": [1.0, 0.5]}
    d = rec.to_dict()
    del d["psnr"], d["sources"]                          # records written before these fields existed
    torch.save(d, tmp_path / "old.pt")
    old = inv.InversionRecord.load(str(tmp_path / "old.pt"))
    assert old.psnr == [] and old.sources == []


def test_record_load_refuses_pickled_objects(G, tmp_path):
    # weights_only=True: a file that needs arbitrary unpickling is refused, not run.
    d = _record(G).to_dict()
    d["settings"] = argparse.Namespace(steps=3)
    torch.save(d, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match=r"obj\.pt: not a readable inversion record \(.*[Ww]eights only load failed"):
        inv.InversionRecord.load(str(tmp_path / "obj.pt"))


def test_record_load_error_names_the_first_line_of_torch_s_error(tmp_path, monkeypatch):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"not a zip")
    try:
        torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:                                  # what torch itself says about the file
        first = str(exc).strip().splitlines()[0]
    with pytest.raises(ValueError) as err:
        inv.InversionRecord.load(str(p))
    assert str(err.value) == f"{p}: not a readable inversion record ({first})"

    def raises(msg):
        def load(*a, **k):
            raise RuntimeError(msg)
        return load

    monkeypatch.setattr(torch, "load", raises("first line\nsecond line"))
    with pytest.raises(ValueError, match=r"^.*junk\.pt: not a readable inversion record \(first line\)$"):
        inv.InversionRecord.load(str(p))
    monkeypatch.setattr(torch, "load", raises("  "))         # no message: the exception's type is named
    with pytest.raises(ValueError, match=r"^.*junk\.pt: not a readable inversion record \(RuntimeError\)$"):
        inv.InversionRecord.load(str(p))


def test_record_load_maps_to_the_cpu(G, tmp_path, monkeypatch):
    seen = {}
    real = torch.load

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    path = _record(G).save(str(tmp_path / "r.pt"))
    monkeypatch.setattr(torch, "load", spy)
    inv.InversionRecord.load(path)
    assert seen.get("map_location") == "cpu" and seen.get("weights_only") is True


# ----------------------------------------------------------------------------------------------------
# Devices (the meta device stands in for a GPU: CPU inputs mixed with meta weights are refused)

class _ConvPerceptual(torch.nn.Module):
    """A perceptual stand-in with a weight, so it runs only on its own device."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1, bias=False)

    def forward(self, x, y):
        return (self.conv(x) - self.conv(y)).square().mean(dim=(1, 2, 3), keepdim=True)


def test_memory_estimate_runs_on_the_generator_s_device(G):
    import copy
    canvas = inv.plan_canvas(G, 60, 90, [(3, 5, 50, 70)])
    torch.manual_seed(0)
    lp = _ConvPerceptual()
    want = inv.estimate_inversion_bytes(G, canvas, lpips_net=lp)
    Gm = copy.deepcopy(G).to("meta")
    lpm = copy.deepcopy(lp).to("meta")
    assert inv.estimate_inversion_bytes(Gm, canvas, lpips_net=lpm) == want        # default: G's device
    assert inv.estimate_inversion_bytes(Gm, canvas, device=torch.device("meta"), lpips_net=lpm) == want


def test_w_statistics_on_the_given_device(G):
    import copy
    Gm = copy.deepcopy(G).to("meta")
    mean, std = inv.w_statistics(Gm, 8, torch.device("meta"))
    assert mean.device.type == "meta" and std.device.type == "meta" and mean.shape == (G.z_dim,)


def test_seam_stats_mean_of_one_inside_column():
    img = torch.zeros(1, 3, 2, 3)
    img[..., 2] = 1.0                                      # columns 0,1 -> 128; 2 -> 255
    s = inv.seam_stats(img, 1, [2])
    assert s["seam"] == 0.0 and s["inside"] == {2: 127.0} and s["inside_mean"] == 127.0
