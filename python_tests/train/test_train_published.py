"""Training details that follow the published recipes: optimiser steps only for parameters with a
gradient, config R's blur schedule, conditional fake labels (docs/training.md)."""
import pytest
import torch

from anyres_fast.train import Trainer, TrainOptions
from anyres_fast.train.anyres_recipe import AnyresRecipe
from anyres_fast.train.trainer import Context

from helpers import micro_config, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=1)
    base.update(kw)
    return TrainOptions(**base)


def test_step_optimizer_leaves_parameters_without_a_gradient_untouched(tmp_path):
    ctx = Context(_opts(tmp_path), torch.device("cpu"), 0, 1)
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.full((2,), 5.0))
    opt = torch.optim.Adam([used, unused], lr=0.1, betas=(0.0, 0.99))
    for _ in range(3):
        (used * 2).sum().backward()
        ctx.step_optimizer("phase", opt, [used, unused])
    assert torch.equal(unused.detach(), torch.full((2,), 5.0))
    assert unused not in opt.state or not opt.state[unused]                 # no Adam state at all
    assert int(opt.state[used]["step"]) == 3 and (used < 1).all()
    assert used.grad is None


def test_r1_pass_does_not_step_the_output_bias(tmp_path):
    """D's output bias gets no gradient from R1 (a gradient w.r.t. the input does not depend on it):
    after one step with R1 its Adam step count is 1 (D main pass only), every other D weight's is 2."""
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4)
    rec = AnyresRecipe(micro_config(phase="fixed", lr_data=lr, cache_dir=str(tmp_path / "cache")))
    Trainer(rec, _opts(tmp_path / "run", max_steps=1)).run()
    steps = {n: int(rec.opt_D.state[p]["step"]) for n, p in rec.D.named_parameters()}
    assert steps.pop("b4.out.bias") == 1
    assert set(steps.values()) == {2}


def test_config_r_blur_follows_the_published_schedule(tmp_path):
    """stylegan3-r (NVlabs train.py/loss.py): sigma = max(1 - nimg / (fade_kimg * 1e3), 0) * 10 with
    fade_kimg = batch * 200 / 32, evaluated at the images seen before the step; T has no blur."""
    from anyres_fast.train import losses
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4)
    batch = 8
    rec_r = AnyresRecipe(micro_config(phase="fixed", lr_data=lr, config="R"))
    rec_r.build(Context(_opts(tmp_path / "r", batch=batch), torch.device("cpu"), 0, 1))
    rec_t = AnyresRecipe(micro_config(phase="fixed", lr_data=lr))
    rec_t.build(Context(_opts(tmp_path / "t", batch=batch), torch.device("cpu"), 0, 1))
    fade_kimg = batch * 200 / 32
    for kimg in [0, 0.008, 1, 10, 24.992, 25, 30, 1000]:
        nimg = kimg * 1000
        published = max(1 - nimg / (fade_kimg * 1e3), 0) * 10
        ours = losses.blur_sigma_at(nimg, rec_r.blur_init_sigma, rec_r.blur_fade_kimg)
        assert abs(ours - published) <= 1e-12, (kimg, ours, published)
        assert losses.blur_sigma_at(nimg, rec_t.blur_init_sigma, rec_t.blur_fade_kimg) == 0
    # The blur itself: a 2-D convolution with the outer product of the normalised 2^-(x/sigma)^2 taps.
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sigma = 1.7
    r = int(sigma * 3)
    taps = torch.tensor([2.0 ** -((x / sigma) ** 2) for x in range(-r, r + 1)], dtype=torch.float64)
    taps /= taps.sum()
    kernel = (taps[:, None] * taps[None, :]).expand(3, 1, -1, -1)
    want = torch.nn.functional.conv2d(img, kernel, padding=r, groups=3)
    torch.testing.assert_close(losses.blur_images(img, sigma), want, rtol=1e-12, atol=1e-12)
    assert losses.blur_images(img, 0.3) is img


def test_blur_flag_reaches_the_recipe(tmp_path):
    from anyres_fast.cli import train as train_cli
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4)
    parser = __import__("argparse").ArgumentParser()
    train_cli.add_arguments(parser)
    for extra, sigma in (([], None), (["--blur-sigma", "0"], 0.0), (["--blur-sigma", "4", "--blur-fade-kimg", "50"], 4.0)):
        args = parser.parse_args(["--phase", "fixed", "--lr-data", lr, "--out", str(tmp_path / "o"), "--config", "R"] + extra)
        cfg, _ = train_cli.anyres_options(args)
        assert cfg.blur_sigma == sigma
    assert cfg.blur_fade_kimg == 50.0


def test_fake_labels_follow_the_dataset_not_the_reals(tmp_path):
    """StyleGAN2/3 give each fake the label of a uniformly drawn dataset image (labels 3:1 here), drawn
    apart from the reals' labels; G and D(fake) are conditioned on those."""
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4, labels=[0, 0, 0, 1])
    rec = AnyresRecipe(micro_config(phase="fixed", lr_data=lr, cache_dir=str(tmp_path / "cache")))
    ctx = Context(_opts(tmp_path / "run"), torch.device("cpu"), 0, 1)
    rec.build(ctx)
    draws = []
    for step in range(300):
        ctx.step = step
        draws.append(rec.fake_labels(ctx, "lr", 4, "G", 0))
    c = torch.cat(draws)
    assert c.shape == (1200, 2) and set(c.sum(1).tolist()) == {1.0}           # one-hot labels of the set
    share = c[:, 1].mean().item()
    assert abs(share - 0.25) < 0.04, share                                   # 3 sigma = 0.038

    seen = []
    rec2 = AnyresRecipe(micro_config(phase="fixed", lr_data=lr, cache_dir=str(tmp_path / "cache")))
    rec2.loss_G = lambda chunk, z, ctx=None: (seen.append((chunk["fake_c"].clone(), chunk["c"].clone()))
                                              or AnyresRecipe.loss_G(rec2, chunk, z, ctx))
    Trainer(rec2, _opts(tmp_path / "run2", max_steps=4)).run()
    assert len(seen) == 4
    assert any(not torch.equal(f, r) for f, r in seen)                     # not the reals' labels
    for step, (f, _) in enumerate(seen):                                     # the counter-based draw
        ctx.step = step
        assert torch.equal(f, rec.fake_labels(ctx, "lr", 4, "G", 0))
