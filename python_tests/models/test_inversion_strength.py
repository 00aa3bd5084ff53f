"""Inversion and outpainting against computations written here (issue 21): the photo's region for every
placement of outpaint and inbetween (hand-computed boxes), the record's noise reaching the final render
(the render's known region equals G.synthesis on the hand-sliced window), and every optimised variable
moving (non-cyclic canvases; the cyclic ones are in test_infinity_cyclic.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.cli import main
from anyres_fast.cli import weights as weights_arg
from anyres_fast.models import infinity_inversion as inv
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
from anyres_fast.train.infinity_recipe import TINY_G

pytestmark = pytest.mark.usefixtures("one_thread")


def _photo(w, h, seed=0):
    import skimage.data
    im = skimage.data.astronaut() if seed == 0 else skimage.data.coffee()
    return Image.fromarray(im).resize((w, h), Image.LANCZOS)


def _png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64)


def _quant(t):
    """(1, 3, h, w) in [-1, 1] -> (h, w, 3) 8-bit values as the PNG writer stores them."""
    return ((t[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()


def _window_render(G, rec, box, seed):
    """The known region computed by hand: its window of the canvas (z_S units: a = start // 2^D, the
    region starts off = start - 2^D a pixels into the window's output; z_l and coordinates carry R more
    per side; noise of conv k starts at step_k a), from the record's values only."""
    top, left, h, w = box
    s = 2 ** G.depth
    a_y, a_x = top // s, left // s
    off_y, off_x = top - s * a_y, left - s * a_x
    n_y = next(n for n in range(G.min_zs_size(), 100) if G.output_size(n) >= off_y + h)
    n_x = next(n for n in range(G.min_zs_size(), 100) if G.output_size(n) >= off_x + w)
    R = G.ss_margin
    zl = rec.z_l[..., a_y:a_y + n_y + 2 * R, a_x:a_x + n_x + 2 * R]
    co = rec.coords[..., a_y:a_y + n_y + 2 * R, a_x:a_x + n_x + 2 * R]
    noises = []
    for spec, n, hh, ww in zip(G.texture_synthesizer.specs, rec.noises, G.layer_sizes(n_y)[1:], G.layer_sizes(n_x)[1:]):
        noises.append(n[..., spec.step * a_y:spec.step * a_y + hh, spec.step * a_x:spec.step * a_x + ww])
    with torch.no_grad():
        out = G.synthesis(rec.z_g, zl, rec.ws, co, noises)
    return out[..., off_y:off_y + h, off_x:off_x + w]


class _CheapPerceptual(torch.nn.Module):
    """Stands in for LPIPS in the command runs (importing lpips costs ~15 s on 2 busy cores; the placement
    does not depend on the perceptual term, which test_inversion.py exercises)."""

    def forward(self, x, y):
        return (x - y).square().mean(dim=(1, 2, 3), keepdim=True)


@pytest.fixture
def cheap_lpips(monkeypatch):
    monkeypatch.setattr(inv, "build_lpips", lambda *a, **k: _CheapPerceptual())


@pytest.fixture(scope="module")
def tiny():
    return weights_arg.load(weights_arg.resolve("random:preset=tiny", "infinity"), torch.device("cpu"))


# ----------------------------------------------------------------------------------------------------
# Placements

