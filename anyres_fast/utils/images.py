"""The one way every command and dataset turns an image file into 8-bit RGB (docs/data.md, "Images").

- EXIF orientation is applied (a portrait photo stored sideways is read upright).
- High bit depth: 16-bit and 32-bit integer greyscale (Pillow modes I;16*, I) is scaled from
  0..65535 to 0..255 (rounded); Pillow's own conversion clips it, which turns a 16-bit picture white.
  16-bit RGB PNGs already arrive as 8-bit RGB from Pillow (the high byte). Float images (mode F) are
  taken as 0..1 when their largest value is at most 1, else as 0..255, and clipped.
- Palette, grey, grey + alpha, RGBA and CMYK go through Pillow's conversion to RGB (alpha is dropped).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_HIGH_INT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb8(im: Image.Image) -> Image.Image:
    """An opened Pillow image as upright 8-bit RGB (see the module docstring).

    Args:
        im: a Pillow image (loaded or not).

    Returns:
        A new RGB image.
    """
    im = ImageOps.exif_transpose(im) or im
    if im.mode in _HIGH_INT:
        a = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.floor(a * (255.0 / 65535.0) + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0
        grey = np.clip(np.floor(np.nan_to_num(a) * scale + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return im.convert("RGB")


def upright_size(im: Image.Image) -> tuple:
    """(width, height) after the EXIF orientation is applied, without decoding the pixels again."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: the pixels are read as stored
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
