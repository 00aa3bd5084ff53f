"""Unit tests of anyres_fast.metrics.equivariance against independent computations.

What each test compares with is written out here: the windowed sinc and the rotation matrix from their
formulas, the oriented band-limit filter as a direct (FFT-free) circular convolution in
float64, Lanczos translation as the tap sum of the module docstring, the transforms of smooth images
against the analytic shifted image, the masks against a brute-force "does this pixel read outside
the image" test, and the result line of equivariance_metric against a tiny fake generator whose draws
are replayed here (docs/metrics.md, "eqt-int, eqt-frac, eqr"; Karras et al. 2021, appendix E).
"""
from __future__ import annotations

import math
import time as real_time
import warnings

import numpy as np
import pytest
import torch

from anyres_fast.metrics import Options
from anyres_fast.metrics import equivariance as E


# ----------------------------------------------------------------------------------------------------
# Helpers

def smooth(h, w, kx, ky, phase=0.3, shift=(0.0, 0.0), channels=2, dtype=torch.float32):
    """cos of a low frequency (kx, ky cycles per image) at pixel centres moved by shift (pixels)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    x, y = xx - shift[0], yy - shift[1]
    img = torch.cos(2 * math.pi * (kx * x / w + ky * y / h) + phase)
    return img.to(dtype).expand(1, channels, h, w).clone()


def lanczos(t, a):
    """Lanczos kernel sinc(t) sinc(t / a) on |t| < a (numpy's sinc is the normalised one)."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)


def reference_filter(mat, a, amax, aflt, up, cutoff_in=1.0, cutoff_out=1.0):
    """The oriented band-limit filter of the docstring, by direct circular convolution in float64.

    Grid positions q / up for q = -(aflt up - 1) ... aflt up - 1; ideal = (separable sinc) circularly
    convolved with (the same sinc at mat's coordinates); window likewise with Lanczos windows; keep
    |q| <= amax up - 1 and scale each up x up polyphase component to sum 1 / up^2.
    """
    c = aflt * up - 1
    n = 2 * c + 1
    q = np.arange(-c, c + 1)
    yi, xi = np.meshgrid(q / up, q / up, indexing="ij")
    m = np.asarray(mat, dtype=np.float64)[:2, :2]
    xo = m[0, 0] * xi + m[0, 1] * yi
    yo = m[1, 0] * xi + m[1, 1] * yi

    def win(t):
        return np.where(np.abs(t) < a, np.sinc(t / a), 0.0)

    wrap = (q[:, None] - q[None, :] + c) % n           # index of the position q_u - q_r, wrapped

    def circ(p, r):
        return np.einsum("ab,iajb->ij", p, r[wrap][:, :, wrap])

    ideal = circ(np.sinc(xi * cutoff_in) * np.sinc(yi * cutoff_in), np.sinc(xo * cutoff_out) * np.sinc(yo * cutoff_out))
    window = circ(win(xi) * win(yi), win(xo) * win(yo))
    f = ideal * window
    k = amax * up - 1
    f = f[c - k:c + k + 1, c - k:c + k + 1]
    phase = (np.arange(-k, k + 1) + k) % up
    out = np.empty_like(f)
    for pi in range(up):
        for pj in range(up):
            sel = np.ix_(phase == pi, phase == pj)
            out[sel] = f[sel] / f[sel].sum() / up ** 2
    return out


def lanczos_shift_reference(x, sx, sy, a):
    """z[n] = sum_j L(j - f) x[n - i - j] per axis (x zero outside), taken where n - i has a source
    (zero fill elsewhere); mask = 1 where every tap x[n - i - j], j = -(a-1) ... a, lies inside."""
    x = x.double().numpy()
    h, w = x.shape[-2:]
    ix, iy = math.floor(sx), math.floor(sy)
    fx, fy = sx - ix, sy - iy
    js = np.arange(-(a - 1), a + 1)
    wx = lanczos(js - fx, a)
    wy = lanczos(js - fy, a)
    wx, wy = wx / wx.sum(), wy / wy.sum()
    z = np.zeros_like(x)
    m = np.zeros_like(x)
    for ny in range(h):
        for nx in range(w):
            if not (0 <= ny - iy < h and 0 <= nx - ix < w):
                continue
            acc = 0.0
            for jy, vy in zip(js, wy):
                for jx, vx in zip(js, wx):
                    sy_, sx_ = ny - iy - jy, nx - ix - jx
                    if 0 <= sy_ < h and 0 <= sx_ < w:
                        acc = acc + vy * vx * x[..., sy_, sx_]
            z[..., ny, nx] = acc
    for ny in range(h):
        for nx in range(w):
            inside = all(0 <= ny - iy - j < h for j in js) and all(0 <= nx - ix - j < w for j in js)
            m[..., ny, nx] = float(inside)
    return torch.from_numpy(z), torch.from_numpy(m)


def translation(tx, ty):
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------------
# sinc, Lanczos window and taps, rotation matrix

def test_sinc_and_lanczos_window_by_formula():
    x = torch.tensor([0.0, 1e-8, 0.25, -0.5, 1.0, 1.5, -2.75, 3.0])
    np.testing.assert_allclose(E.sinc(x).numpy(), np.sinc(x.double().numpy()), atol=1e-6)
    assert E.sinc(torch.tensor(0.0)).item() == 1.0
    # sinc(x / a) on |x| < a and exactly 0 at and beyond |x| = a (docstring: "0 outside").
    t = torch.tensor([-4.5, -3.0, -2.2, 0.0, 1.3, 2.999, 3.0, 3.5, 5.9])
    got = E.lanczos_window(t, 3)
    want = np.where(np.abs(t.double().numpy()) < 3, np.sinc(t.double().numpy() / 3), 0.0)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    for i in (0, 1, 6, 7, 8):
        assert got[i].item() == 0.0
    assert E.lanczos_window(torch.tensor([2.0, -2.0, 3.0]), 2).tolist()[:2] == [0.0, 0.0]


@pytest.mark.parametrize("a, frac", [(3, 0.0), (3, 0.3), (3, 0.85), (2, 0.6), (4, 0.25)])
def test_lanczos_taps_by_formula(a, frac):
    got = E.lanczos_taps(torch.tensor(frac), a)
    j = np.arange(-(a - 1), a + 1)
    want = lanczos(j - frac, a)
    assert got.shape == (2 * a,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want / want.sum(), atol=1e-6)
    assert abs(float(got.sum()) - 1) < 1e-6


@pytest.mark.parametrize("angle", [0.0, 0.4, -1.3, math.pi / 2, 2.9])
def test_rotation_matrix_written_out(angle):
    c, s = math.cos(angle), math.sin(angle)
    want = torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    for arg in (angle, torch.tensor(angle), torch.tensor(angle, dtype=torch.float64), np.float64(angle)):
        got = E.rotation_matrix(arg)
        assert got.shape == (3, 3) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # A rotation matrix is orthogonal with determinant 1.
    m = E.rotation_matrix(angle).double()
    torch.testing.assert_close(m @ m.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------
# Oriented band-limit filter

@pytest.mark.parametrize("kw", [dict(a=2, amax=3, aflt=5, up=2),
                                dict(a=2, amax=3, aflt=5, up=2, cutoff_in=0.8, cutoff_out=0.6),
                                dict(a=1, amax=2, aflt=4, up=3, cutoff_in=0.7, cutoff_out=0.9)])
def test_oriented_bandlimit_filter_against_direct_circular_convolution(kw):
    # A general (non-symmetric, non-orthogonal) 2 x 2 part so that every entry of mat matters.
    mat = np.array([[1.1, 0.3, 0.2], [-0.2, 0.9, 0.1], [0.0, 0.0, 1.0]])
    want = reference_filter(mat, **kw)
    for m in (torch.tensor(mat, dtype=torch.float32), torch.tensor(mat[:2, :2]), mat):
        got = E.oriented_bandlimit_filter(m, **kw)
        assert got.dtype == torch.float32 and got.shape == want.shape == (2 * kw["amax"] * kw["up"] - 1,) * 2
        np.testing.assert_allclose(got.double().numpy(), want, atol=2e-6, rtol=0)


def test_oriented_bandlimit_filter_defaults_are_the_published_ones():
    # StyleGAN3's equivariance filter (Karras et al. 2021): a = 3 lobes, taps within +-16 input pixels,
    # FFT grid +-64, 4 taps per pixel, both cutoffs at the input Nyquist band (1).
    mat = E.rotation_matrix(0.35)
    f = E.oriented_bandlimit_filter(mat)
    assert f.shape == (2 * 16 * 4 - 1,) * 2
    explicit = E.oriented_bandlimit_filter(mat, a=3, amax=16, aflt=64, up=4, cutoff_in=1.0, cutoff_out=1.0)
    torch.testing.assert_close(f, explicit, atol=0, rtol=0)
    # Point symmetry, and total DC gain 1 (each of the 16 polyphase components sums to 1 / 16).
    torch.testing.assert_close(f, f.flip(0, 1), atol=1e-7, rtol=0)
    assert abs(float(f.double().sum()) - 1) < 1e-5


def test_oriented_bandlimit_filter_argument_check():
    # a <= amax < aflt: a == amax is allowed, amax == aflt is not.
    f = E.oriented_bandlimit_filter(torch.eye(3), a=2, amax=2, aflt=4, up=2)
    assert f.shape == (7, 7)
    np.testing.assert_allclose(f.double().numpy(), reference_filter(np.eye(3), a=2, amax=2, aflt=4, up=2), atol=2e-6)
    for a, amax, aflt in ((3, 2, 8), (2, 4, 4), (2, 5, 4)):
        with pytest.raises(ValueError, match=r"need a <= amax < aflt, got %d, %d, %d" % (a, amax, aflt)):
            E.oriented_bandlimit_filter(torch.eye(3), a=a, amax=amax, aflt=aflt)


# ----------------------------------------------------------------------------------------------------
# Integer and fractional translation

@pytest.mark.parametrize("shift", [(-19, 2), (2, -17), (-20, -30), (16, 0), (-16, 3), (0, 0)])
def test_integer_translation_is_roll_plus_mask(shift):
    h, w = 12, 16
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(1))
    z, m = E.integer_translation(x, torch.tensor(shift[0] / w), torch.tensor(shift[1] / h))
    dx, dy = shift
    want = torch.zeros_like(x)
    mask = torch.zeros_like(x)
    if abs(dx) < w and abs(dy) < h:
        rolled = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        ys = torch.arange(h)[:, None] - dy
        xs = torch.arange(w)[None, :] - dx
        valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).float()
        want, mask = rolled * valid, valid.expand_as(x)
    torch.testing.assert_close(z, want, atol=0, rtol=0)
    torch.testing.assert_close(m, mask, atol=0, rtol=0)


