"""Unit tests of anyres_fast.metrics.real_images on tiny PNG/JPEG files written with Pillow in tmp_path.

Documented behaviour (docs/metrics.md "fid@R" and "pfid", the module's docstrings): folders are listed
recursively, zips by member name, sorted, with a fingerprint of (name, size, mtime) / (name, size, date,
CRC); images are RGB, square-cropped (centred or seeded per image with (seed, index)) and Lanczos-resized;
pfid's real patches are quantised as x * 127.5 + 128, clamped to [0, 255] and truncated to uint8.
"""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler
from anyres_fast.metrics.real_images import (FullImages, RealPatches, list_images, source_fingerprint,
                                             square_box, to_chw_uint8)


def pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# -- listing ----------------------------------------------------------------------------------------

def test_folder_listing_is_recursive_sorted_and_filtered_by_extension(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "aXX").mkdir()
    files = {"b.png": png_bytes(pattern(5, 4, 1)), "a.JPG": jpeg_bytes(pattern(6, 6, 2)),
             "sub/c.png": png_bytes(pattern(3, 7, 3)), "sub/deeper/d.png": png_bytes(pattern(4, 4, 4)),
             "aXX/XXe.png": png_bytes(pattern(4, 5, 5))}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(png_bytes(pattern(4, 4, 6)))
    (tmp_path / "sub" / "Thumbs.db").write_bytes(b"x")
    listing = list_images(str(tmp_path))
    assert listing.kind == "folder" and listing.root == os.path.abspath(str(tmp_path))
    # Sorted by relative path; the name "aXX/XXe.png" is kept as it is.
    assert listing.files == ("a.JPG", "aXX/XXe.png", "b.png", "sub/c.png", "sub/deeper/d.png")
    assert len(listing) == 5
    for i, name in enumerate(listing.files):
        assert listing.path(i) == os.path.join(str(tmp_path), name)
        im = listing.open(i)
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), decoded(files[name]))


def test_zip_listing_keeps_member_names_and_opens_members(tmp_path):
    members = {"z/one.png": png_bytes(pattern(5, 3, 7)), "a.jpg": jpeg_bytes(pattern(8, 8, 8)),
               "m/n/two.png": png_bytes(pattern(3, 3, 9))}
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr("readme.txt", "text")
        z.writestr("__MACOSX/._a.jpg", b"resource fork")
    listing = list_images(str(path))
    assert listing.kind == "zip" and listing.root == os.path.abspath(str(path))
    assert listing.files == ("a.jpg", "m/n/two.png", "z/one.png")
    for i, name in enumerate(listing.files):
        im = listing.open(i)
        assert im.mode == "RGB" and im.size == Image.open(io.BytesIO(members[name])).size
        np.testing.assert_array_equal(np.asarray(im), decoded(members[name]))
    # A greyscale member comes back as RGB with three equal channels.
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG")
    path2 = tmp_path / "grey.zip"
    with zipfile.ZipFile(path2, "w") as z:
        z.writestr("g.png", buf.getvalue())
    im = list_images(str(path2)).open(0)
    np.testing.assert_array_equal(np.asarray(im), np.stack([grey] * 3, axis=-1))


def test_folder_names_use_the_os_separator_and_zip_names_keep_slashes(tmp_path, monkeypatch):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x.png").write_bytes(png_bytes(pattern(4, 4)))
    (tmp_path / "d" / "y.png").write_bytes(png_bytes(pattern(4, 4, 1)))
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("sub/x.png", png_bytes(pattern(4, 4)))
    # Simulate a Windows separator: folder names are joined with os.path, so they use os.sep; zip
    # member names always use "/" (the zip format's separator).
    monkeypatch.setattr(os, "sep", "\\")
    folder = list_images(str(tmp_path / "d"))
    archive = list_images(str(tmp_path / "a.zip"))
    monkeypatch.undo()
    assert folder.files == ("sub\\x.png", "y.png")
    assert archive.files == ("sub/x.png",)


def test_listing_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(ValueError) as exc:
        list_images(str(empty))
    assert str(exc.value) == f"{empty}: no image files found"
    zpath = tmp_path / "empty.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(ValueError) as exc:
        list_images(str(zpath))
    assert str(exc.value) == f"{zpath}: no image files found in the zip"
    # A regular file that is not a zip (here a PNG) and a missing path are neither folder nor zip.
    png = tmp_path / "one.png"
    png.write_bytes(png_bytes(pattern(4, 4)))
    for bad in (png, tmp_path / "missing"):
        with pytest.raises(FileNotFoundError) as exc:
            list_images(str(bad))
        assert str(exc.value) == f"{bad}: not a folder or .zip file"


