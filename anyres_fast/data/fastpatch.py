"""The fast HR patch path: decode only what one patch needs (docs/data.md, "Fast patch path").

A patch of canvas n cut from a square of side L resizes the square by f = L / n. When f is large the
full-resolution pixels are wasted: JPEG's DCT-domain scaling (libjpeg's scaled IDCT through Pillow's
`Image.draft`) decodes the file at 1/r (r in 1, 2, 4, 8) for a fraction of the cost. The reduction is
the largest r that keeps >= `oversampling` (default 3) reduced samples per output pixel
(r <= f / oversampling), so the Lanczos-3 step that follows still downsamples by >= that much and the
DCT scaling's own filter (an 8/r-point inverse DCT per block) mostly touches frequencies that step
removes. (With 2, the issue's minimum, the difference to the exact path reached 5 levels on hard edges.)

Geometry: a reduced pixel i covers the stored pixels [i r, (i + 1) r) (8 x 8 blocks become 8/r x 8/r
blocks; the reduced image is ceil(w / r) wide, its last column partly padding). So the map is the exact
factor 1/r in the *stored* frame; the upright, flipped sample frame is reached by transposing, and an
axis that the transposition reflects is mapped as (length - X) / r there. Only the patch's footprint
plus the kernel support is cropped from the decoded image, converted to RGB and transposed; the whole
image is never copied, converted nor flipped (the exact path does all three).

With r = 1 (and for native-resolution crops) the pixels and the Lanczos box are those of the exact path.
A prepared file (segmented.py) is decoded only over the footprint's MCUs, with the same pixels.
"""
from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, JpegImagePlugin

from ..utils.images import ORIENTATION_TRANSPOSE, orientation, rgb8_pixels

REDUCTIONS = (8, 4, 2, 1)           # the scales libjpeg's scaled IDCT offers through Image.draft
DEFAULT_OVERSAMPLING = 3.0


def choose_reduction(f: float, oversampling: float = DEFAULT_OVERSAMPLING) -> int:
    """The largest JPEG draft reduction r with r <= f / oversampling (1 when none is allowed).

    Args:
        f: the resize factor of the patch (square side / canvas size), >= 1.
        oversampling: reduced samples kept per output pixel (>= 1).

    Returns:
        r in REDUCTIONS.
    """
    for r in REDUCTIONS:
        if r * oversampling <= f + 1e-9:
            return r
    return 1


def axis_map(transposes: Sequence) -> tuple:
    """How each axis of the transposed (sample) frame lies in the stored frame.

    Args:
        transposes: Pillow Transpose methods applied in order to the stored image.

    Returns:
        ((stored axis of X, X reflected), (stored axis of Y, Y reflected)), axes 0 = x, 1 = y.
    """
    probe = Image.frombytes("L", (2, 2), bytes([0, 1, 2, 3]))   # value = x + 2 y of the stored pixel
    for t in transposes:
        probe = probe.transpose(t)
    origin, along_x, along_y = probe.getpixel((0, 0)), probe.getpixel((1, 0)), probe.getpixel((0, 1))

    def axis(step_to):
        dx, dy = step_to % 2 - origin % 2, step_to // 2 - origin // 2
        return (0, dx < 0) if dx else (1, dy < 0)
    return axis(along_x), axis(along_y)


def sample_transposes(im: Image.Image, flip: bool) -> list:
    """Transposes turning the stored pixels of `im` into the sample frame: EXIF orientation, then x-flip."""
    ops = []
    o = orientation(im)
    if o != 1:
        ops.append(ORIENTATION_TRANSPOSE[o])
    if flip:
        ops.append(Image.Transpose.FLIP_LEFT_RIGHT)
    return ops


def _to_stored(lo: float, hi: float, length: int, reflected: bool, r: int) -> tuple:
    """A sample-frame interval [lo, hi] (full-resolution pixels) in reduced stored coordinates."""
    if reflected:
        lo, hi = length - hi, length - lo
    return lo / r, hi / r


def draft_reduction(im: Image.Image, r: int) -> int:
    """Ask Pillow to decode `im` (an unloaded JPEG) at 1/r; returns the reduction it will use.

    Pillow takes only the first draft of a file: on an image drafted before, this returns the reduction
    of that draft, which is what it decodes at. Anything but a JPEG decodes at full size: 1.
    """
    if r > 1:
        w, h = im.size
        im.draft(None, (max(1, w // r), max(1, h // r)))
    # decoderconfig is (scale, 0) once a JPEG is drafted; other formats use it for other things
    if isinstance(im, JpegImagePlugin.JpegImageFile) and im.decoderconfig:
        return int(im.decoderconfig[0])
    return 1


def fast_region(im: Image.Image, choices: tuple, p: int, oversampling: float = DEFAULT_OVERSAMPLING,
                segmented=None) -> tuple:
    """The decoded footprint of one HR patch from an opened, not yet decoded JPEG (module docstring).

    Args:
        im: Image.open of the file (stored frame, not loaded).
        choices: HRPatchDataset.draw's (flip, (left, top, side), n, x, y), in the upright flipped frame.
        p: patch size.
        oversampling: see choose_reduction.
        segmented: the file's segmented.SegmentedJPEG (a prepared file) to decode only the region's MCUs;
            None: the whole file is decoded (at 1/r) and cropped.

    Returns:
        (RGB crop in the sample frame, Lanczos box (x0, y0, x1, y1) in it or None for a native-resolution
        crop, which is then the p x p patch itself, the reduction r used).
    """
    flip, (left, top, side), n, x, y = choices
    ops = sample_transposes(im, flip)
    stored = im.size
    native = n == side
    f = side / n
    r = draft_reduction(im, 1 if native else choose_reduction(f, oversampling))
    reduced = im.size                                 # ceil(stored / r): the decoded image's size
    if native:
        spans = ((left + x, left + x + p, left, left + side), (top + y, top + y + p, top, top + side))
    else:
        spans = ((left + x * f, left + (x + p) * f, left, left + side),
                 (top + y * f, top + (y + p) * f, top, top + side))
    m = math.ceil(3 * max(f / r, 1.0)) + 2            # Lanczos-3 support at the reduced scale, + 2
    region = [0, 0, 0, 0]                             # stored-frame crop (x0, y0, x1, y1), reduced pixels
    box = []                                          # the footprint in the transposed crop
    for (lo, hi, sq_lo, sq_hi), (axis, reflected) in zip(spans, axis_map(ops)):
        length = stored[axis]
        a0, a1 = _to_stored(lo, hi, length, reflected, r)
        if native:
            g0, g1 = int(a0), int(a1)
        else:
            q0, q1 = _to_stored(sq_lo, sq_hi, length, reflected, r)
            # the square's edge falls inside a reduced pixel when r does not divide it: keep that pixel
            g0 = max(0, math.floor(q0), math.floor(a0) - m)
            g1 = min(reduced[axis], math.ceil(q1), math.ceil(a1) + m)
        region[axis], region[axis + 2] = g0, g1
        box.append((g1 - a1, g1 - a0) if reflected else (a0 - g0, a1 - g0))
    crop = rgb8_pixels(im.crop(tuple(region)) if segmented is None else segmented.decode_region(tuple(region), r))
    for t in ops:
        crop = crop.transpose(t)
    return crop, (None if native else (box[0][0], box[1][0], box[0][1], box[1][1])), r
