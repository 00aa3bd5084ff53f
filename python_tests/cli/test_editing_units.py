"""cli/editing.py, what `anyres-fast outpaint` and `anyres-fast inbetween` share, unit by unit: the common
options, reading a photo, the LPIPS and memory checks with their messages, and run_edit's inversion,
rendering and report with the inversion replaced by a recorder (the end-to-end runs are in test_outpaint.py)."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import types

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.cli import editing
from anyres_fast.cli.args import CommandError
from anyres_fast.models import infinity_inversion as inv
from anyres_fast.models import perceptual, tiling


# -------------------------------------------------------------------------------- common options

def _parser():
    p = argparse.ArgumentParser()
    editing.add_common_arguments(p)
    return p


def test_common_options_defaults():
    a = _parser().parse_args(["--weights", "w", "--out", "o"])
    assert (a.weights, a.out, a.seeds, a.steps, a.pixel, a.lpips, a.init_seed, a.record, a.device, a.no_progress) == \
        ("w", "o", [0, 1, 2, 3], 500, "l2", "alex", 0, None, None, False)


def test_common_options_parse_the_given_values():
    a = _parser().parse_args(["--weights", "w", "--out", "o", "--seeds", "3-5", "--steps", "7", "--pixel", "l1",
                              "--lpips", "random", "--init-seed", "9", "--record", "r.pt", "--device", "cpu",
                              "--no-progress"])
    assert (a.seeds, a.steps, a.pixel, a.lpips, a.init_seed, a.record, a.device, a.no_progress) == \
        ([3, 4, 5], 7, "l1", "random", 9, "r.pt", "cpu", True)


def test_common_options_accept_each_named_choice():
    # the defaults are the first choices; naming them explicitly must parse as well
    for pixel in ("l2", "l1"):
        for lpips_mode in ("alex", "random"):
            a = _parser().parse_args(["--weights", "w", "--out", "o", "--pixel", pixel, "--lpips", lpips_mode])
            assert (a.pixel, a.lpips) == (pixel, lpips_mode)


@pytest.mark.parametrize("argv,shown", [
    ([], "the following arguments are required: --weights, --out"),
    (["--steps", "0"], "--steps"), (["--pixel", "l3"], "invalid choice: 'l3'"),
    (["--lpips", "vgg"], "invalid choice: 'vgg'"), (["--init-seed", "-1"], "--init-seed"),
])
def test_common_options_refusals(capsys, argv, shown):
    base = [] if not argv else ["--weights", "w", "--out", "o"]
    with pytest.raises(SystemExit):
        _parser().parse_args(base + argv)
    assert shown in capsys.readouterr().err


def test_every_common_option_is_explained():
    for action in _parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help.strip(), action.dest
    weights = next(a for a in _parser()._actions if a.dest == "weights")
    assert "random:preset=tiny" in weights.help


# -------------------------------------------------------------------------------------- read_image

@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_read_image_maps_8_bit_levels_to_minus_1_1_in_any_mode(tmp_path, mode):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = 0, 255
    im = Image.fromarray(rgb)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(tmp_path / "a.png")
    want = np.asarray(im.convert("RGB"), dtype=np.float64)
    got = editing.read_image(str(tmp_path / "a.png"), "--image")
    assert got.shape == (1, 3, 5, 7) and got.dtype == torch.float32
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want / 127.5 - 1, rtol=0, atol=1e-6)
    if mode == "RGB":
        assert got[0, :, 0, 0].tolist() == [-1.0] * 3 and got[0, :, 0, 1].tolist() == [1.0] * 3


def test_read_image_refusals_name_the_flag_and_the_path(tmp_path):
    gone = str(tmp_path / "gone.png")
    with pytest.raises(CommandError, match="^" + re.escape(f"--left {gone!r}: no such file") + "$"):
        editing.read_image(gone, "--left")
    with pytest.raises(CommandError, match="^" + re.escape(f"--right {str(tmp_path)!r}: no such file") + "$"):
        editing.read_image(str(tmp_path), "--right")             # a folder is not a photo
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(CommandError, match="^" + re.escape(f"--image {str(bad)!r}: cannot read the image (")):
        editing.read_image(str(bad), "--image")
    trunc = tmp_path / "trunc.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 77).save(tmp_path / "whole.png")
    trunc.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(CommandError, match="^" + re.escape(f"--image {str(trunc)!r}: cannot read the image (")):
        editing.read_image(str(trunc), "--image")


# ------------------------------------------------------------------------------------- check_lpips

def test_check_lpips_names_the_flag_and_the_missing_file(monkeypatch):
    seen = []

    def check(mode):
        seen.append(mode)
        if mode == "alex":
            raise perceptual.LPIPSWeightsMissing("no /x/alexnet.pth")
    monkeypatch.setattr(perceptual, "check_weights", check)
    editing.check_lpips("random")
    with pytest.raises(CommandError, match="^" + re.escape("--lpips alex: no /x/alexnet.pth") + "$"):
        editing.check_lpips("alex")
    assert seen == ["random", "alex"]


# ---------------------------------------------------------------------------- check_inversion_memory

def _canvas(*sizes):
    return types.SimpleNamespace(regions=[types.SimpleNamespace(width=w, height=h) for w, h in sizes])


@pytest.fixture
def memory(monkeypatch):
    state = {"need": 0, "host": None, "device": None, "calls": []}

    def estimate(G, canvas, device, lpips_net):
        state["calls"].append(("estimate", G, canvas, device, lpips_net))
        return state["need"]

    def device_free(device):
        state["calls"].append(("device", device))
        return state["device"]
    monkeypatch.setattr(inv, "estimate_inversion_bytes", estimate)
    monkeypatch.setattr(tiling, "available_host_memory", lambda: state["calls"].append(("host",)) or state["host"])
    monkeypatch.setattr(tiling, "available_device_memory", device_free)
    return state


def test_inversion_memory_passes_when_it_fits_or_is_unknown(memory):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 1)
    canvas = _canvas((10, 10))
    for need, host, dev in ((5, 5, None), (5, None, None), (0, 0, None)):
        memory.update(need=need, host=host, device=dev, calls=[])
        editing.check_inversion_memory("G", canvas, cpu, "net")
        assert memory["calls"] == [("estimate", "G", canvas, cpu, "net"), ("host",)]
    memory.update(need=9, host=1, device=9, calls=[])
    editing.check_inversion_memory("G", canvas, cuda, None)      # the device's memory counts on CUDA, not the host's
    assert memory["calls"] == [("estimate", "G", canvas, cuda, None), ("device", cuda)]
    memory.update(need=9, host=None, device=None, calls=[])
    editing.check_inversion_memory("G", canvas, cuda, None)


def test_inversion_memory_refusal_gives_sizes_estimate_and_downscale(memory):
    need, have = 3 * 2**30, 2**30 // 3
    memory.update(need=need, host=have)
    canvas = _canvas((1200, 800), (640, 480))
    factor = math.sqrt(have / need) * 0.9                      # area scales with the square of a side
    want = (f"inverting the photo(s) (1200x800, 640x480, {(1200 * 800 + 640 * 480) / 1e6:.1f} MP) needs an "
            f"estimated 3.0 GiB on cpu, 341.3 MiB is available; downscale the photo(s) by about {factor:.2f} "
            f"(each side) or use a device with more memory")
    assert f"{factor:.2f}" == "0.30" and f"{(1200 * 800 + 640 * 480) / 1e6:.1f}" == "1.3"
    with pytest.raises(CommandError, match="^" + re.escape(want) + "$"):
        editing.check_inversion_memory("G", canvas, torch.device("cpu"), None)
    memory.update(need=need + 1, host=None, device=need)
    with pytest.raises(CommandError, match=re.escape("GiB on cuda:0, 3.0 GiB is available")):
        editing.check_inversion_memory("G", canvas, torch.device("cuda", 0), None)
    memory.update(need=have + 1, host=have)
    with pytest.raises(CommandError, match="about 0.90 "):   # just over: shrink by the 10 % margin
        editing.check_inversion_memory("G", canvas, torch.device("cpu"), None)
    # megapixels are pixels / 10^6: 1750 x 1000 is 1.75 MP, which rounds up to 1.8 at one decimal
    with pytest.raises(CommandError, match=re.escape("(1750x1000, 1.8 MP)")):
        editing.check_inversion_memory("G", _canvas((1750, 1000)), torch.device("cpu"), None)


# ----------------------------------------------------------------------------------------- run_edit

class _Canvas:
    def __init__(self, width, height, regions, ring=None):
        self.width, self.height, self.regions, self.ring = width, height, regions, ring

    def to_dict(self):
        return {"size": [self.width, self.height], "regions": [(r.left, r.top, r.width, r.height)
                                                               for r in self.regions], "ring": self.ring}


def _region(left, top, width, height):
    return types.SimpleNamespace(left=left, top=top, width=width, height=height)


class _Record:
    def __init__(self, generator, canvas, psnr=(12.5,)):
        self.generator, self.canvas, self.psnr, self.sources, self.saved = generator, canvas, list(psnr), [], []

    def save(self, path):
        self.saved.append(path)
        return path + ".saved"


class _G:
    config = types.SimpleNamespace(to_dict=lambda: {"kind": "tiny"})


def _image(seed, width, height):
    """The seed's render: channel 0 = column index / 100, so any slice shows its columns."""
    img = torch.zeros(1, 3, height, width)
    img[0, 0] = torch.arange(width).float().view(1, width) / 100
    img[0, 1] = seed / 10
    img[0, 2] = torch.arange(height).float().view(height, 1) / 100
    return img


