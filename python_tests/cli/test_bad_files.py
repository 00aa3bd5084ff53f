"""Damaged files a command reads, and a full disk while a training writes: one line naming the file, exit 2,
nothing lost (the previous checkpoint stays intact)."""
from __future__ import annotations

import os
import time

import pytest
import torch
from PIL import Image

from anyres_fast.models import infinity_inversion as inv
from anyres_fast.train import latest_checkpoint, list_checkpoints, load_checkpoint

from helpers import run_cli, write_images


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    d = tmp_path_factory.mktemp("photo")
    Image.new("RGB", (32, 32), (90, 120, 30)).save(d / "p.png")
    return str(d / "p.png")


def _garbage_records(folder):
    """(name, path) of files that are not usable inversion records."""
    os.makedirs(folder, exist_ok=True)
    out = []
    p = os.path.join(folder, "bytes.pt")
    with open(p, "wb") as f:
        f.write(os.urandom(300))
    out.append(("random bytes", p))
    p = os.path.join(folder, "other.pt")
    torch.save({"weights": torch.zeros(3)}, p)
    out.append(("another torch file", p))
    p = os.path.join(folder, "nokeys.pt")
    torch.save({"format": inv.RECORD_FORMAT, "z_g": torch.zeros(1)}, p)
    out.append(("a record missing fields", p))
    p = os.path.join(folder, "empty.pt")
    open(p, "wb").close()
    out.append(("an empty file", p))
    return out


def test_a_garbage_record_is_one_line_naming_it(photo, tmp_path, capsys, one_thread):
    for what, path in _garbage_records(str(tmp_path / "records")):
        rc, _, err = run_cli(["outpaint", "--weights", "random:preset=tiny", "--image", photo, "--width", "64",
                              "--lpips", "random", "--no-progress", "--record", path, "--out", str(tmp_path / "o")],
                             capsys)
        assert rc == 2 and "internal error" not in err, (what, err)
        assert len(err.strip().splitlines()) == 1 and path in err, (what, err)


def test_a_full_disk_during_training_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, capsys,
                                                                                      monkeypatch, one_thread):
    from anyres_fast.utils import files

    lr = write_images(str(tmp_path / "lr"), [(64, 64), (72, 64)])
    run = str(tmp_path / "run")
    base = ["train", "--phase", "fixed", "--lr-data", lr, "--out", run, "--tiny", "--no-progress", "--workers", "0",
            "--snap", "1"]
    assert run_cli(base + ["--max-steps", "1"], capsys)[0] == 0
    good = latest_checkpoint(run)
    with open(good, "rb") as f:
        good_bytes = f.read()

    real_fsync = os.fsync

    def full_disk(fd):   # the disk fills up while the checkpoint is written
        if ".tmp-checkpoint-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_disk)
    rc, _, err = run_cli(["train", "--out", run, "--resume", "--max-steps", "1", "--no-progress"], capsys)
    monkeypatch.undo()
    last = err.strip().splitlines()[-1]          # (after the resume's own log lines)
    assert rc == 2 and last.startswith("anyres-fast train: cannot write ") and "Traceback" not in err, err
    assert "No space left on device" in last and os.path.join(run, "checkpoints", "checkpoint-00000002.pt") in last
    assert [s for s, _ in list_checkpoints(run)] == [1]
    with open(good, "rb") as f:
        assert f.read() == good_bytes
    assert load_checkpoint(good)["step"] == 1
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if n.startswith(".tmp-")]


def test_an_infinitygan_canvas_that_cannot_fit_is_refused_at_once_with_the_numbers(tmp_path, capsys):
    from anyres_fast.models import tiling
    from anyres_fast.models.infinity import InfinityGenerator

    t0 = time.perf_counter()
    rc, _, err = run_cli(["generate", "--model", "infinity", "--weights", "random:preset=tiny", "--width", "200000",
                          "--height", "200000", "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "needs an estimated 670.6 GiB" in err and "--format dzi" in err   # 3 x 4e10 x (4 + 1 + 1) bytes
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "o").exists()  # before anything is built
    G = InfinityGenerator(patch_size=29, z_dim=4, local_dim=1, mapping_layers=1, channel_base=16, channel_max=2)
    with pytest.raises(tiling.MemoryLimitError, match="needs an estimated"):
        G.render(torch.zeros(1, 4), 100_000, 100_000, progress=False)


def test_a_photo_too_large_to_invert_is_refused_at_once_with_the_numbers(tmp_path, capsys, monkeypatch):
    from anyres_fast.models import tiling

    big = tmp_path / "big.png"
    Image.new("RGB", (600, 400), (10, 200, 30)).save(big)
    monkeypatch.setattr(tiling, "available_host_memory", lambda: 50 * 2**20)     # a busy machine: 50 MiB free
    t0 = time.perf_counter()
    rc, _, err = run_cli(["outpaint", "--weights", "random:preset=tiny", "--image", str(big), "--width", "700",
                          "--lpips", "random", "--no-progress", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "600x400" in err and "needs an estimated" in err and "50.0 MiB is available" in err
    assert "downscale" in err and time.perf_counter() - t0 < 60
    assert not (tmp_path / "o" / "inversion.pt").exists()
