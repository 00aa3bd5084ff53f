"""Units of `anyres-fast prepare` (anyres_fast/data/prepare.py; docs/data.md, "Prepared HR sets"): the
jpegtran command line, what reaches the written files (restart interval 1, same pixels, EXIF kept, the
marker index equal to a hand-written byte scan), what is copied or left out, the returned counts, the
errors and their messages, the progress bar and the worker pool (a recording stand-in for the pool,
so nothing is started)."""
import concurrent.futures
import io
import multiprocessing
import os
import stat

import numpy as np
import pytest
from PIL import Image

from anyres_fast.data import ImageSource, prepare
from anyres_fast.data.prepare import jpegtran, prepare_source, sidecar_name, transcode
from anyres_fast.data.segmented import NotSegmented

from helpers import BAD_NAMES, RecordingBar, write_images
from jpeg_scan import scan_markers as _scan_markers, segments as _segments

needs_jpegtran = pytest.mark.skipif(jpegtran() is None, reason="needs jpegtran (apt-get install libjpeg-turbo-progs)")


# -- independent helpers: JPEG writing and a hand-written scan of the marker segments -------------------------
def _jpeg(w, h, seed=0, mode="RGB", subsampling=2, **kw):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    b = io.BytesIO()
    im.save(b, "JPEG", quality=85, subsampling=subsampling, **kw)
    return b.getvalue()


def _restart_interval(data):
    dri = [(i, n) for m, i, n in _segments(data) if m == 0xDD]
    return data[dri[0][0] + 4] * 256 + data[dri[0][0] + 5] if dri else 0


def _script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# -- transcode ---------------------------------------------------------------------------------------------
@needs_jpegtran
def test_transcode_runs_the_documented_command_and_its_settings_reach_the_file(tmp_path):
    """docs/data.md: `jpegtran -copy all -restart 1B`: same pixels, a restart marker after every MCU, EXIF
    kept; progressive files become sequential. The markers returned are those of the written bytes."""
    log = tmp_path / "argv"
    tool = _script(tmp_path / "tool", f"printf '%s\\n' \"$@\" > '{log}'\nexec '{jpegtran()}' \"$@\"\n")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "anyres test camera"
    for w, h, kw in [(37, 29, {}), (64, 48, {"progressive": True}), (21, 50, {"subsampling": 1})]:
        data = _jpeg(w, h, exif=exif.tobytes(), **kw)
        new, markers = transcode(data, tool)
        assert log.read_text().split("\n")[:-1] == ["-copy", "all", "-restart", "1B"]
        log.unlink()
        assert (np.asarray(Image.open(io.BytesIO(new))) == np.asarray(Image.open(io.BytesIO(data)))).all()
        assert _restart_interval(new) == 1
        assert 0xC0 in [m for m, _, _ in _segments(new)]                   # sequential (baseline) frame
        assert dict(Image.open(io.BytesIO(new)).getexif()) == dict(exif)     # -copy all: EXIF kept
        ss = {"subsampling": 2, **kw}["subsampling"]
        mcu_w, mcu_h = {2: (16, 16), 1: (16, 8)}[ss]
        assert len(markers) == -(-w // mcu_w) * -(-h // mcu_h)                # one segment per MCU
        assert markers.tolist() == _scan_markers(new) and markers.dtype == np.uint32


def test_transcode_failure_names_the_tool_error(tmp_path):
    """A failed jpegtran (non-zero exit, even with output; or no output) raises NotSegmented with its stderr,
    decoded with replacement characters, stripped and cut to 200 characters."""
    err = b"  \xffoops " + b"y" * 300 + b"\n"
    (tmp_path / "err").write_bytes(err)
    expected = "jpegtran failed: " + err.decode(errors="replace").strip()[:200]
    failing = _script(tmp_path / "fail", f"cat > /dev/null\nprintf 'junk'\ncat '{tmp_path / 'err'}' >&2\nexit 1\n")
    with pytest.raises(NotSegmented) as e:
        transcode(_jpeg(16, 16), failing)
    assert str(e.value) == expected
    silent = _script(tmp_path / "silent", "cat > /dev/null\necho 'no output' >&2\nexit 0\n")
    with pytest.raises(NotSegmented) as e:
        transcode(_jpeg(16, 16), silent)
    assert str(e.value) == "jpegtran failed: no output"


@pytest.mark.parametrize("positions,dtype", [
    ([3, 9, 100], np.uint32),
    ([3, 9, 2 ** 32 - 1], np.uint32),          # the last position still fits 32 bits
    ([3, 9, 2 ** 32], np.int64),               # it does not: kept as int64
    ([5, 6, 2 ** 32 + 7], np.int64),
])
def test_transcode_stores_marker_positions_exactly(tmp_path, monkeypatch, positions, dtype):
    """The index is uint32 when every position fits in 32 bits (the last one is the largest), else int64;
    the values are never wrapped. (Files of 4 GiB cannot be written here: a stand-in index.)"""
    class FakeIndex:
        def __init__(self, data):
            self.markers = np.array(positions, dtype=np.int64)
    monkeypatch.setattr(prepare, "SegmentedJPEG", FakeIndex)
    echo = _script(tmp_path / "echo", "cat\n")
    new, markers = transcode(b"\xff\xd8bytes", echo)
    assert new == b"\xff\xd8bytes"
    assert markers.dtype == dtype and [int(v) for v in markers] == positions


# -- prepare_source ------------------------------------------------------------------------------------------
def _source_folder(tmp_path):
    """JPEGs (one in a sub-folder whose name has spaces and 'XX'), a PNG, a PNG under a .jpg name (not
    transcodable: copied), and the helpers' bad files (left out)."""
    src = tmp_path / "hr"
    (src / "one XX").mkdir(parents=True)
    (src / "a.jpg").write_bytes(_jpeg(37, 29, seed=1))
    (src / "B.JPEG").write_bytes(_jpeg(24, 40, seed=2, mode="L"))
    (src / "one XX" / "XX two.jpg").write_bytes(_jpeg(50, 17, seed=3, subsampling=0))
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(src / "c.png")
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (18, 18, 3), dtype=np.uint8)).save(
        src / "one XX" / "png inside.jpg", format="PNG")
    write_images(str(src), [], bad=True)
    return ImageSource(str(src), min_size=16, list_workers=1, progress=False)


