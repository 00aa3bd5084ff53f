"""Prepared HR sets (anyres_fast/data/prepare.py, segmented.py): region decoding of per-MCU restart JPEGs
equals cropping the whole file's decode at every reduction and chroma layout; a prepared set gives the
fast path's patches bit for bit, through the region decoder; a stale marker index falls back to the
whole-file decode; `anyres-fast prepare` writes the set, names bad files and refuses an OUT inside SRC;
zip sources and a zipped prepared set."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, segmented
from anyres_fast.data.prepare import jpegtran, prepare_source, sidecar_name, transcode

from helpers import BAD_NAMES, natural_image, run_cli, write_images

pytestmark = pytest.mark.skipif(jpegtran() is None, reason="needs jpegtran (apt-get install libjpeg-turbo-progs)")


def _jpeg(w, h, seed=0, mode="RGB", subsampling=2, orientation=1):
    rgb = np.stack([natural_image(h, w, seed + c) for c in range(3)], 2)
    im = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90, subsampling=subsampling, exif=exif.tobytes())
    return b.getvalue()


@pytest.mark.parametrize("mode,subsampling", [("RGB", 2), ("RGB", 0), ("L", 0)])   # 16x16, 8x8, grey MCUs
def test_region_decode_equals_the_whole_file_decode(mode, subsampling):
    data = _jpeg(203, 141, mode=mode, subsampling=subsampling)
    new, markers = transcode(data)
    assert (np.asarray(Image.open(io.BytesIO(new))) == np.asarray(Image.open(io.BytesIO(data)))).all()  # lossless
    seg = segmented.SegmentedJPEG(new, markers)
    rng = np.random.default_rng(0)
    for r in (1, 2, 4, 8):
        whole = Image.open(io.BytesIO(new))
        if r > 1:
            whole.draft(None, (whole.size[0] // r, whole.size[1] // r))
        ref = np.asarray(whole)
        h, w = ref.shape[:2]
        boxes = [(0, 0, w, h), (0, 0, 1, 1), (w - 3, h - 2, w, h)]
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
            boxes.append((x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))))
        for x0, y0, x1, y1 in boxes:
            got = np.asarray(seg.decode_region((x0, y0, x1, y1), r))
            assert got.shape[:2] == (y1 - y0, x1 - x0)
            assert (got == ref[y0:y1, x0:x1]).all(), (r, (x0, y0, x1, y1))


def test_prepared_set_gives_the_fast_path_patches_through_the_region_decoder(tmp_path, monkeypatch):
    src_dir = tmp_path / "hr"
    src_dir.mkdir()
    for o in (1, 3, 6, 8):
        (src_dir / f"o{o}.jpg").write_bytes(_jpeg(331, 257, seed=o, orientation=o))
    write_images(str(src_dir), [(90, 80)], bad=True)                 # a PNG (copied) and the bad files
    src = ImageSource(str(src_dir), min_size=16)
    info = prepare_source(src, str(tmp_path / "prep"), workers=2, progress=False)
    assert info["jpegs"] == 4 and info["copied"] == 1
    prep = ImageSource(str(tmp_path / "prep"), min_size=16)
    assert prep.listing.names == src.listing.names and prep.listing.sizes == src.listing.sizes
    calls = []
    orig = segmented.SegmentedJPEG.decode_region
    monkeypatch.setattr(segmented.SegmentedJPEG, "decode_region",
                        lambda self, box, r: calls.append(r) or orig(self, box, r))
    fast = HRPatchDataset(src, 16, scale_max=1.0, seed=0)
    prepared = HRPatchDataset(prep, 16, scale_max=1.0, seed=0)
    for index in range(len(src)):
        for draw in range(12):
            a, b = fast[(index, draw)], prepared[(index, draw)]
            assert (a["image"] == b["image"]).all() and a["reduction"] == b["reduction"]
            assert b["prepared"] == (prep.listing.names[index] != "img0.png") and not a["prepared"]
    assert len(calls) == 4 * 12 and set(calls) >= {1, 2}   # every JPEG patch, not the PNG's

    # a stale index (the file changed after prepare) is refused: whole-file decode, same patch
    np.save(tmp_path / "prep" / sidecar_name("o1.jpg"), np.load(tmp_path / "prep" / sidecar_name("o1.jpg")) + 1)
    calls.clear()
    k = prep.listing.names.index("o1.jpg")
    assert (prepared[(k, 0)]["image"] == fast[(k, 0)]["image"]).all() and calls == []


def test_prepare_command(tmp_path, capsys):
    src = tmp_path / "hr"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(120, 100))
    write_images(str(src), [], bad=True)
    rc, out, err = run_cli(["prepare", str(src), str(tmp_path / "out"), "--workers", "1", "--min-size", "16"], capsys)
    assert rc == 0, err
    assert "1 JPEGs transcoded" in out and {line.split(":")[0][len("skipped "):] for line in out.splitlines()
                                            if line.startswith("skipped ")} == BAD_NAMES
    assert os.path.isfile(tmp_path / "out" / "a.jpg") and os.path.isfile(tmp_path / "out" / "a.jpg.mcu.npy")
    rc, out, err = run_cli(["prepare", str(src), str(src / "inside")], capsys)
    assert rc == 2 and "outside" in err


def test_prepare_from_a_zip_and_a_zipped_prepared_set(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "hr.zip", "w") as z:
        z.writestr("sub/a.jpg", _jpeg(150, 130, seed=5, orientation=6))
    src = ImageSource(str(tmp_path / "hr.zip"), min_size=16)
    assert prepare_source(src, str(tmp_path / "prep"), workers=1, progress=False)["jpegs"] == 1
    with zipfile.ZipFile(tmp_path / "prep.zip", "w") as z:
        for name in ("sub/a.jpg", sidecar_name("sub/a.jpg")):
            z.write(tmp_path / "prep" / name, name)
    fast = HRPatchDataset(src, 16, scale_max=1.0, seed=0)
    zipped = HRPatchDataset(ImageSource(str(tmp_path / "prep.zip"), min_size=16), 16, scale_max=1.0, seed=0)
    for draw in range(8):
        a, b = fast[(0, draw)], zipped[(0, draw)]
        assert b["prepared"] and (a["image"] == b["image"]).all()