@pytest.mark.parametrize("place", ["right", "centre"])
def test_outpaint_places_the_photo_where_hand_computed(tmp_path, tiny, cheap_lpips, place):
    _photo(32, 30).save(tmp_path / "p.png")
    W, H = 71, 37
    x0 = {"right": W - 32, "centre": (W - 32) // 2}[place]          # 39 / 19
    y0 = (H - 30) // 2                                              # 3
    out = tmp_path / "out"
    assert main(["outpaint", "--weights", "random:preset=tiny", "--image", str(tmp_path / "p.png"), "--width", str(W),
                 "--height", str(H), "--place", place, "--steps", "2", "--lpips", "random", "--seeds", "4",
                 "--no-progress", "--out", str(out)]) == 0
    rec = inv.InversionRecord.load(str(out / "inversion.pt"))
    r = rec.canvas.regions[0]
    assert (r.top, r.left, r.height, r.width) == (y0, x0, 30, 32) and (rec.canvas.height, rec.canvas.width) == (H, W)
    img = _png(out / "outpaint_seed0004.png")
    assert img.shape == (H, W, 3)
    # The PNG's photo region is what the record's window renders there.
    np.testing.assert_allclose(img[y0:y0 + 30, x0:x0 + 32], _quant(_window_render(tiny, rec, (y0, x0, 30, 32), 4)),
                               atol=1.0)
    report = json.loads((out / "report.json").read_text())
    src = _png(tmp_path / "p.png")
    mse = np.mean((img[y0:y0 + 30, x0:x0 + 32] - src) ** 2)
    assert report["outputs"][0]["psnr"][0] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-6)
    # Seams where the photo meets new content: right -> its left edge only; centre -> both edges.
    seams = [s["seam"] for s in report["outputs"][0]["seams"]]
    cols = [x0] if place == "right" else [x0 + 32, x0]
    assert seams == pytest.approx([np.abs(img[:, c] - img[:, c - 1]).mean() for c in cols], abs=1e-6)