def test_listing_fingerprint_changes_with_each_name_size_and_mtime(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(pattern(4, 4)))
    (tmp_path / "b.png").write_bytes(png_bytes(pattern(5, 4, 1)))
    first = list_images(str(tmp_path)).fingerprint
    assert list_images(str(tmp_path)).fingerprint == first                 # deterministic
    st = os.stat(tmp_path / "a.png")
    os.utime(tmp_path / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    touched = list_images(str(tmp_path)).fingerprint
    assert touched != first                                                # mtime
    os.rename(tmp_path / "b.png", tmp_path / "c.png")
    renamed = list_images(str(tmp_path)).fingerprint
    assert renamed not in (first, touched)                                 # name
    st = os.stat(tmp_path / "c.png")
    (tmp_path / "c.png").write_bytes(png_bytes(pattern(9, 9, 2)))
    os.utime(tmp_path / "c.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    resized = list_images(str(tmp_path)).fingerprint
    assert resized not in (first, touched, renamed)                        # size at the same mtime


# -- square crops, conversion, full images ----------------------------------------------------------

@pytest.mark.parametrize("w, h, box", [
    (10, 4, (3, 0, 7, 4)),      # landscape: (10 - 4) // 2 = 3
    (7, 4, (1, 0, 5, 4)),       # odd margin: (7 - 4) // 2 = 1
    (4, 9, (0, 2, 4, 6)),       # portrait: (9 - 4) // 2 = 2
    (3, 10, (0, 3, 3, 6)),      # portrait: (10 - 3) // 2 = 3
    (5, 5, (0, 0, 5, 5)),
])
def test_square_box_centre_by_hand(w, h, box):
    got = square_box(w, h, "center", None)
    assert got == box and all(type(v) is int for v in got)


def test_square_box_random_offsets_cover_the_margin():
    rng = np.random.default_rng(0)
    seen_x, seen_y = set(), set()
    for _ in range(200):
        x0, y0, x1, y1 = square_box(9, 6, "random", rng)
        assert (y0, x1 - x0, y1 - y0) == (0, 6, 6) and 0 <= x0 <= 3
        seen_x.add(x0)
        x0, y0, x1, y1 = square_box(4, 7, "random", rng)
        assert (x0, x1 - x0, y1 - y0) == (0, 4, 4) and 0 <= y0 <= 3
        seen_y.add(y0)
    assert seen_x == {0, 1, 2, 3} and seen_y == {0, 1, 2, 3}
    with pytest.raises(ValueError) as exc:
        square_box(4, 4, "middle", rng)
    assert str(exc.value) == "crop must be 'center' or 'random', got 'middle'"


def test_to_chw_uint8_against_pil_pixels():
    arr = pattern(3, 2, 11)
    im = Image.fromarray(arr)
    t = to_chw_uint8(im)
    assert t.dtype == torch.uint8 and tuple(t.shape) == (3, 2, 3) and t.is_contiguous()
    for y in range(2):
        for x in range(3):
            assert tuple(int(v) for v in t[:, y, x]) == im.getpixel((x, y))


def test_full_images_random_crop_default_seed_is_zero_and_seeded_per_index(tmp_path):
    sizes = [(40, 8), (8, 30), (25, 9)]
    arrays = [pattern(w, h, 20 + i) for i, (w, h) in enumerate(sizes)]
    for i, a in enumerate(arrays):
        (tmp_path / f"im{i}.png").write_bytes(png_bytes(a))
    listing = list_images(str(tmp_path))

    def by_hand(seed, i, size=8):
        # Docstring: random crops seeded per image with (seed, index); crop first, then Lanczos resize.
        w, h = sizes[i]
        side = min(w, h)
        rng = np.random.default_rng([seed, i])
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        im = Image.fromarray(arrays[i]).crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.LANCZOS)
        return np.asarray(im).transpose(2, 0, 1)

    default = FullImages(listing, 8, crop="random")
    seeded1 = FullImages(listing, 8, crop="random", seed=1)
    differs = 0
    for i in range(3):
        img, idx, reason = default[i]
        assert idx == i and reason is None
        np.testing.assert_array_equal(img.numpy(), by_hand(0, i))
        np.testing.assert_array_equal(seeded1[i][0].numpy(), by_hand(1, i))
        differs += not np.array_equal(by_hand(0, i), by_hand(1, i))
    assert differs >= 1                     # the seeds pick different crops, so the check can fail


def test_full_images_report_unreadable_and_small_files(tmp_path):
    (tmp_path / "a_bad.png").write_bytes(b"this is not a png file at all")
    (tmp_path / "b_small.png").write_bytes(png_bytes(pattern(12, 6)))
    listing = list_images(str(tmp_path))
    ds = FullImages(listing, 8)
    assert ds[0] == (None, 0, "unreadable (UnidentifiedImageError)")
    assert ds[1] == (None, 1, "square side 6 < 8")


# -- pfid real patches --------------------------------------------------------------------------------

class _Listing:
    def __init__(self, names):
        self.names = names


class _Source:
    def __init__(self, names):
        self.listing = _Listing(names)


class StubPatches:
    """Stands in for HRPatchDataset: returns a given float patch and frame, records the keys asked."""

    def __init__(self, image, seed=5, n=3):
        self.image, self.seed, self.n = image, seed, n
        self.source = _Source([f"file{i}.png" for i in range(n)])
        self.asked = []

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        self.asked.append(key)
        return {"image": self.image.clone(), "box": torch.tensor([3.0, 5.0]), "canvas": torch.tensor(20.0),
                "flip": torch.tensor(True)}


def test_real_patches_quantise_clamp_and_truncate():
    values = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 1.5, -0.999])
    image = values.reshape(1, 2, 4).expand(3, 2, 4).contiguous()
    stub = StubPatches(image)
    rp = RealPatches(stub, num=4)
    patch, record, reason = rp[2]
    assert reason is None and patch.dtype == torch.uint8
    # x * 127.5 + 128 -> -127, 0.5, 128, 191.75, 255.5, 383, 319.25, 0.6275; clamp to [0, 255]; truncate.
    want = torch.tensor([0, 0, 128, 191, 255, 255, 255, 0], dtype=torch.uint8).reshape(2, 4)
    assert torch.equal(patch, want.expand(3, 2, 4))
    # Key of sample 2: KeySampler(n, seed, 1) (docstring); record = (image, canvas N, x, y, flip).
    index, draw = KeySampler(3, 5, global_batch=1).key(2)
    assert stub.asked == [(index, draw)] and draw == 2
    assert record.dtype == torch.int64 and record.tolist() == [index, 20, 3, 5, 1]


