"""Gigapixel files: an image rendered tile by tile into a Deep Zoom pyramid or a tiled pyramidal BigTIFF,
never holding the whole image in memory (docs/serve.md, "Files").

The full-resolution level is rendered one tile at a time by a caller-given `render_tile(x, y, w, h)`
(`anyres-fast generate --format dzi|tiff` passes a window render of the generator) and written as PNG
tiles of a Deep Zoom pyramid (`NAME.dzi` + `NAME_files/<level>/<col>_<row>.png`). Each coarser level is
built from the level above it, 2 x 2 tiles at a time, by box averaging (`tiles.box_downsample`), as a
pyramid file's reduced levels are defined; serve's any-resolution levels are true renders instead, a
choice a file cannot make for its reader. A TIFF is assembled from that pyramid, built in a temporary
folder next to the output: tifffile writes the full level as a tiled BigTIFF page and the reduced levels
(down to one tile) as its SubIFDs, each from an iterator that reads one tile file at a time, then the
temporary folder is removed.

Memory: one rendered tile, the four tiles of one downsampling step and tifffile's one-tile buffer; the
peak does not grow with the image (measured in docs/serve.md).
"""
from __future__ import annotations

import math
import os
import shutil
from typing import Callable, Iterator, List, Tuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..utils.files import atomic_write
from .tiles import box_downsample, dzi_xml, level_size, num_levels

FORMATS = ("dzi", "tiff")


def tile_grid(width: int, height: int, tile: int) -> Tuple[int, int]:
    """(columns, rows) of tile x tile tiles covering a width x height level (the last ones cropped)."""
    return -(-width // tile), -(-height // tile)


def _tile_path(files: str, level: int, col: int, row: int) -> str:
    return os.path.join(files, str(level), f"{col}_{row}.png")


def _save_tile(path: str, image: np.ndarray) -> None:
    # Plain writes: the .dzi descriptor is written last and atomically, so a pyramid without one is
    # incomplete (a killed export), and fsync per tile would dominate the time of small tiles.
    Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image).save(path, format="PNG")


def _read(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)


