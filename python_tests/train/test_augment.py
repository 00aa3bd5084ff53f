"""ADA (train/augment.py): each transform at p = 1 against an independent computation, the identity at
p = 0, the ADA heuristic with a stub D whose logits are set, augmentation on every D pass, exact
resume with ADA, and the CLI's one-line errors. The random draws are replayed in the test in the
published order (value, then the probability test) from a generator with the same seed."""
from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anyres_fast.train import Trainer, TrainOptions
from anyres_fast.train.anyres_recipe import AnyresRecipe
from anyres_fast.train.augment import PIPES, AdaController, AugmentPipe

from helpers import micro_config, run_cli, write_images

pytestmark = pytest.mark.usefixtures("one_thread")

B, S = 6, 24


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


def _images(seed=0, ch=3):
    return torch.rand(B, ch, S, S, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def _smooth(n=B):
    """Band-limited test images (a few low-frequency cosines per channel) and the function they sample,
    f(x, y) with x, y in pixels centred on the image."""
    rng = np.random.default_rng(0)
    k = torch.as_tensor(rng.uniform(-1.5, 1.5, (n, 3, 3, 2)))       # cycles per image, 3 terms per channel
    ph = torch.as_tensor(rng.uniform(0, 2 * math.pi, (n, 3, 3)))

    def f(x, y):   # x, y: (n, H, W) -> (n, 3, H, W)
        arg = (k[..., 0, None, None] * x[:, None, None] + k[..., 1, None, None] * y[:, None, None]) * 2 * math.pi / S
        return 0.3 * torch.cos(arg + ph[..., None, None]).sum(dim=2)

    c = (S - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(S, dtype=torch.float64) - c, torch.arange(S, dtype=torch.float64) - c,
                            indexing="ij")
    return f(xx.expand(n, S, S), yy.expand(n, S, S)), f, xx, yy


def _run(name, x, p=1.0, seed=3):
    return AugmentPipe(**{name: 1.0})(x, p, generator=_gen(seed))


# -- pixel blitting ---------------------------------------------------------------------------------------
# The published pipeline executes flips and 90-degree rotations through its resampling too: upsample
# with the sym6 filter h, permute the upsampled pixels, downsample with h reversed. sym6 is not
# symmetric, so along a reversed axis the result is the permuted image filtered with the even phase of
# reverse(h) * reverse(h) (instead of h * reverse(h), whose even phase is a unit impulse): close to
# torch.flip / torch.rot90 for smooth images (a ~0.1 pixel shift), exactly this filter in the interior.
def _residual(x, dim):
    """x filtered along `dim` with the even phase of reverse(sym6) * reverse(sym6) (interior exact)."""
    from anyres_fast.train.augment import SYM6
    h = np.asarray(SYM6)[::-1]
    taps = np.convolve(h, h)[0::2]
    return sum(float(t) * torch.roll(x, k - 6, dims=dim) for k, t in enumerate(taps))


INTERIOR = (Ellipsis, slice(8, -8), slice(8, -8))


def test_xflip_is_torch_flip():
    x = _images()
    g = _gen()
    i = torch.floor(torch.rand(B, generator=g, dtype=torch.float64) * 2)
    flipped = i[:, None, None, None] == 1
    got = _run("xflip", x)
    assert 0 < i.sum() < B
    assert (got - x)[~flipped.expand_as(x)].abs().max() < 1e-10            # not drawn: unchanged
    want = torch.where(flipped, _residual(torch.flip(x, [3]), 3), x)
    assert (got - want)[INTERIOR].abs().max() < 1e-10
    smooth = _smooth()[0]
    want = torch.where(flipped, torch.flip(smooth, [3]), smooth)
    assert (_run("xflip", smooth) - want).abs().max() < 0.05                  # the ~0.1 pixel shift


def test_rotate90_is_torch_rot90():
    x = _images()
    g = _gen()
    k = torch.floor(torch.rand(B, generator=g, dtype=torch.float64) * 4).long()
    got = _run("rotate90", x)
    assert len(set(k.tolist())) > 2
    smooth = _smooth()[0]
    got_smooth = _run("rotate90", smooth)
    for n in range(B):
        want = torch.rot90(x[n], int(k[n]), dims=(1, 2))
        # the reversed axes: k=1 the rows, k=2 both, k=3 the columns
        for dim in {0: (), 1: (1,), 2: (1, 2), 3: (2,)}[int(k[n])]:
            want = _residual(want, dim)
        assert (got[n] - want)[INTERIOR].abs().max() < 1e-10, int(k[n])
        assert (got_smooth[n] - torch.rot90(smooth[n], int(k[n]), dims=(1, 2))).abs().max() < 0.06


def test_integer_translation_is_a_shift_of_the_reflect_padded_image():
    x = _images()
    g = _gen()
    t = (torch.rand(B, 2, generator=g, dtype=torch.float64) * 2 - 1) * 0.125
    tx, ty = torch.round(t[:, 0] * S).long(), torch.round(t[:, 1] * S).long()
    m = S - 1
    padded = F.pad(x, [m, m, m, m], mode="reflect")      # the published padding mode
    want = torch.stack([padded[n, :, m - ty[n]: m - ty[n] + S, m - tx[n]: m - tx[n] + S] for n in range(B)])
    got = _run("xint", x)
    assert (tx != 0).any() and (ty != 0).any()
    assert (got - want).abs().max() < 1e-10


# -- general geometric transforms on a band-limited image: the sampled function, mapped ----------------
def _geometric_case(name, g):
    """The inverse map (output pixel -> input pixel, centred coordinates) the draws of `name` give."""
    eye = torch.eye(2, dtype=torch.float64).expand(B, 2, 2)
    rand = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    shift = torch.zeros(B, 2, dtype=torch.float64)
    if name == "scale":
        s = torch.exp2(randn(B) * 0.2)
        rand(B)
        A = eye / s[:, None, None]
    elif name == "aniso":
        s = torch.exp2(randn(B) * 0.2)
        rand(B)
        A = torch.diag_embed(torch.stack([1 / s, s], 1))
    elif name == "rotate":            # p_rot = 1 at p = 1: two rotations, before and after aniso (off)
        th = (rand(B) * 2 - 1) * math.pi
        rand(B)
        th = th + (rand(B) * 2 - 1) * math.pi
        c, sn = torch.cos(th), torch.sin(th)
        A = torch.stack([torch.stack([c, -sn], 1), torch.stack([sn, c], 1)], 1)
    else:                             # xfrac
        t = randn(B, 2) * 0.125
        A, shift = eye, -t * S
    return A, shift


@pytest.mark.parametrize("name", ["scale", "aniso", "rotate", "xfrac"])
def test_geometric_transform_samples_the_mapped_function(name):
    x, f, xx, yy = _smooth()
    A, shift = _geometric_case(name, _gen())
    src = torch.einsum("nij,jhw->nihw", A, torch.stack([xx, yy])) + shift[:, :, None, None]
    want = f(src[:, 0], src[:, 1])
    got = _run(name, x)
    # pixels whose source lies well inside the image (outside it the pipeline sees reflections)
    inside = (src.abs() < (S - 1) / 2 - 4).all(dim=1)[:, None].expand_as(got)
    assert inside.sum() > B * 3 * 40
    err = (got - want)[inside].abs().max()
    assert err < 0.05, err          # bilinear resampling of a band-limited image (values up to ~0.9)
    assert (x - want)[inside].abs().max() > 0.1    # and the transform did move something


# -- colour ---------------------------------------------------------------------------------------------
def _colour_case(name, x, g):
    rand = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    mean = x.mean(dim=1, keepdim=True)
    if name == "brightness":
        b = randn(B) * 0.2
        return x + b[:, None, None, None]
    if name == "contrast":
        c = torch.exp2(randn(B) * 0.5)
        return x * c[:, None, None, None]
    if name == "lumaflip":
        i = torch.floor(rand(B, 1, 1) * 2)
        return x - 2 * i[..., None] * mean
    if name == "saturation":
        s = torch.exp2(randn(B, 1, 1))
        return mean + s[..., None] * (x - mean)
    th = (rand(B) * 2 - 1) * math.pi          # hue: Rodrigues rotation about the grey axis
    v = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
    px = x.permute(0, 2, 3, 1)
    c, s = torch.cos(th)[:, None, None, None], torch.sin(th)[:, None, None, None]
    rot = px * c + torch.cross(v.expand_as(px), px, dim=-1) * s + v * (px @ v)[..., None] * (1 - c)
    return rot.permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", ["brightness", "contrast", "lumaflip", "hue", "saturation"])
def test_colour_transform_matches_its_formula(name):
    x = _images()
    want = _colour_case(name, x, _gen())
    got = _run(name, x)
    assert (got - want).abs().max() < 1e-10
    assert (got - x).abs().max() > 0.05


def test_grey_images_take_the_mean_of_the_colour_rows():
    x = _images(ch=1)
    b = torch.randn(B, generator=_gen(), dtype=torch.float64) * 0.2
    assert (_run("brightness", x) - (x + b[:, None, None, None])).abs().max() < 1e-10
    assert torch.equal(_run("hue", x), x)          # no hue or saturation on one channel


# -- p = 0, the pipeline's contract ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_p0_is_the_identity_and_draws_the_same_numbers(dtype):
    x = _images().to(dtype)
    pipe = AugmentPipe.preset("bgc")
    g0, g1 = _gen(), _gen()
    assert torch.equal(pipe(x, 0.0, generator=g0), x)
    out = pipe(x, 0.5, generator=g1)
    assert not torch.equal(out, x) and out.dtype == dtype
    assert torch.equal(g0.get_state(), g1.get_state())   # p does not change which numbers are drawn


def test_global_rng_and_a_generator_give_the_same_result():
    x = _images()
    torch.manual_seed(3)
    a = AugmentPipe.preset("bgc")(x, 0.7)
    b = AugmentPipe.preset("bgc")(x, 0.7, generator=_gen(3))
    assert torch.equal(a, b)


def test_bgc_enables_the_published_transforms_and_r1_differentiates_through_it():
    assert set(PIPES["bgc"]) == {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                                 "contrast", "lumaflip", "hue", "saturation"}
    with pytest.raises(ValueError, match="only bgc"):
        AugmentPipe.preset("bgcfnc")
    x = _images().requires_grad_(True)
    y = AugmentPipe.preset("bgc")(x, 1.0, generator=_gen())
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    g.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- the ADA heuristic ------------------------------------------------------------------------------------
def test_controller_moves_p_by_the_published_step_every_interval():
    ctx = types.SimpleNamespace(world=1, batch=8, device=torch.device("cpu"))
    ada = AdaController(target=0.6, interval=4, kimg=1.0)
    step = np.float32(8 * 4 / 1000)
    ps = []
    for s in range(16):
        ada.observe(torch.full((8, 1), 2.0 if s < 8 else -0.5))
        ada.end_step(ctx, s)
        ps.append(ada.p)
    want = [0, 0, 0, step] + [step] * 3 + [2 * step] + [2 * step] * 3 + [step] + [step] * 3 + [0]
    assert ps == [float(np.float32(v)) for v in want]
    fixed = AdaController(target=None, p=0.25)
    fixed.observe(torch.ones(4, 1))
    fixed.end_step(ctx, 3)
    assert fixed.p == 0.25


class _StubD(torch.nn.Module):
    """D's stand-in: logits +1 (D tells reals apart: overfitting) or -1, differentiable in the image."""

    def __init__(self, D):
        super().__init__()
        self.D, self.sign = D, 1.0

    def forward(self, img, c=None, **kw):
        anchor = next(self.D.parameters()).sum()    # a graph through D's parameters for the D phases
        return self.sign + 0 * img.mean(dim=[1, 2, 3])[:, None] * anchor


class _StubRecipe(AnyresRecipe):
    def build(self, ctx):
        super().build(ctx)
        self.D = _StubD(self.D)
        self.calls = []
        pipe = self.augment_pipe

        def counting(img, p, generator=None):
            self.calls.append(p)
            return pipe(img, p, generator=generator)
        self.augment_pipe = counting

    def train_step(self, ctx, step):
        self.D.sign = 1.0 if step < 4 else -1.0
        return super().train_step(ctx, step)


def test_p_rises_while_D_overfits_and_falls_back_after(tmp_path):
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4)
    cfg = micro_config(phase="fixed", lr_data=lr, cache_dir=str(tmp_path / "cache"), aug="ada", ada_kimg=0.1,
                       ada_interval=2, r1_interval=2)
    rec = _StubRecipe(cfg)
    Trainer(rec, TrainOptions(out=str(tmp_path / "run"), batch=4, kimg=1, workers=0, snap=0, tick=1,
                              progress=False, max_steps=8, device="cpu")).run()
    p = [json.loads(line)["Progress/augment"] for line in open(tmp_path / "run" / "stats.jsonl")]
    step = float(np.float32(4 * 2 / 100))          # batch * interval / (ada_kimg * 1000)
    want = [0.0] * 2 + [step] * 2 + [2 * step] * 2 + [step] * 2
    assert p == pytest.approx(want, abs=1e-6)
    assert rec.ada.p == 0.0
    # every image D saw went through the pipeline: G, D fake, D real, and R1 on even steps
    assert len(rec.calls) == 8 * 3 + 4


