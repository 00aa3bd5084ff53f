"""Gigapixel files (anyres_fast/serve/export.py, `generate --format dzi|tiff`) and the bad input of
`generate --format` and `serve`: pyramids against an independent downsampling, files read back with
tifffile, tiles against the PNG the same command writes, one-line errors with exit 2."""
from __future__ import annotations

import re
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image

from anyres_fast.serve import export
from anyres_fast.serve.tiles import num_levels
from helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _half(a: np.ndarray) -> np.ndarray:
    """2 x 2 box average with round-half-up, even sizes only (independent of tiles.box_downsample)."""
    h, w, c = a.shape
    s = a.astype(np.int64).reshape(h // 2, 2, w // 2, 2, c).sum(axis=(1, 3))
    return ((s * 2 + 4) // 8).astype(np.uint8)          # floor(s / 4 + 1/2)


def _level(files: Path, level: int, cols: int, rows: int) -> np.ndarray:
    return np.concatenate([np.concatenate([np.asarray(Image.open(files / str(level) / f"{c}_{r}.png"))
                                           for c in range(cols)], 1) for r in range(rows)], 0)


def test_dzi_pyramid_levels_and_descriptor(tmp_path):
    full = _image(384, 512)
    calls = []

    def tile(x, y, w, h):
        calls.append((x, y, w, h))
        return full[y:y + h, x:x + w]

    path = export.write_dzi(tile, 512, 384, str(tmp_path / "img"), tile=128, progress=False)
    xml = Path(path).read_text()
    assert re.search(r'TileSize="128"', xml) and re.search(r'<Size Width="512" Height="384"/>', xml)
    top = num_levels(512, 384) - 1                                       # 10: 512 = 2^9 -> levels 0..9
    assert top == 9 and len(calls) == 4 * 3                              # each full-size tile rendered once
    assert sorted(calls) == sorted((x, y, 128, 128) for x in range(0, 512, 128) for y in range(0, 384, 128))
    files = tmp_path / "img_files"
    assert sorted(int(p.name) for p in files.iterdir()) == list(range(top + 1))
    np.testing.assert_array_equal(_level(files, top, 4, 3), full)
    np.testing.assert_array_equal(_level(files, top - 1, 2, 2), _half(full))
    np.testing.assert_array_equal(_level(files, top - 2, 1, 1), _half(_half(full)))
    assert np.asarray(Image.open(files / "0" / "0_0.png")).shape[:2] == (1, 1)


def test_tiff_pyramid_reads_back_with_tifffile(tmp_path):
    full = _image(300, 450, seed=1)                                      # edge tiles cropped
    path = export.write_tiff(lambda x, y, w, h: full[y:y + h, x:x + w], 450, 300, str(tmp_path / "img.tif"),
                             tile=128, progress=False)
    assert export.read_tiff_levels(path) == [(450, 300), (225, 150), (113, 75)]
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilewidth, page.tilelength) == (128, 128) and tif.is_bigtiff
        np.testing.assert_array_equal(page.asarray(), full)
        half = page.pages[0].asarray()
    np.testing.assert_array_equal(half[:, :224], _half(full[:, :448])[:, :224])
    assert not [p for p in tmp_path.iterdir() if p.name != "img.tif"]     # the staging folder is gone


def test_a_tile_of_the_wrong_shape_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="expected uint8"):
        export.write_dzi(lambda x, y, w, h: np.zeros((h, w + 1, 3), np.uint8), 100, 100, str(tmp_path / "x"),
                         tile=64, progress=False)


def _run(argv, capsys):
    rc, out, err = run_cli(argv, capsys)
    return rc, SimpleNamespace(out=out, err=err)


