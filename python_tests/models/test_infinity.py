"""InfinityGenerator: published schedule and sizes, seamless tiled generation, exact spatial independence,
spatial style fusion, the seeded canvas, weights round trip and input validation (CPU, narrow models)."""
from __future__ import annotations

import math

import pytest
import torch

from anyres_fast import InfinityGenerator
from anyres_fast.models import infinity_canvas as canvas
from anyres_fast.models.infinity import InfinityConfig, patch_size_for
from helpers import small_infinity as small

PUBLISHED_101 = [11, 19, 17, 31, 29, 55, 53, 103, 101]


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: tiny ops run faster on one thread


def one_pass(G, z_g, seed, top, left, height, width):
    """The same window from ONE forward pass over a z_S block covering every patch of the plan."""
    plan = canvas.plan_window(top, left, height, width, zs=G.ts_input, patch=G.patch_size, scale=2 ** G.depth)
    zh = plan.rows[-1] - plan.rows[0] + G.ts_input
    zw = plan.cols[-1] - plan.cols[0] + G.ts_input
    z_l, coords, noises = G.canvas_inputs(seed, plan.rows[0], plan.cols[0], zh, zw)
    with torch.no_grad():
        big = G(z_g, z_l, coords, noises)
    y0, x0 = 2 ** G.depth * plan.rows[0], 2 ** G.depth * plan.cols[0]
    return big[:, :, top - y0: top - y0 + height, left - x0: left - x0 + width], plan


# ----------------------------------------------------------------------------------------------------
# Schedule

def test_published_layer_schedule_and_parameter_counts():
    from anyres_fast.models.infinity import texture_layers
    for depth, p in ((4, 101), (5, 197), (6, 389)):
        assert patch_size_for(depth) == p
        cfg = InfinityConfig(patch_size=p)
        sizes = [11]
        for s in texture_layers(cfg):                     # the layers TextureSynthesizer builds
            sizes.append(2 * sizes[-1] - 3 if s.up else sizes[-1] - 2)
        assert sizes[:9] == PUBLISHED_101                       # the published 101 chain is a prefix
        assert sizes[-1] == p and len(sizes) == 2 * depth + 1
        assert sizes[9:] == {101: [], 197: [199, 197], 389: [199, 197, 391, 389]}[p]
        assert cfg.zl_size == 35 and cfg.depth == depth
    G = InfinityGenerator()            # the full model on the CPU: shapes and counts only, no big forward
    assert G.layer_sizes() == PUBLISHED_101 and G.num_ws == 9
    for n in range(5, 60):
        assert G.output_size(n) == 16 * n - 75
    assert G.noise_shapes(35) == [(s, s) for s in PUBLISHED_101[1:]]
    m = G.module_params()
    print("\n" + G.schedule_table())
    # Published: 36.36M total = G_S 13.53M + G_T 22.83M, of which the unused 4x4x256 const input is 4,096.
    assert m["G_S"] == 13_528_076 and round(m["G_S"] / 1e6, 2) == 13.53
    assert m["G_T"] == 22_826_772 and round(m["G_T"] / 1e6, 2) == 22.83
    assert m["total"] + 4096 == 36_358_944 and round((m["total"] + 4096) / 1e6, 2) == 36.36
    table = G.schedule_table()
    assert "G_T.conv7" in table and "103   101" in table and "36,354,848" in table


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="patch_size 100"):
        InfinityGenerator(patch_size=100)
    with pytest.raises(ValueError, match="local_dim"):
        InfinityGenerator(local_dim=0)
    with pytest.raises(TypeError, match="either"):
        InfinityGenerator(InfinityConfig(), z_dim=4)


# ----------------------------------------------------------------------------------------------------
# Seamless generation

def test_grid_of_independent_patches_equals_one_pass():
    G = small()
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
    stride = 2 ** G.depth * (G.ts_input - 5)
    h, w = G.patch_size + 2 * stride, G.patch_size + 3 * stride            # exactly a 3 x 4 grid
    img = G.render(z, h, w, seed=5, progress=False)
    ref, plan = one_pass(G, z, 5, 0, 0, h, w)
    assert (len(plan.rows), len(plan.cols)) == (3, 4)
    assert img.shape == (1, 3, h, w) and img.std() > 0.05
    assert (img - ref).abs().max().item() <= 1e-5


