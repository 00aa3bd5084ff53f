"""Tile planning and host-side assembly of anyres_fast.models.tiling, with a synthetic model whose tiles are a
known function of canvas position (so the assembled canvas can be checked exactly)."""
from __future__ import annotations

import pytest
import torch

from anyres_fast.models import tiling as render


def coordinate_tiles(tile: int, x0: int, y0: int, calls: list):
    """render_tiles whose pixel (i, j) of the tile at window offset (tx, ty) of image b holds
    (b, canvas x, canvas y) = (b, x0 + tx + j, y0 + ty + i)."""
    def render_tiles(sample, tx, ty):
        calls.append(len(sample))
        k = len(sample)
        jj = torch.arange(tile).view(1, 1, tile).expand(k, tile, tile)
        ii = torch.arange(tile).view(1, tile, 1).expand(k, tile, tile)
        xs = x0 + tx.view(-1, 1, 1) + jj
        ys = y0 + ty.view(-1, 1, 1) + ii
        bs = sample.view(-1, 1, 1).expand(k, tile, tile)
        return torch.stack([bs, xs, ys], dim=1).to(torch.float32)
    return render_tiles


@pytest.mark.parametrize("width,height,tile,tile_batch", [(100, 100, 32, 5), (64, 64, 64, 1), (65, 31, 16, 7),
                                                          (1000, 3, 256, 32)])
def test_canvas_assembles_exactly(width, height, tile, tile_batch):
    calls = []
    x0, y0 = -7, 13
    out = render.render_canvas(coordinate_tiles(tile, x0, y0, calls), num_images=2, width=width, height=height,
                               tile=tile, channels=3, tile_batch=tile_batch, progress=False)
    assert out.shape == (2, 3, height, width) and out.device.type == "cpu"
    b = torch.arange(2).view(2, 1, 1).expand(2, height, width).float()
    x = (x0 + torch.arange(width)).view(1, 1, width).expand(2, height, width).float()
    y = (y0 + torch.arange(height)).view(1, height, 1).expand(2, height, width).float()
    assert torch.equal(out, torch.stack([b, x, y], dim=1))
    n_tiles = 2 * -(-width // tile) * -(-height // tile)
    assert sum(calls) == n_tiles and max(calls) <= tile_batch      # batched, never more than tile_batch


def test_uint8_output_follows_stylegan_convention():
    vals = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    got = render.to_output(vals, torch.uint8)
    assert got.tolist() == [0, 0, 128, 191, 255, 255]
    with pytest.raises(ValueError, match="out_dtype"):
        render.to_output(vals, torch.int32)


def test_tile_offsets_and_window_parsing():
    assert render.tile_offsets(1000, 256) == [0, 256, 512, 768]
    assert render.tile_offsets(256, 256) == [0]
    assert render.parse_window((1, -2, 30)) == (1, -2, 30, 30)
    assert render.parse_window([0, 0, 5, 7]) == (0, 0, 5, 7)
    with pytest.raises(ValueError, match="window"):
        render.parse_window((0, 0))
    with pytest.raises(TypeError, match="int"):
        render.parse_window((0.5, 0, 10))
    with pytest.raises(ValueError, match=">= 1"):
        render.parse_window((0, 0, 0))
    with pytest.raises(TypeError):
        render.parse_window(5)


def test_render_canvas_checks_tile_shape_and_batch():
    bad = lambda s, tx, ty: torch.zeros(len(s), 3, 8, 8)
    with pytest.raises(RuntimeError, match="expected"):
        render.render_canvas(bad, num_images=1, width=20, height=20, tile=16, channels=3, progress=False)
    with pytest.raises(ValueError, match="tile_batch"):
        render.render_canvas(bad, num_images=1, width=20, height=20, tile=16, channels=3, tile_batch=0,
                             progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_canvas_assembles_exactly_from_cuda_tiles():
    calls = []
    host_fn = coordinate_tiles(32, 3, 4, calls)
    fn = lambda s, tx, ty: host_fn(s, tx, ty).cuda()
    out = render.render_canvas(fn, num_images=3, width=90, height=70, tile=32, channels=3, tile_batch=4,
                               device="cuda", progress=False)
    ref = render.render_canvas(host_fn, num_images=3, width=90, height=70, tile=32, channels=3, tile_batch=4,
                               progress=False)
    assert torch.equal(out, ref)