# -- exact resume ---------------------------------------------------------------------------------------
def test_resume_with_ada_is_bitwise_exact(tmp_path):
    lr = write_images(str(tmp_path / "lr"), [(64, 64), (80, 64), (64, 72)])
    # p starts at 0.3 (augmenting from step 0) and moves after step 3 (index 2): the interruption after
    # two steps falls inside an interval, so the sign accumulators must travel in the checkpoint too.
    cfg = micro_config(phase="fixed", lr_data=lr, cache_dir=str(tmp_path / "cache"), aug="ada", aug_p=0.3,
                       ada_interval=3, ada_kimg=0.1, r1_interval=2)
    opts = dict(batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=5, device="cpu")
    straight = AnyresRecipe(cfg)
    Trainer(straight, TrainOptions(out=str(tmp_path / "a"), max_steps=4, **opts)).run()
    Trainer(AnyresRecipe(cfg), TrainOptions(out=str(tmp_path / "b"), max_steps=2, **opts)).run()
    resumed = AnyresRecipe(cfg)
    Trainer(resumed, TrainOptions(out=str(tmp_path / "b"), max_steps=2, resume=True, **opts)).run()
    assert straight.ada.state_dict() == resumed.ada.state_dict()
    assert straight.ada.p != 0.3
    for name, m in straight.modules().items():
        other = resumed.modules()[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in m.state_dict().items()), name
    sa = [json.loads(line) for line in open(tmp_path / "a" / "stats.jsonl")]
    sb = [json.loads(line) for line in open(tmp_path / "b" / "stats.jsonl")]
    for key in ("Progress/augment", "D/loss", "G/loss_total"):
        assert [s[key] for s in sa] == [s[key] for s in sb]