@pytest.fixture
def fake_inv(monkeypatch):
    log = {"calls": []}

    def invert(G, canvas, targets, settings, *, device=None, progress=True, lpips_net=None):
        log["calls"].append("invert")
        log["invert"] = dict(G=G, canvas=canvas, targets=targets, settings=settings, device=device,
                             progress=progress, lpips_net=lpips_net)
        log["record"] = _Record(G.config.to_dict(), canvas, psnr=(31.0, 32.0))
        return log["record"]

    def build_lpips(mode, device):
        log["calls"].append(("lpips", mode, device))
        return "lpips-net"

    def memory(G, canvas, device, lpips_net):
        log["calls"].append(("memory", G, canvas, device, lpips_net))

    def render(G, record, seed, device=None):
        log["calls"].append(("render", seed, device))
        assert record is log.get("record") or record is log.get("loaded")
        return _image(seed, record.canvas.width, record.canvas.height)

    def psnr(a, b):
        log.setdefault("psnr", []).append((a.clone(), b))
        return round(float(a[0, 0, 0, 0]) * 100) + 0.5          # the region's first column, to see the slice

    def seam_stats(image, col, inside):
        log.setdefault("seams", []).append((col, list(inside)))
        return {"seam": col + 0.25, "inside_mean": len(inside) + 0.5, "inside": {}}

    def load(path):
        log["calls"].append(("load", path))
        if "loaded" not in log:
            raise log["load_error"]
        return log["loaded"]
    monkeypatch.setattr(inv, "invert", invert)
    monkeypatch.setattr(inv, "build_lpips", build_lpips)
    monkeypatch.setattr(editing, "check_inversion_memory", memory)
    monkeypatch.setattr(inv, "render", render)
    monkeypatch.setattr(inv, "psnr", psnr)
    monkeypatch.setattr(inv, "seam_stats", seam_stats)
    monkeypatch.setattr(inv.InversionRecord, "load", staticmethod(load))
    return log


