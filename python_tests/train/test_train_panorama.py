"""Phase panorama (docs/panorama.md): the cross-frame discriminator input straddles two adjacent slices,
the --tiny run trains on the CPU, resumes bitwise exactly and renders a seamless strip; bad --fov values
are one line."""
from __future__ import annotations

import json
import os

import pytest
import torch

from anyres_fast.models import Generator
from anyres_fast.train import Trainer, TrainOptions
from anyres_fast.train.anyres_recipe import AnyresRecipe, cross_frame_fakes

from helpers import micro_config, run_cli, write_images

pytestmark = pytest.mark.usefixtures("one_thread")
P = 64


def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=1)
    base.update(kw)
    return TrainOptions(**base)


@pytest.fixture(scope="module")
def lr(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("pano") / "lr"), [(96, 64), (64, 64), (80, 90), (64, 70)])


def _micro_panorama(fov=60.0):
    torch.manual_seed(0)
    G = Generator(resolution=P, z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4, mapping_width=8,
                  scale_branch=False, panorama=True, fov=fov).eval()
    return G.calibrate_magnitudes_(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))


def test_the_cross_frame_input_straddles_two_adjacent_slices():
    G = _micro_panorama()
    rate = G.synthesis.input.sampling_rate          # input columns per frame; p / rate pixels each
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    crop = torch.tensor([0, 41, 95])                # the last one runs past the end of the turn
    with torch.no_grad():
        # The two slices independently: the strip from the first slice's left pixel, 2p wide (wrapping).
        x0 = [int((c - 0.5) * P / rate) for c in crop.tolist()]
        pairs = torch.cat([G.render_panorama(z[i:i + 1], start=x0[i], progress=False, force_fp32=True)
                           for i in range(3)])[..., :2 * P]
        first = G(z, canvas=P, box=torch.tensor([[x, 0.0] for x in x0]), force_fp32=True)
        # ... and as viewing angles: the second slice is one fov (60 degrees) further round.
        angle = torch.tensor([(x + P / 2) / G.panorama_width() * 360 - 180 for x in x0])
        second = G.panorama_slice(z, angle + 60, force_fp32=True)
        assert (pairs[..., :P] - first).abs().max() < 1e-5 and (pairs[..., P:] - second).abs().max() < 1e-5
        seen = []
        for cut in (0, 1, 17, 40, 63, P):
            img = cross_frame_fakes(G, z, None, crop, torch.full((3,), cut))
            assert img.shape == (3, 3, P, P)
            want = pairs[..., cut:cut + P]          # p - cut columns of the first slice, cut of the second
            assert (img - want).abs().max() < 1e-5, cut
            seen.append(img)
        assert (seen[0] - first).abs().max() < 1e-5 and (seen[-1] - second).abs().max() < 1e-5
        assert all((a - b).abs().max() > 1e-3 for a, b in zip(seen, seen[1:]))    # the cut moves the image
        # Per-sample cuts: each sample spliced at its own point.
        mixed = cross_frame_fakes(G, z, None, crop, torch.tensor([0, 17, P]))
        for i, cut in enumerate((0, 17, P)):
            assert (mixed[i] - pairs[i, ..., cut:cut + P]).abs().max() < 1e-5


def test_the_recipe_draws_slices_and_cuts_per_sample_and_gives_d_the_splice(lr, tmp_path):
    from anyres_fast.train.trainer import Context
    rec = AnyresRecipe(micro_config(phase="panorama", lr_data=lr, fov=90.0, cache_dir=str(tmp_path / "cache")))
    ctx = Context(_opts(tmp_path / "x"), torch.device("cpu"), 0, 1)
    rec.build(ctx)
    assert rec.G.config.panorama and rec.G.config.fov == 90.0 and rec.G.scale_mapping is None
    d = rec.panorama_draws(ctx, "G", 0, 64)
    turn = rec.G.synthesis.input.turn_samples
    assert d["pano_crop"].min() >= 0 and d["pano_crop"].max() < turn and len(set(d["pano_crop"].tolist())) > 10
    assert d["pano_splice"].min() >= 0 and d["pano_splice"].max() <= P and len(set(d["pano_splice"].tolist())) > 10
    assert torch.equal(rec.panorama_draws(ctx, "G", 0, 64)["pano_crop"], d["pano_crop"])     # counter-based
    z = torch.randn(2, rec.G.z_dim)
    chunk = {"image": torch.zeros(2, 3, P, P), "c": torch.zeros(2, 0),
             "pano_crop": torch.tensor([3, 50]), "pano_splice": torch.tensor([10, 30])}
    with torch.no_grad():
        assert torch.equal(rec.fake_images(z, None, chunk),
                           cross_frame_fakes(rec.G, z, None, chunk["pano_crop"], chunk["pano_splice"]))


