"""InfinityGenerator's canvas geometry and single layers, each against a computation written here: the
coordinate formulas at hand-picked samples, the receptive field found by autograd, the layer offset
table worked out by hand, the canvas slices of two overlapping patches, and G_T's up-conv, conv and
ToRGB as explicit StyleGAN2 modulated convolutions in float64 (docs/infinitygan.md)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from anyres_fast.models import infinity as inf
from anyres_fast.models import infinity_canvas as canvas
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator, coordinate_grid, texture_layers
from anyres_fast.train.infinity_recipe import TINY_G

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return InfinityGenerator(InfinityConfig(**TINY_G)).eval()


def expected_coords(cfg: InfinityConfig, rows, cols) -> torch.Tensor:
    """docs/infinitygan.md: v = vert_step (row - c0), a = pi (2 (col - c0) / (T - 1) - 1), c0 = 2 - 2^(1-d)."""
    c0 = 2.0 - 2.0 ** (1 - cfg.depth)
    rows, cols = torch.as_tensor(rows, dtype=F64), torch.as_tensor(cols, dtype=F64)
    v = cfg.vert_step * (rows - c0)
    a = math.pi * (2 * (cols - c0) / (cfg.hori_period - 1) - 1)
    h, w = len(rows), len(cols)
    return torch.stack([torch.tanh(v)[:, None].expand(h, w), torch.cos(a)[None].expand(h, w),
                        torch.sin(a)[None].expand(h, w)]).float()


def test_pixel_offset_is_the_closed_form_and_the_last_layers_output_offset():
    for d in range(1, 6):
        assert inf._pixel_offset(d) == 2.0 - 2.0 ** (1 - d)
        cfg = InfinityConfig(patch_size=2 ** d * 11 - 5 * (2 ** d - 1), channel_base=2 ** (d + 3))
        assert texture_layers(cfg)[-1].out_offset == 2.0 - 2.0 ** (1 - d)


def test_texture_layers_are_the_hand_worked_table_of_depth_2():
    cfg = InfinityConfig(**TINY_G)
    c0, c1 = cfg.pair_channels(0), cfg.pair_channels(1)
    # up: out t <-> in (t + 1) / 2 (crop 1, blur centre); conv: out t <-> in t + 1; spacing halves at each up.
    table = [(0, True, cfg.local_dim, c0, 2, 0.0, 1.0, 0.5, 0.5),
             (1, False, c0, c0, 2, 0.5, 0.5, 1.0, 0.5),
             (2, True, c0, c1, 4, 1.0, 0.5, 1.25, 0.25),
             (3, False, c1, c1, 4, 1.25, 0.25, 1.5, 0.25)]
    got = [(s.index, s.up, s.in_channels, s.out_channels, s.step, s.in_offset, s.in_spacing, s.out_offset,
            s.out_spacing) for s in texture_layers(cfg)]
    assert got == table


def test_coords_match_the_formula_for_fractional_and_per_sample_origins(G):
    cfg = G.config
    one = G.coords(4, 5, top=1.25, left=-3.5)
    assert one.shape == (1, 3, 4, 5)
    torch.testing.assert_close(one[0], expected_coords(cfg, 1.25 + torch.arange(4.0), -3.5 + torch.arange(5.0)),
                               rtol=0, atol=1e-6)
    many = G.coords(3, 2, top=torch.tensor([0.0, 7.0]), left=torch.tensor([2.0, -1.0]))
    assert many.shape == (2, 3, 3, 2)
    for b, (t, l) in enumerate(((0.0, 2.0), (7.0, -1.0))):
        torch.testing.assert_close(many[b], expected_coords(cfg, t + torch.arange(3.0), l + torch.arange(2.0)),
                                   rtol=0, atol=1e-6)
    rep = G.coords(2, 2, batch=3)
    assert rep.shape == (3, 3, 2, 2) and torch.equal(rep[0], rep[2])


def test_centred_coords_put_the_horizon_and_angle_minus_pi_on_the_middle_sample(G):
    h, w = 5, 7
    c = G.centred_coords(3, h, w)
    assert c.shape == (3, 3, h, w) and torch.equal(c[0], c[2])
    mid = c[0, :, h // 2, w // 2]
    torch.testing.assert_close(mid, torch.tensor([0.0, -1.0, 0.0]), rtol=0, atol=1e-6)   # v = 0, a = -pi
    # symmetric window: tanh(v) is odd about the middle row; the angle is -pi -+ the same step
    torch.testing.assert_close(c[0, 0], -c[0, 0].flip(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(c[0, 1], c[0, 1].flip(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(c[0, 2], -c[0, 2].flip(1), rtol=0, atol=1e-6)
    c0 = 2.0 - 2.0 ** (1 - G.depth)
    torch.testing.assert_close(c[0], expected_coords(G.config, c0 - 2 + torch.arange(5.0), c0 - 3 + torch.arange(7.0)),
                               rtol=0, atol=1e-6)
    even = G.centred_coords(1, 4, 6)[0]                           # even sizes: the origin falls between samples
    torch.testing.assert_close(even, expected_coords(G.config, c0 - 1.5 + torch.arange(4.0),
                                                     c0 - 2.5 + torch.arange(6.0)), rtol=0, atol=1e-6)


def test_training_coords_are_the_published_window_with_half_step_jitter(G):
    cfg = G.config
    v, zl, c0 = cfg.coord_vert_samples, cfg.zl_size, 2.0 - 2.0 ** (1 - G.depth)
    got, label = G.training_coords(6, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)                            # the same draws, in the documented order
    xs = torch.randint(0, v, (6,), generator=g)
    ys = torch.randint(0, cfg.hori_period, (6,), generator=g)
    jit = torch.rand(6, 2, generator=g, dtype=F64) - 0.5
    assert got.shape == (6, 3, zl, zl) and label.dtype == torch.float32
    for b in range(6):
        top = xs[b].item() - (zl + v - 1) / 2 + c0 + jit[b, 0].item()   # window centred on the horizon
        left = ys[b].item() + c0 + jit[b, 1].item()
        torch.testing.assert_close(got[b], expected_coords(cfg, top + torch.arange(float(zl)),
                                                           left + torch.arange(float(zl))), rtol=0, atol=1e-6)
        assert label[b].item() == pytest.approx(xs[b].item() / (v - 1) * 2 - 1, abs=1e-7)
    assert label.min() >= -1 and label.max() <= 1


def test_zl_field_is_the_set_of_latent_rows_autograd_reaches(G):
    """The exact receptive field: rows of z_l whose gradient for one output row is nonzero."""
    cfg, R, scale = G.config, G.ss_margin, 2 ** G.depth
    zs = cfg.ts_input
    for zs_top in (0, -1):                                          # two different patches containing p
        z_l, coords, noises = G.canvas_inputs(5, zs_top, 0, zs, zs, dtype=F64)
        model = InfinityGenerator(cfg).double().eval()
        model.load_state_dict(G.state_dict())
        z_l.requires_grad_(True)
        img = model(torch.randn(1, G.z_dim, dtype=F64, generator=torch.Generator().manual_seed(1)), z_l, coords, noises)
        for p in (scale * zs_top + 3, scale * zs_top + 10, scale * zs_top + img.shape[2] - 1):
            (grad,) = torch.autograd.grad(img[:, :, p - scale * zs_top].sum(), z_l, retain_graph=True)
            rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3)) > 0).flatten() + zs_top - R   # canvas indices
            assert G.zl_field(p) == (rows.min().item(), rows.max().item()), (zs_top, p)
            assert rows.numel() == rows.max().item() - rows.min().item() + 1


def test_centre_crop_takes_the_middle_and_refuses_odd_or_negative_margins():
    t = torch.arange(2 * 7 * 9.0).reshape(1, 2, 7, 9)
    assert torch.equal(inf._centre_crop(t, 3, 5), t[:, :, 2:5, 2:7])
    assert torch.equal(inf._centre_crop(t, 7, 3), t[:, :, :, 3:6])
    assert inf._centre_crop(t, 7, 9) is t
    for h, w in ((4, 5), (7, 4), (9, 9), (7, 11)):
        with pytest.raises(ValueError, match=r"cannot centre-crop \(7, 9\) to " + rf"\({h}, {w}\)"):
            inf._centre_crop(t, h, w)


def test_fusion_grids_place_each_grid_in_canvas_pixels(G):
    scale, R, c0 = 2 ** G.depth, G.ss_margin, 2 * (2 ** G.depth - 1)
    zs_top, zs_left, zs_h, zs_w = 3, -2, 11, 12
    grids = G.fusion_grids(zs_top, zs_left, zs_h, zs_w)
    n = len(G.texture_synthesizer.specs)
    assert len(grids) == 1 + n + G.depth
    # z_S sample j sits at canvas pixel scale (zs_top + j) - c0; z_l adds R samples on each side
    ys, xs = grids[0]
    assert torch.equal(ys, scale * (zs_top - R + torch.arange(zs_h + 2 * R)) - c0)
    assert torch.equal(xs, scale * (zs_left - R + torch.arange(zs_w + 2 * R)) - c0)
    ys, xs = grids[1]                                             # the first conv reads z_S itself
    assert torch.equal(ys, scale * (zs_top + torch.arange(zs_h)) - c0)
    assert torch.equal(xs, scale * (zs_left + torch.arange(zs_w)) - c0)
    ys, xs = grids[-1]                                            # the last ToRGB: the patch's own pixels
    assert torch.equal(ys, scale * zs_top + torch.arange(G.output_size(zs_h)))
    assert torch.equal(xs, scale * zs_left + torch.arange(G.output_size(zs_w)))
    hs, ws = G.layer_sizes(zs_h), G.layer_sizes(zs_w)
    for i in range(n):
        assert (len(grids[1 + i][0]), len(grids[1 + i][1])) == (hs[i], ws[i])
        step = G.texture_synthesizer.specs[i].step // (2 if G.texture_synthesizer.specs[i].up else 1)
        assert torch.all(grids[1 + i][0].diff() == scale // step)    # input grid spacing in pixels
    for p in range(G.depth):
        assert (len(grids[1 + n + p][0]), len(grids[1 + n + p][1])) == (hs[2 * p + 2], ws[2 * p + 2])


def test_canvas_inputs_of_overlapping_patches_agree_on_shared_canvas_indices(G):
    R, specs = G.ss_margin, G.texture_synthesizer.specs
    a = G.canvas_inputs(9, 0, 0, 11, 11, dtype=F64)
    b = G.canvas_inputs(9, torch.tensor([2]), torch.tensor([3]), 11, 11, dtype=F64)   # shifted by (2, 3) latents
    torch.testing.assert_close(a[0][:, :, 2:, 3:], b[0][:, :, :-2, :-3], rtol=0, atol=0)
    torch.testing.assert_close(a[1][:, :, 2:, 3:], b[1][:, :, :-2, :-3], rtol=0, atol=0)
    assert torch.equal(a[0], canvas.canvas_normal(9, canvas.STREAM_ZL, G.local_dim, torch.arange(-R, 11 + R)[None],
                                                  torch.arange(-R, 11 + R)[None], F64))
    torch.testing.assert_close(a[1][0], expected_coords(G.config, torch.arange(-R, 11 + R),
                                                        torch.arange(-R, 11 + R)).double(), rtol=0, atol=1e-6)
    for k, spec in enumerate(specs):                              # conv k sample i at canvas index step_k * top + i
        na, nb = a[2][k], b[2][k]
        dy, dx = 2 * spec.step, 3 * spec.step
        assert torch.equal(na[:, :, dy:, dx:], nb[:, :, :na.shape[2] - dy, :na.shape[3] - dx])
        assert torch.equal(na, canvas.canvas_normal(9, 1 + k, 1, torch.arange(na.shape[2])[None],
                                                    torch.arange(na.shape[3])[None], F64))
    skip = [False, True, False, True]
    c = G.canvas_inputs(9, 0, 0, 11, 11, dtype=F64, skip_noise=skip)
    for k in range(len(specs)):
        assert torch.equal(c[2][k], a[2][k]) if not skip[k] else torch.equal(c[2][k], torch.zeros(1, 1, 1, 1, dtype=F64))
    ring = G.canvas_inputs(9, 0, torch.tensor([-4]), 11, 11, dtype=F64, ring=20)
    fwd = G.canvas_inputs(9, 0, torch.tensor([16]), 11, 11, dtype=F64, ring=20)   # 20 latents later: same patch
    assert torch.equal(ring[0], fwd[0]) and torch.equal(ring[1], fwd[1])
    assert all(torch.equal(x, y) for x, y in zip(ring[2], fwd[2]))


# ---- single layers as explicit StyleGAN2 modulated convolutions (float64) -------------------------------

def lrelu_gain(x):
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def modulated_weight(layer, w_latent, demodulate=True):
    """Per-sample weights W s (d): (B, O, I, k, k), Karras et al. 2020, eq. 1-3."""
    s = layer.affine(w_latent)                                    # (B, I)
    wt = layer.weight.double() / math.sqrt(layer.in_channels * layer.kernel ** 2)
    ws = wt[None] * s[:, None, :, None, None]
    if demodulate:
        ws = ws * torch.rsqrt(ws.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    return ws


def blur121_valid(x):
    """Valid [1,2,1] x [1,2,1] / 16 filter with gain 4, as an explicit sum of shifted copies."""
    f = [1.0, 2.0, 1.0]
    h, w = x.shape[2] - 2, x.shape[3] - 2
    return sum(4 * f[i] * f[j] / 16 * x[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3))


def filled_layer(layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.double()
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    return layer


def test_texture_conv_is_a_valid_modulated_conv_plus_noise_bias_and_lrelu():
    spec = inf.TextureLayer(0, False, 5, 4, 2, 0.0, 1.0, 1.0, 1.0)
    layer = filled_layer(inf.TextureConv(spec, 6), 1)
    x, wl, noise = torch.randn(2, 5, 7, 8, dtype=F64), torch.randn(2, 6, dtype=F64), torch.randn(2, 1, 5, 6, dtype=F64)
    with torch.no_grad():
        got = layer(x, wl, noise)
        ws = modulated_weight(layer, wl)
        conv = torch.cat([F.conv2d(x[b:b + 1], ws[b]) for b in range(2)])
        want = lrelu_gain(conv + noise * layer.noise_strength + layer.bias[None, :, None, None])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_texture_up_conv_is_a_transposed_modulated_conv_cropped_by_one_then_blurred():
    spec = inf.TextureLayer(0, True, 3, 4, 2, 0.0, 1.0, 0.5, 0.5)
    layer = filled_layer(inf.TextureConv(spec, 6), 2)
    x, wl = torch.randn(2, 3, 5, 6, dtype=F64), torch.randn(2, 6, dtype=F64)
    noise = torch.randn(2, 1, 2 * 5 - 3, 2 * 6 - 3, dtype=F64)
    with torch.no_grad():
        got = layer(x, wl, noise)
        ws = modulated_weight(layer, wl)
        full = torch.zeros(2, 4, 2 * 5 + 1, 2 * 6 + 1, dtype=F64)    # scatter: input i reaches 2i .. 2i + 2
        for i in range(5):
            for j in range(6):
                full[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += torch.einsum("boiyx,bi->boyx", ws, x[:, :, i, j])
        y = blur121_valid(full[:, :, 1:-1, 1:-1])
        want = lrelu_gain(y + noise * layer.noise_strength + layer.bias[None, :, None, None])
    assert got.shape == (2, 4, 7, 9)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_torgb_is_an_undemodulated_1x1_conv_plus_bias_plus_the_interpolated_skip():
    layer = filled_layer(inf.ToRGB(5, 6, 3), 3)
    x, wl, skip = torch.randn(2, 5, 7, 7, dtype=F64), torch.randn(2, 6, dtype=F64), torch.randn(2, 3, 5, 5, dtype=F64)
    with torch.no_grad():
        got = layer(x, wl, skip)
        alone = layer(x, wl, None)
        ws = modulated_weight(layer, wl, demodulate=False)
        rgb = torch.einsum("boi,bihw->bohw", ws[:, :, :, 0, 0], x) + layer.bias[None, :, None, None]
        up = torch.zeros(2, 3, 9, 9, dtype=F64)                   # 2H - 1: samples on even, midpoints on odd
        up[:, :, ::2, ::2] = skip
        up[:, :, 1::2, ::2] = (skip[:, :, :-1] + skip[:, :, 1:]) / 2
        up[:, :, :, 1::2] = (up[:, :, :, :-2:2] + up[:, :, :, 2::2]) / 2
        want = rgb + up[:, :, 1:-1, 1:-1]                          # centre crop 9 -> 7
    torch.testing.assert_close(alone, rgb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_texture_conv_without_noise_draws_one_map_per_sample_from_the_global_generator():
    for up in (False, True):
        spec = inf.TextureLayer(0, up, 3, 4, 2, 0.0, 1.0, 1.0, 1.0)
        layer = filled_layer(inf.TextureConv(spec, 6), 4)
        x, wl = torch.randn(2, 3, 6, 7, dtype=F64), torch.randn(2, 6, dtype=F64)
        h, w = (2 * 6 - 3, 2 * 7 - 3) if up else (4, 5)
        with torch.no_grad():
            torch.manual_seed(7)
            drawn = layer(x, wl)
            torch.manual_seed(7)
            explicit = layer(x, wl, torch.randn(2, 1, h, w, dtype=F64))
        torch.testing.assert_close(drawn, explicit, rtol=0, atol=0)


def constant_map(layer, wl, h, w):
    return layer.affine(wl)[:, :, None, None].expand(-1, -1, h, w).contiguous()


@pytest.mark.parametrize("demod", ["exact", "pointwise"])
def test_a_constant_style_map_gives_each_layer_its_plain_styled_output(demod):
    """Spatial style fusion with one style everywhere is the ordinary forward (docs/infinitygan.md)."""
    wl = torch.randn(2, 6, dtype=F64)
    with torch.no_grad():
        for up in (False, True):
            layer = filled_layer(inf.TextureConv(inf.TextureLayer(0, up, 3, 4, 2, 0.0, 1.0, 1.0, 1.0), 6), 5)
            x = torch.randn(2, 3, 6, 7, dtype=F64)
            noise = torch.randn(2, 1, 9 if up else 4, 11 if up else 5, dtype=F64)
            torch.testing.assert_close(layer(x, None, noise, style_map=constant_map(layer, wl, 6, 7), demod=demod),
                                       layer(x, wl, noise), rtol=1e-10, atol=1e-12)
        rgb = filled_layer(inf.ToRGB(5, 6, 3), 6)
        x, skip = torch.randn(2, 5, 7, 7, dtype=F64), torch.randn(2, 3, 5, 5, dtype=F64)
        torch.testing.assert_close(rgb(x, None, skip, style_map=constant_map(rgb, wl, 7, 7)), rgb(x, wl, skip),
                                   rtol=1e-10, atol=1e-12)
        block = filled_layer(inf.StructureBlock(4, 3, 1, 6), 7)
        x, coords = torch.randn(2, 4, 8, 9, dtype=F64), torch.randn(2, 3, 10, 11, dtype=F64)
        torch.testing.assert_close(block(x, coords, style_map=constant_map(block, wl, 10, 11), demod=demod),
                                   block(x, coords, wl), rtol=1e-10, atol=1e-12)


def test_structure_block_is_a_valid_modulated_conv_over_latents_and_centre_cropped_coords():
    block = filled_layer(inf.StructureBlock(4, 3, 1, 6), 8)
    x, coords, wl = torch.randn(2, 4, 8, 9, dtype=F64), torch.randn(2, 3, 12, 11, dtype=F64), torch.randn(2, 6, dtype=F64)
    with torch.no_grad():
        got = block(x, coords, wl)
        inp = torch.cat([x, coords[:, :, 2:10, 1:10]], dim=1)        # coords centre-cropped to x
        ws = modulated_weight(block, wl)
        conv = torch.cat([F.conv2d(inp[b:b + 1], ws[b]) for b in range(2)])
        want = lrelu_gain(conv + block.bias[None, :, None, None])
    assert got.shape == (2, 4, 6, 7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
