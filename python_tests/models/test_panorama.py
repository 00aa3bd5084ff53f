"""The panorama mode of the any-resolution Generator (docs/panorama.md): the strip wraps around with no
seam, slices are windows of the strip, the input follows the published formula, bad input is one line."""
from __future__ import annotations

import math
import os

import pytest
import torch

from anyres_fast.models import Generator
from anyres_fast.models.anyres import panorama_turn_samples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
P = 64
MICRO = dict(resolution=P, z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4, mapping_width=8,
             scale_branch=False)


def panorama_model(fov=90.0, seed=0, **kw) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**MICRO, panorama=True, fov=fov, **kw).eval()
    return G.calibrate_magnitudes_(torch.randn(16, 8, generator=torch.Generator().manual_seed(seed + 1)))


@pytest.fixture(scope="module")
def G():
    return panorama_model()


def seam_ratio(G, z, starts) -> tuple:
    """(mean |last column - first column|, mean |adjacent interior columns|) over strips starting at
    `starts` (the seam falls at a different angle for each)."""
    seam, interior = [], []
    for k in starts:
        s = G.render_panorama(z, start=k, progress=False, force_fp32=True)
        seam.append((s[..., -1] - s[..., 0]).abs().mean())
        interior.append((s[..., 1:] - s[..., :-1]).abs().mean())
    return float(torch.stack(seam).mean()), float(torch.stack(interior).mean())


STARTS = (0, 20, 52, 100, 132, 176, 204, 236)      # multiples of the input spacing p / rate = 4 pixels


def test_the_strip_wraps_around_without_a_seam(G):
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    seam, interior = seam_ratio(G, z, STARTS)
    print(f"seam {seam:.5f}, interior {interior:.5f}, ratio {seam / interior:.3f}")
    assert abs(seam / interior - 1) <= 0.10


def test_a_closed_angle_range_is_caught_by_the_seam_measure(G, monkeypatch):
    # The classic bug: x sampled over [-pi, pi] with both ends, so the last column repeats the first.
    W, inp = G.panorama_width(), G.synthesis.input
    monkeypatch.setattr(inp, "angles", lambda ux: -math.pi + 2 * math.pi * ((ux + 0.5) * P - 0.5) / (W - 1))
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    seam, interior = seam_ratio(G, z, STARTS)
    print(f"broken wrap: seam {seam:.5f}, interior {interior:.5f}, ratio {seam / interior:.3f}")
    assert abs(seam / interior - 1) > 0.10 and seam / interior < 0.2


def test_the_strip_repeats_every_turn_and_rotates_with_start(G):
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(4))
    W = G.panorama_width()
    assert W == 4 * P          # fov 90: four frames
    strip = G.render_panorama(z, progress=False, force_fp32=True)
    assert strip.shape == (2, 3, P, W)
    turned = G.render_panorama(z, start=W, progress=False, force_fp32=True)
    assert (turned - strip).abs().max() < 1e-5
    rotated = G.render_panorama(z, start=2 * P, progress=False, force_fp32=True)
    assert (rotated - torch.roll(strip, -2 * P, dims=3)).abs().max() < 1e-5