def _args(tmp_path, **kw):
    a = dict(record=None, steps=5, pixel="l1", lpips="random", init_seed=4, no_progress=False, seeds=[2, 11],
             out=str(tmp_path))
    a.update(kw)
    return types.SimpleNamespace(**a)


def _two_photos():
    canvas = _Canvas(40, 6, [_region(0, 1, 8, 4), _region(30, 0, 10, 6)])
    targets = [torch.zeros(1, 3, 4, 8), torch.ones(1, 3, 6, 10)]
    return canvas, targets


def test_run_edit_inverts_with_the_options_and_checks_memory_first(tmp_path, fake_inv):
    canvas, targets = _two_photos()
    dev = torch.device("cpu")
    editing.run_edit(_args(tmp_path), _G, canvas, targets, ["a.png", "b.png"], "x", [], dev)
    got = fake_inv["invert"]
    assert got["settings"] == inv.InversionSettings(steps=5, pixel="l1", lpips="random", init_seed=4)
    assert (got["G"], got["canvas"], got["targets"], got["device"], got["progress"], got["lpips_net"]) == \
        (_G, canvas, targets, dev, True, "lpips-net")
    # the LPIPS network is built once, then the memory check counts it, then the inversion runs
    assert fake_inv["calls"][:3] == [("lpips", "random", dev), ("memory", _G, canvas, dev, "lpips-net"), "invert"]
    assert fake_inv["record"].sources == ["a.png", "b.png"]
    assert fake_inv["record"].saved == [os.path.join(str(tmp_path), "inversion.pt")]
    editing.run_edit(_args(tmp_path, no_progress=True, lpips="alex"), _G, canvas, targets, [], "x", [], dev)
    assert fake_inv["invert"]["progress"] is False and fake_inv["calls"][-5] == ("lpips", "alex", dev)