@pytest.mark.parametrize("a, s", [(3, (2.37, -1.61)), (3, (-0.4, 0.7)), (3, (-4.25, -3.5)), (2, (1.3, -2.8)),
                                  (2, (-0.75, 3.2)), (3, (-21.5, 1.25)), (3, (1.5, -22.25)), (3, (4.6, 3.3)),
                                  (3, (-13.2, 0.0))])
def test_fractional_translation_is_the_tap_sum(a, s):
    h, w = 10, 12
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(2))
    z, m = E.fractional_translation(x, torch.tensor(s[0] / w), torch.tensor(s[1] / h), a=a)
    sx = float(torch.tensor(s[0] / w) * w)
    sy = float(torch.tensor(s[1] / h) * h)
    zw, mw = lanczos_shift_reference(x, sx, sy, a)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.double().numpy(), zw.numpy(), atol=2e-5, rtol=0)
    np.testing.assert_array_equal(m.numpy(), mw.numpy())


def test_fractional_translation_in_float64():
    h, w = 10, 12
    x = torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z, m = E.fractional_translation(x, 1.7 / w, -0.4 / h)
    zw, mw = lanczos_shift_reference(x, float(torch.tensor(1.7 / w, dtype=torch.float32) * w),
                                     float(torch.tensor(-0.4 / h, dtype=torch.float32) * h), 3)
    assert z.dtype == torch.float64
    np.testing.assert_allclose(z.numpy(), zw.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(m.numpy(), mw.numpy())


# ----------------------------------------------------------------------------------------------------
# Affine transformation, rotation, pseudo-rotation

@pytest.mark.parametrize("up, tol", [(4, 0.01), (2, 0.05)])
def test_affine_translation_of_a_smooth_non_square_image(up, tol):
    # Translation by t (image units): output pixel n reads the source at n - t W (content moves by +t).
    h, w = 40, 48
    t = (0.1, -0.07)
    x = smooth(h, w, 5, 3)
    kw = {} if up == 4 else {"up": up}
    z, m = E.affine_transformation(x, translation(*t), a=3, amax=6, **kw)
    want = smooth(h, w, 5, 3, shift=(t[0] * w, t[1] * h))
    assert z.shape == x.shape and m.shape == x.shape
    assert m[0, 0].sum() > 0.5 * h * w
    assert float(((z - want).abs() * m).max()) < tol
    # The same with mat given as a float64 numpy array.
    z2, m2 = E.affine_transformation(x, translation(*t).double().numpy(), a=3, amax=6, **kw)
    torch.testing.assert_close(z2, z, atol=1e-6, rtol=0)
    torch.testing.assert_close(m2, m, atol=0, rtol=0)


def test_affine_identity_keeps_a_smooth_image_in_place():
    h, w = 36, 28
    x = smooth(h, w, 3, 4, phase=1.1)
    z, m = E.affine_transformation(x, torch.eye(3), a=3, amax=6)
    assert m[0, 0].sum() > 0.3 * h * w
    assert float(((z - x).abs() * m).max()) < 0.01


@pytest.mark.parametrize("tpx", [(2.5, 1.25, 0.0), (-1.7, 0.6, 0.0), (0.3, -2.6, 0.0), (2.07, 1.55, 0.0),
                                 (-2.56, 2.1, -0.34), (1.32, -0.61, 0.65)])
def test_affine_mask_is_the_full_support_region(tpx):
    # A pixel has full filter support when its value does not depend on anything outside the image:
    # embed zeros in a larger random square image and move it by the same pixels (rotation about the
    # centre, translation tpx pixels); where the result stays 0 the pixel reads nothing outside. The
    # mask is a 0/1 image inside that region and at most one pixel short of it on each side (bilinear
    # sampling of the upsampled image).
    h = w = 20
    b = 12
    g = torch.Generator().manual_seed(4)
    big = torch.randn(1, 1, h + 2 * b, w + 2 * b, generator=g)
    big[:, :, b:-b, b:-b] = 0
    x = torch.randn(1, 1, h, w, generator=g)

    def mat(size, ang=tpx[2]):
        c, s = math.cos(ang), math.sin(ang)
        return torch.tensor([[c, s, tpx[0] / size], [-s, c, tpx[1] / size], [0.0, 0.0, 1.0]])

    _, m = E.affine_transformation(x, mat(w), a=2, amax=3)
    zb, _ = E.affine_transformation(big, mat(w + 2 * b), a=2, amax=3)
    free = zb[0, 0, b:-b, b:-b].abs() < 1e-6
    mm = m[0, 0]
    assert set(mm.unique().tolist()) <= {0.0, 1.0}
    assert bool((mm.bool() <= free).all())
    eroded = free.clone()
    eroded[1:-1, 1:-1] = free[1:-1, 1:-1] & free[:-2, 1:-1] & free[2:, 1:-1] & free[1:-1, :-2] & free[1:-1, 2:]
    eroded[0, :] = eroded[-1, :] = False
    eroded[:, 0] = eroded[:, -1] = False
    assert eroded.sum() > 0.3 * h * w
    assert bool((eroded <= mm.bool()).all())


@pytest.mark.parametrize("a", [2, 3])
def test_fractional_rotation_is_the_published_construction(a):
    # StyleGAN3's rotation reference: oriented filter of rotation_matrix(angle), a lobes, taps within
    # +-2a pixels, x4 upsampling, then bilinear resampling.
    x = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(5))
    angle = 0.6
    kw = {} if a == 3 else {"a": a}
    z, m = E.fractional_rotation(x, angle, **kw)
    zw, mw = E.affine_transformation(x, torch.tensor([[math.cos(angle), math.sin(angle), 0.0],
                                                      [-math.sin(angle), math.cos(angle), 0.0],
                                                      [0.0, 0.0, 1.0]]), up=4, a=a, amax=2 * a)
    torch.testing.assert_close(z, zw, atol=1e-5, rtol=0)
    torch.testing.assert_close(m, mw, atol=0, rtol=0)
    assert m.sum() > 0