JPEGS = {"a.jpg", "B.JPEG", "one XX/XX two.jpg"}
COPIED = {"c.png", "one XX/png inside.jpg"}


@needs_jpegtran
def test_prepare_source_writes_every_usable_image_and_counts_bytes(tmp_path):
    src = _source_folder(tmp_path)
    assert set(src.listing.names) == JPEGS | COPIED
    out = tmp_path / "prep"
    out.mkdir()                                       # an existing output folder is fine
    info = prepare_source(src, str(out), workers=1, progress=False)
    written = {os.path.relpath(os.path.join(d, f), out).replace(os.sep, "/")
               for d, _, files in os.walk(out) for f in files}
    assert written == JPEGS | COPIED | {sidecar_name(n) for n in JPEGS} and not written & BAD_NAMES  # bad: left out
    bytes_in = bytes_out = 0
    for name in JPEGS | COPIED:
        data = (tmp_path / "hr" / name).read_bytes()
        new = (out / name).read_bytes()
        bytes_in += len(data)
        if name in COPIED:
            assert new == data
            bytes_out += len(data)
        else:
            markers = np.load(out / sidecar_name(name), allow_pickle=False)
            assert markers.tolist() == _scan_markers(new) and _restart_interval(new) == 1
            assert (np.asarray(Image.open(out / name)) == np.asarray(Image.open(io.BytesIO(data)))).all()
            bytes_out += len(new) + markers.nbytes
    assert info == {"jpegs": 3, "copied": 2, "bytes_in": bytes_in, "bytes_out": bytes_out}
    again = ImageSource(str(out), min_size=16, list_workers=1, progress=False)
    assert again.listing.names == src.listing.names and again.listing.sizes == src.listing.sizes


def test_prepare_one_returns_what_it_wrote(tmp_path):
    """(name, "jpeg" | "copied", bytes in, bytes out); an untranscodable JPEG (the tool fails) is copied."""
    src = _source_folder(tmp_path)
    failing = _script(tmp_path / "fail", "cat > /dev/null\nexit 1\n")
    out = str(tmp_path / "out")
    for name in ("c.png", "a.jpg", "one XX/XX two.jpg"):
        data = (tmp_path / "hr" / name).read_bytes()
        assert prepare._prepare_one(src.path, "dir", name, out, failing) == (name, "copied", len(data), len(data))
        assert (tmp_path / "out" / name).read_bytes() == data
        assert not os.path.exists(os.path.join(out, sidecar_name(name)))


def test_prepare_source_with_a_failing_tool_copies_every_file(tmp_path):
    src = _source_folder(tmp_path)
    failing = _script(tmp_path / "fail", "cat > /dev/null\necho broken >&2\nexit 1\n")
    info = prepare_source(src, str(tmp_path / "out"), workers=1, progress=False, tool=failing)
    sizes = sum((tmp_path / "hr" / n).stat().st_size for n in JPEGS | COPIED)
    assert info == {"jpegs": 0, "copied": 5, "bytes_in": sizes, "bytes_out": sizes}
    for n in JPEGS | COPIED:
        assert (tmp_path / "out" / n).read_bytes() == (tmp_path / "hr" / n).read_bytes()


