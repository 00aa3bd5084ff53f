"""Units of the inversion module against computations written here (issue 21): the learning-rate schedule
(linear ramp-up, cosine ramp-down), StyleGAN2's noise regulariser (brute-force loop), 8-bit PSNR, seam
statistics, the LPIPS input upsampling, and every refusal with match= on its message."""
from __future__ import annotations

import math

import pytest
import torch

from anyres_fast.models import infinity_inversion as inv
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
from anyres_fast.train.infinity_recipe import TINY_G

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return InfinityGenerator(InfinityConfig(**TINY_G)).eval()


@pytest.mark.parametrize("t", [0.0, 0.01, 0.03, 0.05, 0.3, 0.75, 0.8, 0.9, 0.99])
@pytest.mark.parametrize("up,down", [(0.05, 0.25), (0.1, 0.5), (0.0, 0.25), (0.05, 0.0)])
def test_lr_factor_is_the_published_ramp(t, up, down):
    # docs/infinitygan_training.md: linear ramp-up over `up`, cosine ramp-down over the last `down`.
    want_up = 1.0 if up == 0 else min(1.0, t / up)
    d = 1.0 if down == 0 else min(1.0, (1 - t) / down)
    want = want_up * (1 - math.cos(math.pi * d)) / 2
    assert inv._lr_factor(t, up, down) == pytest.approx(want, abs=1e-12)


def test_noise_regularizer_against_a_loop():
    g = torch.Generator().manual_seed(0)
    noises = [torch.randn(1, 1, 32, 32, generator=g), torch.randn(1, 1, 12, 20, generator=g),
              torch.randn(1, 1, 9, 16, generator=g)]
    want = 0.0
    for n in noises:
        x = n[0, 0].double()
        while True:
            h, w = x.shape
            right = sum(x[i, j] * x[i, (j - 1) % w] for i in range(h) for j in range(w)) / (h * w)
            down = sum(x[i, j] * x[(i - 1) % h, j] for i in range(h) for j in range(w)) / (h * w)
            want += float(right) ** 2 + float(down) ** 2
            if min(h, w) <= 8 or h % 2 or w % 2:
                break
            x = x.reshape(h // 2, 2, w // 2, 2).mean(dim=(1, 3))
    assert float(inv.noise_regularizer(noises)) == pytest.approx(want, rel=1e-4)


def test_psnr_of_8_bit_images():
    a = torch.zeros(1, 3, 4, 5)
    assert inv.psnr(a, a) == float("inf")
    b = a.clone()
    b[0, 0, 0, 0] = 2 / 255.0 * 1.0001                      # one value 1 step up after rounding (127.5 -> 128 vs 128)
    qa = ((a + 1) * 127.5).round()
    qb = ((b + 1) * 127.5).round()
    mse = (qa - qb).square().mean().item()
    assert mse > 0
    assert inv.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    c = torch.full((1, 3, 4, 5), 5.0)                       # clamped to 1 -> 255 vs 128
    assert inv.psnr(a, c) == pytest.approx(10 * math.log10(255 ** 2 / 127 ** 2))


def test_seam_stats_by_hand():
    img = torch.zeros(1, 3, 2, 4)
    img[..., 2:] = 1.0                                      # columns 0,1 -> 128; 2,3 -> 255
    img[..., 0, 1] = -1.0                                   # row 0 col 1 -> 0
    s = inv.seam_stats(img, 2, [1, 3])
    assert s["seam"] == pytest.approx((255 + 127) / 2)
    assert s["inside"] == {1: pytest.approx(64.0), 3: 0.0}
    assert s["inside_mean"] == pytest.approx(32.0)
    assert inv.seam_stats(img, 2, [])["inside_mean"] == 0.0


@pytest.mark.parametrize("hw,want", [((32, 40), (32, 40)), ((16, 20), (32, 40)), ((31, 64), (32, 66))])
def test_lpips_input_upsamples_small_crops_to_32(hw, want):
    x = torch.rand(1, 3, *hw)
    y = inv._lpips_input(x)
    assert tuple(y.shape[-2:]) == want
    if hw == want:
        assert y is x


@pytest.mark.parametrize("box", [(-1, 0, 4, 4), (0, -1, 4, 4), (30, 0, 4, 4), (0, 40, 4, 4), (0, 0, 0, 4), (0, 0, 4, 0)])
def test_plan_canvas_refuses_a_box_outside(G, box):
    with pytest.raises(ValueError, match=r"^region \(.*\) is not inside the 32 x 41 output$"):
        inv.plan_canvas(G, 32, 41, [box])


def test_invert_refusals(G):
    canvas = inv.plan_canvas(G, 32, 32, [(0, 0, 32, 32)])
    t = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="^pixel loss must be l2 or l1, got 'l3'$"):
        inv.invert(G, canvas, [t], inv.InversionSettings(steps=0, pixel="l3"), progress=False)
    with pytest.raises(ValueError, match="^2 targets for 1 regions$"):
        inv.invert(G, canvas, [t, t], inv.InversionSettings(steps=0), progress=False)
    with pytest.raises(ValueError, match=r"^target of shape \(1, 3, 32, 31\) for a region of 32 x 32$"):
        inv.invert(G, canvas, [t[..., :31]], inv.InversionSettings(steps=0), progress=False)


