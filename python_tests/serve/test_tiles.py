"""Tile sources of `anyres-fast serve` against direct renders (G.render / G.zoom, InfinityGenerator.generate)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.serve.tiles import (AnyresTiles, InfinityTiles, TileKey, TileNotFound, box_downsample, level_size,
                                     num_levels)

TINY = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"


def _u8(img: torch.Tensor) -> np.ndarray:
    return (img[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_deep_zoom_level_sizes_follow_the_protocol():
    # Level l is the full size halved (rounding up) L - l times; level 0 is 1 x 1.
    assert num_levels(1024, 1024) == 11 and num_levels(1000, 3) == 11 and num_levels(1, 1) == 1
    assert level_size(1000, 3, 10) == (1000, 3) and level_size(1000, 3, 9) == (500, 2)
    assert level_size(1000, 3, 8) == (250, 1) and level_size(1000, 3, 0) == (1, 1)


def test_box_downsample_equals_pil_box_resize():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(a).resize((12, 8), Image.BOX))
    assert np.abs(box_downsample(a, 4).astype(int) - ref.astype(int)).max() <= 1


def test_anyres_tiles_equal_the_whole_canvas_render(one_thread):
    from anyres_fast.cli.weights import resolve_and_load
    G = resolve_and_load(TINY, "cpu")
    src = AnyresTiles(G, 256, tile=48)                     # 48 is not a multiple of p = 64
    key = src.canonical("psi=0.75,seed=2")
    assert key == "seed=2,psi=0.75"
    keys = [TileKey(key, 7, 1, 2), TileKey(key, 7, 2, 0), TileKey(key, 5, 0, 0), TileKey(key, 6, 1, 1)]
    tiles, calls = src.render_batch(keys)
    assert calls == 1
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2))
    whole128 = _u8(G.render(z, 128, truncation_psi=0.75, progress=False))
    assert np.array_equal(tiles[0], whole128[96:128, 48:96])          # edge tile: cropped to 32 rows
    assert np.array_equal(tiles[1], whole128[0:48, 96:128])
    whole64 = _u8(G.render(z, 64, truncation_psi=0.75, progress=False))
    assert np.array_equal(tiles[3], whole64[48:64, 48:64])
    assert np.array_equal(tiles[2], box_downsample(whole64, 2))       # below p: the p canvas, averaged
    with pytest.raises(TileNotFound):
        src.check(TileKey(key, 9, 0, 0))
    with pytest.raises(TileNotFound):
        src.check(TileKey(key, 7, 3, 0))
    with pytest.raises(TileNotFound):
        src.canonical("seed=-1")
    with pytest.raises(ValueError):
        AnyresTiles(G, 192)


def test_infinity_tiles_equal_generate_native_zoomed_out_and_fused(one_thread):
    from anyres_fast.cli.weights import resolve_and_load
    G = resolve_and_load("random:preset=tiny", "cpu")
    src = InfinityTiles(G, 4096, 96, 64, zoom_out=2)
    L = src.levels - 1
    assert src.min_level == L - 2
    fused = "seed=3,fuse=5:9,centres=300:40;420:40"
    keys = [TileKey("seed=3", L, 5, 1), TileKey("seed=3", L - 1, 2, 0), TileKey(src.canonical(fused), L, 5, 0)]
    tiles, calls = src.render_batch(keys)
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3))
    ref = _u8(G.generate(z, 96, 256, top=src.top, left=256, seed=3, progress=False))
    assert np.array_equal(tiles[0], ref[64:96, 64:128])
    assert np.array_equal(tiles[1], box_downsample(ref[:, 0:128], 2))
    zf = torch.cat([torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s)) for s in (5, 9)])
    ref = _u8(G.generate(zf, 64, 256, top=src.top, left=256, seed=3, progress=False,
                         style_centres=[(300, 40 + src.top), (420, 40 + src.top)]))
    assert np.abs(tiles[2].astype(int) - ref[:, 64:128].astype(int)).max() <= 1
    with pytest.raises(TileNotFound):
        src.check(TileKey("seed=3", L - 3, 0, 0))                     # coarser than the served levels
    with pytest.raises(TileNotFound):
        src.canonical("seed=3,fuse=5:9")
