"""What `anyres-fast outpaint` and `anyres-fast inbetween` hand to the inversion: the photo boxes on the
canvas, the seams compared in report.json, the LPIPS check and every refusal, for each placement, worked
out by hand here (docs/infinitygan_training.md). The inversion itself is replaced by a recorder; the
end-to-end runs are in test_outpaint.py."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

from anyres_fast.cli import build_parser, inbetween, outpaint
from anyres_fast.cli import weights as weights_arg
from anyres_fast.cli.args import CommandError
from anyres_fast.cli.editing import inside_columns
from anyres_fast.models import infinity_inversion as inv

PATCH = 29           # random:preset=tiny: patch_size 29, depth 2


@pytest.fixture
def recorded(monkeypatch):
    """Replaces loading, planning, the LPIPS check and run_edit with recorders."""
    calls = {}
    monkeypatch.setattr(weights_arg, "load", lambda weights, device: "G")
    monkeypatch.setattr(inv, "plan_canvas", lambda G, H, W, boxes, **kw: calls.setdefault("plan", (G, H, W, boxes, kw))
                        and "canvas")
    for mod in (outpaint, inbetween):
        monkeypatch.setattr(mod, "check_lpips", lambda mode: calls.setdefault("lpips", mode))
        monkeypatch.setattr(mod, "run_edit", lambda args, G, canvas, targets, sources, prefix, seams, device:
                            calls.setdefault("edit", (G, canvas, [t.shape for t in targets], sources, prefix, seams)))
    return calls


def photo(path, w, h):
    rng = np.random.default_rng(w * 1000 + h)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def run(argv):
    args = build_parser().parse_args(argv)
    return args.func(args)


def common(tmp_path, *extra):
    return ["--weights", "random:preset=tiny", "--out", str(tmp_path / "out"), "--device", "cpu", *extra]


@pytest.mark.parametrize("place, width, height, x0, y0", [
    ("left", 70, None, 0, 0), ("right", 70, 36, 38, 2), ("centre", 71, 37, 19, 2), ("left", 32, None, 0, 0)])
def test_outpaint_places_the_photo_and_compares_the_seams_it_creates(tmp_path, recorded, place, width, height, x0, y0):
    img = photo(tmp_path / "p.png", 32, 32)
    argv = ["outpaint", "--image", img, "--width", str(width), "--place", place] + common(tmp_path)
    if height is not None:
        argv += ["--height", str(height)]
    assert run(argv) == 0
    H = height or 32
    assert recorded["plan"] == ("G", H, width, [(y0, x0, 32, 32)], {})
    G, canvas, shapes, sources, prefix, seams = recorded["edit"]
    assert (G, canvas, shapes, sources, prefix) == ("G", "canvas", [(1, 3, 32, 32)], [os.path.abspath(img)], "outpaint")
    want = ([(x0 + 32, inside_columns(x0, 32))] if x0 + 32 < width else []) + \
           ([(x0, inside_columns(x0, 32))] if x0 > 0 else [])
    assert seams == want
    assert all(x0 < c < x0 + 32 for _, cols in seams for c in cols)
    assert recorded["lpips"] == "alex" and os.path.isdir(tmp_path / "out")


def test_outpaint_with_a_record_needs_no_lpips_weights(tmp_path, recorded):
    img = photo(tmp_path / "p.png", 32, 32)
    run(["outpaint", "--image", img, "--width", "40", "--record", str(tmp_path / "r.pt")] + common(tmp_path))
    assert recorded["lpips"] == "random"
    run(["outpaint", "--image", img, "--width", "40", "--lpips", "random"] + common(tmp_path))


def test_outpaint_refusals_name_the_flag_and_the_sizes(tmp_path, recorded):
    small = photo(tmp_path / "s.png", 40, 28)
    ok = photo(tmp_path / "p.png", 32, 32)
    cases = [(["--image", small, "--width", "60"], f"--image {small!r}: 40x28 is smaller than the model's 29x29 patch"),
             (["--image", ok, "--width", "31"], "--width 31: smaller than the photo's width 32"),
             (["--image", ok, "--width", "40", "--height", "31"], "--height 31: smaller than the photo's height 32")]
    for flags, message in cases:
        with pytest.raises(CommandError, match="^" + re.escape(message) + "$"):
            run(["outpaint", *flags] + common(tmp_path))
    assert "edit" not in recorded and "lpips" not in recorded     # refused before any work


@pytest.mark.parametrize("width", [100, 80])
def test_inbetween_puts_the_photos_at_both_ends_centred_vertically(tmp_path, recorded, width):
    a, b = photo(tmp_path / "a.png", 30, 36), photo(tmp_path / "b.png", 50, 30)
    assert run(["inbetween", "--left", a, "--right", b, "--width", str(width)] + common(tmp_path)) == 0
    assert recorded["plan"] == ("G", 36, width, [(0, 0, 36, 30), (3, width - 50, 30, 50)], {})
    G, canvas, shapes, sources, prefix, seams = recorded["edit"]
    assert shapes == [(1, 3, 36, 30), (1, 3, 30, 50)] and prefix == "inbetween"
    assert sources == [os.path.abspath(a), os.path.abspath(b)]
    want = [(30, inside_columns(0, 30))] + ([(width - 50, inside_columns(width - 50, 50))] if width > 80 else [])
    assert seams == want
    assert recorded["lpips"] == "alex"


def test_inbetween_refusals(tmp_path, recorded):
    a, b = photo(tmp_path / "a.png", 30, 36), photo(tmp_path / "b.png", 50, 30)
    small = photo(tmp_path / "s.png", 28, 40)
    cases = [(["--left", a, "--width", "90"], "--right is required (or --cyclic, to close a ring with the --left "
                                              "photo alone)"),
             (["--left", a, "--right", b, "--cyclic", "--width", "90"],
              "--cyclic closes the ring with the --left photo on both sides; drop --right"),
             (["--left", small, "--right", b, "--width", "90"],
              f"--left {small!r}: 28x40 is smaller than the model's 29x29 patch"),
             (["--left", a, "--right", small, "--width", "90"],
              f"--right {small!r}: 28x40 is smaller than the model's 29x29 patch"),
             (["--left", a, "--right", b, "--width", "79"],
              "--width 79: smaller than the two photos side by side (30 + 50 = 80)"),
             (["--left", small, "--cyclic", "--width", "96"],
              f"--left {small!r}: 28x40 is smaller than the model's 29x29 patch"),
             (["--left", b, "--cyclic", "--width", "48"], "--cyclic --width 48: smaller than the --left photo's width 50")]
    for flags, message in cases:
        with pytest.raises(CommandError, match="^" + re.escape(message) + "$"):
            run(["inbetween", *flags] + common(tmp_path))
    with pytest.raises(CommandError, match="--cyclic --width"):       # not a multiple of 2^depth = 4
        run(["inbetween", "--left", a, "--cyclic", "--width", "62"] + common(tmp_path))
    assert "edit" not in recorded and "lpips" not in recorded


@pytest.mark.parametrize("width, wa", [(64, 30), (32, 32)])
def test_inbetween_cyclic_rings_the_photo_with_the_wrap_seam(tmp_path, recorded, width, wa):
    """A ring of `width` (a multiple of 2^depth = 4); a photo as wide as the ring has only the wrap seam."""
    a = photo(tmp_path / "a.png", wa, 32)
    assert run(["inbetween", "--left", a, "--cyclic", "--width", str(width), "--record", "x.pt"] + common(tmp_path)) == 0
    assert recorded["plan"] == ("G", 32, width, [(0, 0, 32, wa)], {"cyclic": True})
    seams = recorded["edit"][5]
    assert seams == ([(wa, inside_columns(0, wa))] if wa < width else []) + [(0, inside_columns(0, wa))]
    assert recorded["lpips"] == "random"


def test_outpaint_options_parse_as_documented(tmp_path, recorded, capsys):
    img = photo(tmp_path / "p.png", 29, 29)                   # exactly the patch: accepted
    assert run(["outpaint", "--image", img, "--width", "30", "--place", "right"] + common(tmp_path)) == 0
    assert recorded["plan"][3] == [(0, 1, 29, 29)] and recorded["edit"][5] == [(1, inside_columns(1, 29))]
    for argv, missing in ((["--width", "40"], "--image"), (["--image", img], "--width")):
        with pytest.raises(SystemExit):
            run(["outpaint", *argv] + common(tmp_path))
        assert f"the following arguments are required: {missing}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["outpaint", "--image", img, "--width", "40", "--place", "top"] + common(tmp_path))
    assert "invalid choice: 'top'" in capsys.readouterr().err
    args = build_parser().parse_args(["outpaint", "--image", img, "--width", "40"] + common(tmp_path))
    assert (args.place, args.height) == ("left", None)
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "outpaint")[1]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help.strip(), action.dest       # every option is explained
    with pytest.raises(CommandError, match=re.escape(f"--image {str(tmp_path / 'gone.png')!r}: no such file")):
        run(["outpaint", "--image", str(tmp_path / "gone.png"), "--width", "40"] + common(tmp_path))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CommandError, match="^--image .*bad.png': cannot read the image"):
        run(["outpaint", "--image", str(tmp_path / "bad.png"), "--width", "40"] + common(tmp_path))


def test_the_device_flag_reaches_loading_and_the_edit(tmp_path, recorded, monkeypatch):
    """--device is parsed once and handed to the weights' load and to run_edit; a GPU that this machine
    lacks is refused with the flag's message before anything is loaded."""
    import torch

    loads = []
    monkeypatch.setattr(weights_arg, "load", lambda weights, device: loads.append(device) or "G")
    for mod in (outpaint, inbetween):
        monkeypatch.setattr(mod, "run_edit", lambda args, G, canvas, targets, sources, prefix, seams, device:
                            recorded.setdefault("devices", []).append(device))
    img = photo(tmp_path / "p.png", 32, 32)
    a, b = photo(tmp_path / "a.png", 30, 36), photo(tmp_path / "b.png", 50, 30)
    jobs = [["outpaint", "--image", img, "--width", "40"], ["inbetween", "--left", a, "--right", b, "--width", "90"],
            ["inbetween", "--left", b, "--cyclic", "--width", "128"]]
    for argv in jobs:
        assert run(argv + common(tmp_path)) == 0
    assert loads == recorded["devices"] == [torch.device("cpu")] * 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in jobs:
        with pytest.raises(CommandError, match=re.escape("--device 'cuda': no CUDA GPU is available")):
            run(argv + common(tmp_path)[:-1] + ["cuda"])
    assert len(loads) == 3