def test_canvas_dict_round_trip():
    c = inv.Canvas(10, 20, [inv.Region(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)], (3, 4), -1.5, 2.5, 7)
    back = inv.Canvas.from_dict(c.to_dict())
    assert back == c and isinstance(back.zs, tuple)
    d = c.to_dict()
    del d["ring"]
    assert inv.Canvas.from_dict(d).ring == 0


def test_record_load_refusals(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable inversion record \(.+\)$"):
        inv.InversionRecord.load(str(p))
    q = tmp_path / "other.pt"
    torch.save({"format": "x"}, q)
    with pytest.raises(ValueError, match=r"other\.pt: not an InfinityGAN inversion record \(format "
                                         r"anyres_fast\.models\.infinity_inversion/1\)$"):
        inv.InversionRecord.load(str(q))
    torch.save({"format": inv.RECORD_FORMAT, "z_g": torch.zeros(1)}, q)
    with pytest.raises(ValueError, match=r"other\.pt: a damaged inversion record \(KeyError: 'ws'\)$"):
        inv.InversionRecord.load(str(q))
    with pytest.raises(OSError):
        inv.InversionRecord.load(str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("box", [(3, 21, 30, 32), (0, 0, 32, 32), (17, 40, 9, 5)])
def test_plan_canvas_and_window_slices_by_hand(G, box):
    top, left, h, w = box
    H, W = 60, 90
    c = inv.plan_canvas(G, H, W, [box])
    r = c.regions[0]
    s, R = 2 ** G.depth, G.ss_margin
    n_for = lambda size: next(n for n in range(G.min_zs_size(), 200) if G.output_size(n) >= size)
    a_y, a_x = top // s, left // s
    off_y, off_x = top - s * a_y, left - s * a_x
    assert (r.top, r.left, r.height, r.width) == box
    assert (r.a_y, r.a_x, r.off_y, r.off_x, r.n_y, r.n_x) == (a_y, a_x, off_y, off_x, n_for(off_y + h), n_for(off_x + w))
    assert c.zs == (max(n_for(H), a_y + r.n_y), max(n_for(W), a_x + r.n_x)) and c.ring == 0
    zl, noise = inv.window_slices(G, r)
    assert zl == (slice(a_y, a_y + r.n_y + 2 * R), slice(a_x, a_x + r.n_x + 2 * R))
    for (rows, cols), spec, hh, ww in zip(noise, G.texture_synthesizer.specs, G.layer_sizes(r.n_y)[1:],
                                           G.layer_sizes(r.n_x)[1:]):
        assert rows == slice(spec.step * a_y, spec.step * a_y + hh)
        assert cols == slice(spec.step * a_x, spec.step * a_x + ww)
    wr = inv.whole(c)
    assert (wr.top, wr.left, wr.height, wr.width, wr.a_y, wr.a_x, wr.n_y, wr.n_x, wr.off_y, wr.off_x) == \
        (0, 0, H, W, 0, 0, c.zs[0], c.zs[1], 0, 0)


def test_w_statistics_are_the_mapped_samples_moments(G):
    mean, std = inv.w_statistics(G, 64, seed=5)
    with torch.no_grad():
        w = G.mapping(torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(mean, w.mean(0))
    torch.testing.assert_close(std, w.std(0))
