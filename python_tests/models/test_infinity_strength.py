"""InfinityGAN against computations written here (issue 21): the vertical coordinate windows of training
(reals: data/infinity.py; fakes: InfinityGenerator.training_coords, hand-computed from the published
coordinate grid, hubert0527/infinityGAN coord_handler.py), the seed hashing of the canvas, and the
converter's numerics (each converted layer computes the published StyleGAN2 layer from the published
tensors: equalised-lr scales, modulation, demodulation, noise, fused leaky ReLU)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anyres_fast.data import ImageSource
from anyres_fast.data.infinity import InfinityPatchDataset, crop_patch, vertical_label
from anyres_fast.models import from_official
from anyres_fast.models import infinity_canvas as cv
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
from anyres_fast.train.infinity_recipe import TINY_G
from helpers import filled, published_layout

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------------
# Vertical coordinate windows

def test_real_patch_offsets_cover_every_row_and_labels_are_the_published_linear_map(tmp_path):
    rng0 = np.random.default_rng(0)
    os.makedirs(tmp_path / "d")
    Image.fromarray(rng0.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "d" / "a.png")
    p, full = 8, 14
    ds = InfinityPatchDataset(ImageSource(str(tmp_path / "d")), p, full=full, xflip=False, seed=3)
    whole = ds.full_image(0)
    tops = set()
    for draw in range(400):
        item = ds[(0, draw)]
        left, top = item["box"].tolist()
        tops.add(top)
        # The published label: offset / span * 2 - 1, span = F - p (docs/infinitygan_training.md).
        assert item["coord_v"].item() == pytest.approx(top / (full - p) * 2 - 1, abs=1e-7)
        want = np.clip(whole[:, top:top + p, left:left + p], 0, 255) / 127.5 - 1
        np.testing.assert_allclose(item["image"].numpy(), want, atol=1e-6)
    assert tops == set(range(full - p + 1))              # every offset in [0, F - p], ends included
    # The window's ends are exactly -1 and +1; the middle row of an even span is 0.
    assert vertical_label(0, 6) == -1.0 and vertical_label(6, 6) == 1.0 and vertical_label(3, 6) == 0.0
    assert vertical_label(0, 0) == 0.0
    # crop_patch's rows: a full image whose rows are numbered, so the crop's top is read from its pixels.
    numbered = np.broadcast_to(np.arange(full, dtype=np.float32)[None, :, None], (3, full, full))
    for seed in range(30):
        patch, top, left, label = crop_patch(numbered, p, np.random.default_rng(seed))
        assert patch[0, 0, 0] == top and patch.shape == (3, p, p) and label == 2 * top / (full - p) - 1


def _published_vertical(cfg, x_st, jitter, rows):
    """Pre-tanh vertical coordinate of window row i drawn at offset x_st (published coord_handler.py):
    grid rows x = (i + x_st) / (ts + V - 1), re-centred by (x[-1] - 1) / 2 over the grid of zl + V rows,
    mapped to [-1, 1] and scaled by the cut; the continuous jitter is +- half a grid step."""
    denom = cfg.ts_input + cfg.coord_vert_samples - 1
    grid_rows = cfg.zl_size + cfg.coord_vert_samples
    x = (np.arange(rows) + x_st) / denom
    x = x - ((grid_rows - 1) / denom - 1) / 2
    step = 2 * cfg.coord_cut / denom
    return (x * 2 - 1) * cfg.coord_cut + jitter * step


def test_fake_coordinate_windows_equal_the_published_grid_windows():
    cfg = InfinityConfig(**TINY_G)
    G = InfinityGenerator(cfg)
    b = 64
    coords, label = G.training_coords(b, generator=torch.Generator().manual_seed(5))
    # The same draws, in the order training_coords documents: x in [0, V), y in [0, T), jitter (B, 2).
    g = torch.Generator().manual_seed(5)
    xs = torch.randint(0, cfg.coord_vert_samples, (b,), generator=g).numpy()
    ys = torch.randint(0, cfg.hori_period, (b,), generator=g).numpy()
    jit = (torch.rand(b, 2, generator=g, dtype=torch.float64) - 0.5).numpy()
    assert set(xs.tolist()) == set(range(cfg.coord_vert_samples))   # 64 draws hit all 10 offsets
    n = cfg.zl_size
    T = cfg.hori_period
    for i in range(b):
        v = _published_vertical(cfg, xs[i], jit[i, 0], n)
        np.testing.assert_allclose(coords[i, 0, :, 0].double().numpy(), np.tanh(v), atol=2e-6)
        assert np.all(coords[i, 0] .numpy() == coords[i, 0, :, :1].numpy())      # constant along a row
        # Horizontal: published column y maps to the angle pi (2 y / (T - 1) - 1), jittered likewise.
        cols = np.arange(n) + ys[i] + jit[i, 1]
        a = np.pi * (2 * cols / (T - 1) - 1)
        np.testing.assert_allclose(coords[i, 1, 0].double().numpy(), np.cos(a), atol=2e-6)
        np.testing.assert_allclose(coords[i, 2, 0].double().numpy(), np.sin(a), atol=2e-6)
        # The fake's label: x_st / (V - 1) * 2 - 1 (published `return_ac_coords`).
        assert label[i].item() == pytest.approx(xs[i] / (cfg.coord_vert_samples - 1) * 2 - 1, abs=1e-7)
    assert label.min().item() == -1.0 and label.max().item() == 1.0
    # The published grid of zl + V rows is centred on the horizon and steps by 2 cut / (ts + V - 1).
    grid = _published_vertical(cfg, 0, 0.0, n + cfg.coord_vert_samples)
    assert grid[(n + cfg.coord_vert_samples - 1) // 2] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(np.diff(grid), cfg.vert_step, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Seed hashing of the canvas

def _shared(a, b) -> float:
    """Fraction of equal values of two maps (independent N(0, 1) maps share almost none)."""
    return (a == b).double().mean().item()


def _grid(seed, stream=0, channels=2, rows=range(-3, 5), cols=range(-4, 6)):
    r = torch.tensor([list(rows)], dtype=torch.int64)
    c = torch.tensor([list(cols)], dtype=torch.int64)
    return cv.canvas_normal(seed, stream, channels, r, c)


def test_canvas_seeds_give_distinct_canvases_including_high_bits():
    base = _grid(12345)
    assert torch.equal(base, _grid(12345))                              # same seed: same canvas
    others = [12346, 12345 + 2 ** 32, 12345 + 2 ** 40, 12345 + 2 ** 62, 12345 ^ 1, 0, 1, 2 ** 32, 2 ** 63 - 1]
    grids = [base] + [_grid(s) for s in others]
    for i in range(len(grids)):
        for j in range(i + 1, len(grids)):
            # Independent canvases: no equal values, and uncorrelated.
            assert _shared(grids[i], grids[j]) < 0.01, (i, j)
    # Brute force over many seeds (low and high halves): the stream keys never collide.
    seeds = list(range(300)) + [s << 32 for s in range(1, 300)] + [(s << 32) | s for s in range(1, 300)]
    keys = {cv.stream_key(s, 0) for s in seeds}
    assert len(keys) == len(seeds)
    # Streams (z_l and each noise map) of one seed are different maps too.
    assert _shared(_grid(7, 0, 1), _grid(7, 1, 1)) < 0.01
    assert _shared(_grid(7, 1, 1), _grid(7, 2, 1)) < 0.01


def test_canvas_positions_are_hashed_independently():
    z = _grid(99, channels=3, rows=range(-40, 40), cols=range(-40, 40))[0].double()       # (3, 80, 80)
    # Row, column and channel each enter the hash (no r + c, r ^ c, symmetric mix): values repeat only
    # by chance (float32 of 24-bit uniforms: a few equal pairs among 19 200 values).
    flat = z.flatten()
    assert flat.numel() - torch.unique(flat).numel() < 20
    off = ~torch.eye(80, dtype=torch.bool)
    assert not (z[0] == z[0].T)[off].any()                              # (r, c) and (c, r) differ
    assert not (z[0, 1:, :-1] == z[0, :-1, 1:]).any()                   # (r + 1, c) and (r, c + 1) differ
    assert not (z[0] == z[1]).any()
    # Negative and positive indices are different positions (indices are taken mod 2^32, two's complement).
    r = torch.tensor([[-1, 1, 2 ** 31 - 1, -(2 ** 31 - 1)]], dtype=torch.int64)
    v = cv.canvas_normal(5, 0, 1, r, torch.tensor([[0]]))[0, 0, :, 0]
    assert torch.unique(v).numel() == 4
    # N(0, 1), and neighbours uncorrelated: statistics of 19 200 values (bounds ~ 6 standard errors).
    n = flat.numel()
    assert abs(flat.mean().item()) < 6 / math.sqrt(n) and abs(flat.std().item() - 1) < 6 / math.sqrt(2 * n)
    for a, b in ((z[:, 1:], z[:, :-1]), (z[:, :, 1:], z[:, :, :-1]), (z[1:], z[:-1])):
        corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
        assert abs(corr.item()) < 6 / math.sqrt(a.numel()), corr
    # A value depends only on its own (seed, stream, channel, row, column): asked alone, it is the same.
    for (c, i, j) in [(0, 0, 0), (2, 79, 3), (1, 40, 77)]:
        one = cv.canvas_normal(99, 0, 3, torch.tensor([[i - 40]]), torch.tensor([[j - 40]]))[0, c, 0, 0]
        assert one.item() == z[c, i, j].float().item()


def test_generator_canvas_inputs_are_the_canvas_maps_at_their_indices():
    G = InfinityGenerator(InfinityConfig(**TINY_G))
    R = G.ss_margin
    top, left, h, w = 3, -7, 11, 12
    z_l, coords, noises = G.canvas_inputs(2 ** 40 + 17, top, left, h, w)
    # Brute force: z_l sample (i, j) is channel map 0 at canvas latent (top - R + i, left - R + j).
    rows = torch.arange(top - R, top - R + h + 2 * R)[None]
    cols = torch.arange(left - R, left - R + w + 2 * R)[None]
    assert torch.equal(z_l, cv.canvas_normal(2 ** 40 + 17, cv.STREAM_ZL, G.local_dim, rows, cols))
    # Noise of G_T conv k: stream 1 + k at canvas index step_k * top + i (docs/infinitygan.md).
    for spec, n in zip(G.texture_synthesizer.specs, noises):
        hh, ww = n.shape[2:]
        want = cv.canvas_normal(2 ** 40 + 17, 1 + spec.index, 1, spec.step * top + torch.arange(hh)[None],
                                spec.step * left + torch.arange(ww)[None])
        assert torch.equal(n, want), spec.index
    # Another seed differing only in the high 32 bits: every input map differs.
    z2, _, n2 = G.canvas_inputs(17, top, left, h, w)
    assert _shared(z_l, z2) < 0.01
    assert all(_shared(a, b) < 0.01 for a, b in zip(noises, n2))


# ----------------------------------------------------------------------------------------------------
# Converter numerics: the published layer functions, written from the published formulas

SQRT2 = math.sqrt(2.0)


def _flrelu(x, bias):
    """Published FusedLeakyReLU: leaky_relu(x + b, 0.2) * sqrt(2)."""
    return F.leaky_relu(x + bias.view(1, -1, 1, 1), 0.2) * SQRT2


def _eq_linear(x, weight, bias, lr_mul=1.0):
    """Published EqualLinear: x (W / sqrt(in) * lr_mul)^T + b * lr_mul."""
    return F.linear(x, weight * (lr_mul / math.sqrt(weight.shape[1])), bias * lr_mul)


def _modulated_weight(weight5, style, demodulate):
    """Published ModulatedConv2d weight for batch 1: scale * W * s (+ demodulation, eps 1e-8)."""
    w = weight5[0]
    o, i, k, _ = w.shape
    w = w * (1 / math.sqrt(i * k * k)) * style.view(1, i, 1, 1)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return w


@pytest.fixture(scope="module")
def converted():
    layout = published_layout(3, 8, 4, [4, 4, 2], 2, 1, 2)
    sd = {k: v.double() for k, v in filled(layout, seed=3).items()}
    G, _ = from_official(sd, ts_input=7)
    return G.double().eval(), sd


def test_converted_mapping_is_pixelnorm_and_the_published_equal_linears(converted):
    G, sd = converted
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for i in (1, 2):                                       # entry 0 is the PixelNorm; lr multiplier 0.01
        lin = F.linear(x, sd[f"texture_synthesizer.mapping.{i}.weight"] * (0.01 / math.sqrt(8)))
        x = F.leaky_relu(lin + sd[f"texture_synthesizer.mapping.{i}.bias"] * 0.01, 0.2) * SQRT2
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(z), x, rtol=1e-10, atol=1e-10)


def test_converted_structure_block_is_the_published_modulated_conv_over_x_and_coords(converted):
    G, sd = converted
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 9, 9, generator=g, dtype=torch.float64)
    coords = torch.randn(1, 3, 9, 9, generator=g, dtype=torch.float64)
    z_g = torch.randn(1, 8, generator=g, dtype=torch.float64)
    for b in range(2):
        pre = f"structure_synthesizer.implicit_model.conv_stack.{b}.conv."
        style = _eq_linear(z_g, sd[pre + "conv.modulation.weight"], sd[pre + "conv.modulation.bias"])
        w = _modulated_weight(sd[pre + "conv.weight"], style, demodulate=True)
        want = _flrelu(F.conv2d(torch.cat([x, coords], 1), w), sd[pre + "activate.bias"])    # no padding
        with torch.no_grad():
            got = G.structure_synthesizer.blocks[b](x, coords, z=z_g)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_converted_texture_convs_and_torgb_are_the_published_layers(converted):
    G, sd = converted
    g = torch.Generator().manual_seed(2)
    ts = G.texture_synthesizer
    blur = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    blur = (torch.outer(blur, blur) / 16 * 4)             # published Blur with upsample_factor 2
    for i in range(len(ts.convs)):
        pre = f"texture_synthesizer.convs.{i}."
        cin = sd[pre + "conv.weight"].shape[2]
        x = torch.randn(1, cin, 7, 7, generator=g, dtype=torch.float64)
        wv = torch.randn(1, 8, generator=g, dtype=torch.float64)
        style = _eq_linear(wv, sd[pre + "conv.modulation.weight"], sd[pre + "conv.modulation.bias"])
        w = _modulated_weight(sd[pre + "conv.weight"], style, demodulate=True)
        if i % 2 == 0:
            # Up: transposed conv (stride 2), [1,2,1] blur without padding, the dirty pixel cut per side.
            y = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
            y = F.conv2d(y, blur.expand(y.shape[1], 1, 3, 3).contiguous(), groups=y.shape[1])
            y = y[:, :, 1:-1, 1:-1]
        else:
            y = F.conv2d(x, w)                            # no_zero_pad: valid 3x3
        noise = torch.randn(1, 1, *y.shape[2:], generator=g, dtype=torch.float64)
        want = _flrelu(y + sd[pre + "noise.weight"] * noise, sd[pre + "activate.bias"])
        with torch.no_grad():
            got = ts.convs[i](x, style=wv, noise=noise)
        assert got.shape == want.shape, i
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for p in range(len(ts.torgbs)):
        pre = f"texture_synthesizer.to_rgbs.{p}."
        cin = sd[pre + "conv.weight"].shape[2]
        x = torch.randn(1, cin, 5, 5, generator=g, dtype=torch.float64)
        wv = torch.randn(1, 8, generator=g, dtype=torch.float64)
        style = _eq_linear(wv, sd[pre + "conv.modulation.weight"], sd[pre + "conv.modulation.bias"])
        want = F.conv2d(x, _modulated_weight(sd[pre + "conv.weight"], style, demodulate=False)) + sd[pre + "bias"]
        with torch.no_grad():
            got = ts.torgbs[p](x, wv, None)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_fusion_weights_equal_a_brute_force_nearest_centre_box_average():
    # Centres at fractional pixels, one tie (pixel (3, 3) equidistant to centres 0 and 2 -> the lower index).
    centres = torch.tensor([[1.0, 3.0], [9.5, 2.25], [5.0, 3.0], [4.0, 11.0]], dtype=torch.float64)
    kernel = 5
    grids = [(torch.tensor([-2, 0, 3, 7, 12]), torch.tensor([-1, 3, 4, 10])),
             (torch.tensor([5]), torch.tensor([-6, 15]))]
    got = cv.fusion_weights(centres, kernel, grids, "cpu")

    def nearest(y, x):
        d = [(x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centres.tolist()]
        return d.index(min(d))                                   # first minimum: ties to the lower index

    assert nearest(3, 3) == 0
    half = kernel // 2
    for (ys, xs), w in zip(grids, got):
        assert w.shape == (4, len(ys), len(xs)) and w.dtype == torch.float32
        for i, y in enumerate(ys.tolist()):
            for j, x in enumerate(xs.tolist()):
                counts = [0] * 4
                for yy in range(y - half, y + half + 1):
                    for xx in range(x - half, x + half + 1):
                        counts[nearest(yy, xx)] += 1
                want = torch.tensor(counts, dtype=torch.float32) / kernel ** 2
                assert torch.equal(w[:, i, j], want), (y, x, w[:, i, j], want)


def test_style_centres_window_is_half_open_and_errors_name_the_window():
    top, left, h, w = -4, 10, 20, 30
    ok = cv.check_centres([[10, -4], [39.5, 15.75]], 2, top, left, h, w)        # the window's first pixel, inside
    assert ok.dtype == torch.float64 and ok.tolist() == [[10.0, -4.0], [39.5, 15.75]]
    assert cv.check_centres([[3, 2]], 1, 0, 0, 5, 5).dtype == torch.float64       # int input -> float64
    for x, y in [(40, 0), (9.99, 0), (20, 16), (20, -4.01)]:                       # x < left + w, y < top + h
        with pytest.raises(ValueError) as e:
            cv.check_centres([[20, 0], [x, y]], 2, top, left, h, w)
        assert str(e.value) == (f"InfinityGenerator.generate: style centre 1 at (x={x:g}, y={y:g}) is outside the "
                                f"canvas window x in [10, 40), y in [-4, 16)")
    with pytest.raises(ValueError, match=r"must have shape \(K, 2\) = \(3, 2\) \(one \(x, y\) per z_g row\), "
                                         r"got \(2, 2\)$"):
        cv.check_centres([[1, 1], [2, 2]], 3, 0, 0, 9, 9)
    with pytest.raises(ValueError, match="^InfinityGenerator.generate: style_centres must be finite$"):
        cv.check_centres([[1, float("nan")]], 1, 0, 0, 9, 9)
    with pytest.raises(ValueError, match="must be a .K, 2. array of .x, y. pixels, got 'abc'"):
        cv.check_centres("abc", 1, 0, 0, 9, 9)


def test_ring_columns_boundaries_and_suggestions():
    assert cv.ring_columns(8, 4, 8) == 2                      # exactly one patch wide is a ring
    assert cv.ring_columns(12, 4, 8) == 3
    with pytest.raises(ValueError, match="^w 7: a cyclic canvas must be at least one 8-pixel patch wide$"):
        cv.ring_columns(7, 4, 8, "w")
    with pytest.raises(ValueError, match=r"multiple of 4 pixels .* e\.g\. 12 or 16$"):
        cv.ring_columns(13, 4, 12)                            # the lower multiple equals the patch: offered
    with pytest.raises(ValueError, match=r"e\.g\. 16$"):
        cv.ring_columns(14, 4, 13)                            # 12 is below the patch: only 16
    for bad in (True, 8.0, "8"):
        with pytest.raises(ValueError, match="must be an int"):
            cv.ring_columns(bad, 4, 8)