def test_inbetween_names_the_flag_of_an_unreadable_photo_and_checks_both_sides(tmp_path, recorded):
    """Each photo's errors name its own flag; a photo must be at least one patch (29) tall and wide: exactly
    29 x 29 is accepted, 40 wide but 28 tall is not (and 28 wide, 40 tall, in test_inbetween_refusals)."""
    ok, edge = photo(tmp_path / "a.png", 30, 36), photo(tmp_path / "e.png", 29, 29)
    flat = photo(tmp_path / "f.png", 40, 28)
    gone, bad = str(tmp_path / "gone.png"), str(tmp_path / "bad.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    cases = [(["--left", gone, "--right", ok, "--width", "90"], f"--left {gone!r}: no such file"),
             (["--left", ok, "--right", bad, "--width", "90"], f"--right {bad!r}: cannot read the image"),
             (["--left", bad, "--cyclic", "--width", "64"], f"--left {bad!r}: cannot read the image"),
             (["--left", flat, "--right", ok, "--width", "90"],
              f"--left {flat!r}: 40x28 is smaller than the model's 29x29 patch"),
             (["--left", ok, "--right", flat, "--width", "90"],
              f"--right {flat!r}: 40x28 is smaller than the model's 29x29 patch"),
             (["--left", flat, "--cyclic", "--width", "64"],
              f"--left {flat!r}: 40x28 is smaller than the model's 29x29 patch")]
    for flags, message in cases:
        with pytest.raises(CommandError, match="^" + re.escape(message)):
            run(["inbetween", *flags] + common(tmp_path))
    assert "edit" not in recorded
    assert run(["inbetween", "--left", edge, "--right", edge, "--width", "58"] + common(tmp_path)) == 0
    assert recorded["plan"] == ("G", 29, 58, [(0, 0, 29, 29), (0, 29, 29, 29)], {})
    recorded.clear()
    assert run(["inbetween", "--left", edge, "--cyclic", "--width", "32"] + common(tmp_path)) == 0
    assert recorded["plan"] == ("G", 29, 32, [(0, 0, 29, 29)], {"cyclic": True}) and recorded["lpips"] == "alex"