@pytest.mark.parametrize("a, angle", [(3, 0.5), (2, -0.9), (2, 2.2)])
def test_pseudo_rotation_is_a_centred_convolution_with_the_unit_rate_filter(a, angle):
    # The paper's R*: the band limit of rotation_matrix(-angle) at one tap per pixel (up = 1, taps
    # within +-2a pixels), applied as a centred 2-D convolution with zero padding; the mask is 1 where
    # the whole filter lies inside the image. Direct sum over the taps here.
    h, w = 22, 18
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(6))
    kw = {} if a == 3 else {"a": a}
    y, m = E.pseudo_rotation(x, angle, **kw)
    c, s = math.cos(-angle), math.sin(-angle)
    f = E.oriented_bandlimit_filter(np.array([[c, s], [-s, c]]), a=a, amax=2 * a, up=1).double().numpy()
    k = f.shape[0]
    assert k == 4 * a - 1
    p = k // 2
    xd = x.double().numpy()
    want = np.zeros_like(xd)
    mask = np.zeros_like(xd)
    for ny in range(h):
        for nx in range(w):
            acc = 0.0
            for dy in range(-p, p + 1):
                for dx in range(-p, p + 1):
                    sy, sx = ny - dy, nx - dx
                    if 0 <= sy < h and 0 <= sx < w:
                        acc = acc + f[p + dy, p + dx] * xd[..., sy, sx]
            want[..., ny, nx] = acc
            mask[..., ny, nx] = float(p <= ny < h - p and p <= nx < w - p)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.double().numpy(), want, atol=2e-5, rtol=0)
    np.testing.assert_array_equal(m.numpy(), mask)
    # Float64 images stay float64.
    y64, _ = E.pseudo_rotation(x.double(), angle, **kw)
    assert y64.dtype == torch.float64
    np.testing.assert_allclose(y64.numpy(), want, atol=1e-6, rtol=0)