def test_real_patches_report_a_vanished_file(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.png").write_bytes(png_bytes(pattern(16, 16, 30 + i)))
    source = ImageSource(str(folder), min_size=8)
    rp = RealPatches(HRPatchDataset(source, 8, decode="exact"), num=2)
    patch, record, reason = rp[0]
    assert reason is None and tuple(patch.shape) == (3, 8, 8)
    index = rp.key(0)[0]
    name = source.listing.names[index]
    os.remove(folder / name)
    assert rp[0] == (None, 0, f"{name}: unreadable (FileNotFoundError)")


# -- source fingerprint ----------------------------------------------------------------------------

def test_source_fingerprint_of_a_zip_follows_member_content_and_date(tmp_path):
    a, b = pattern(10, 10, 40), pattern(10, 10, 41)

    def write(path, second, date=(2020, 1, 1, 0, 0, 0)):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(zipfile.ZipInfo("x.png", date_time=(2020, 1, 1, 0, 0, 0)), png_bytes(a))
            z.writestr(zipfile.ZipInfo("y.png", date_time=date), second)

    p = tmp_path / "s.zip"
    second = png_bytes(b)
    write(p, second)
    fp = source_fingerprint(ImageSource(str(p), min_size=4))
    assert fp == source_fingerprint(ImageSource(str(p), min_size=4))             # deterministic
    assert fp != source_fingerprint(ImageSource(str(p), min_size=5))             # min_size is part of it
    write(p, second, date=(2021, 5, 6, 7, 8, 10))
    dated = source_fingerprint(ImageSource(str(p), min_size=4))
    assert dated != fp                                                          # member date
    # Same size and date, other bytes (only the CRC differs): one byte flipped. The member may then be
    # unreadable, which the fingerprint covers too (usable and skipped files alike).
    other = bytearray(second)
    other[-20] ^= 0xFF
    write(p, bytes(other), date=(2021, 5, 6, 7, 8, 10))
    crc = source_fingerprint(ImageSource(str(p), min_size=4))
    assert crc != dated and crc != fp