def test_non_multiple_sizes_offset_windows_and_patch_batch():
    G = small()
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(2))
    img = G.render(z, 50, 61, top=-13, left=7, patch_batch=1, seed=9, progress=False)
    ref, _ = one_pass(G, z, 9, -13, 7, 50, 61)
    assert (img - ref).abs().max().item() <= 1e-5
    batched = G.render(z, 50, 61, top=-13, left=7, patch_batch=7, seed=9, progress=False)
    # Same pixels up to float32 rounding (the CPU convolution may block a batch of 7 differently).
    assert (batched - img).abs().max().item() <= 1e-5
    # A window at an arbitrary offset equals the same window cut from a larger canvas of the seed.
    big = G.render(z, 97, 110, top=-40, left=-21, patch_batch=7, seed=9, progress=False)
    assert (big[:, :, 27:77, 28:89] - img).abs().max().item() <= 1e-5
    tiny = G.render(z, 1, 1, top=3, left=-5, seed=9, progress=False)      # any size >= 1
    assert (tiny[0, :, 0, 0] - big[0, :, 43, 16]).abs().max().item() <= 1e-5
    other = G.render(z, 50, 61, top=-13, left=7, seed=10, progress=False)
    assert (other - img).abs().max() > 0.05                                  # the seed matters


def _field_from_schedule(G, y: int) -> tuple:
    """Inclusive z_l range (patch indices, one axis) that output pixel y depends on, walking the schedule
    backwards: valid 3x3 conv [a, b] <- [a, b + 2]; up-conv = valid 3-tap blur of the cropped (1 px)
    stride-2 transposed 3x3 conv, whose input i reaches uncropped outputs 2i .. 2i + 2; G_S widens by 2R."""
    a = b = y
    for spec in reversed(G.texture_synthesizer.specs):
        if spec.up:
            a, b = a + 1, b + 2 + 1                      # blur window, then uncropped index
            a, b = math.ceil((a - 2) / 2), b // 2
        else:
            b += 2
    return a, b + 2 * G.ss_margin


def test_spatial_independence_is_exact():
    G = small()
    g = torch.Generator().manual_seed(3)
    z_g = torch.randn(1, 8, generator=g)
    z_l = torch.randn(1, 4, 15, 15, generator=g)
    coords = G.coords(15, 15, -3, 4)
    noises = G.make_noises(1, 15, generator=g)
    with torch.no_grad():
        base = G(z_g, z_l, coords, noises)
    H = base.shape[2]
    for y in (0, H // 2, H - 1, 13):
        lo, hi = _field_from_schedule(G, y)
        assert 0 <= lo <= hi < 15
        for row, inside in ((lo - 1, False), (lo, True), (hi, True), (hi + 1, False)):
            if not 0 <= row < 15:
                continue
            for axis in (2, 3):
                zz = z_l.clone()
                zz.select(axis, row).add_(3.0)
                with torch.no_grad():
                    out = G(z_g, zz, coords, noises)
                px = out[0, :, y, :] if axis == 2 else out[0, :, :, y]
                ref = base[0, :, y, :] if axis == 2 else base[0, :, :, y]
                if inside:
                    assert not torch.equal(px, ref), (y, row, axis)       # the edge of the field matters
                else:
                    assert torch.equal(px, ref), (y, row, axis)    # bit-identical outside the field
    # The model's own field (canvas indices) agrees with the schedule walk.
    lo, hi = _field_from_schedule(G, 0)
    assert G.zl_field(0) == (lo - G.ss_margin, hi - G.ss_margin)


# ----------------------------------------------------------------------------------------------------
# Spatial style fusion

@pytest.mark.parametrize("demod", ["exact", "pointwise"])
def test_fusion_with_one_shared_latent_equals_plain(demod):
    G = small()
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(4))
    plain = G.render(z, 40, 56, top=-8, left=2, seed=1, progress=False)
    fused = G.render(z.repeat(3, 1), 40, 56, top=-8, left=2, seed=1, progress=False, patch_batch=4,
                       style_centres=[(5, 0), (40, 20), (20, 10)], fusion_kernel=7, fusion_demod=demod)
    assert (fused - plain).abs().max().item() <= 1e-5