def test_transforms_follow_the_input_device_and_emit_no_warnings():
    # Outputs live on the input's device (shape-only "meta" tensors stand in for an accelerator), and
    # none of the transforms prints a torch warning (every metric batch calls them).
    meta = torch.device("meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert E.rotation_matrix(torch.tensor(0.3, device=meta)).device == meta
        assert E.lanczos_taps(torch.tensor(0.3, device=meta)).device == meta
        assert E.oriented_bandlimit_filter(torch.eye(3, device=meta), a=2, amax=3, aflt=6, up=2).device == meta
        xm = torch.zeros(1, 2, 16, 16, device=meta)
        for z, m in (E.fractional_translation(xm, 0.1, -0.2), E.pseudo_rotation(xm, 0.3),
                     E.affine_transformation(xm, translation(0.1, 0.05), a=2, amax=3, aflt=6),
                     E.fractional_rotation(xm, 0.4, a=2)):
            assert z.device == meta and m.device == meta and z.shape == xm.shape
        x = smooth(24, 24, 2, 1)
        E.oriented_bandlimit_filter(E.rotation_matrix(0.2), a=2, amax=3, aflt=6)
        E.fractional_rotation(x, 0.4, a=2)
        E.pseudo_rotation(x, 0.4, a=2)
        E.affine_transformation(x, translation(0.1, 0.05), a=2, amax=3)
        E.fractional_translation(x, 0.1, -0.05)
        E.integer_translation(x, 0.125, -0.25)


# ----------------------------------------------------------------------------------------------------
# Synthesis call and the metric's result line, with a fake generator

class FakeG(torch.nn.Module):
    """No parameters; renders cos patterns at the input-grid coordinates moved by the transform M
    (q = A p + b, p the pixel centre in image units about the image centre), so its output moves
    exactly as the metric expects: M = translation by -t shifts the content by +t. frozen: ignores M."""

    def __init__(self, res=16, z_dim=3, c_dim=0, frozen=False, has_c_dim=True):
        super().__init__()
        self.z_dim, self.img_resolution, self.frozen = z_dim, res, frozen
        if has_c_dim:
            self.c_dim = c_dim
        self.mapped, self.calls = [], []

    def mapping(self, z, c):
        self.mapped.append((z.clone(), None if c is None else c.clone()))
        return torch.tanh(z) if c is None else torch.tanh(z + c.sum(1, keepdim=True))

    def synthesize(self, ws, *, transform, scale, force_fp32):
        self.calls.append(dict(batch=ws.shape[0], transform=transform, scale=scale, force_fp32=force_fp32))
        if ws.device.type == "meta":
            return torch.zeros(ws.shape[0], 3, self.img_resolution, self.img_resolution, device=ws.device)
        n = self.img_resolution
        p = (torch.arange(n, dtype=torch.float64) + 0.5) / n - 0.5
        py, px = torch.meshgrid(p, p, indexing="ij")
        t = transform.double()
        if self.frozen:
            t = torch.eye(3, dtype=torch.float64).expand_as(t)
        qx = t[:, 0, 0, None, None] * px + t[:, 0, 1, None, None] * py + t[:, 0, 2, None, None]
        qy = t[:, 1, 0, None, None] * px + t[:, 1, 1, None, None] * py + t[:, 1, 2, None, None]
        amp = ws.double()[:, :, None, None]
        img = (0.3 * amp[:, 0] * torch.cos(2 * math.pi * (1 * qx + 2 * qy) + 0.4)
               + 0.3 * amp[:, 1] * torch.cos(2 * math.pi * (2 * qx - 1 * qy) + 1.0)
               + 0.3 * amp[:, 2] * torch.sin(2 * math.pi * (1 * qx + 1 * qy)))
        return torch.stack([img, -img, 0.5 * img], dim=1).float()


def test_default_synthesis_feeds_transform_scale_and_precision():
    g = FakeG()
    ws = torch.zeros(2, 3)
    m = torch.tensor([[1.0, 0.0, 0.25], [0.0, 1.0, -0.125], [0.0, 0.0, 1.0]], dtype=torch.float64)
    E.default_synthesis(g)(ws, m)
    E.default_synthesis(g, force_fp32=True)(ws, m)
    E.default_synthesis(g, True)(torch.zeros(2, 3, device="meta"), m)
    (c0, c1, c2) = g.calls
    # The fixed-resolution form: scale branch fed N/p = 1, one M shared by the batch as (B, 3, 3) float32.
    for c in (c0, c1, c2):
        assert c["scale"] == 1.0
        assert c["transform"].shape == (2, 3, 3) and c["transform"].dtype == torch.float32
    torch.testing.assert_close(c0["transform"], m.float().expand(2, 3, 3), atol=0, rtol=0)
    assert c0["force_fp32"] is False and c1["force_fp32"] is True and c2["force_fp32"] is True
    assert c2["transform"].device.type == "meta"


def replay_draws(seed, batches, batch, z_dim, kind, translate_max=0.125, rotate_max=1.0, res=16):
    """The documented draw order from one torch.Generator: z, then t (or the angle), per batch."""
    gen = torch.Generator().manual_seed(seed)
    zs, ms = [], []
    for _ in range(batches):
        zs.append(torch.randn(batch, z_dim, generator=gen))
        if kind == "eqr":
            angle = float((torch.rand([], generator=gen) * 2 - 1) * (rotate_max * math.pi))
            c, s = math.cos(-angle), math.sin(-angle)
            ms.append(torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]))
        else:
            t = (torch.rand(2, generator=gen) * 2 - 1) * translate_max
            if kind == "eqt-int":
                t = (t * res).round() / res
            ms.append(translation(-float(t[0]), -float(t[1])))
    return zs, ms