def test_generate_tiff_and_dzi_equal_the_png_of_the_same_command(tmp_path, capsys):
    base = ["generate", "--weights", TINY, "--size", "256", "--device", "cpu", "--no-progress", "--out"]
    for extra in ([], ["--zoom", "64,0,192,128"]):
        rc, _ = _run(base + [str(tmp_path / "png")] + extra, capsys)
        assert rc == 0
        rc, _ = _run(base + [str(tmp_path / "tif"), "--format", "tiff", "--tile-size", "64"] + extra, capsys)
        assert rc == 0
        png = sorted((tmp_path / "png").glob("*.png"))[-1]
        tif = (tmp_path / "tif" / png.name).with_suffix(".tif")
        diff = np.abs(tifffile.imread(tif).astype(int) - np.asarray(Image.open(png)).astype(int))
        # The same patches on the same p-grid; a tile renders in a smaller synthesis batch than the whole
        # image, and float sums of another batch size can move a uint8 value by one level.
        assert diff.max() <= 1 and diff.mean() < 0.01, (extra, diff.max(), diff.mean())


def test_generate_infinity_dzi_equals_its_png(tmp_path, capsys):
    base = ["generate", "--weights", "random:preset=tiny", "--height", "70", "--width", "150", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path)]
    assert _run(base, capsys)[0] == 0
    assert _run(base + ["--format", "dzi", "--tile-size", "64"], capsys)[0] == 0
    png = np.asarray(Image.open(tmp_path / "seed0000_150x70.png")).astype(int)
    top = num_levels(150, 70) - 1
    tiles = _level(tmp_path / "seed0000_150x70_files", top, 3, 2).astype(int)
    # Patches are rendered per tile window on the same canvas coordinates; the truncating uint8
    # conversion can move a value by one level where batch composition changed the last float bit.
    assert np.abs(tiles - png).max() <= 1 and np.abs(tiles - png).mean() < 0.01


def _one_line(rc, cap):
    lines = cap.err.strip().splitlines()
    return rc == 2 and len(lines) == 1 and "Traceback" not in cap.err, cap.err


@pytest.mark.parametrize("extra,words", [
    (["--format", "gif"], "invalid choice"),
    (["--format", "tiff", "--tile-size", "100"], "multiple of the patch size 64"),
    (["--format", "dzi", "--tile-size", "8"], "16..4096"),
])
def test_generate_format_bad_input_is_one_line(extra, words, tmp_path, capsys):
    rc, cap = _run(["generate", "--weights", TINY, "--size", "256", "--device", "cpu", "--out", str(tmp_path)]
                   + extra, capsys)
    ok, err = _one_line(rc, cap)
    assert ok and words in err, err


def test_generate_format_out_is_a_file_and_missing_weights(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc, cap = _run(["generate", "--weights", TINY, "--size", "256", "--format", "tiff", "--tile-size", "64",
                    "--device", "cpu", "--out", str(tmp_path / "file")], capsys)
    assert _one_line(rc, cap)[0] and "not a folder" in cap.err
    rc, cap = _run(["generate", "--weights", str(tmp_path / "none"), "--size", "256", "--format", "dzi",
                    "--out", str(tmp_path / "o")], capsys)
    assert _one_line(rc, cap)[0] and "no such file or folder" in cap.err


def test_serve_bad_input_is_one_line(tmp_path, capsys):
    serve = ["serve", "--device", "cpu", "--no-cache"]
    cases = [(["--weights", str(tmp_path / "none")], "no such file or folder"),
             (["--weights", TINY, "--tile-size", "8"], "--tile-size 8"),
             (["--weights", TINY, "--max-size", "100"], "--max-size 100"),
             (["--weights", TINY, "--format", "gif"], "invalid choice")]
    for extra, words in cases:
        rc, cap = _run(serve + extra, capsys)
        ok, err = _one_line(rc, cap)
        assert ok and words in err, (extra, err)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        rc, cap = _run(serve + ["--weights", TINY, "--max-size", "256", "--port", str(port)], capsys)
    finally:
        busy.close()
    ok, err = _one_line(rc, cap)
    assert ok and "already in use" in err, err
