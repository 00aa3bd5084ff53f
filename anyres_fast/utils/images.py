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
    return rgb8_pixels(ImageOps.exif_transpose(im) or im)


def rgb8_pixels(im: Image.Image) -> Image.Image:
    """The mode conversion of `to_rgb8` alone (no orientation): 8-bit RGB of a decoded image.

    Per pixel for every mode but float (F), whose 0..1 / 0..255 choice looks at the whole image; so
    cropping first and converting the crop is the same as converting first, except for mode F.

    Args:
        im: a Pillow image.

    Returns:
        A new RGB image.
    """
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


# The transposition that turns stored pixels upright, per EXIF orientation (the EXIF 2.3 table, as
# Pillow's ImageOps.exif_transpose applies it).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or the EXIF block is broken."""
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: the pixels are read as stored
        value = 1
    return value if value in ORIENTATION_TRANSPOSE else 1


def upright_size(im: Image.Image) -> tuple:
    """(width, height) after the EXIF orientation is applied, without decoding the pixels again."""
    w, h = im.size
    return (h, w) if orientation(im) in (5, 6, 7, 8) else (w, h)