class FakeTime:
    """Stands in for the time module inside equivariance_metric: a 1.23456 s run at the epoch."""

    def __init__(self):
        self.now = [1000.0, 1001.23456]

    def time(self):
        return self.now.pop(0) if len(self.now) > 1 else self.now[0]

    @staticmethod
    def gmtime(*args):
        return real_time.gmtime(0)

    strftime = staticmethod(real_time.strftime)


@pytest.mark.parametrize("kind", ["eqt-int", "eqt-frac", "eqr"])
def test_equivariance_metric_passes_the_options_through(kind, monkeypatch):
    monkeypatch.setattr(E, "time", FakeTime())
    g = FakeG()
    opts = Options(num=3, batch=2, seed=7, translate_max=0.25, rotate_max=0.5, precision="fp32",
                   progress=False, device=torch.device("cpu"))
    with np.errstate(divide="ignore"):
        r = E.equivariance_metric(g, kind, opts)
    zs, ms = replay_draws(7, 2, 2, 3, kind, translate_max=0.25, rotate_max=0.5)
    assert [c["batch"] for c in g.calls] == [2, 2, 2, 2]              # ceil(3 / 2) batches of 2
    assert all(c["force_fp32"] is True and c["scale"] == 1.0 for c in g.calls)
    for i in range(2):
        torch.testing.assert_close(g.mapped[i][0], zs[i], atol=0, rtol=0)
        assert g.mapped[i][1] is None
        torch.testing.assert_close(g.calls[2 * i]["transform"][0], torch.eye(3), atol=0, rtol=0)
        torch.testing.assert_close(g.calls[2 * i + 1]["transform"][0], ms[i], atol=1e-6, rtol=0)
    assert r["metric"] == kind and r["num_fake"] == 4
    assert r["settings"] == dict(opts.recorded(), translate_max=0.25, rotate_max=0.5, generator_size=16,
                                 form="fixed resolution (canvas = p)")
    assert r["settings"]["seed"] == 7 and r["settings"]["batch"] == 2 and r["settings"]["num"] == 3
    assert r["seconds"] == 1.235
    assert r["time"] == "1970-01-01T00:00:00Z"
    assert r["torch"] == torch.__version__
    # The PSNR is the function's: psnr of the same run through equivariance_psnr.
    with np.errstate(divide="ignore"):
        want = E.equivariance_psnr(FakeG(), [kind], num=3, batch=2, seed=7, translate_max=0.25, rotate_max=0.5,
                                   device="cpu", progress=False)[kind]
    assert r["psnr"] == want or (math.isinf(r["psnr"]) and math.isinf(want))


