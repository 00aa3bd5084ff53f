"""Tiled rendering of canvases of any size in constant device memory (shared by the model families).

A model supplies `render_tiles(sample, tx, ty) -> (k, C, tile, tile)` for a batch of k tiles (image
index and tile offsets inside the window, int64 tensors on the render device); `render_canvas` plans the
tiles, batches
them, overlaps device work with the copy to host, crops the tiles that stick out of the window and
assembles the result in a host (CPU) tensor. Only `tile_batch` tiles live on the device at a time.
"""
from __future__ import annotations

from typing import Callable

import torch

RenderTiles = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def parse_window(window) -> tuple:
    """Normalises a render window.

    Args:
        window: (x0, y0, w) or (x0, y0, w, h), ints (anything with __index__) in canvas pixels.
    Returns:
        (x0, y0, w, h) ints; x0, y0 may be negative; w = h for the 3-value form.
    Raises:
        TypeError: not a sequence, or values that are not ints.
        ValueError: not 3 or 4 values, or w, h < 1.
    """
    try:
        vals = [v for v in window]
    except TypeError:
        raise TypeError(f"render: window must be (x0, y0, w) or (x0, y0, w, h), got {window!r}") from None
    if len(vals) not in (3, 4):
        raise ValueError(f"render: window must be (x0, y0, w) or (x0, y0, w, h), got {window!r}")
    if len(vals) == 3:
        vals.append(vals[2])
    out = []
    for name, v in zip(("x0", "y0", "w", "h"), vals):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"render: window {name} must be an int (pixels), got {v!r}")
        out.append(v.__index__())
    if out[2] < 1 or out[3] < 1:
        raise ValueError(f"render: window width and height must be >= 1, got {out[2]}x{out[3]}")
    return tuple(out)


def tile_offsets(extent: int, tile: int) -> list:
    """Tile starts along one axis.

    Args:
        extent: length to cover (pixels); tile: tile size.
    Returns:
        list [0, tile, 2·tile, ...] covering [0, extent); the last tile may stick out (it is cropped).
    """
    return list(range(0, extent, tile))


def to_output(tiles: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Converts model output (about [-1, 1]) to the render's output dtype, on its device.

    Args:
        tiles: float tensor of any shape.
        out_dtype: torch.uint8 (x·127.5 + 128, clamped to [0, 255]) or a float dtype (values kept).
    Returns:
        Tensor like tiles in out_dtype.
    Raises:
        ValueError: any other out_dtype.
    """
    if out_dtype == torch.uint8:
        return (tiles * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if out_dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        return tiles.to(out_dtype)
    raise ValueError(f"render: out_dtype must be uint8 or a float dtype, got {out_dtype}")


def render_canvas(render_tiles: RenderTiles, *, num_images: int, width: int, height: int, tile: int,
                  channels: int, tile_batch: int = 8, device=None, progress: bool = True,
                  out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Assembles images on the host from tiles rendered in batches (see the module docstring).

    Args:
        render_tiles: callable(sample, tx, ty) -> (k, channels, tile, tile) for k tiles; sample, tx,
            ty are int64 (k,) tensors on `device` (image index and tile offsets inside the window).
        num_images: images to render; width, height: output size in pixels.
        tile: tile side p; channels: image channels.
        tile_batch: int >= 1, tiles per call of render_tiles.
        device: where render_tiles runs (CUDA: pinned double-buffered copies to the host).
        progress: bool; tqdm progress bar.
        out_dtype: torch.uint8 or a float dtype (see to_output).
    Returns:
        CPU tensor (num_images, channels, height, width) of out_dtype.
    Raises:
        ValueError: tile_batch < 1 or an unsupported out_dtype.
        RuntimeError: render_tiles returned the wrong shape.
    """
    if isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1:
        raise ValueError(f"render: tile_batch must be a positive int, got {tile_batch!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = torch.empty(num_images, channels, height, width, dtype=out_dtype)
    items = [(b, tx, ty) for b in range(num_images) for ty in tile_offsets(height, tile)
             for tx in tile_offsets(width, tile)]
    use_pinned = device.type == "cuda"
    staging = []            # two reusable pinned host buffers: copy one while the device fills the other

    def place(chunk, host, event):
        if event is not None:
            event.synchronize()
        for i, (b, tx, ty) in enumerate(chunk):
            h, w = min(tile, height - ty), min(tile, width - tx)
            out[b, :, ty:ty + h, tx:tx + w] = host[i, :, :h, :w]

    # All tile indices go to the device once: per-chunk host-to-device copies would stall the stream.
    index = torch.tensor(items, dtype=torch.int64).reshape(-1, 3).to(device)

    from tqdm.auto import tqdm
    pending = None
    with tqdm(total=len(items), unit="tile", disable=not progress, desc=f"render {width}x{height}") as bar:
        for n, start in enumerate(range(0, len(items), tile_batch)):
            chunk = items[start:start + tile_batch]
            idx = index[start:start + len(chunk)]
            tiles = render_tiles(idx[:, 0], idx[:, 1], idx[:, 2])
            if tiles.shape != (len(chunk), channels, tile, tile):
                raise RuntimeError(f"render: render_tiles returned shape {tuple(tiles.shape)}, expected "
                                   f"{(len(chunk), channels, tile, tile)}")
            tiles = to_output(tiles, out_dtype)
            if use_pinned:
                if len(staging) < 2:
                    staging.append(torch.empty((tile_batch, channels, tile, tile), dtype=out_dtype,
                                               pin_memory=True))
                host = staging[n % 2][:len(chunk)]
                host.copy_(tiles, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            else:
                host, event = tiles.cpu(), None
            if pending is not None:
                place(*pending)
                bar.update(len(pending[0]))
            pending = (chunk, host, event)
        if pending is not None:
            place(*pending)
            bar.update(len(pending[0]))
    return out
