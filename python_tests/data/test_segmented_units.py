"""Units of the region decoder of per-MCU restart JPEGs (anyres_fast/data/segmented.py; docs/data.md,
"Prepared HR sets"), on tiny JPEGs that Pillow writes with a restart marker after every MCU
(`restart_marker_blocks=1`, no jpegtran needed): the marker list against a hand-written byte scan, the
frame geometry and MCU rectangles computed by hand from the sampling factors, the sub-JPEG's bytes built
by hand, the decoded regions against Pillow's decode of the whole file (pixel-exact, docs/data.md), and
every refusal with its message. Marker syntax: ITU-T T.81 Annex B."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from anyres_fast.data.segmented import NotSegmented, SegmentedJPEG, find_markers, open_segmented

from jpeg_scan import scan_markers as _scan_markers, segments as _segments, sos_end as _sos_end

MCU = {("L", 0): (8, 8), ("RGB", 0): (8, 8), ("RGB", 1): (16, 8), ("RGB", 2): (16, 16)}   # 4:4:4, 4:2:2, 4:2:0


def _jpeg(w, h, seed=0, mode="RGB", subsampling=2, restart=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = (np.sin(x / 3.0 + seed)[..., None] * 60 + np.cos(y / 5.0)[..., None] * 60 + 128
            + rng.normal(0, 25, (h, w, 3)))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).convert(mode)
    b = io.BytesIO()
    kw = {"restart_marker_blocks": restart} if restart else {}
    im.save(b, "JPEG", quality=90, subsampling=subsampling, **kw)
    return b.getvalue()


def _sof(data):
    return [i for m, i, _ in _segments(data) if m in (0xC0, 0xC1)][0]


def _whole(data, r):
    """Pillow's decode of the whole file at 1/r."""
    im = Image.open(io.BytesIO(data))
    if r > 1:
        im.draft(None, (max(1, im.size[0] // r), max(1, im.size[1] // r)))
    return np.asarray(im)


def _raises(message, fn, *args):
    with pytest.raises(NotSegmented) as e:
        fn(*args)
    assert str(e.value) == message


def _boxes(w, h, rng, n=6):
    boxes = [(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, w, h), (w - 1, 0, w, h), (0, h - 1, w, h)]
    for _ in range(n):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        boxes.append((x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))))
    return boxes


# -- markers and geometry ----------------------------------------------------------------------------------
CASES = [("L", 0, 37, 21), ("RGB", 0, 29, 17), ("RGB", 1, 45, 23), ("RGB", 2, 53, 35), ("RGB", 2, 16, 16),
         ("L", 0, 8, 8)]


@pytest.mark.parametrize("mode,ss,w,h", CASES)
def test_markers_and_geometry_by_hand(mode, ss, w, h):
    data = _jpeg(w, h, mode=mode, subsampling=ss)
    end = _sos_end(data)
    markers = find_markers(data, end)
    assert markers.dtype == np.int64 and markers.tolist() == _scan_markers(data)
    mcu_w, mcu_h = MCU[(mode, ss)]
    for stored in (None, np.array(_scan_markers(data), dtype=np.uint32), _scan_markers(data)):
        seg = SegmentedJPEG(data, stored)
        assert (seg.width, seg.height, seg.mcu_w, seg.mcu_h) == (w, h, mcu_w, mcu_h)
        assert (seg.cols, seg.rows) == (math.ceil(w / mcu_w), math.ceil(h / mcu_h))
        assert seg.header == data[:end] and seg.sof == _sof(data)
        assert seg.markers.tolist() == _scan_markers(data)
        starts = [end] + [m + 2 for m in _scan_markers(data)[:-1]]
        assert seg.seg_start.tolist() == starts and seg.seg_end.tolist() == _scan_markers(data)


def test_find_markers_stops_at_the_first_end_of_scan():
    """Bytes after the scan's end (another JPEG appended, as in an MPO file) are not scanned."""
    data = _jpeg(40, 24)
    tail = _jpeg(24, 16, seed=3)
    both = data + tail
    assert find_markers(both, _sos_end(both)).tolist() == _scan_markers(data)
    assert SegmentedJPEG(both).markers.tolist() == _scan_markers(data)


def test_find_markers_without_an_end_of_scan():
    data = _jpeg(40, 24)
    _raises("no end of scan", find_markers, data[:-2], _sos_end(data))
    assert open_segmented(data[:-2]) is None


# -- MCU rectangles -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,ss,w,h", [("RGB", 2, 101, 75), ("RGB", 1, 90, 41), ("L", 0, 33, 70)])
def test_mcu_box_by_brute_force(mode, ss, w, h):
    """The MCUs that a box of the 1/r decode touches (reduced pixel i covers stored [i r, (i + 1) r)),
    plus one MCU of margin where the image goes on."""
    seg = SegmentedJPEG(_jpeg(w, h, mode=mode, subsampling=ss))
    rng = np.random.default_rng(1)
    for r in (1, 2, 4, 8):
        rw, rh = -(-w // r), -(-h // r)
        for x0, y0, x1, y1 in _boxes(rw, rh, rng, 20):
            cs = [c for c in range(seg.cols) if c * seg.mcu_w < x1 * r and (c + 1) * seg.mcu_w > x0 * r]
            ms = [m for m in range(seg.rows) if m * seg.mcu_h < y1 * r and (m + 1) * seg.mcu_h > y0 * r]
            expected = (max(0, cs[0] - 1), max(0, ms[0] - 1), min(seg.cols, cs[-1] + 2), min(seg.rows, ms[-1] + 2))
            assert seg.mcu_box((x0, y0, x1, y1), r) == expected, (r, (x0, y0, x1, y1))


# -- sub-JPEGs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,ss,w,h", [("RGB", 2, 77, 53), ("RGB", 1, 61, 30), ("L", 0, 30, 27)])
def test_sub_jpeg_bytes_by_hand(mode, ss, w, h):
    """Headers with the frame size replaced, the rectangle's segments in raster order, their markers
    renumbered RST0..7, EOI; its decode equals the whole file's over the MCUs away from inner edges."""
    data = _jpeg(w, h, mode=mode, subsampling=ss)
    seg = SegmentedJPEG(data)
    mw, mh = MCU[(mode, ss)]
    markers = _scan_markers(data)
    starts = [_sos_end(data)] + [m + 2 for m in markers[:-1]]
    sof = _sof(data)
    whole = _whole(data, 1)
    for c0, m0, c1, m1 in [(0, 0, seg.cols, seg.rows), (1, 1, 3, 3), (2, 0, seg.cols, 2), (0, 2, 2, seg.rows),
                           (seg.cols - 1, seg.rows - 1, seg.cols, seg.rows), (1, 2, 2, 3)]:
        sw, sh = min(w, c1 * mw) - c0 * mw, min(h, m1 * mh) - m0 * mh
        head = bytearray(data[:_sos_end(data)])
        head[sof + 5:sof + 9] = bytes([sh >> 8, sh & 255, sw >> 8, sw & 255])
        body = b""
        ks = [m * seg.cols + c for m in range(m0, m1) for c in range(c0, c1)]
        for j, k in enumerate(ks):
            end = b"\xff\xd9" if j == len(ks) - 1 else bytes([0xFF, 0xD0 + j % 8])
            body += data[starts[k]:markers[k]] + end
        sub = seg.sub_jpeg(c0, m0, c1, m1)
        assert sub == bytes(head) + body
        got = np.asarray(Image.open(io.BytesIO(sub)))
        assert got.shape[:2] == (sh, sw)
        # rows / columns one MCU away from an inner edge of the rectangle (chroma upsampling reads across it)
        ya, yb = (mh if m0 > 0 else 0), sh - (mh if m1 < seg.rows else 0)
        xa, xb = (mw if c0 > 0 else 0), sw - (mw if c1 < seg.cols else 0)
        assert (got[ya:yb, xa:xb] == whole[m0 * mh + ya:m0 * mh + yb, c0 * mw + xa:c0 * mw + xb]).all()


# -- decoded regions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,ss,w,h", [("RGB", 1, 77, 45), ("RGB", 0, 70, 12), ("L", 0, 12, 70),
                                         ("L", 0, 8, 40), ("RGB", 2, 16, 16), ("RGB", 2, 49, 17)])
