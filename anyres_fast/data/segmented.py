"""Region decoding of baseline JPEGs that carry a restart marker after every MCU (docs/data.md, "Prepared
HR sets").

A JPEG's entropy-coded data is one sequential stream, so a region cannot be decoded without Huffman
decoding everything before it. With a restart interval of one MCU (what `anyres-fast prepare` writes
with `jpegtran -restart 1B`, a lossless transcode: same DCT coefficients, same pixels) every MCU is
an independent segment (the DC predictors reset at each marker). A rectangle of MCUs is then a valid
JPEG by itself: the original headers with the frame's size replaced, the rectangle's segments in raster
order with their restart markers renumbered 0..7, and EOI. Pillow decodes that small stream, at a draft
reduction if asked. One MCU of margin is decoded on every side that is not the image's edge and cut
away, because chroma upsampling reads the neighbouring MCU: the interior pixels equal those of the
whole file's decode at the same reduction.
"""
from __future__ import annotations

import io
import math
import struct
from typing import Optional

import numpy as np
from PIL import Image

SIDECAR = ".mcu.npy"                    # beside a prepared <name>: its marker positions (prepare.py)
_SOF_SEQUENTIAL = (0xC0, 0xC1)          # baseline and extended sequential Huffman frames


class NotSegmented(ValueError):
    """The JPEG cannot be region-decoded (not sequential, several scans, or no per-MCU restarts)."""


def find_markers(data: bytes, scan_start: int) -> np.ndarray:
    """Positions (int64) of the restart markers in the scan starting at `scan_start`, then of the marker
    that ends the scan (0xFF followed by a byte other than 0x00, the stuffing, and RST0..7)."""
    body = np.frombuffer(data, dtype=np.uint8, offset=scan_start)
    ff = np.flatnonzero(body[:-1] == 0xFF)
    nxt = body[ff + 1]
    is_rst = (nxt & 0xF8) == 0xD0
    ends = ff[(nxt != 0) & ~is_rst]
    if not len(ends):
        raise NotSegmented("no end of scan")
    rst = ff[is_rst]
    return np.concatenate([rst[rst < ends[0]], ends[:1]]).astype(np.int64) + scan_start