def _params(rec):
    out = {f"{m}.{k}": v.clone() for m, mod in rec.modules().items() for k, v in mod.state_dict().items()}
    for name, opt in rec.optimizers().items():
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt{name}.{i}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
    return out


def test_panorama_training_resumes_bitwise_exactly(lr, tmp_path):
    cfg = micro_config(phase="panorama", lr_data=lr, r1_interval=2, fov=180.0)   # two-frame strips: cheap snapshots
    straight = AnyresRecipe(cfg)
    Trainer(straight, _opts(tmp_path / "a", max_steps=4, seed=7)).run()
    Trainer(AnyresRecipe(cfg), _opts(tmp_path / "b", max_steps=2, seed=7)).run()
    resumed = AnyresRecipe(cfg)
    Trainer(resumed, _opts(tmp_path / "b", max_steps=2, seed=7, resume=True)).run()
    a, b = _params(resumed), _params(straight)
    assert a.keys() == b.keys() and len(a) > 30
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    sa = [json.loads(l) for l in open(tmp_path / "a" / "stats.jsonl")]
    sb = [json.loads(l) for l in open(tmp_path / "b" / "stats.jsonl")]
    assert len(sa) == 4 and [l["G/loss_total"] for l in sa] == [l["G/loss_total"] for l in sb]


def test_tiny_cli_run_resumes_and_renders_a_seamless_strip(lr, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--phase", "panorama", "--fov", "180", "--tiny", "--lr-data", lr, "--out", out, "--workers", "0",
            "--no-progress", "--snap", "0", "--tick", "1", "--device", "cpu"]
    rc, _, err = run_cli(base + ["--max-steps", "2"], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["train", "--out", out, "--resume", "--max-steps", "1", "--no-progress"], capsys)
    assert rc == 0, err
    stats = [json.loads(l) for l in open(os.path.join(out, "stats.jsonl"))]
    assert len(stats) == 3          # two steps, then one more after the resume
    with open(os.path.join(out, "training_options.json")) as f:
        assert json.load(f)["config"]["fov"] == 180.0
    assert sorted(os.listdir(os.path.join(out, "samples"))) == ["step00000002.png", "step00000003.png"]
    rc, text, err = run_cli(["generate", "--weights", out, "--panorama", "--seeds", "0", "--out", str(tmp_path / "img"),
                             "--device", "cpu", "--no-progress"], capsys)
    assert rc == 0, err
    from PIL import Image
    import numpy as np
    img = np.asarray(Image.open(os.path.join(tmp_path / "img", "seed0000_pano64.png"))).astype(np.float64)
    assert img.shape == (64, 128, 3)        # fov 180: two frames of 64
    assert "360 degrees" in text
    seam = np.abs(img[:, -1] - img[:, 0]).mean()
    interior = np.abs(np.diff(img, axis=1)).mean()
    assert seam < 3 * interior + 1          # a trained-for-3-steps model: no gross seam at the wrap


@pytest.mark.parametrize("argv,words", [
    (["--phase", "panorama", "--fov", "0"], "--fov 0: expected degrees per frame in (0, 360]"),
    (["--phase", "panorama", "--fov", "361"], "--fov 361: expected degrees per frame in (0, 360]"),
    (["--phase", "panorama", "--fov", "nan"], "expected degrees per frame in (0, 360]"),
    (["--phase", "fixed", "--fov", "60"], "--fov: only for --phase panorama"),
])
def test_bad_fov_is_one_clear_line(lr, tmp_path, capsys, argv, words):
    rc, _, err = run_cli(["train", "--tiny", "--lr-data", lr, "--out", str(tmp_path / "r")] + argv, capsys)
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