def test_run_edit_renders_every_seed_and_reports_regions_and_seams(tmp_path, fake_inv, capsys):
    canvas, targets = _two_photos()
    dev = torch.device("cpu")
    seams = [(8, [2, 5]), (30, [33])]
    report = editing.run_edit(_args(tmp_path), _G, canvas, targets, [], "inbetween", seams, dev)
    assert [c for c in fake_inv["calls"] if c[0] == "render"] == [("render", 2, dev), ("render", 11, dev)]
    paths = [os.path.join(str(tmp_path), n) for n in ("inbetween_seed0002.png", "inbetween_seed0011.png")]
    for seed, path in zip((2, 11), paths):
        with Image.open(path) as im:
            assert im.size == (40, 6)
            px = np.asarray(im)
        want = ((_image(seed, 40, 6)[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
        assert np.abs(px - want).max() <= 1
    # PSNR of each region's own slice of the render against its photo
    slices = fake_inv["psnr"]
    assert len(slices) == 4
    for (a, b), (seed, k) in zip(slices, [(2, 0), (2, 1), (11, 0), (11, 1)]):
        r = canvas.regions[k]
        assert torch.equal(a, _image(seed, 40, 6)[..., r.top:r.top + r.height, r.left:r.left + r.width])
        assert b is targets[k]
    assert fake_inv["seams"] == seams + seams
    want = {"record": os.path.join(str(tmp_path), "inversion.pt") + ".saved", "size": [40, 6], "cyclic": False,
            "inversion_psnr": [31.0, 32.0],
            "outputs": [{"seed": s, "path": p, "psnr": [0.5, 30.5],
                         "seams": [{"seam": 8.25, "inside_mean": 2.5, "inside": {}},
                                   {"seam": 30.25, "inside_mean": 1.5, "inside": {}}]}
                        for s, p in zip((2, 11), paths)]}
    assert report == want
    with open(os.path.join(str(tmp_path), "report.json")) as f:
        text = f.read()
    assert json.loads(text) == want and list(json.loads(text)) == list(want)        # in the order written
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{p}: 40x6, known region PSNR 0.50, 30.50 dB, seam |diff| 8.25 (inside 2.50), "
                     f"30.25 (inside 1.50)" for p in paths]


def test_run_edit_without_seams_prints_no_seam_part_and_reports_a_ring(tmp_path, fake_inv, capsys):
    canvas = _Canvas(12, 4, [_region(3, 0, 4, 4)], ring=12)
    report = editing.run_edit(_args(tmp_path, seeds=[0]), _G, canvas, [torch.zeros(1, 3, 4, 4)], [], "outpaint", [],
                              torch.device("cpu"))
    assert report["cyclic"] is True and report["outputs"][0]["seams"] == []
    path = os.path.join(str(tmp_path), "outpaint_seed0000.png")
    assert capsys.readouterr().out == f"{path}: 12x4, known region PSNR 3.50 dB\n"


def test_run_edit_with_a_record_skips_the_inversion(tmp_path, fake_inv):
    canvas, targets = _two_photos()
    fake_inv["loaded"] = _Record({"kind": "tiny"}, _Canvas(40, 6, list(canvas.regions)), psnr=(9.0, 8.0))
    report = editing.run_edit(_args(tmp_path, record="old.pt", seeds=[5]), _G, canvas, targets, ["a"], "x", [],
                              torch.device("cpu"))
    assert fake_inv["calls"][0] == ("load", "old.pt")
    assert not any(c == "invert" or c[0] in ("lpips", "memory") for c in fake_inv["calls"])
    assert report["inversion_psnr"] == [9.0, 8.0] and fake_inv["loaded"].sources == []     # kept as recorded
    assert fake_inv["loaded"].saved == [os.path.join(str(tmp_path), "inversion.pt")]


@pytest.mark.parametrize("error", [OSError("disk gone"), ValueError("old.pt: not an InfinityGAN inversion record"),
                                   RuntimeError("bad zip")])
def test_run_edit_refuses_an_unreadable_record(tmp_path, fake_inv, error):
    canvas, targets = _two_photos()
    fake_inv["load_error"] = error
    with pytest.raises(CommandError, match="^" + re.escape(f"--record 'old.pt': cannot read it ({error})") + "$"):
        editing.run_edit(_args(tmp_path, record="old.pt"), _G, canvas, targets, [], "x", [], torch.device("cpu"))


def test_run_edit_refuses_a_record_of_another_generator_or_canvas(tmp_path, fake_inv):
    canvas, targets = _two_photos()
    fake_inv["loaded"] = _Record({"kind": "other"}, canvas)
    with pytest.raises(CommandError, match="^" + re.escape("--record 'r.pt': made with another generator") + "$"):
        editing.run_edit(_args(tmp_path, record="r.pt"), _G, canvas, targets, [], "x", [], torch.device("cpu"))
    for other in (_Canvas(41, 6, canvas.regions), _Canvas(40, 6, canvas.regions[:1]),
                  _Canvas(40, 6, canvas.regions, ring=40)):
        fake_inv["loaded"] = _Record({"kind": "tiny"}, other)
        with pytest.raises(CommandError, match="^" + re.escape(
                "--record 'r.pt': made for another output size or placement (invert again without --record)") + "$"):
            editing.run_edit(_args(tmp_path, record="r.pt"), _G, canvas, targets, [], "x", [], torch.device("cpu"))
    assert not any(c == "invert" for c in fake_inv["calls"]) and not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------ inside_columns

def _inside_by_hand(left, width, count):
    """Evenly spaced interior columns: spacing (width - 2) // (count + 1) (at least 1), the i-th at
    left + 1 + spacing * i for i = 1..count, kept while strictly inside the photo."""
    if width < 3:
        return []
    spacing = max(1, (width - 2) // (count + 1))
    out = []
    for i in range(1, count + 1):
        c = 1 + spacing * i
        if c < width:
            out.append(left + c)
    return out


@pytest.mark.parametrize("left,width,count,want", [
    (0, 32, 5, [6, 11, 16, 21, 26]), (10, 3, 5, [12]), (0, 8, 2, [3, 5]), (4, 2, 5, []), (0, 0, 5, []),
    (7, 9, 5, [9, 10, 11, 12, 13]), (0, 5, 5, [2, 3, 4]), (100, 200, 1, [200]),
])
def test_inside_columns_by_hand(left, width, count, want):
    assert editing.inside_columns(left, width, count) == want == _inside_by_hand(left, width, count)


def test_inside_columns_default_count_and_bounds():
    assert editing.inside_columns(0, 32) == editing.inside_columns(0, 32, 5)
    for left in (0, 3):
        for width in range(0, 60):
            for count in (1, 2, 5, 9):
                got = editing.inside_columns(left, width, count)
                assert got == _inside_by_hand(left, width, count)
                assert got == sorted(set(got)) and len(got) <= count
                assert all(left < c < left + width for c in got)      # c - 1 | c stays inside the photo
