"""Units of ADA (train/augment.py) against independent computations: the geometric and colour matrices
rebuilt by hand from the draws replayed in the published order (value, then the probability test; ADA
paper, appendix B; docs/training.md, "ADA"), the probability multiplier * p reaching each transform,
the resampling `warp` on shifts whose result is known exactly, the sym6 table's wavelet identities, and
the p controller's update rule (sign(r_t - target) * batch * interval / (kimg * 1000), clamped at 0)."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anyres_fast.train import augment
from anyres_fast.train.augment import (COLOUR, GEOMETRIC, PIPES, SYM6, AdaController, AugmentPipe, _Draws,
                                       apply_colour_matrix, geometric_filter, warp)

pytestmark = pytest.mark.usefixtures("one_thread")

N = 64          # samples per batch in the matrix tests: enough for every branch of every draw


def _gen(seed=11):
    return torch.Generator().manual_seed(seed)


def _draws(seed=11, n=N):
    return _Draws(n, torch.float64, "cpu", _gen(seed))


class _Replay:
    """The same stream of numbers, drawn in the test."""

    def __init__(self, seed=11):
        self.g = _gen(seed)

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.g, dtype=torch.float64)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g, dtype=torch.float64)


def _m3(rows):
    return np.array(rows, dtype=np.float64)


def _rot(t):
    return _m3([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])


def _scl(sx, sy):
    return _m3([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _tr(tx, ty):
    return _m3([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _want_geometric(pipe, p, width, height, seed=11, n=N):
    """G_inv (output -> input pixel, centred) per sample, composed by hand: each transform's inverse
    map, right-multiplied in the published order; a transform applies where u < multiplier * p."""
    r = _Replay(seed)
    Gs = [np.eye(3) for _ in range(n)]
    applied = {}

    def compose(ms):
        for k in range(n):
            Gs[k] = Gs[k] @ ms[k]

    if pipe.xflip > 0:
        i = torch.floor(r.rand(n) * 2)
        on = r.rand(n) < pipe.xflip * p
        applied["xflip"] = on & (i == 1)
        compose([_scl(-1.0 if on[k] and i[k] == 1 else 1.0, 1.0) for k in range(n)])
    if pipe.rotate90 > 0:
        i = torch.floor(r.rand(n) * 4)
        on = r.rand(n) < pipe.rotate90 * p
        applied["rotate90"] = on & (i > 0)
        compose([_rot(math.pi / 2 * float(i[k])) if on[k] else np.eye(3) for k in range(n)])
    if pipe.xint > 0:
        t = (r.rand(n, 2) * 2 - 1) * pipe.xint_max
        on = r.rand(n, 1)[:, 0] < pipe.xint * p
        compose([_tr(-round(float(t[k, 0]) * width), -round(float(t[k, 1]) * height)) if on[k] else np.eye(3)
                 for k in range(n)])
    if pipe.scale > 0:
        s = torch.exp2(r.randn(n) * pipe.scale_std)
        on = r.rand(n) < pipe.scale * p
        compose([_scl(1 / float(s[k]), 1 / float(s[k])) if on[k] else np.eye(3) for k in range(n)])
    # P(rotation before or after) = rotate * p: each with 1 - sqrt(1 - rotate * p) (docs/training.md)
    p_rot = 1 - math.sqrt(min(max(1 - pipe.rotate * p, 0.0), 1.0))
    if pipe.rotate > 0:
        th = (r.rand(n) * 2 - 1) * math.pi * pipe.rotate_max
        on = r.rand(n) < p_rot
        compose([_rot(float(th[k])) if on[k] else np.eye(3) for k in range(n)])
    if pipe.aniso > 0:
        s = torch.exp2(r.randn(n) * pipe.aniso_std)
        on = r.rand(n) < pipe.aniso * p
        compose([_scl(1 / float(s[k]), float(s[k])) if on[k] else np.eye(3) for k in range(n)])
    if pipe.rotate > 0:
        th = (r.rand(n) * 2 - 1) * math.pi * pipe.rotate_max
        on = r.rand(n) < p_rot
        compose([_rot(float(th[k])) if on[k] else np.eye(3) for k in range(n)])
    if pipe.xfrac > 0:
        t = r.randn(n, 2) * pipe.xfrac_std
        on = r.rand(n, 1)[:, 0] < pipe.xfrac * p
        compose([_tr(-float(t[k, 0]) * width, -float(t[k, 1]) * height) if on[k] else np.eye(3) for k in range(n)])
    return np.stack(Gs), r.g


def _got_geometric(pipe, p, width, height, seed=11, n=N):
    d = _draws(seed, n)
    G = pipe._geometric_matrix(d, torch.tensor(p, dtype=torch.float64), width, height)
    return G, d.generator


# -- the geometric matrix -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("p", [1.0, 0.6])
def test_each_geometric_matrix_is_the_hand_composed_inverse_map(name, p):
    pipe = AugmentPipe(**{name: 1.0})
    got, g_got = _got_geometric(pipe, p, 28, 20)
    want, g_want = _want_geometric(pipe, p, 28, 20)
    assert got.shape == (N, 3, 3) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    assert torch.equal(g_got.get_state(), g_want.get_state())     # the same numbers were drawn
    moved = np.abs(want - np.eye(3)).max(axis=(1, 2)) > 1e-9
    if p == 1.0:
        # every sample drew the transform (flips and 90-degree turns: half / three quarters of them)
        # (integer translations: those that do not round to 0)
        frac = {"xflip": 0.5, "rotate90": 0.75, "xint": 0.9}.get(name, 1.0)
        assert abs(moved.mean() - frac) < 0.2 and (moved.all() if frac == 1.0 else not moved.all())
    else:
        assert 0 < moved.sum() < N


@pytest.mark.parametrize("p", [0.45, 1.0, 1.5])
def test_the_whole_geometric_chain_with_strengths_and_multipliers(p):
    pipe = AugmentPipe(xflip=0.9, rotate90=0.8, xint=0.7, xint_max=0.3, scale=0.6, scale_std=0.4, rotate=0.5,
                       rotate_max=0.25, aniso=0.75, aniso_std=0.3, xfrac=0.65, xfrac_std=0.05)
    got, g_got = _got_geometric(pipe, p, 30, 18)
    want, g_want = _want_geometric(pipe, p, 30, 18)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    assert torch.equal(g_got.get_state(), g_want.get_state())


def test_rotation_probability_above_one_rotates_twice():
    # p > 1 (ADA's p has no upper clamp): 1 - rotate * p < 0 is clamped, so both rotations always apply
    pipe = AugmentPipe(rotate=1.0)
    got, _ = _got_geometric(pipe, 1.5, 16, 16)
    r = _Replay()
    th = (r.rand(N) * 2 - 1) * math.pi
    r.rand(N)
    th = th + (r.rand(N) * 2 - 1) * math.pi
    want = np.stack([_rot(float(t)) for t in th])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_p0_leaves_every_matrix_the_identity():
    pipe = AugmentPipe.preset("bgc")
    d = _draws()
    G = pipe._geometric_matrix(d, torch.tensor(0.0, dtype=torch.float64), 16, 16)
    C = pipe._colour_matrix(d, torch.tensor(0.0, dtype=torch.float64), 3)
    assert torch.equal(G, torch.eye(3, dtype=torch.float64).expand(N, 3, 3))
    assert torch.equal(C[:, :3, :], torch.eye(4, dtype=torch.float64)[:3].expand(N, 3, 4))


def test_no_enabled_transform_gives_no_matrix_and_no_draws():
    pipe = AugmentPipe()
    d = _draws()
    before = d.generator.get_state()
    assert pipe._geometric_matrix(d, torch.tensor(1.0, dtype=torch.float64), 8, 8) is None
    assert pipe._colour_matrix(d, torch.tensor(1.0, dtype=torch.float64), 3) is None
    # hue and saturation do not exist for one channel
    assert AugmentPipe(hue=1.0, saturation=1.0)._colour_matrix(d, torch.tensor(1.0, dtype=torch.float64), 1) is None
    assert torch.equal(d.generator.get_state(), before)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(pipe(x, 1.0, generator=_gen()), x)


# -- the colour matrix, as the sequence of pixel operations the ADA paper lists ------------------------
def _want_colour(pipe, x, p, seed=11):
    """x (B, C, H, W) through brightness, contrast, luma flip, hue rotation, saturation (in that order),
    each written as a pixel operation; grey images: the mean of the RGB result of (x, x, x)."""
    r = _Replay(seed)
    n = x.shape[0]
    grey = x.shape[1] == 1
    y = x.expand(n, 3, *x.shape[2:]).clone() if grey else x.clone()
    col = lambda t: t.reshape(n, 1, 1, 1)
    if pipe.brightness > 0:
        b = r.randn(n) * pipe.brightness_std
        y = y + col(torch.where(r.rand(n) < pipe.brightness * p, b, 0.0))
    if pipe.contrast > 0:
        c = torch.exp2(r.randn(n) * pipe.contrast_std)
        y = y * col(torch.where(r.rand(n) < pipe.contrast * p, c, 1.0))
    if pipe.lumaflip > 0:
        i = torch.floor(r.rand(n) * 2)
        i = torch.where(r.rand(n) < pipe.lumaflip * p, i, 0.0)
        y = y - 2 * col(i) * y.mean(dim=1, keepdim=True)        # reflect the grey component
    if pipe.hue > 0 and not grey:
        th = (r.rand(n) * 2 - 1) * math.pi * pipe.hue_max
        th = torch.where(r.rand(n) < pipe.hue * p, th, 0.0)
        v = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
        px = y.permute(0, 2, 3, 1)
        c, s = torch.cos(th).reshape(n, 1, 1, 1), torch.sin(th).reshape(n, 1, 1, 1)
        px = px * c + torch.cross(v.expand_as(px), px, dim=-1) * s + v * (px @ v)[..., None] * (1 - c)
        y = px.permute(0, 3, 1, 2)
    if pipe.saturation > 0 and not grey:
        s = torch.exp2(r.randn(n) * pipe.saturation_std)
        s = torch.where(r.rand(n) < pipe.saturation * p, s, 1.0)
        m = y.mean(dim=1, keepdim=True)
        y = m + col(s) * (y - m)
    return (y.mean(dim=1, keepdim=True) if grey else y), r.g


def _x(n=N, ch=3, h=5, w=7, seed=0):
    return torch.rand(n, ch, h, w, generator=_gen(seed), dtype=torch.float64) * 2 - 1


COLOUR_ALL = dict(brightness=0.9, contrast=0.8, lumaflip=0.7, hue=0.6, saturation=0.75, brightness_std=0.3,
                  contrast_std=0.7, hue_max=0.4, saturation_std=0.6)


@pytest.mark.parametrize("p", [0.55, 1.0])
@pytest.mark.parametrize("ch", [3, 1])
def test_the_whole_colour_chain_is_the_sequence_of_pixel_operations(p, ch):
    pipe = AugmentPipe(**COLOUR_ALL)
    x = _x(ch=ch)
    want, g_want = _want_colour(pipe, x, p)
    g = _gen()
    got = pipe(x, p, generator=g)
    assert got.shape == x.shape
    assert (got - want).abs().max() < 1e-12
    assert torch.equal(g.get_state(), g_want.get_state())


@pytest.mark.parametrize("name", COLOUR)
@pytest.mark.parametrize("p", [0.5, 1.0])
def test_each_colour_transform_reaches_the_samples_with_probability_p(name, p):
    pipe = AugmentPipe(**{name: 1.0})
    x = _x()
    want, _ = _want_colour(pipe, x, p)
    got = pipe(x, p, generator=_gen())
    assert (got - want).abs().max() < 1e-12
    changed = (got - x).abs().amax(dim=(1, 2, 3)) > 1e-9
    # p = 1: every sample (the luma flip: those whose coin says flip, about half); p = 0.5: some
    frac = 0.5 if name == "lumaflip" else 1.0
    expect = frac * p
    assert abs(changed.double().mean() - expect) < 0.2, (name, changed.double().mean())
    if expect == 1.0:
        assert changed.all()


def test_colour_matrix_entries_brightness_contrast_saturation():
    """C[:3] of single transforms at p = 1, written out entry by entry."""
    v = np.ones(3) / math.sqrt(3)
    P = np.outer(v, v)              # projection on the grey axis
    r = _Replay()
    b = r.randn(N) * 0.2
    C = AugmentPipe(brightness=1.0)._colour_matrix(_draws(), torch.tensor(1.0, dtype=torch.float64), 3)
    for k in range(N):
        np.testing.assert_allclose(C[k].numpy(), np.block([[np.eye(3), np.full((3, 1), float(b[k]))],
                                                           [np.zeros((1, 3)), np.ones((1, 1))]]), atol=1e-14)
    r = _Replay()
    c = torch.exp2(r.randn(N) * 0.5)
    C = AugmentPipe(contrast=1.0)._colour_matrix(_draws(), torch.tensor(1.0, dtype=torch.float64), 3)
    for k in range(N):
        np.testing.assert_allclose(C[k].numpy(), np.diag([float(c[k])] * 3 + [1.0]), atol=1e-14)
    r = _Replay()
    s = torch.exp2(r.randn(N) * 1.0)
    C = AugmentPipe(saturation=1.0)._colour_matrix(_draws(), torch.tensor(1.0, dtype=torch.float64), 3)
    for k in range(N):
        np.testing.assert_allclose(C[k, :3, :3].numpy(), P + float(s[k]) * (np.eye(3) - P), atol=1e-14)
        np.testing.assert_allclose(C[k, :3, 3].numpy(), 0, atol=1e-14)


def test_hue_rotation_keeps_grey_and_the_norm_and_turns_by_theta():
    r = _Replay()
    th = (r.rand(N) * 2 - 1) * math.pi
    C = AugmentPipe(hue=1.0)._colour_matrix(_draws(), torch.tensor(1.0, dtype=torch.float64), 3)
    R = C[:, :3, :3].numpy()
    v = np.ones(3) / math.sqrt(3)
    for k in range(N):
        np.testing.assert_allclose(R[k] @ R[k].T, np.eye(3), atol=1e-12)     # a rotation
        assert abs(np.linalg.det(R[k]) - 1) < 1e-12
        np.testing.assert_allclose(R[k] @ v, v, atol=1e-12)                  # about the grey axis
        assert abs(np.trace(R[k]) - (1 + 2 * math.cos(float(th[k])))) < 1e-12   # by theta
        # the sense: u x R u along +v for a colour u orthogonal to v (a positive turn about v)
        u = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
        assert abs(np.cross(u, R[k] @ u) @ v - math.sin(float(th[k]))) < 1e-12


def test_lumaflip_is_a_householder_reflection():
    r = _Replay()
    i = torch.floor(r.rand(N) * 2)
    C = AugmentPipe(lumaflip=1.0)._colour_matrix(_draws(), torch.tensor(1.0, dtype=torch.float64), 3)
    v = np.ones(3) / math.sqrt(3)
    for k in range(N):
        want = np.eye(3) - 2 * float(i[k]) * np.outer(v, v)
        np.testing.assert_allclose(C[k, :3, :3].numpy(), want, atol=1e-14)
    assert 0 < i.sum() < N


def test_apply_colour_matrix_rgb_grey_and_other_channel_counts():
    g = _gen(5)
    C = torch.rand(4, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(4, 3, 2, 3, generator=g, dtype=torch.float64)
    got = apply_colour_matrix(x, C)
    want = torch.einsum("bij,bjhw->bihw", C[:, :3, :3], x) + C[:, :3, 3, None, None]
    assert (got - want).abs().max() < 1e-14
    grey = x[:, :1]
    got = apply_colour_matrix(grey, C)
    rgb = torch.einsum("bij,bjhw->bihw", C[:, :3, :3], grey.expand(4, 3, 2, 3)) + C[:, :3, 3, None, None]
    assert got.shape == grey.shape and (got - rgb.mean(dim=1, keepdim=True)).abs().max() < 1e-14
    with pytest.raises(ValueError, match=r"colour transforms need RGB \(3 channels\) or grey \(1\), got 2 channels"):
        apply_colour_matrix(x[:, :2], C)
    with pytest.raises(ValueError, match="got 4 channels"):
        AugmentPipe(brightness=1.0)(torch.zeros(2, 4, 4, 4), 1.0, generator=_gen())
    # hue and saturation need colour: on 2 channels they are refused too, not skipped as for grey
    for name in ("hue", "saturation"):
        with pytest.raises(ValueError, match="got 2 channels"):
            AugmentPipe(**{name: 1.0})(torch.zeros(2, 2, 4, 4), 1.0, generator=_gen())


# -- the call: shapes, dtypes, the RNG, precision -------------------------------------------------------
def test_call_refuses_a_batch_that_is_not_4d():
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) images, got shape \(3, 8, 8\)"):
        AugmentPipe.preset("bgc")(torch.zeros(3, 8, 8), 0.5)


@pytest.mark.parametrize("dtype,out", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                       (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_output_dtype(dtype, out):
    x = _x(n=2, h=8, w=8).to(dtype)
    assert AugmentPipe.preset("bgc")(x, 0.5, generator=_gen()).dtype == out
    assert AugmentPipe.preset("bgc")(x, 0.0, generator=_gen()).dtype == out


def test_float32_is_computed_in_float32_not_bfloat16_even_under_autocast():
    """The float32 result agrees with the same matrices applied in float64 to float32 rounding (bfloat16
    would be ~1e-2 off), also inside an enabled CPU autocast region (docs/training.md, "Precision")."""
    x = _x(n=4, h=16, w=16).float()
    pipe = AugmentPipe.preset("bgc")
    d = _Draws(4, torch.float32, "cpu", _gen())
    p = torch.tensor(1.0)
    G, C = pipe._geometric_matrix(d, p, 16, 16), pipe._colour_matrix(d, p, 3)
    ref = apply_colour_matrix(warp(x.double(), G.double()), C.double())
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            got = pipe(x, 1.0, generator=_gen())
        assert got.dtype == torch.float32
        assert (got.double() - ref).abs().max() < 1e-4, autocast


def test_colour_only_pipe_at_p0_and_at_p():
    pipe = AugmentPipe(brightness=1.0)
    x = _x(n=8)
    assert torch.equal(pipe(x, 0.0, generator=_gen()), x)
    b = torch.randn(8, generator=_gen(), dtype=torch.float64) * 0.2
    assert (pipe(x, 1.0, generator=_gen()) - (x + b.reshape(8, 1, 1, 1))).abs().max() < 1e-14


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_a_geometric_only_pipe_warps_through_its_matrix_for_any_p_above_0(p):
    x = _x(n=8, h=12, w=16)
    pipe = AugmentPipe(xint=1.0, scale=1.0)
    G, _ = _got_geometric(pipe, p, 16, 12, n=8)
    want = warp(x, G)
    got = pipe(x, p, generator=_gen())
    assert torch.equal(got, want) and not torch.equal(got, x)
    assert torch.equal(pipe(x, 0.0, generator=_gen()), x)


def test_the_published_default_strengths_and_the_preset():
    # docs/training.md, "ADA": integer translation 0.125 of the size, scale and aniso log2 std 0.2, full
    # circle rotations and hue, fractional translation std 0.125, brightness 0.2, contrast log2 0.5,
    # saturation log2 1; every multiplier 0 unless a preset enables it.
    d = AugmentPipe().to_dict()
    assert d == {**dict.fromkeys(GEOMETRIC + COLOUR, 0.0), "xint_max": 0.125, "scale_std": 0.2, "rotate_max": 1.0,
                 "aniso_std": 0.2, "xfrac_std": 0.125, "brightness_std": 0.2, "contrast_std": 0.5, "hue_max": 1.0,
                 "saturation_std": 1.0}
    bgc = AugmentPipe.preset("bgc").to_dict()
    assert bgc == {**d, **dict.fromkeys(GEOMETRIC + COLOUR, 1.0)} and PIPES["bgc"] == dict.fromkeys(GEOMETRIC + COLOUR, 1.0)
    assert GEOMETRIC == ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
    assert COLOUR == ("brightness", "contrast", "lumaflip", "hue", "saturation")
    with pytest.raises(ValueError, match=r"augmentation pipeline 'bc': only bgc is available"):
        AugmentPipe.preset("bc")


# -- the sym6 filter and the warp -------------------------------------------------------------------------
def test_sym6_is_an_orthogonal_wavelet_low_pass():
    h = np.asarray(SYM6)
    assert len(h) == 12
    assert abs(h.sum() - math.sqrt(2)) < 1e-12
    for m in range(6):                      # orthonormal to its own even shifts
        assert abs(np.dot(h[:12 - 2 * m], h[2 * m:]) - (1.0 if m == 0 else 0.0)) < 1e-12, m
    # the high-pass (alternating, reversed) has the number of vanishing moments of sym6: 6
    gh = h[::-1] * (-1.0) ** np.arange(12)
    for k in range(6):
        assert abs((gh * np.arange(12.0) ** k).sum()) < 1e-6 * 12 ** k, k
    for dtype in (torch.float32, torch.float64):
        f = geometric_filter(dtype, "cpu")
        assert f.dtype == dtype and abs(float(f.sum()) - 1) < 1e-6
        np.testing.assert_allclose(f.double().numpy(), h / h.sum(), rtol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_warp_with_the_identity_is_the_identity_up_to_rounding(dtype, tol):
    """docs/training.md: the resampling is the identity up to rounding (~4e-12 float64, ~1e-5 float32)."""
    x = _x(n=2, h=20, w=28).to(dtype)
    eye = torch.eye(3, dtype=dtype).expand(2, 3, 3)
    got = warp(x, eye)
    assert got.shape == x.shape and got.dtype == dtype
    assert (got - x).abs().max() < tol


def _reflect_shift(x, tx, ty):
    """out(x, y) = in(x + tx, y + ty) on the reflect-padded image (at most one reflection), zeros beyond."""
    b, c, h, w = x.shape
    pw, ph = w - 1, h - 1
    padded = F.pad(x, [pw, pw, ph, ph], mode="reflect")
    big = torch.zeros(b, c, h + 2 * ph + 2 * h + 40, w + 2 * pw + 2 * w + 40, dtype=x.dtype)
    oy, ox = h + 20, w + 20
    big[:, :, oy:oy + padded.shape[2], ox:ox + padded.shape[3]] = padded
    y0, x0 = oy + ph + ty, ox + pw + tx
    return big[:, :, y0:y0 + h, x0:x0 + w]


@pytest.mark.parametrize("tx,ty", [(15, -9), (-17, 11), (0, 0), (3, 4)])
def test_warp_by_an_integer_shift_is_the_shift_of_the_reflect_padded_image(tx, ty):
    x = _x(n=2, h=20, w=28)
    G = torch.tensor(_tr(tx, ty), dtype=torch.float64).expand(2, 3, 3)       # output -> input: + (tx, ty)
    got = warp(x, G)
    assert (got - _reflect_shift(x, tx, ty)).abs().max() < 1e-10


def test_warp_beyond_one_reflection_is_zero():
    x = _x(n=1, h=16, w=20) + 3        # no zero inside the image
    tx = 40                            # sources x in [30.5, 49.5]: the reflection ends at 9.5 + 19 = 28.5
    got = warp(x, torch.tensor(_tr(tx, 0), dtype=torch.float64)[None])
    assert got[..., 4:].abs().max() == 0          # sources beyond 28.5 + the filter's reach (3 px)
    # sources y in [-27.5, -12.5]: rows 0, 1 (sources <= -26.5) beyond the reflection (ends at -22.5)
    got = warp(x, torch.tensor(_tr(0, -20), dtype=torch.float64)[None])
    assert got[..., :2, :].abs().max() == 0 and got[..., 8:, :].abs().min() > 1
    want = _reflect_shift(x, 0, -20)
    assert (got - want)[..., 8:, :].abs().max() < 1e-10


@pytest.mark.parametrize("G", [_tr(3.3, -2.1) @ _rot(0.5) @ _scl(0.9, 1.05), _tr(-4.6, 3.2) @ _rot(-2.9) @ _scl(1.05, 0.85),
                               _tr(6.2, 1.5) @ _rot(0.3) @ _scl(0.8, 0.8)], ids=["a", "b", "c"])
def test_warp_depends_only_on_the_reflect_extended_image(G):
    """Rotations, scalings and translations whose sources stay within one reflection: warping the image
    equals warping the image reflect-padded beforehand (by as much as the padding allows) and cropping
    the centre, so the padding warp chooses is enough (none of its edge shows)."""
    H, W = 20, 28
    x = _x(n=2, h=H, w=W)
    Gt = torch.tensor(G, dtype=torch.float64).expand(2, 3, 3)
    big = F.pad(x, [W - 1, W - 1, H - 1, H - 1], mode="reflect")
    want = warp(big, Gt)[..., H - 1:2 * H - 1, W - 1:2 * W - 1]
    got = warp(x, Gt)
    assert (got - want).abs().max() < 1e-6
    assert (got - x).abs().max() > 0.1


def test_warp_rotate90_of_a_square_image_is_rot90_of_the_filtered_image():
    """A quarter turn on a square image: the permuted pixels, filtered (as in test_augment.py) only along
    the reversed axis with the even phase of reverse(sym6) * reverse(sym6)."""
    S = 24
    x = _x(n=1, h=S, w=S)
    got = warp(x, torch.tensor(_rot(math.pi / 2), dtype=torch.float64)[None])
    # output (x, y) <- input (-y, x): out[row i, col j] = in[row j, col S-1-i], torch.rot90 by +1 over
    # (H, W); the reversed axis is the rows
    h = np.asarray(SYM6)[::-1]
    taps = np.convolve(h, h)[0::2]
    want = torch.rot90(x, 1, dims=(2, 3))
    want = sum(float(t) * torch.roll(want, k - 6, dims=2) for k, t in enumerate(taps))
    assert (got - want)[..., 8:-8, 8:-8].abs().max() < 1e-10


# -- the controller --------------------------------------------------------------------------------------
def _ctx(batch=8, world=1):
    return types.SimpleNamespace(world=world, batch=batch, device=torch.device("cpu"))


def test_controller_refuses_bad_settings_with_messages():
    with pytest.raises(ValueError, match=r"ADA target 1.5: expected a number in \[0, 1\]"):
        AdaController(target=1.5)
    with pytest.raises(ValueError, match=r"ADA target -0.1"):
        AdaController(target=-0.1)
    for p in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"ADA p .*: expected a finite number >= 0"):
            AdaController(p=p)
    with pytest.raises(ValueError, match=r"ADA interval 0 / kimg 500: expected >= 1 / > 0"):
        AdaController(interval=0)
    with pytest.raises(ValueError, match=r"ADA interval 4 / kimg 0: expected >= 1 / > 0"):
        AdaController(kimg=0)
    with pytest.raises(ValueError, match=r"kimg -1"):
        AdaController(kimg=-1)
    # the bounds themselves are accepted
    for kw in (dict(target=0.0), dict(target=1.0), dict(p=0.0), dict(interval=1), dict(kimg=1e-3), dict(target=None)):
        AdaController(**kw)


def test_controller_defaults_are_the_published_ones():
    ada = AdaController()
    assert (ada.target, ada.p, ada.interval, ada.kimg, ada.adaptive) == (0.6, 0.0, 4, 500.0, True)
    assert AdaController(target=None).adaptive is False
    # one step of the published heuristic at batch 32: 32 * 4 / 500000
    assert ada.adjust(1.0, 32) == float(np.float32(0) + np.float32(32 * 4 / 500000))


def test_p_is_stored_in_float32_or_float64():
    assert AdaController(p=0.1).p == float(np.float32(0.1)) != 0.1
    assert AdaController(p=0.1, dtype="float64").p == 0.1
    a32, a64 = AdaController(p=0.1, kimg=3), AdaController(p=0.1, kimg=3, dtype="float64")
    step = 7 * 4 / 3000
    assert a32.adjust(0.9, 7) == float(np.float32(np.float32(0.1) + np.float32(step)))
    assert a64.adjust(0.9, 7) == 0.1 + step


def test_adjust_follows_the_sign_of_rt_minus_target_and_stops_at_zero():
    ada = AdaController(target=0.6, p=0.0, interval=2, kimg=0.5, dtype="float64")
    step = 10 * 2 / 500
    assert ada.adjust(0.61, 10) == pytest.approx(step, abs=1e-15)        # r_t > target: more augmentation
    assert ada.adjust(0.6, 10) == pytest.approx(step, abs=1e-15)         # equal: sign 0, unchanged
    assert ada.adjust(1.0, 10) == pytest.approx(2 * step, abs=1e-15)     # the size does not depend on |r_t - t|
    assert ada.adjust(-1.0, 10) == pytest.approx(step, abs=1e-15)
    assert ada.adjust(0.59, 10) == 0.0
    assert ada.adjust(0.0, 10) == 0.0                                   # clamped at 0
    assert ada.p == 0.0
    # no upper clamp (docs/training.md: clamped at 0; the published heuristic has no upper bound)
    hi = AdaController(target=0.0, p=0.98, interval=1, kimg=0.01, dtype="float64")
    assert hi.adjust(1.0, 5) == pytest.approx(0.98 + 0.5) and hi.p > 1


def test_end_step_sums_signs_over_the_interval_and_adjusts_after_each_interval_th_step():
    ada = AdaController(target=0.5, p=0.0, interval=3, kimg=1.0, dtype="float64")
    ctx = _ctx(batch=6)
    step = 6 * 3 / 1000
    # step 0: signs +1 +1 +1 0 (a zero logit has sign 0) -> count 4, sum 3; two passes in step 1
    ada.observe(torch.tensor([[2.0], [0.5], [1.0], [0.0]]))
    ada.end_step(ctx, 0)
    assert ada.state_dict() == {"p": 0.0, "sum": 3.0, "count": 4.0}
    ada.observe(torch.tensor([[-1.0, -2.0]]))
    ada.observe(torch.tensor([-3.0]))
    ada.end_step(ctx, 1)
    assert ada.state_dict() == {"p": 0.0, "sum": 0.0, "count": 7.0}
    ada.observe(torch.full((3,), 4.0))
    ada.end_step(ctx, 2)                       # (step + 1) % 3 == 0: r_t = 3 / 10 < 0.5 -> p stays at 0
    assert ada.state_dict() == {"p": 0.0, "sum": 0.0, "count": 0.0}
    for s in range(3, 6):
        ada.observe(torch.ones(2))
        ada.end_step(ctx, s)
        assert ada.p == (pytest.approx(step) if s == 5 else 0.0)
    # an interval without any observed real: no change, no division by zero
    for s in range(6, 9):
        ada.end_step(ctx, s)
    assert ada.p == pytest.approx(step)


def test_fixed_p_ignores_observations():
    ada = AdaController(target=None, p=0.3, interval=1)
    for s in range(3):
        ada.observe(torch.ones(4))
        ada.end_step(_ctx(), s)
    assert ada.p == float(np.float32(0.3))
    assert ada.state_dict() == {"p": float(np.float32(0.3)), "sum": 0.0, "count": 0.0}


def test_state_dict_round_trip_continues_the_interval():
    ctx = _ctx(batch=4)
    a = AdaController(target=0.6, interval=4, kimg=0.2)
    for s in range(2):
        a.observe(torch.tensor([1.0, -1.0, 1.0]))
        a.end_step(ctx, s)
    state = a.state_dict()
    assert state == {"p": 0.0, "sum": 2.0, "count": 6.0}
    b = AdaController(target=0.6, interval=4, kimg=0.2)
    b.observe(torch.ones(100))          # pending before the load is dropped
    b.load_state_dict(state)
    assert b.state_dict() == state
    for ada in (a, b):
        for s in range(2, 4):
            # r_t over the whole interval = (2 + 2 * 1) / (6 + 2 * 2) = 0.4 < 0.6, though each step alone is +1
            ada.observe(torch.tensor([5.0, 6.0]))
            ada.end_step(ctx, s)
    assert a.p == b.p == 0.0
    assert a.state_dict() == b.state_dict() == {"p": 0.0, "sum": 0.0, "count": 0.0}
    # the restored carry counts once: the next interval is judged on its own signs
    b.load_state_dict({"p": 0.5, "sum": -10.0, "count": 10.0})
    for s in range(4, 8):
        b.observe(torch.ones(4))
        b.end_step(ctx, s)
    assert b.p == pytest.approx(0.5 - 4 * 4 / 200, abs=1e-7)       # r_t = (-10 + 16) / 26 < 0.6: down
    for s in range(8, 12):
        b.observe(torch.ones(4))
        b.end_step(ctx, s)
    assert b.p == pytest.approx(0.5, abs=1e-7)                     # r_t = 1: up again, carry gone


def test_end_step_all_reduces_over_ranks(monkeypatch):
    """world > 1: the step's [sum, count] goes through one all_reduce (a stand-in adding two ranks' equal
    shares) before it counts."""
    calls = []

    def fake_all_reduce(t):
        calls.append(t.clone())
        t.mul_(2)
    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    ada = AdaController(target=0.6, interval=2, kimg=1.0)
    ada.observe(torch.tensor([1.0, 1.0, -1.0]))
    ada.end_step(_ctx(batch=4, world=2), 0)
    assert len(calls) == 1 and calls[0].tolist() == [1.0, 3.0]
    assert ada.state_dict()["sum"] == 2.0 and ada.state_dict()["count"] == 6.0
    ada.end_step(_ctx(batch=4, world=1), 1)
    assert len(calls) == 1