@needs_jpegtran
def test_prepare_source_uses_the_given_tool(tmp_path):
    src = _source_folder(tmp_path)
    log = tmp_path / "calls"
    tool = _script(tmp_path / "tool", f"echo x >> '{log}'\nexec '{jpegtran()}' \"$@\"\n")
    assert prepare_source(src, str(tmp_path / "out"), workers=1, progress=False, tool=tool)["jpegs"] == 3
    assert log.read_text().count("x") == 4            # every .jpg/.jpeg name, the PNG-in-.jpg included


def test_prepare_source_without_jpegtran(tmp_path, monkeypatch):
    """docs/data.md: without jpegtran the command stops with the install hint."""
    src = _source_folder(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert jpegtran() is None
    with pytest.raises(FileNotFoundError) as e:
        prepare_source(src, str(tmp_path / "out"), workers=1, progress=False)
    assert str(e.value) == "jpegtran not found (Debian/Ubuntu: apt-get install libjpeg-turbo-progs)"
    assert not os.path.exists(tmp_path / "out")


def test_prepare_source_refuses_an_output_in_the_source(tmp_path):
    src = _source_folder(tmp_path)
    tool = _script(tmp_path / "fail", "cat > /dev/null\nexit 1\n")
    for out in (src.path, os.path.join(src.path, "prep"), os.path.join(src.path, "one XX", "deeper")):
        with pytest.raises(ValueError) as e:
            prepare_source(src, out, workers=1, progress=False, tool=tool)
        assert str(e.value) == f"{out}: the prepared folder must lie outside the source {src.path}"
        assert not os.path.exists(os.path.join(src.path, "prep"))
    # a sibling whose name merely starts with the source's is outside it
    assert prepare_source(src, src.path + "2", workers=1, progress=False, tool=tool)["copied"] == 5


# -- progress bar and pool (recording stand-ins) ---------------------------------------------------------
_Bar = RecordingBar


@pytest.mark.parametrize("progress,disable", [(None, None), (True, False), (False, True)])
def test_prepare_source_progress_bar(tmp_path, monkeypatch, progress, disable):
    """One tick per file of the listing; `progress` None leaves the choice to tqdm (disable=None: only on a
    terminal); the bar is labelled with the command, counts files and is removed when done."""
    src = _source_folder(tmp_path)
    _Bar.made.clear()
    monkeypatch.setattr(prepare, "tqdm", _Bar)
    tool = _script(tmp_path / "fail", "cat > /dev/null\nexit 1\n")
    prepare_source(src, str(tmp_path / "out"), workers=1, progress=progress, tool=tool)
    (bar,) = _Bar.made
    assert bar.kw == {"total": 5, "desc": "prepare", "unit": "file", "disable": disable, "leave": False}
    assert bar.updates == [1] * 5 and bar.closed


def test_prepare_source_closes_the_bar_on_an_error(tmp_path, monkeypatch):
    src = _source_folder(tmp_path)
    _Bar.made.clear()
    monkeypatch.setattr(prepare, "tqdm", _Bar)

    def broken(*a):
        raise OSError("disk full")
    monkeypatch.setattr(prepare, "_prepare_one", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_source(src, str(tmp_path / "out"), workers=1, progress=False, tool="unused")
    assert _Bar.made[0].closed


class _Pool:
    made = []

    def __init__(self, *args, **kw):
        self.args, self.kw, self.chunks = args, kw, []
        _Pool.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, *iterables, chunksize=1):
        return map(fn, *iterables)


@pytest.mark.parametrize("workers,pool", [(1, None), (0, None), (-3, None), (2, 2), (3, 3), (None, 5)])
def test_prepare_source_worker_pool(tmp_path, monkeypatch, workers, pool):
    """workers: processes (None: every CPU this process may use, here a stand-in 5); 1 (or less): in this
    process, no pool. The pool forks (no re-import) even where the default start method is spawn."""
    src = _source_folder(tmp_path)
    _Pool.made = []
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(prepare, "default_list_workers", lambda: 5)
    tool = _script(tmp_path / "fail", "cat > /dev/null\nexit 1\n")
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        info = prepare_source(src, str(tmp_path / "out"), workers=workers, progress=False, tool=tool)
    finally:
        multiprocessing.set_start_method(before, force=True)
    assert info["copied"] == 5 and info["jpegs"] == 0
    if pool is None:
        assert _Pool.made == []
    else:
        (p,) = _Pool.made
        assert p.args == (pool,) and p.kw["mp_context"].get_start_method() == "fork"


def test_prepare_source_of_an_empty_listing(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    src = ImageSource(str(tmp_path / "empty"), list_workers=1, progress=False)
    tool = _script(tmp_path / "fail", "cat > /dev/null\nexit 1\n")
    for workers in (1, 2):
        assert prepare_source(src, str(tmp_path / f"out{workers}"), workers=workers, progress=False, tool=tool) \
            == {"jpegs": 0, "copied": 0, "bytes_in": 0, "bytes_out": 0}