def test_inbetween_centres_a_shorter_photo_at_half_the_height_difference(tmp_path, recorded):
    """(H - h) // 2 from the top: a 30-tall photo beside a 41-tall one starts at row 5."""
    a, b = photo(tmp_path / "a.png", 30, 41), photo(tmp_path / "b.png", 40, 30)
    assert run(["inbetween", "--left", b, "--right", a, "--width", "80"] + common(tmp_path)) == 0
    assert recorded["plan"] == ("G", 41, 80, [(5, 0, 30, 40), (0, 50, 41, 30)], {})


def test_inbetween_cyclic_needs_an_infinitygan_and_whole_latent_columns(tmp_path, recorded):
    """The published random model has depth 4: a ring must be a multiple of 2^4 = 16 pixels (120 is a
    multiple of 8 = 2 * 4, not of 16) and at least its 101-pixel patch; an any-resolution generator is refused."""
    a = photo(tmp_path / "a.png", 110, 110)
    base = ["inbetween", "--left", a, "--cyclic", "--out", str(tmp_path / "o"), "--device", "cpu"]
    with pytest.raises(CommandError, match="^" + re.escape("--cyclic --width 120: a cyclic canvas must be a "
                                                          "multiple of 16 pixels")):
        run(base + ["--width", "120", "--weights", "random"])
    assert run(base + ["--width", "128", "--weights", "random"]) == 0
    assert recorded["plan"] == ("G", 110, 128, [(0, 0, 110, 110)], {"cyclic": True})
    with pytest.raises(CommandError, match="an any-resolution generator, but this command needs an InfinityGAN"):
        run(base + ["--width", "128", "--weights", "random:64,channel_base=256,channel_max=8"])


def test_inbetween_options_parse_as_documented(tmp_path, capsys):
    """--left and --width are required, --right defaults to None and --cyclic to off; every option is explained."""
    a = photo(tmp_path / "a.png", 30, 36)
    for argv, missing in ((["--width", "40"], "--left"), (["--left", a], "--width")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["inbetween", *argv, "--weights", "random", "--out", "o"])
        assert f"the following arguments are required: {missing}" in capsys.readouterr().err
    args = build_parser().parse_args(["inbetween", "--left", a, "--width", "40", "--weights", "random", "--out", "o"])
    assert (args.right, args.cyclic) == (None, False)
    sub = build_parser()._subparsers._group_actions[0].choices["inbetween"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help.strip(), action.dest
