"""`anyres-fast generate` end to end on CPU with tiny random-weight models."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast import generate
from anyres_fast.models import Generator

TINY = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"


def run(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="anyres-fast generate")
    generate.add_arguments(parser)
    return generate.main(parser.parse_args(argv))


def test_random_weights_write_pngs_of_the_right_size(tmp_path, capsys):
    out = tmp_path / "imgs"
    assert run(["--weights", TINY, "--seeds", "0-1", "--size", "100", "--truncation", "0.7", "--out", str(out),
                "--device", "cpu", "--tile-batch", "3", "--no-progress"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["seed0000_100.png", "seed0001_100.png"]
    a = np.asarray(Image.open(out / files[0]))
    b = np.asarray(Image.open(out / files[1]))
    assert a.shape == (100, 100, 3) and a.dtype == np.uint8
    assert a.std() > 5 and not np.array_equal(a, b)          # real content, seeds differ
    assert "wrote" in capsys.readouterr().out


def test_zoom_window_and_saved_weights(tmp_path):
    torch.manual_seed(0)
    G = Generator(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8)
    G.save_pretrained(str(tmp_path / "w"))
    assert run(["--weights", str(tmp_path / "w"), "--seeds", "5", "--size", "300", "--zoom", "64,128,70,40",
                "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    img = Image.open(tmp_path / "o" / "seed0005_300_zoom64_128_70_40.png")
    assert img.size == (70, 40) and img.mode == "RGB"
    # Same pixels as rendering that window directly.
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(5))
    ref = G.eval().zoom(z, 300, (64, 128, 70, 40), progress=False, out_dtype=torch.uint8)[0].permute(1, 2, 0)
    assert np.abs(np.asarray(img).astype(int) - ref.numpy().astype(int)).max() <= 1


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    assert run(["--weights", str(tmp_path / "missing"), "--size", "64", "--out", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert run(["--weights", "random:64,colour=red", "--size", "64", "--out", str(tmp_path)]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert run(["--weights", TINY, "--size", "32", "--out", str(tmp_path)]) == 2
    assert "smaller than the patch size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--weights", TINY, "--size", "64", "--seeds", "3-1", "--out", str(tmp_path)])


def test_seed_and_zoom_parsing():
    assert generate.parse_seeds("0-3") == [0, 1, 2, 3]
    assert generate.parse_seeds("1,5,7-8") == [1, 5, 7, 8]
    with pytest.raises(argparse.ArgumentTypeError):
        generate.parse_seeds("a")
    assert generate.parse_zoom("1,2,3") == (1, 2, 3)
    with pytest.raises(argparse.ArgumentTypeError):
        generate.parse_zoom("1,2,0")