def write_dzi(render_tile: Callable[[int, int, int, int], np.ndarray], width: int, height: int, base: str,
              tile: int = 256, progress: bool = True) -> str:
    """Render a width x height image tile by tile into a Deep Zoom pyramid.

    Args:
        render_tile: (x, y, w, h) -> (h, w, C) uint8 array, the image's pixels in that window.
        width, height: image size in pixels (>= 1).
        base: output path without extension: writes base.dzi and base_files/.
        tile: tile side (16..4096).
        progress: tqdm bar over the tiles.

    Returns:
        The .dzi path.

    Raises:
        ValueError: a bad size or tile side, or render_tile returning another shape or dtype.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be >= 1 x 1, got {width}x{height}")
    if not 16 <= tile <= 4096:
        raise ValueError(f"tile side must be in 16..4096, got {tile}")
    files = base + "_files"
    top = num_levels(width, height) - 1
    cols, rows = tile_grid(width, height, tile)
    total = sum(math.prod(tile_grid(*level_size(width, height, lv), tile)) for lv in range(top + 1))
    bar = tqdm(total=total, unit="tile", desc=os.path.basename(base), disable=not progress)
    os.makedirs(os.path.join(files, str(top)), exist_ok=True)
    for row in range(rows):
        for col in range(cols):
            x, y = col * tile, row * tile
            w, h = min(tile, width - x), min(tile, height - y)
            img = np.asarray(render_tile(x, y, w, h))
            if img.dtype != np.uint8 or img.shape[:2] != (h, w):
                raise ValueError(f"render_tile({x}, {y}, {w}, {h}) returned {img.dtype} {img.shape}, "
                                 f"expected uint8 ({h}, {w}, C)")
            _save_tile(_tile_path(files, top, col, row), img)
            bar.update()
    for level in range(top - 1, -1, -1):
        _downsample_level(files, level, *level_size(width, height, level), tile)
        bar.update(math.prod(tile_grid(*level_size(width, height, level), tile)))
    bar.close()
    path = base + ".dzi"
    atomic_write(path, dzi_xml(width, height, tile, "png").encode())
    return path


def _downsample_level(files: str, level: int, width: int, height: int, tile: int) -> None:
    """Level `level` from level + 1: each tile averages the (up to) 2 x 2 tiles above it."""
    os.makedirs(os.path.join(files, str(level)), exist_ok=True)
    cols, rows = tile_grid(width, height, tile)
    for row in range(rows):
        for col in range(cols):
            parts = []
            for dy in range(2):
                line = [_read(p) for dx in range(2)
                        if os.path.exists(p := _tile_path(files, level + 1, 2 * col + dx, 2 * row + dy))]
                if line:
                    parts.append(np.concatenate(line, axis=1))
            block = np.concatenate(parts, axis=0)
            if block.ndim == 2:
                block = block[..., None]
            small = box_downsample(block, 2)
            _save_tile(_tile_path(files, level, col, row), small)


def write_tiff(render_tile: Callable[[int, int, int, int], np.ndarray], width: int, height: int, path: str,
               tile: int = 256, progress: bool = True) -> str:
    """Render a width x height image tile by tile into a tiled pyramidal BigTIFF (tifffile).

    Page 0 is the full image (tiles of `tile` x `tile`, zlib-compressed); its SubIFDs are the reduced
    levels, each half the size of the one before (rounding up), down to the first that fits one tile.

    Args:
        render_tile, width, height, tile, progress: as write_dzi.
        path: the .tif file to write (replaced atomically).

    Returns:
        path.

    Raises:
        ValueError: as write_dzi.
    """
    import tifffile

    staging = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-pyramid-{os.path.basename(path)}-{os.getpid()}")
    try:
        write_dzi(render_tile, width, height, os.path.join(staging, "p"), tile, progress)
        files = os.path.join(staging, "p_files")
        top = num_levels(width, height) - 1
        levels = [top]
        while max(level_size(width, height, levels[-1])) > tile and levels[-1] > 0:
            levels.append(levels[-1] - 1)
        first = _read(_tile_path(files, top, 0, 0))
        channels = 1 if first.ndim == 2 else first.shape[2]

        def tiles_of(level: int) -> Iterator[np.ndarray]:
            w, h = level_size(width, height, level)
            cols, rows = tile_grid(w, h, tile)
            for row in range(rows):
                for col in range(cols):
                    t = _read(_tile_path(files, level, col, row))
                    t = t.reshape(t.shape[0], t.shape[1], channels)
                    if t.shape[:2] != (tile, tile):       # edge tiles are padded to the full tile size
                        full = np.zeros((tile, tile, channels), np.uint8)
                        full[:t.shape[0], :t.shape[1]] = t
                        t = full
                    yield t

        def write(f) -> None:
            with tifffile.TiffWriter(f, bigtiff=True) as tif:
                for i, level in enumerate(levels):
                    w, h = level_size(width, height, level)
                    tif.write(tiles_of(level), shape=(h, w, channels), dtype=np.uint8, tile=(tile, tile),
                              photometric="rgb" if channels == 3 else "minisblack", compression="zlib",
                              subifds=len(levels) - 1 if i == 0 else None, subfiletype=1 if i else 0,
                              metadata=None)

        atomic_write(path, write)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_tiff_levels(path: str) -> List[Tuple[int, int]]:
    """(width, height) of every level of a pyramidal TIFF written by write_tiff (page 0, then its SubIFDs).

    Args:
        path: the file.

    Returns:
        list of (width, height), largest first.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        out = [(page.imagewidth, page.imagelength)]
        for sub in page.pages or []:
            out.append((sub.imagewidth, sub.imagelength))
    return out


def write_pyramid(fmt: str, render_tile, width: int, height: int, base: str, tile: int, progress: bool) -> str:
    """Write a dzi pyramid (base.dzi + base_files/) or a pyramidal BigTIFF (base.tif) tile by tile.

    Args:
        fmt: "dzi" or "tiff". render_tile: (x, y, w, h) -> (h, w, C) uint8 array.
        width, height: image size. base: output path without extension. tile: tile side.
        progress: a tqdm bar over the tiles.

    Returns:
        The path written.
    """
    if fmt == "dzi":
        return write_dzi(render_tile, width, height, base, tile, progress)
    return write_tiff(render_tile, width, height, base + ".tif", tile, progress)