def test_fusion_far_from_the_boundary_equals_each_latent():
    G = small()
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    width, k = 240, 9
    fused = G.render(z, 30, width, seed=2, progress=False, style_centres=[(20, 15), (220, 15)],
                       fusion_kernel=k, patch_batch=8)
    lo, hi = _field_from_schedule(G, 0)
    # Field in pixels: z_l samples are 2^D pixels apart; plus the mean filter's half width.
    margin = (hi - lo + 2) * 2 ** G.depth + k // 2
    boundary = width // 2
    for i, cols in ((0, slice(0, boundary - margin)), (1, slice(boundary + margin, width))):
        assert cols.stop - cols.start >= 20
        plain = G.render(z[i:i + 1], 30, width, seed=2, progress=False, patch_batch=8)
        assert (fused[..., cols] - plain[..., cols]).abs().max().item() <= 1e-5
    near = slice(boundary - 10, boundary + 10)
    for i in range(2):
        plain = G.render(z[i:i + 1], 30, width, seed=2, progress=False, patch_batch=8)
        assert (fused[..., near] - plain[..., near]).abs().max() > 1e-3       # the styles do blend there
    pointwise = G.render(z, 30, width, seed=2, progress=False, style_centres=[(20, 15), (220, 15)],
                           fusion_kernel=k, patch_batch=8, fusion_demod="pointwise")
    assert (pointwise - fused)[..., near].abs().max() > 1e-6          # the published approximation differs
    assert (pointwise - fused)[..., :boundary - margin].abs().max() <= 1e-5


def test_fusion_weights_are_a_smoothed_partition():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    ys = torch.arange(-3, 4)
    xs = torch.arange(0, 11)
    (m,) = canvas.fusion_weights(centres, 5, [(ys, xs)], "cpu")
    assert m.shape == (2, 7, 11)
    assert torch.allclose(m.sum(0), torch.ones(7, 11))
    assert torch.equal(m[0, :, :3], torch.ones(7, 3))            # window entirely left of x = 5
    # x = 5 is equidistant (ties go to centre 0): window x in [3, 7] -> 3 of 5 columns for centre 0.
    assert torch.allclose(m[0, :, 5], torch.full((7,), 3 / 5))


# ----------------------------------------------------------------------------------------------------
# The seeded canvas

def test_canvas_values_do_not_depend_on_the_slice():
    rows = torch.arange(-20, 30)[None]
    cols = torch.arange(100, 160)[None]
    a = canvas.canvas_normal(7, 0, 3, rows, cols)
    b = canvas.canvas_normal(7, 0, 3, rows[:, 10:20], cols[:, 5:9])
    assert torch.equal(a[:, :, 10:20, 5:9], b)
    assert not torch.equal(a, canvas.canvas_normal(8, 0, 3, rows, cols))
    assert not torch.equal(a, canvas.canvas_normal(7, 1, 3, rows, cols))
    big = canvas.canvas_normal(0, 0, 4, torch.arange(200)[None], torch.arange(200)[None])
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
    # Neighbouring values are uncorrelated.
    assert abs((big[..., 1:] * big[..., :-1]).mean().item()) < 0.02


def test_coordinates_follow_the_published_steps():
    G = InfinityGenerator.__new__(InfinityGenerator)
    cfg = InfinityConfig()
    assert math.isclose(cfg.vert_step, 0.3) and cfg.hori_period == 140
    from anyres_fast.models.infinity import coordinate_grid
    c = coordinate_grid(cfg, torch.arange(4.0), torch.arange(3.0))
    v = torch.atanh(c[0, 0, :, 0].double())
    assert torch.allclose(v[1:] - v[:-1], torch.full((3,), 0.3, dtype=torch.float64), atol=1e-5)
    ang = torch.atan2(c[0, 2, 0], c[0, 1, 0]).double()
    step = torch.remainder(ang[1:] - ang[:-1], 2 * math.pi)
    assert torch.allclose(step, torch.full((2,), 2 * math.pi / 139, dtype=torch.float64), atol=1e-5)
    del G


# ----------------------------------------------------------------------------------------------------
# Explicit-input interface, weights, errors

