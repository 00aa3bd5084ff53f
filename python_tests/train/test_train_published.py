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