def test_a_slice_is_the_frame_at_its_viewing_angle(G):
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    strip = G.render_panorama(z, progress=False, force_fp32=True)
    W = strip.shape[3]
    # The frame centred on 0 degrees is the middle of the strip; on 180 (= -180) it straddles the ends.
    mid = G.panorama_slice(z, 0.0, force_fp32=True)
    assert (mid - strip[..., W // 2 - P // 2:W // 2 + P // 2]).abs().max() < 1e-5
    back = G.panorama_slice(z, torch.tensor([180.0, -180.0]), force_fp32=True)
    wrapped = torch.cat([strip[..., W - P // 2:], strip[..., :P // 2]], dim=3)
    assert (back - wrapped).abs().max() < 1e-5
    assert G.panorama_box(0.0) == W / 2 - P / 2


def test_the_input_layer_follows_the_published_formula(G):
    # Written out independently: channel k < C/2 sees sin(2 pi (f_k . (sin theta, y) + phi_k)), the
    # others cos theta; theta = -pi + 2 pi (x0 + pixel) / W at the input samples.
    inp = G.synthesis.input
    rate, size, C = inp.sampling_rate, inp.size, inp.channels
    x0 = 36.0
    w = torch.zeros(1, G.w_dim)
    T = torch.tensor([[[1.0, 0, (x0 + P / 2) / P - 0.5], [0, 1, 0], [0, 0, 1]]])
    got = inp(w, T)
    turn = panorama_turn_samples(rate, G.config.fov)
    i = torch.arange(size, dtype=torch.float64)
    g = (i + 0.5 - size / 2) / rate
    theta = -math.pi + 2 * math.pi * (g + 0.5 + x0 / P) * rate / turn
    f, ph = inp.freqs.double(), inp.phases.double()
    feats = []
    for k in range(C):
        circ = torch.sin(theta) if k < C // 2 else torch.cos(theta)
        feats.append(torch.sin(2 * math.pi * (f[k, 0] * circ.view(1, -1) + f[k, 1] * g.view(-1, 1) + ph[k])))
    want = torch.einsum("oc,chw->ohw", inp.weight.double() / math.sqrt(C), torch.stack(feats))
    assert (got[0].double() - want).abs().max() < 1e-5


def test_w_interpolation_stays_seamless_and_moves_w(G):
    z = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(6))
    W = G.panorama_width()
    blended = G.render_panorama(z, w_interp=W / 3, progress=False, force_fp32=True)
    assert blended.shape == (1, 3, P, W)
    # Near an anchor the strip is that anchor's panorama (its w, cross-faded with nearly the same w).
    single = G.render_panorama(z[:, 0], progress=False, force_fp32=True)
    other = G.render_panorama(z[:, 1], progress=False, force_fp32=True)
    near = slice(0, 2)
    assert (blended[..., near] - single[..., near]).abs().mean() < 0.5 * (other[..., near] - single[..., near]).abs().mean()
    # Equal anchors: exactly the plain strip (the triangle weights sum to one).
    same = G.render_panorama(z[:, :1].repeat(1, 3, 1), w_interp=W / 3, progress=False, force_fp32=True)
    assert (same - single).abs().max() < 1e-5
    d = (blended[..., 1:] - blended[..., :-1]).abs().mean()
    assert (blended[..., -1] - blended[..., 0]).abs().mean() < 2 * d


def test_bad_panorama_input_is_one_clear_line(G):
    for fov in (0, -10, 361, 720):
        with pytest.raises(ValueError, match=r"fov must be in \(0, 360\]"):
            Generator(**MICRO, panorama=True, fov=fov)
    flat = Generator(**MICRO)
    for call in (lambda: flat.render_panorama(torch.zeros(1, 8)), lambda: flat.panorama_width(),
                 lambda: flat.panorama_slice(torch.zeros(1, 8), 0.0)):
        with pytest.raises(ValueError, match="not a panorama model"):
            call()
    with pytest.raises(ValueError, match="height must be"):
        G.render_panorama(torch.zeros(1, 8), height=32)
    with pytest.raises(ValueError, match="w_interp"):
        G.render_panorama(torch.zeros(1, 8), w_interp=64)
    odd = panorama_model(fov=50)        # 16 * 360 / 50 = 115.2 -> 115 samples per turn
    assert odd.panorama_width(64) == 115 * 64 // 16
    with pytest.raises(ValueError, match="multiple of 16"):
        odd.panorama_width(72)


def test_a_panorama_model_saves_and_loads(G, tmp_path):
    G.save_pretrained(str(tmp_path / "pano"))
    H = Generator.from_pretrained(str(tmp_path / "pano"))
    assert H.config.panorama and H.config.fov == 90.0
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(H.panorama_slice(z, 10.0, force_fp32=True), G.panorama_slice(z, 10.0, force_fp32=True))