def test_explicit_interface_and_weights_round_trip(tmp_path):
    G = small()
    g = torch.Generator().manual_seed(6)
    z_g, z_l = torch.randn(2, 8, generator=g), torch.randn(2, 4, 11, 13, generator=g)
    coords, labels = G.training_coords(2, generator=g)
    assert coords.shape == (2, 3, G.config.zl_size, G.config.zl_size) and labels.abs().max() <= 1
    coords = G.coords(11, 13, -2, 3, batch=2)
    noises = G.make_noises(2, (11, 13), generator=g)
    with torch.no_grad():
        img, z_s = G(z_g, z_l, coords, noises, return_structure=True)
        ws = G.styles(z_g)
        assert torch.equal(G.synthesis(z_g, z_l, ws, coords, noises), img)
        assert torch.equal(G.texture(z_s, ws, noises), img)
        assert torch.equal(G.structure(z_g, z_l, coords), z_s)
        mixed = G.styles(torch.stack([z_g, z_g.flip(0)], 1), inject_index=3)
        assert torch.equal(mixed[:, :3], ws[:, :3]) and torch.equal(mixed[:, 3:], ws.flip(0)[:, 3:])
    assert z_s.shape == (2, 4, 7, 9) and img.shape == (2, 3, G.output_size(7), G.output_size(9))
    G.save_pretrained(str(tmp_path / "m"))
    H = InfinityGenerator.from_pretrained(str(tmp_path / "m")).eval()
    with torch.no_grad():
        assert torch.equal(H(z_g, z_l, coords, noises), img)
    with pytest.raises(ValueError, match="noises\\[0\\]"):
        G(z_g, z_l, coords, [n[..., :-1] for n in noises])


def test_bad_generate_inputs_get_clear_errors():
    G = small()
    z = torch.randn(1, 8)
    with pytest.raises(ValueError, match="height must be an int >= 1"):
        G.render(z, 0, 10, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        G.render(torch.full((1, 8), float("nan")), 10, 10, progress=False)
    with pytest.raises(ValueError, match=r"z_g must have shape \(B, 8\)"):
        G.render(torch.randn(1, 7), 10, 10, progress=False)
    with pytest.raises(ValueError, match="give style_centres"):
        G.render(torch.randn(2, 8), 10, 10, progress=False)
    with pytest.raises(ValueError, match="outside the canvas window"):
        G.render(torch.randn(2, 8), 10, 10, style_centres=[(0, 0), (10, 3)], progress=False)
    with pytest.raises(ValueError, match="odd"):
        G.render(torch.randn(2, 8), 10, 10, style_centres=[(0, 0), (9, 3)], fusion_kernel=4, progress=False)
    with pytest.raises(ValueError, match="patch_batch"):
        G.render(z, 10, 10, patch_batch=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        G.render(z, 10, 10, seed=-1, progress=False)


# ----------------------------------------------------------------------------------------------------
# CLI

SMALL_SPEC = ("random:patch_size=21,ts_input=7,z_dim=8,local_dim=4,ss_layers=2,ss_radius=1,mapping_layers=2,"
              "channel_base=16,channel_max=4,seed=3")


def test_cli_generate_infinity_writes_pngs_and_rejects_bad_input(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    from anyres_fast import cli

    out = tmp_path / "o"
    base = ["generate", "--model", "infinity", "--weights", SMALL_SPEC, "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert cli.main(base + ["--seeds", "0-1", "--height", "30", "--width", "45", "--patch-batch", "3"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["seed0000_45x30.png", "seed0001_45x30.png"]
    a = np.asarray(Image.open(out / files[0]))
    assert a.shape == (30, 45, 3) and a.dtype == np.uint8
    assert cli.main(base + ["--seeds", "2", "--height", "30", "--width", "60", "--fuse", "5,9",
                            "--centres", "5,10;50,10", "--fusion-kernel", "7"]) == 0
    assert (out / "seed0002_60x30_fused.png").is_file()
    capsys.readouterr()
    def call(argv):
        try:
            return cli.main(argv)
        except SystemExit as exc:           # argparse's own type errors
            return exc.code

    for extra, msg in (([], "--height and --width"),
                       (["--height", "0", "--width", "4"], "--height"),
                       (["--height", "8", "--width", "8", "--fuse", "1,2", "--centres", "1,1"], "2 seeds"),
                       (["--height", "8", "--width", "8", "--fuse", "1", "--centres", "9,1"], "outside"),
                       (["--height", "8", "--width", "8", "--fuse", "1", "--centres", "1,1", "--fusion-kernel", "4"],
                        "odd"),
                       (["--height", "8", "--width", "8", "--size", "64"], "--size")):
        code = call(base + ["--seeds", "0"] + extra)
        err = capsys.readouterr().err
        assert code == 2 and msg in err and "Traceback" not in err, (extra, err)
    code = cli.main(["generate", "--model", "infinity", "--weights", str(tmp_path / "nope"), "--height", "8",
                     "--width", "8", "--out", str(out), "--device", "cpu"])
    assert code == 2 and "no such file or folder" in capsys.readouterr().err
