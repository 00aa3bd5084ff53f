"""Equivariance metrics: the image transforms against independent computations, and EQ-T / EQ-R of a
micro generator against one whose output ignores the input transform (the comparison with the published
code itself is scripts/check_equivariance_against_stylegan3.py, which needs a StyleGAN3 checkout)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from anyres_fast.metrics import Options
from anyres_fast.metrics.equivariance import (default_synthesis, equivariance_metric, equivariance_psnr,
                                              fractional_rotation, fractional_translation, integer_translation,
                                              lanczos_taps, oriented_bandlimit_filter, psnr_from_sums,
                                              pseudo_rotation)
from anyres_fast.models import Generator
from helpers import MICRO_G


def smooth_image(h=32, w=32, kx=1.5, ky=1.0, phase=0.3, shift=(0.0, 0.0)):
    """cos of a low frequency (well inside the band), sampled at pixel centres moved by shift (pixels)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    x, y = xx - shift[0], yy - shift[1]
    return torch.cos(2 * math.pi * (kx * x / w + ky * y / h) + phase).float().expand(1, 2, h, w).clone()


def test_integer_translation_moves_content_and_masks_the_fill():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    z, m = integer_translation(x, torch.tensor(2 / 8), torch.tensor(-1 / 8))
    for yy in range(8):
        for xx in range(8):
            sy, sx = yy + 1, xx - 2                        # content moves right by 2, up by 1
            inside = 0 <= sy < 8 and 0 <= sx < 8
            assert m[0, 0, yy, xx] == float(inside)
            assert z[0, :, yy, xx].tolist() == (x[0, :, sy, sx].tolist() if inside else [0.0, 0.0])


def test_fractional_translation_is_lanczos_interpolation():
    # Integer shift: the taps are a delta, so it equals the integer translation where both are valid.
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    zi, mi = integer_translation(x, torch.tensor(3 / 16), torch.tensor(2 / 16))
    zf, mf = fractional_translation(x, torch.tensor(3 / 16), torch.tensor(2 / 16))
    assert mf.sum() > 0 and bool((mf <= mi).all())
    torch.testing.assert_close(zf * mf, zi * mf, atol=1e-6, rtol=0)
    # Fractional shift of a smooth image: the analytic shifted image inside the mask.
    t = (2.37, -1.61)
    x = smooth_image()
    z, m = fractional_translation(x, torch.tensor(t[0] / 32), torch.tensor(t[1] / 32))
    ref = smooth_image(shift=t)
    assert float(((z - ref).abs() * m).max()) < 1e-2 and m.sum() > 0.6 * m.numel()   # Lanczos-3 ripple
    # The taps: the windowed sinc at j - f, by the formula, normalised.
    f = 0.3
    j = np.arange(-2, 4)
    want = np.sinc(j - f) * np.sinc((j - f) / 3)
    np.testing.assert_allclose(lanczos_taps(torch.tensor(f)).numpy(), want / want.sum(), rtol=1e-5)


def test_rotation_of_a_smooth_image_and_the_band_filters():
    angle = 0.4
    x = smooth_image(64, 64, kx=1.0, ky=0.5)
    z, m = fractional_rotation(x, angle)
    # Rotating the image by angle about its centre: output pixel (u, v) reads the source at R^-1 (u, v).
    h = w = 64
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    u, v = (xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1
    c, s = math.cos(angle), math.sin(angle)
    su, sv = c * u - s * v, s * u + c * v                # inverse of [[c, s], [-s, c]]
    sx, sy = (su + 1) / 2 * w - 0.5, (sv + 1) / 2 * h - 0.5
    ref = torch.cos(2 * math.pi * (1.0 * sx / w + 0.5 * sy / h) + 0.3).float()
    assert m[0, 0].sum() > 0.3 * h * w
    assert float(((z[0, 0] - ref).abs() * m[0, 0]).max()) < 0.02
    # Pseudo-rotation keeps a low frequency (passband) and each polyphase part of the x4 filter sums to 1/16.
    y, pm = pseudo_rotation(x, angle)
    assert float(((y - x).abs() * pm).max()) < 0.02
    f = oriented_bandlimit_filter(torch.eye(3), a=3, amax=6, up=4)
    assert f.shape == (47, 47)
    g = torch.nn.functional.pad(f, [0, 1, 0, 1]).reshape(12, 4, 12, 4).sum(dim=(0, 2))
    torch.testing.assert_close(g, torch.full((4, 4), 1 / 16), atol=1e-6, rtol=0)


def micro_generator(config="T", seed=0):
    torch.manual_seed(seed)
    kw = dict(MICRO_G)
    G = Generator(resolution=64, config=config, **kw).eval()
    return G.calibrate_magnitudes_(torch.randn(16, kw["z_dim"], generator=torch.Generator().manual_seed(seed)))


def test_a_generator_that_ignores_the_input_transform_scores_clearly_lower():
    torch.set_num_threads(1)
    G = micro_generator("T")
    good = equivariance_psnr(G, ["eqt-int", "eqt-frac"], num=4, batch=2, seed=1, progress=False)
    still = default_synthesis(G)
    frozen = equivariance_psnr(G, ["eqt-int", "eqt-frac"], num=4, batch=2, seed=1, progress=False,
                               synthesis=lambda ws, m: still(ws, torch.eye(3)))
    assert good["eqt-int"] > 45 and good["eqt-frac"] > 40
    assert frozen["eqt-int"] < good["eqt-int"] - 20 and frozen["eqt-frac"] < good["eqt-frac"] - 15
    # Same seed and kinds, same draws: deterministic.
    assert equivariance_psnr(G, ["eqt-frac", "eqt-int"], num=4, batch=2, seed=1, progress=False) == good
    # Config R (rotation equivariant by design) against the same generator frozen.
    R = micro_generator("R")
    r = equivariance_psnr(R, ["eqr"], num=2, batch=2, seed=2, progress=False)["eqr"]
    still_r = default_synthesis(R)
    r_frozen = equivariance_psnr(R, ["eqr"], num=2, batch=2, seed=2, progress=False,
                                 synthesis=lambda ws, m: still_r(ws, torch.eye(3)))["eqr"]
    assert r > r_frozen + 5


def test_result_line_and_psnr_formula():
    assert psnr_from_sums(4.0, 1.0) == pytest.approx(0.0)           # MSE 4 = peak-to-peak^2
    assert psnr_from_sums(0.04, 1.0) == pytest.approx(20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # an exact match warns of nothing
        assert psnr_from_sums(0.0, 5.0) == float("inf")
        assert psnr_from_sums(1e-300, 1.0) == pytest.approx(20 * math.log10(2) + 3000)
    G = micro_generator("T")
    r = equivariance_metric(G, "eqt-int", Options(num=3, batch=2, progress=False, precision="fp32"))
    assert r["metric"] == "eqt-int" and r["num_fake"] == 4 and math.isfinite(r["psnr"])
    assert r["settings"]["translate_max"] == 0.125
    with pytest.raises(ValueError, match="kinds"):
        equivariance_psnr(G, ["eqx"], num=1)
