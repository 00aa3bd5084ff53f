"""`anyres-fast generate` end to end on CPU with tiny random-weight models."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast import cli
from anyres_fast.cli import generate
from anyres_fast.models import Generator

TINY = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"


def run(argv: list) -> int:
    """`anyres-fast generate ARGV` through the real entry point (errors: one line, exit 2)."""
    try:
        return cli.main(["generate", *argv])
    except SystemExit as exc:    # argparse errors
        return exc.code


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
    assert "no such file or folder" in capsys.readouterr().err
    assert run(["--weights", "random:64,colour=red", "--size", "64", "--out", str(tmp_path)]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert run(["--weights", TINY, "--size", "32", "--out", str(tmp_path)]) == 2
    assert "smaller than the patch size" in capsys.readouterr().err
    assert run(["--weights", TINY, "--size", "64", "--seeds", "3-1", "--out", str(tmp_path)]) == 2
    assert "bad seed list" in capsys.readouterr().err


FAST = dict(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8, num_layers=4,
            num_critical=1)


def _png(path):
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)


def test_png_follows_truncation_cutoff_and_class(tmp_path):
    """The CLI's PNG is exactly G.render with the same truncation psi / cutoff / class, and each option
    changes the image (so an option that is not forwarded fails)."""
    torch.manual_seed(0)
    G = Generator(**FAST, c_dim=3).eval()
    G.calibrate_magnitudes_(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)),
                            torch.eye(3)[torch.arange(8) % 3])        # w_avg away from any single w
    G.save_pretrained(str(tmp_path / "w"))
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    onehot = lambda k: torch.eye(3)[k:k + 1]
    want = lambda **kw: G.render(z, 64, progress=False, out_dtype=torch.uint8, **kw)[0]
    pngs = {}
    for name, extra in {"psi.5": ["--truncation", "0.5"], "psi.5_cut2": ["--truncation", "0.5", "--truncation-cutoff", "2"],
                        "psi1": [], "class2": ["--class", "2"]}.items():
        cls = [] if "class" in name else ["--class", "1"]
        assert run(["--weights", str(tmp_path / "w"), "--seeds", "3", "--size", "64", "--out", str(tmp_path / name),
                    "--device", "cpu", "--no-progress", *cls, *extra]) == 0
        pngs[name] = _png(tmp_path / name / "seed0003_64.png")
    assert torch.equal(pngs["psi.5"], want(c=onehot(1), truncation_psi=0.5))
    assert torch.equal(pngs["psi.5_cut2"], want(c=onehot(1), truncation_psi=0.5, truncation_cutoff=2))
    assert torch.equal(pngs["psi1"], want(c=onehot(1)))
    assert torch.equal(pngs["class2"], want(c=onehot(2)))
    differ = lambda a, b: (pngs[a].int() - pngs[b].int()).abs().max() > 3
    assert differ("psi.5", "psi1") and differ("psi.5_cut2", "psi.5") and differ("psi.5_cut2", "psi1")
    assert differ("class2", "psi1")


def test_seed_and_zoom_parsing():
    assert generate.parse_seeds("0-3") == [0, 1, 2, 3]
    assert generate.parse_seeds("1,5,7-8") == [1, 5, 7, 8]
    with pytest.raises(argparse.ArgumentTypeError):
        generate.parse_seeds("a")
    assert generate.parse_zoom("1,2,3") == (1, 2, 3)
    with pytest.raises(argparse.ArgumentTypeError):
        generate.parse_zoom("1,2,0")


def test_under_memory_pressure_a_smaller_tile_batch_is_used_and_only_the_impossible_refused(
        tmp_path, capsys, monkeypatch):
    """A busy machine (little available memory, simulated): the render goes on with fewer tiles per pass,
    giving the same picture; a request that cannot fit even one tile at a time is refused with the numbers."""
    from anyres_fast.models import tiling

    estimates = {}
    real_check = tiling.check_render_memory

    def recording(**kw):
        est = real_check(**kw)
        estimates.setdefault(kw["tile_batch"], est["host"])
        return est

    monkeypatch.setattr(tiling, "available_host_memory", lambda: None)     # first: no limit, record estimates
    monkeypatch.setattr(tiling, "check_render_memory", recording)
    argv = ["--weights", TINY, "--seeds", "3", "--size", "150", "--device", "cpu", "--no-progress"]
    assert run(argv + ["--out", str(tmp_path / "free")]) == 0
    assert 8 in estimates
    monkeypatch.setattr(tiling, "check_render_memory", real_check)
    for t in (1, 2):
        estimates[t] = real_check(**{**_generate_memory_args(), "tile_batch": t})["host"]
    assert estimates[1] < estimates[2] < estimates[8]
    capsys.readouterr()

    monkeypatch.setattr(tiling, "available_host_memory", lambda: (estimates[2] + estimates[1]) // 2)
    assert run(argv + ["--out", str(tmp_path / "busy")]) == 0
    assert "1 tile(s) per pass instead of --tile-batch 8" in capsys.readouterr().err
    free = np.asarray(Image.open(tmp_path / "free" / "seed0003_150.png"), dtype=np.int16)
    busy = np.asarray(Image.open(tmp_path / "busy" / "seed0003_150.png"), dtype=np.int16)
    assert np.abs(free - busy).max() <= 1           # the same picture (batched GEMMs may round apart)

    monkeypatch.setattr(tiling, "available_host_memory", lambda: estimates[1] - 1)
    assert run(argv + ["--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--size 150" in err and "needs an estimated" in err and len(err.strip().splitlines()) == 1


def _generate_memory_args():
    """check_render_memory's arguments for the TINY model at --size 150 as `generate` computes them."""
    from anyres_fast.cli.weights import resolve
    from anyres_fast.models.anyres import estimate_tile_bytes, layer_schedule

    cfg = resolve(TINY, "anyres").config
    return dict(num_images=1, width=150, height=150, tile=cfg.resolution, channels=cfg.img_channels,
                device=torch.device("cpu"), out_dtype=torch.uint8,
                device_bytes_per_tile=estimate_tile_bytes(layer_schedule(cfg)), extra_host_bytes=150 * 150 * 3)