def test_equivariance_metric_exact_and_frozen_generators():
    # Whole-pixel translations of an exactly equivariant generator: MSE 0, so PSNR = +inf by the formula;
    # the same generator ignoring M scores finite, and fractional shifts / rotations score high but finite.
    opts = Options(num=4, batch=2, seed=3, progress=False, precision="fp16")
    with np.errstate(divide="ignore"):
        exact = E.equivariance_metric(FakeG(), "eqt-int", opts)["psnr"]
    frozen = E.equivariance_metric(FakeG(frozen=True), "eqt-int", opts)["psnr"]
    assert exact == math.inf
    assert math.isfinite(frozen) and frozen < 40
    frac = E.equivariance_metric(FakeG(), "eqt-frac", opts)["psnr"]
    frac_frozen = E.equivariance_metric(FakeG(frozen=True), "eqt-frac", opts)["psnr"]
    assert frac > frac_frozen + 15
    g = FakeG()
    E.equivariance_metric(g, "eqr", opts)
    assert all(c["force_fp32"] is False for c in g.calls)               # precision fp16


def test_equivariance_metric_labels_and_progress(capsys):
    # A conditional generator gets opts.labels; one without a c_dim attribute is unconditional.
    lab = lambda n: torch.eye(2)[torch.arange(n) % 2]
    g = FakeG(c_dim=2)
    E.equivariance_metric(g, "eqt-frac", Options(num=2, batch=2, progress=False, labels=lab))
    torch.testing.assert_close(g.mapped[0][1], lab(2), atol=0, rtol=0)
    assert capsys.readouterr().err == ""
    g = FakeG(has_c_dim=False)
    with np.errstate(divide="ignore"):
        r = E.equivariance_metric(g, "eqt-int", Options(num=2, batch=2, progress=True, labels=lab))
    assert g.mapped[0][1] is None and r["num_fake"] == 2
    assert "equivariance" in capsys.readouterr().err                  # the tqdm bar
    with pytest.raises(ValueError, match="needs labels"):
        E.equivariance_metric(FakeG(c_dim=2), "eqt-int", Options(num=2, batch=2, progress=False))


class MappingOnly(torch.nn.Module):
    def mapping(self, z, c):
        return z


class SynthesizeOnly(torch.nn.Module):
    def synthesize(self, ws, **kw):
        return ws


@pytest.mark.parametrize("cls", [MappingOnly, SynthesizeOnly, torch.nn.Identity])
def test_equivariance_metric_refuses_a_generator_without_a_transformable_input(cls):
    with pytest.raises(ValueError, match=r"eqr needs a generator with a Fourier input .*; %s has none" % cls.__name__):
        E.equivariance_metric(cls(), "eqr", Options(num=1, batch=1, progress=False))
