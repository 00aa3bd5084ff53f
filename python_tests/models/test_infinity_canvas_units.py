"""The InfinityGAN canvas module against its written definition (docs/infinitygan.md, "Everything a patch
reads"): the counter-based generator recomputed from the documented formula in plain Python integers, the
patch plan against a hand-built cover, fusion weights on a device other than the CPU, ring-width errors.

A seed names the same canvas in every version of the package, so the generator's constants are part of
the format; the reference below is written from the documentation's text, not from the module.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anyres_fast.models import infinity_canvas as cv

M = 2 ** 32 - 1


def _mix(x: int) -> int:
    """docs/infinitygan.md: x ^= x >> 16; x *= 0x45D9F3B (mod 2^32); twice; x ^= x >> 16."""
    x &= M
    x ^= x >> 16
    x = (x * 0x45D9F3B) % 2 ** 32
    x ^= x >> 16
    x = (x * 0x45D9F3B) % 2 ** 32
    x ^= x >> 16
    return x


def _key(seed: int, stream: int) -> int:
    return _mix(_mix(_mix(seed % 2 ** 32) ^ (seed >> 32)) ^ _mix(stream + 0x9E37))


def _uniforms(seed: int, stream: int, channel: int, row: int, col: int) -> tuple:
    """(u1, u2) as float32, from the documented hash chain; row and col any sign (low 32 bits)."""
    h = _mix(_mix(_mix(channel ^ _key(seed, stream)) ^ (row % 2 ** 32)) ^ (col % 2 ** 32))
    u1 = (np.float32(_mix(h ^ 0x68E31DA4) >> 8) + np.float32(0.5)) * np.float32(2.0 ** -24)
    u2 = np.float32(_mix(h ^ 0x1B56C4E9) >> 8) * np.float32(2.0 ** -24)
    return u1, u2


def test_stream_keys_follow_the_documented_hash_for_low_and_high_seed_bits():
    seeds = [0, 1, 7, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 5, 3 << 40, 2 ** 63 - 1]
    for seed in seeds:
        for stream in range(12):
            assert cv.stream_key(seed, stream) == _key(seed, stream), (seed, stream)


def test_hash_is_the_documented_mixer_on_tensors_and_ints():
    xs = [0, 1, 2, 0xFFFF, 0x10000, 0x12345678, 0x9E3779B9, 2 ** 31, M]
    got = cv._mix(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [_mix(x) for x in xs]
    assert [cv._mix_int(x) for x in xs] == [_mix(x) for x in xs]
    assert cv._mix_int(M + 1 + 12345) == _mix(12345)                     # only the low word is hashed


def test_canvas_values_are_the_documented_box_muller_of_the_hash_chain():
    # 8 x 50 x 100 = 40000 values: enough that the smallest u1 is about 400 / 2^24, where an offset of the
    # uniform's half-step (0.5 -> 1.5 or -0.5) moves a value by more than 1e-4.
    seed, stream, channels = 2 ** 33 + 12345, 3, 8
    rows = torch.arange(-25, 25, dtype=torch.int64)[None]
    cols = torch.arange(-(2 ** 32) - 40, -(2 ** 32) + 60, dtype=torch.int64)[None]   # low words wrap too
    got = cv.canvas_normal(seed, stream, channels, rows, cols, torch.float64)
    assert got.shape == (1, channels, 50, 100)
    want = np.empty((channels, 50, 100))
    smallest = 1.0
    for c in range(channels):
        for i, r in enumerate(rows[0].tolist()):
            for j, x in enumerate(cols[0].tolist()):
                u1, u2 = _uniforms(seed, stream, c, r, x)
                smallest = min(smallest, float(u1))
                want[c, i, j] = math.sqrt(-2.0 * math.log(float(u1))) * math.cos(2 * math.pi * float(u2))
    assert smallest < 1e-3
    # float32 arithmetic in the module (log, sqrt, cos of float32 uniforms): a few float32 ulps
    np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-5)
    assert got.dtype == torch.float64
    assert cv.canvas_normal(seed, stream, 2, rows[:, :3], cols[:, :4]).dtype == torch.float32


def test_canvas_values_are_made_on_the_index_tensors_device():
    rows = torch.zeros(2, 3, dtype=torch.int64, device="meta")
    cols = torch.zeros(2, 5, dtype=torch.int64, device="meta")
    z = cv.canvas_normal(1, 0, 4, rows, cols)
    assert z.device.type == "meta" and z.shape == (2, 4, 3, 5) and z.dtype == torch.float32


def test_plan_window_records_the_window_and_covers_it_with_the_published_stride():
    zs, patch, scale = 11, 88, 8              # stride zs - 5 = 6 latents = 48 px; a patch spans 88 px
    top, left, height, width = -20, 37, 100, 250
    plan = cv.plan_window(top, left, height, width, zs=zs, patch=patch, scale=scale)
    assert (plan.top, plan.left, plan.height, plan.width) == (top, left, height, width)
    assert (plan.zs, plan.patch, plan.scale) == (zs, patch, scale)

    def cover(start, length):                 # first patch at floor(start / scale), then every 6 latents
        out = [math.floor(start / scale)]
        while scale * out[-1] + patch < start + length:
            out.append(out[-1] + zs - 5)
        return tuple(out)

    assert plan.rows == cover(top, height) == (-3, 3)
    assert plan.cols == cover(left, width) == (4, 10, 16, 22, 28)
    assert plan.patches == [(r, c) for r in (-3, 3) for c in (4, 10, 16, 22, 28)]
    # the last patch reaches the window's end, the one before does not
    assert scale * plan.cols[-1] + patch >= left + width > scale * plan.cols[-2] + patch


def test_fusion_weights_are_made_on_the_requested_device():
    centres = torch.tensor([[1.0, 3.0], [9.5, 2.25], [4.0, 11.0]], dtype=torch.float64)
    grids = [(torch.tensor([-2, 0, 3]), torch.tensor([-1, 3, 4, 10])), (torch.tensor([5]), torch.tensor([6]))]
    out = cv.fusion_weights(centres, 5, grids, "meta")
    assert [w.device.type for w in out] == ["meta", "meta"]
    assert [tuple(w.shape) for w in out] == [(3, 3, 4), (3, 1, 1)]
    assert all(w.dtype == torch.float32 for w in out)


def test_ring_width_errors_name_the_argument_by_default():
    with pytest.raises(ValueError, match="^cyclic_width 7: a cyclic canvas must be at least one 8-pixel"):
        cv.ring_columns(7, 4, 8)
    with pytest.raises(ValueError, match=r"^cyclic_width 9: a cyclic canvas must be a multiple of 4"):
        cv.ring_columns(9, 4, 8)