def test_inbetween_places_each_photo_at_its_edge_centred_vertically(tmp_path, tiny, cheap_lpips):
    _photo(36, 32, 0).save(tmp_path / "a.png")
    _photo(30, 40, 1).save(tmp_path / "b.png")
    W = 90
    out = tmp_path / "out"
    assert main(["inbetween", "--weights", "random:preset=tiny", "--left", str(tmp_path / "a.png"), "--right",
                 str(tmp_path / "b.png"), "--width", str(W), "--steps", "1", "--lpips", "random", "--seeds", "0",
                 "--no-progress", "--out", str(out)]) == 0
    rec = inv.InversionRecord.load(str(out / "inversion.pt"))
    boxes = [(r.top, r.left, r.height, r.width) for r in rec.canvas.regions]
    assert boxes == [((40 - 32) // 2, 0, 32, 36), (0, W - 30, 40, 30)]     # canvas as tall as the taller photo
    img = _png(out / "inbetween_seed0000.png")
    assert img.shape == (40, W, 3)
    for (top, left, h, w) in boxes:
        np.testing.assert_allclose(img[top:top + h, left:left + w],
                                   _quant(_window_render(tiny, rec, (top, left, h, w), 0)), atol=1.0)


# ----------------------------------------------------------------------------------------------------
# The record reaches the render; every variable moves

@pytest.fixture(scope="module")
def inverted():
    torch.manual_seed(0)
    G = InfinityGenerator(InfinityConfig(**TINY_G)).eval()
    with torch.no_grad():                    # noise strengths start at 0; a trained model has them > 0
        for i, conv in enumerate(G.texture_synthesizer.convs):
            conv.noise_strength.fill_(0.2 + 0.05 * i)
    target = torch.from_numpy(np.asarray(_photo(32, 30)).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    box = (3, 21, 30, 32)                                   # not at a latent boundary: off_x = 21 - 16 = 5
    canvas = inv.plan_canvas(G, 37, 80, [box])
    st = inv.InversionSettings(steps=4, lpips_weight=0.0, init_seed=3)
    return G, canvas, box, target, st, inv.invert(G, canvas, [target], st, progress=False)


def test_the_record_s_noise_and_latents_reach_the_render_exactly(inverted):
    G, canvas, box, _, _, rec = inverted
    top, left, h, w = box
    out = inv.render(G, rec, seed=9)
    np.testing.assert_allclose(out[..., top:top + h, left:left + w].numpy(), _window_render(G, rec, box, 9).numpy(),
                               atol=2e-5)
    # Change one noise map inside the region's window: the render's region moves by exactly what the
    # hand-sliced window computes with the changed map.
    k = len(rec.noises) - 1
    changed = inv.InversionRecord(**{**rec.__dict__, "noises": [n.clone() for n in rec.noises]})
    spec = G.texture_synthesizer.specs[k]
    a_y, a_x = top // 2 ** G.depth, left // 2 ** G.depth
    changed.noises[k][..., spec.step * a_y + 6, spec.step * a_x + 10:spec.step * a_x + 30] += 3.0
    out2 = inv.render(G, changed, seed=9)
    want = _window_render(G, changed, box, 9)
    region = out2[..., top:top + h, left:left + w]
    np.testing.assert_allclose(region.numpy(), want.numpy(), atol=2e-5)
    assert (region - out[..., top:top + h, left:left + w]).abs().max() > 1e-3
    # Outside every window the record's values are not used: the seed's fresh values are.
    far = inv.InversionRecord(**{**rec.__dict__, "noises": [n.clone() for n in rec.noises]})
    far.noises[k][..., :, -4:] += 3.0
    assert torch.equal(inv.render(G, far, seed=9), out)
    # z_l and z_g reach it too.
    for name in ("z_l", "z_g", "ws"):
        t = getattr(rec, name).clone()
        if name == "z_l":
            t[..., a_y + 3:a_y + 6, a_x + 3:a_x + 6] += 1.0
        else:
            t += 0.5
        moved = inv.render(G, inv.InversionRecord(**{**rec.__dict__, name: t}), seed=9)
        assert (moved[..., top:top + h, left:left + w] - out[..., top:top + h, left:left + w]).abs().max() > 1e-3, name


def test_every_optimised_variable_moves_and_unused_latents_stay(inverted):
    G, canvas, box, _, st, rec = inverted
    z_l0, noises0, coords0 = inv.canvas_inputs(G, canvas, st.init_seed)
    z_g0 = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(st.init_seed + 1))
    w_mean, _ = inv.w_statistics(G, st.w_samples)
    assert torch.equal(rec.coords, coords0)                               # coordinates are not optimised
    assert (rec.z_g - z_g0).abs().min() > 0                               # every z_g entry moved
    assert rec.ws.shape == (1, G.num_ws, G.z_dim)                         # W+: one style per layer ...
    for i in range(G.num_ws):                                             # ... every row moved ...
        assert (rec.ws[0, i] - w_mean).abs().max() > 1e-4, i
    for i in range(1, G.num_ws):                                          # ... on its own
        assert (rec.ws[0, i] - rec.ws[0, 0]).abs().max() > 1e-5, i
    # z_l: moved inside the region's window, untouched elsewhere (no loss term reaches it).
    top, left, h, w = box
    s, R = 2 ** G.depth, G.ss_margin
    a_y, a_x = top // s, left // s
    n_x = next(n for n in range(G.min_zs_size(), 100) if G.output_size(n) >= left - s * a_x + w)
    n_y = next(n for n in range(G.min_zs_size(), 100) if G.output_size(n) >= top - s * a_y + h)
    inside = torch.zeros(z_l0.shape[2:], dtype=torch.bool)
    inside[a_y:a_y + n_y + 2 * R, a_x:a_x + n_x + 2 * R] = True
    diff = (rec.z_l - z_l0).abs()[0]
    assert (diff[:, inside] > 0).float().mean() > 0.99
    assert torch.equal(rec.z_l[0][:, ~inside], z_l0[0][:, ~inside]) and (~inside).any()
    # Each noise map: moved beyond the renormalisation alone (mean 0, std 1 of the initial map).
    for k, (n, n0) in enumerate(zip(rec.noises, noises0)):
        renorm = (n0 - n0.mean()) / n0.std()
        assert (n - renorm).abs().max() > 1e-3, k
        assert n.mean().abs() < 1e-5 and abs(n.std().item() - 1) < 1e-5, k    # renormalised after each step