def test_decode_region_equals_cropping_the_whole_decode(mode, ss, w, h):
    """Odd sizes, one-MCU-wide / -tall images, a single MCU: every reduction, pixel-exact (docs/data.md)."""
    data = _jpeg(w, h, seed=2, mode=mode, subsampling=ss)
    seg = SegmentedJPEG(data, _scan_markers(data))
    rng = np.random.default_rng(3)
    for r in (1, 2, 4, 8):
        ref = _whole(data, r)
        rh, rw = ref.shape[:2]
        assert (rw, rh) == (-(-w // r), -(-h // r))
        for x0, y0, x1, y1 in _boxes(rw, rh, rng):
            got = seg.decode_region((x0, y0, x1, y1), r)
            assert got.mode == mode and got.size == (x1 - x0, y1 - y0)
            assert (np.asarray(got) == ref[y0:y1, x0:x1]).all(), (r, (x0, y0, x1, y1))


def test_decode_region_of_a_frame_wider_than_32767():
    """Frame sizes are unsigned 16-bit (T.81 B.2.2)."""
    w, h = 32770, 8
    data = _jpeg(w, h, mode="L", subsampling=0)
    seg = SegmentedJPEG(data)
    assert (seg.width, seg.cols) == (w, math.ceil(w / 8))
    ref = _whole(data, 8)
    assert (np.asarray(seg.decode_region((0, 0, ref.shape[1], 1), 8)) == ref).all()
    sub = seg.sub_jpeg(0, 0, seg.cols, 1)
    assert Image.open(io.BytesIO(sub)).size == (w, h)


def test_decode_region_refuses_a_reduction_that_pillow_cannot_give():
    """A sub-JPEG narrower than r pixels: Pillow's draft picks the largest 1/s (s in 8, 4, 2, 1) with
    s <= its size // 1, here 5 // 1 -> 1/4, not the asked 1/8."""
    data = _jpeg(5, 5, mode="L", subsampling=0)
    seg = SegmentedJPEG(data)
    _raises("draft gave 1/4, not 1/8", seg.decode_region, (0, 0, 1, 1), 8)
    assert (np.asarray(seg.decode_region((0, 0, 2, 2), 4)) == _whole(data, 4)[:2, :2]).all()


# -- header parsing -------------------------------------------------------------------------------------------
def _check_same_regions(data):
    seg = SegmentedJPEG(data)
    assert seg.markers.tolist() == _scan_markers(data)
    for r in (1, 2):
        ref = _whole(data, r)
        h, w = ref.shape[:2]
        for box in [(0, 0, w, h), (w // 2, h // 3, w, h), (1, 2, 3, 4)]:
            assert (np.asarray(seg.decode_region(box, r)) == ref[box[1]:box[3], box[0]:box[2]]).all()
    return seg


def test_fill_bytes_and_long_segments_in_the_headers():
    """Any marker may be preceded by 0xFF fill bytes (T.81 B.1.1.2); segment lengths are unsigned 16-bit."""
    data = _jpeg(45, 33)
    sof = _sof(data)
    for filled in (data[:2] + b"\xff" + data[2:], data[:sof] + b"\xff\xff\xff" + data[sof:]):
        _check_same_regions(filled)
    app15 = b"\xff\xef" + (40002).to_bytes(2, "big") + bytes(40000)
    seg = _check_same_regions(data[:2] + app15 + data[2:])
    assert seg.header[2:4 + 40002] == app15


def test_table_markers_that_are_not_frames_are_skipped():
    """0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) lie in the SOF range but are no frames (T.81 Table B.1); SOF1
    (extended sequential, Huffman) is read like SOF0."""
    data = _jpeg(40, 30)
    sof = _sof(data)
    for extra in (b"\xff\xc8\x00\x04\x00\x00", b"\xff\xcc\x00\x04\x00\x11"):
        seg = SegmentedJPEG(data[:sof] + extra + data[sof:])
        assert (seg.width, seg.height, seg.cols, seg.rows) == (40, 30, 3, 2) and seg.sof == sof + len(extra)
    sof1 = bytearray(data)
    sof1[sof + 1] = 0xC1
    _check_same_regions(bytes(sof1))


def test_frames_that_cannot_be_region_decoded():
    data = _jpeg(40, 30)
    sof = _sof(data)
    for m in (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
        patched = bytearray(data)
        patched[sof + 1] = m
        _raises("progressive, lossless or arithmetic-coded JPEG", SegmentedJPEG, bytes(patched))
    b = io.BytesIO()
    Image.open(io.BytesIO(data)).save(b, "JPEG", progressive=True, restart_marker_blocks=1)
    _raises("progressive, lossless or arithmetic-coded JPEG", SegmentedJPEG, b.getvalue())
    # the frame is classified from its 4-byte marker header alone (a file cut right after it)
    _raises("progressive, lossless or arithmetic-coded JPEG", SegmentedJPEG, b"\xff\xd8\xff\xc2\x00\x11")
    _raises("no sequential frame or scan", SegmentedJPEG, b"\xff\xd8\xff\xc0\x00\x11")


def test_restart_interval_must_be_one_mcu():
    for kw in ({"restart": 0}, {"restart": 2}):
        data = _jpeg(40, 30, **kw)
        _raises(f"restart interval {kw['restart']} MCUs, not 1", SegmentedJPEG, data)
        assert open_segmented(data) is None
    _raises("restart interval 0 MCUs, not 1", SegmentedJPEG, _jpeg(8, 8, mode="L", subsampling=0, restart=0))
    data = bytearray(_jpeg(40, 30))
    dri = [i for m, i, _ in _segments(data) if m == 0xDD][0]
    data[dri + 4:dri + 6] = b"\xff\xff"
    _raises("restart interval 65535 MCUs, not 1", SegmentedJPEG, bytes(data))


def test_missing_frame_or_scan_and_corrupt_headers():
    data = _jpeg(40, 30)
    sos = _segments(data)[-1][1]
    _raises("no sequential frame or scan", SegmentedJPEG, data[:sos])           # cut before the scan
    no_frame = bytearray(data)
    no_frame[_sof(data) + 1] = 0xFE                                            # the frame turned into a comment
    _raises("no sequential frame or scan", SegmentedJPEG, bytes(no_frame))
    _raises("not a JPEG", SegmentedJPEG, b"\x89PNG\r\n\x1a\n" + bytes(20))
    _raises("corrupt marker sequence", SegmentedJPEG, b"\xff\xd8\x00\x00\x00\x00\x00\x00")
    for bad in (data[:sos], b"\x89PNG\r\n\x1a\n", bytes(no_frame)):
        assert open_segmented(bad) is None


def test_a_non_interleaved_first_scan_is_refused():
    """A scan of one component of a three-component frame (a multi-scan, non-interleaved file)."""
    data = _jpeg(40, 30)
    _, i, n = _segments(data)[-1]
    one = b"\xff\xda\x00\x08\x01" + data[i + 5:i + 7] + b"\x00\x3f\x00"
    _raises("several scans (non-interleaved)", SegmentedJPEG, data[:i] + one + data[i + 2 + n:])


def test_one_component_mcu_is_one_block_whatever_its_sampling_factors():
    """T.81 A.2.2: a non-interleaved (one-component) scan's MCU is one 8x8 block, even when the frame
    declares 2x2 sampling for that component."""
    data = bytearray(_jpeg(37, 21, mode="L", subsampling=0))
    sof = _sof(data)
    assert data[sof + 9] == 1 and data[sof + 11] == 0x11
    data[sof + 11] = 0x22
    seg = _check_same_regions(bytes(data))
    assert (seg.mcu_w, seg.mcu_h, seg.cols, seg.rows) == (8, 8, 5, 3)


# -- stored marker positions ----------------------------------------------------------------------------
MISMATCH = "stored marker positions do not match the file"


def test_stored_markers_that_do_not_match_are_refused():
    data = _jpeg(53, 35)                 # 4 x 3 MCUs of 16 x 16
    true = _scan_markers(data)
    end = _sos_end(data)
    stuffed = [j for j in range(end, true[-1]) if data[j] == 0xFF and data[j + 1] == 0]
    plain = [j for j in range(end + 1, true[-1])
             if data[j] != 0xFF and data[j + 1] not in (0, 0xFF, *range(0xD0, 0xD8))]
    assert stuffed and plain
    for bad in ([], [end - 1] + true[1:], true[:-1] + [plain[0]], true[:-1] + [stuffed[0]],
                true[:-1] + [true[-2]], true[:-1] + [len(data) - 1]):
        _raises(MISMATCH, SegmentedJPEG, data, bad)
        assert open_segmented(data, bad) is None
    _raises(MISMATCH, SegmentedJPEG, data[:-1], true)                  # the file lost its EOI's last byte
    assert open_segmented(data[:-1], true) is None
    few = true[:3] + true[4:]
    _raises(f"{len(few) - 1} restart markers for 12 MCUs", SegmentedJPEG, data, few)
    _raises("12 restart markers for 12 MCUs", SegmentedJPEG, data, true[:1] + true)


def test_the_scan_may_end_with_any_marker_but_a_restart():
    """find_markers: the scan ends at 0xFF followed by a byte other than 0x00 (stuffing) and RST0..7."""
    data = _jpeg(40, 30)
    true = _scan_markers(data)
    for b in range(0xFF):
        patched = bytearray(data)
        patched[true[-1] + 1] = b
        if b == 0 or 0xD0 <= b <= 0xD7:
            _raises(MISMATCH, SegmentedJPEG, bytes(patched), true)
        else:
            assert SegmentedJPEG(bytes(patched), true).markers.tolist() == true


def test_stored_inner_markers_are_checked_where_used():
    """The class docstring: stored positions are checked by sub_jpeg for the segments it uses."""
    data = _jpeg(96, 64, seed=4)         # 6 x 4 MCUs
    true = _scan_markers(data)
    seg = SegmentedJPEG(data, [_sos_end(data)] + true[1:])   # the first segment's end is wrong
    ref = _whole(data, 1)
    assert (np.asarray(seg.decode_region((64, 32, 96, 64), 1)) == ref[32:, 64:]).all()
    _raises(MISMATCH, seg.decode_region, (0, 0, 8, 8), 1)
    c0, m0, c1, m1 = 1, 1, 4, 3
    used = [m * 6 + c for m in range(m0, m1) for c in range(c0, c1)]
    for k in used[:-1]:                  # every used segment but the last must end in a restart marker
        for wrong in (true[-1], true[k] + 1):
            stale = list(true)
            stale[k] = wrong
            _raises(MISMATCH, SegmentedJPEG(data, stale).sub_jpeg, c0, m0, c1, m1)
    assert SegmentedJPEG(data, true).sub_jpeg(c0, m0, c1, m1)[-2:] == b"\xff\xd9"