# -- the CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (["--aug", "ada", "--augpipe", "bgcfnc"], "--augpipe bgcfnc: only bgc"),
    (["--aug", "ada", "--target", "1.5"], "--target 1.5: expected a number in [0, 1]"),
    (["--aug", "fixed", "--target", "0.5"], "--target: only with --aug ada"),
    (["--p", "0.3"], "--p: only with --aug fixed or --aug ada"),
    (["--aug", "fixed", "--p", "-1"], "--p -1: expected a number in [0, 1]"),
    (["--aug", "sometimes"], "invalid choice"),
])
def test_bad_augmentation_flags_are_one_line(tmp_path, capsys, extra, message):
    lr = write_images(str(tmp_path / "lr"), [(64, 64)])
    rc, out, err = run_cli(["train", "--phase", "fixed", "--lr-data", lr, "--out", str(tmp_path / "run"),
                            "--tiny"] + extra, capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_infinity_refuses_augmentation(tmp_path, capsys):
    data = write_images(str(tmp_path / "d"), [(64, 64)])
    rc, _, err = run_cli(["train", "--model", "infinity", "--data", data, "--out", str(tmp_path / "run"), "--tiny",
                          "--aug", "ada"], capsys)
    assert rc == 2 and "InfinityGAN" in err and len(err.strip().splitlines()) == 1


def test_augmentation_flags_reach_the_config_and_the_run_record(tmp_path):
    import argparse
    from anyres_fast.cli import train as train_cmd
    lr = write_images(str(tmp_path / "lr"), [(64, 64)])
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    base = ["--phase", "fixed", "--lr-data", lr, "--out", str(tmp_path / "run"), "--tiny"]
    cfg, _ = train_cmd.anyres_options(parser.parse_args(base))
    assert (cfg.aug, cfg.augpipe, cfg.aug_target, cfg.aug_p) == ("noaug", "bgc", 0.6, None)
    cfg, _ = train_cmd.anyres_options(parser.parse_args(base + ["--aug", "ada", "--target", "0.7", "--p", "0.1"]))
    assert (cfg.aug, cfg.aug_target, cfg.aug_p) == ("ada", 0.7, 0.1)
    rec = AnyresRecipe(cfg)
    assert {"aug": "ada", "augpipe": "bgc", "aug_target": 0.7, "aug_p": 0.1}.items() <= rec.config().items()
    # what training_options.json records is what --resume rebuilds
    from anyres_fast.train.checkpoint import save_checkpoint
    run = tmp_path / "run"
    save_checkpoint(str(run), 1, {"step": 1})
    (run / "training_options.json").write_text(json.dumps({"config": rec.config(), "options": {"out": str(run)}}))
    fields = ("aug", "augpipe", "aug_target", "aug_p", "ada_interval", "ada_kimg")
    got, _ = train_cmd.resumed_options(parser.parse_args(["--out", str(run), "--resume"]), type(cfg))
    assert [getattr(got, f) for f in fields] == [getattr(cfg, f) for f in fields]
    same, _ = train_cmd.resumed_options(parser.parse_args(["--out", str(run), "--resume", "--aug", "ada"]), type(cfg))
    assert [getattr(same, f) for f in fields] == [getattr(cfg, f) for f in fields]
    with pytest.raises(train_cmd.CommandError, match=r"--aug fixed \(the run has aug = ada\)"):
        train_cmd.resumed_options(parser.parse_args(["--out", str(run), "--resume", "--aug", "fixed"]), type(cfg))