class SegmentedJPEG:
    """Index of a JPEG with one restart marker per MCU: header bytes, frame geometry, segment offsets.

    Args:
        data: the file's bytes.
        markers: the positions of its restart markers and, last, of the marker ending the scan
            (find_markers; `anyres-fast prepare` stores them beside the file); None: found here.

    Raises:
        NotSegmented: see the class of that name.
    """

    def __init__(self, data: bytes, markers=None):
        self.data = data
        pos, sof, dri, sos_end = 2, None, 0, None
        if data[:2] != b"\xff\xd8":
            raise NotSegmented("not a JPEG")
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise NotSegmented("corrupt marker sequence")
            marker = data[pos + 1]
            if marker == 0xFF:                        # fill byte
                pos += 1
                continue
            length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
            if marker in _SOF_SEQUENTIAL:
                sof = pos
            elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                raise NotSegmented("progressive, lossless or arithmetic-coded JPEG")
            elif marker == 0xDD:
                dri = struct.unpack(">H", data[pos + 4:pos + 6])[0]
            if marker == 0xDA:
                sos_end = pos + 2 + length
                ncomp_scan = data[pos + 4]
                break
            pos += 2 + length
        if sof is None or sos_end is None:
            raise NotSegmented("no sequential frame or scan")
        if dri != 1:
            raise NotSegmented(f"restart interval {dri} MCUs, not 1")
        self.sof = sof
        self.height, self.width = struct.unpack(">HH", data[sof + 5:sof + 9])
        ncomp = data[sof + 9]
        if ncomp_scan != ncomp:
            raise NotSegmented("several scans (non-interleaved)")
        comps = [data[sof + 10 + 3 * i + 1] for i in range(ncomp)]
        hmax, vmax = (max(c >> 4 for c in comps), max(c & 15 for c in comps)) if ncomp > 1 else (1, 1)
        self.mcu_w, self.mcu_h = 8 * hmax, 8 * vmax
        self.cols, self.rows = math.ceil(self.width / self.mcu_w), math.ceil(self.height / self.mcu_h)
        self.header = data[:sos_end]
        if markers is None:
            markers = find_markers(data, sos_end)
        else:        # stored positions: checked where used (sub_jpeg), and the scan's end here
            markers = np.asarray(markers, dtype=np.int64)
            if (len(markers) == 0 or markers[0] < sos_end or markers[-1] + 1 >= len(data)
                    or data[markers[-1]] != 0xFF or data[markers[-1] + 1] in (0x00, *range(0xD0, 0xD8))):
                raise NotSegmented("stored marker positions do not match the file")
        if len(markers) != self.cols * self.rows:
            raise NotSegmented(f"{len(markers) - 1} restart markers for {self.cols * self.rows} MCUs")
        self.markers = markers
        self.seg_start = np.concatenate([[sos_end], markers[:-1] + 2])
        self.seg_end = markers

    def mcu_box(self, box: tuple, r: int) -> tuple:
        """The MCU rectangle (c0, m0, c1, m1) holding the stored-frame box (x0, y0, x1, y1) given in pixels
        of the 1/r decode, with one MCU of margin where the image goes on."""
        x0, y0, x1, y1 = box
        c0 = max(0, math.floor(x0 * r / self.mcu_w) - 1)
        m0 = max(0, math.floor(y0 * r / self.mcu_h) - 1)
        c1 = min(self.cols, math.ceil(x1 * r / self.mcu_w) + 1)
        m1 = min(self.rows, math.ceil(y1 * r / self.mcu_h) + 1)
        return c0, m0, c1, m1

    def sub_jpeg(self, c0: int, m0: int, c1: int, m1: int) -> bytes:
        """A JPEG of the MCUs [c0, c1) x [m0, m1).

        Raises:
            NotSegmented: a used segment does not end in a restart marker (a stale marker index).
        """
        w = min(self.width, c1 * self.mcu_w) - c0 * self.mcu_w
        h = min(self.height, m1 * self.mcu_h) - m0 * self.mcu_h
        head = bytearray(self.header)
        head[self.sof + 5:self.sof + 9] = struct.pack(">HH", h, w)
        rows = np.arange(m0, m1) * self.cols
        first, last = rows + c0, rows + c1 - 1
        # one slice per MCU row, from its first segment through the marker after its last one
        lo, hi = self.seg_start[first], self.seg_end[last] + 2
        ends = self.seg_end[(rows[:, None] + np.arange(c0, c1)[None, :]).ravel()]
        raw = np.frombuffer(self.data, dtype=np.uint8)
        row_of = np.repeat(np.arange(len(rows)), c1 - c0)
        out_base = len(head) + np.concatenate([[0], np.cumsum(hi - lo)[:-1]])
        pos = out_base[row_of] + (ends - lo[row_of])            # each segment's end marker in the output
        buf = np.frombuffer(b"".join([bytes(head)] + [self.data[a:b] for a, b in zip(lo.tolist(), hi.tolist())]),
                            dtype=np.uint8).copy()
        inner = ends[:-1]
        if not ((raw[ends] == 0xFF).all() and ((raw[inner + 1] & 0xF8) == 0xD0).all()):
            raise NotSegmented("stored marker positions do not match the file")
        buf[pos[:-1] + 1] = 0xD0 + (np.arange(len(pos) - 1) % 8)
        buf[pos[-1] + 1] = 0xD9                                # EOI after the last segment
        return buf[:pos[-1] + 2].tobytes()

    def decode_region(self, box: tuple, r: int) -> Image.Image:
        """Pixels of the stored-frame box (x0, y0, x1, y1), integer pixels of the 1/r decode, equal to
        cropping the whole file decoded at 1/r (module docstring).

        Args:
            box: the region in the 1/r decode's pixels. r: 1, 2, 4 or 8.

        Returns:
            The decoded region (the file's mode).
        """
        c0, m0, c1, m1 = self.mcu_box(box, r)
        im = Image.open(io.BytesIO(self.sub_jpeg(c0, m0, c1, m1)))
        if r > 1:
            w, h = im.size
            im.draft(None, (max(1, w // r), max(1, h // r)))
            got = im.decoderconfig[0] if im.decoderconfig else 1
            if got != r:
                raise NotSegmented(f"draft gave 1/{got}, not 1/{r}")
        ox, oy = c0 * self.mcu_w // r, m0 * self.mcu_h // r
        x0, y0, x1, y1 = box
        return im.crop((x0 - ox, y0 - oy, x1 - ox, y1 - oy))


def open_segmented(data: bytes, markers=None) -> Optional[SegmentedJPEG]:
    """SegmentedJPEG of the bytes (markers: as SegmentedJPEG takes them), or None when they cannot be
    region-decoded."""
    try:
        return SegmentedJPEG(data, markers)
    except (NotSegmented, struct.error, IndexError):
        return None
