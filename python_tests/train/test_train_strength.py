"""Training details checked against independent definitions: the G_ema half-life and ramp-up (StyleGAN3's
rule, and the half-life's own meaning), the teacher loss's mask and weight term by term, G's running
statistics after a step equal one update with the global batch, and checkpoint writes fsync before the
rename that publishes them."""

import pytest
import torch

from anyres_fast.train import Trainer, TrainOptions, losses
from anyres_fast.train.anyres_recipe import AnyresRecipe
from anyres_fast.train.infinity_recipe import InfinityRecipe
from anyres_fast.train.trainer import Context

from helpers import micro_config, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=1)
    base.update(kw)
    return TrainOptions(**base)


class _Pair(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((3,), float(value), dtype=torch.float64))
        self.register_buffer("stat", torch.full((2,), float(value), dtype=torch.float64))


def _ema_recipe(ema_kimg, ema_rampup):
    rec = AnyresRecipe.__new__(AnyresRecipe)
    rec.G, rec.G_ema = _Pair(1.0), _Pair(0.0)
    rec.ema_kimg, rec.ema_rampup = ema_kimg, ema_rampup
    return rec


@pytest.mark.parametrize("nimg,batch,ema_kimg,rampup", [(0, 4, 10.0, 0.05), (400, 4, 10.0, 0.05),
                                                        (1_000_000, 32, 10.0, 0.05), (1000, 8, 2.5, None)])
def test_g_ema_step_is_stylegan3s_rule(nimg, batch, ema_kimg, rampup):
    """NVlabs training_loop: ema_nimg = ema_kimg * 1000, capped by cur_nimg * ema_rampup (images seen
    before the step); beta = 0.5 ** (batch / max(ema_nimg, 1e-8)); G_ema = G + (G_ema - G) * beta;
    buffers copied from G."""
    rec = _ema_recipe(ema_kimg, rampup)
    rec.G_ema.w.data.fill_(0.25)
    ema_nimg = ema_kimg * 1000 if rampup is None else min(ema_kimg * 1000, nimg * rampup)
    beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
    rec.update_ema(nimg, batch)
    want = 1.0 + (0.25 - 1.0) * beta
    assert torch.allclose(rec.G_ema.w, torch.full((3,), want, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.equal(rec.G_ema.stat, rec.G.stat)


def test_g_ema_half_life_is_ema_kimg():
    """The meaning of the half-life: with G held fixed, after ema_kimg * 1000 images (no ramp-up) half of
    the distance from G_ema to G is gone; with the ramp-up the half-life is nimg * rampup instead."""
    batch, ema_kimg = 8, 0.4
    rec = _ema_recipe(ema_kimg, None)
    for _ in range(int(ema_kimg * 1000 / batch)):
        rec.update_ema(10 ** 9, batch)
    assert rec.G_ema.w[0].item() == pytest.approx(0.5, abs=1e-12)
    rec = _ema_recipe(ema_kimg, 0.05)
    rec.update_ema(1000, batch)                      # half-life 1000 * 0.05 = 50 images: beta = 0.5 ** (8/50)
    assert rec.G_ema.w[0].item() == pytest.approx(1 - 0.5 ** (batch / 50), abs=1e-15)


def test_phase_defaults_of_the_ema(tmp_path):
    """Published: ema_kimg = batch * 10 / 32 with ramp-up 0.05 in phase fixed; phase patch starts from a
    trained teacher, where the ramp-up is off."""
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 3)
    fixed = AnyresRecipe(micro_config(phase="fixed", lr_data=lr))
    fixed.build(Context(_opts(tmp_path / "a", batch=8), torch.device("cpu"), 0, 1))
    assert fixed.ema_kimg == 8 * 10 / 32 and fixed.ema_rampup == 0.05
    Trainer(AnyresRecipe(micro_config(phase="fixed", lr_data=lr)), _opts(tmp_path / "p1", max_steps=1)).run()
    patch = AnyresRecipe(micro_config(phase="patch", lr_data=lr, hr_data=lr, teacher=str(tmp_path / "p1")))
    patch.build(Context(_opts(tmp_path / "b", batch=4), torch.device("cpu"), 0, 1))
    assert patch.ema_kimg == 4 * 10 / 32 and patch.ema_rampup is None


def test_infinitygan_ema_decay_is_the_published_per_step_decay():
    rec = InfinityRecipe.__new__(InfinityRecipe)
    rec.G, rec.G_ema = _Pair(1.0), _Pair(0.0)
    rec.cfg = type("C", (), {"ema_decay": 0.5 ** (32 / 10000)})()
    rec.update_ema()
    d = 0.5 ** (32 / 10000)                          # InfinityGAN train.py: accumulate(g_ema, g, 0.5 ** (32 / 10k))
    assert rec.G_ema.w[0].item() == pytest.approx(1 - d, abs=1e-15)
    assert torch.equal(rec.G_ema.stat, rec.G.stat)


class _SpatialStub(torch.nn.Module):
    """An LPIPS stand-in with a known spatial distance map: |a - b| summed over channels."""

    def forward(self, a, b):
        return (a - b).abs().sum(dim=1, keepdim=True)


def test_teacher_loss_terms_are_masked_means_each_with_its_own_gradient():
    from anyres_fast import ops

    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64).requires_grad_(True)
    teacher = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    canvas = torch.tensor([32.0, 24.0, 16.0])
    box = torch.tensor([[0.0, 0.0], [8.0, 4.0], [0.0, 0.0]])
    tl = losses.teacher_loss(student, canvas, box, teacher, _SpatialStub())
    warped, mask = ops.teacher_warp(student.float(), canvas, box, 16)
    m = mask.float()
    t = teacher.float()
    for b in range(3):                               # the means over the masked pixels, written out
        n = m[b].sum().item()
        assert n > 0
        want_l1 = ((warped[b] - t[b]).abs() * m[b]).sum() / (3 * n)
        want_lp = ((warped[b].clamp(-1, 1) - t[b].clamp(-1, 1)).abs().sum(0, keepdim=True) * m[b]).sum() / n
        assert tl["l1"][b].item() == pytest.approx(want_l1.item(), rel=1e-6)
        assert tl["lpips"][b].item() == pytest.approx(want_lp.item(), rel=1e-6)
        assert tl["mask_fraction"][b].item() == pytest.approx(n / 256, abs=1e-7)
    assert tl["mask_fraction"][2].item() == 1.0 and tl["mask_fraction"][0].item() < 0.25   # identity; a quarter
    for term in ("l1", "lpips"):                     # each term alone reaches the student
        grad, = torch.autograd.grad(tl[term].sum(), student, retain_graph=True)
        assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    outside = ~(ops.teacher_warp(torch.ones(3, 1, 16, 16), canvas, box, 16)[1])
    assert outside[0].any()                          # pixels off the patch: a change there changes nothing
    shifted = teacher.clone()
    shifted[0][outside[0].expand(3, -1, -1)] += 5
    again = losses.teacher_loss(student, canvas, box, shifted, _SpatialStub())
    assert again["l1"][0].item() == pytest.approx(tl["l1"][0].item(), rel=1e-12)


def test_g_loss_adds_lambda_times_l1_plus_lpips(tmp_path, monkeypatch):
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 3)
    Trainer(AnyresRecipe(micro_config(phase="fixed", lr_data=lr)), _opts(tmp_path / "p1", max_steps=1)).run()
    rec = AnyresRecipe(micro_config(phase="patch", lr_data=lr, hr_data=lr, teacher=str(tmp_path / "p1"),
                                    teacher_lambda=3.5))
    ctx = Context(_opts(tmp_path / "b"), torch.device("cpu"), 0, 1)
    rec.build(ctx)
    chunk = {"image": torch.zeros(2, 3, 64, 64), "canvas": torch.tensor([128.0, 64.0]),
             "box": torch.tensor([[64.0, 0.0], [0.0, 0.0]])}
    z = torch.randn(2, rec.gcfg.z_dim, generator=torch.Generator().manual_seed(1))
    fixed = {"l1": torch.tensor([0.25, 0.5]), "lpips": torch.tensor([1.0, 2.0]), "mask_fraction": torch.ones(2)}
    monkeypatch.setattr(losses, "teacher_loss", lambda *a, **k: fixed)
    with_teacher, _ = rec.loss_G(chunk, z, ctx)
    rec.cfg.teacher_lambda = 0.0
    without, _ = rec.loss_G(chunk, z, ctx)
    assert torch.allclose(with_teacher - without, 3.5 * (fixed["l1"] + fixed["lpips"]), atol=1e-6)


def test_g_running_statistics_after_a_step_are_one_update_with_the_global_batch(tmp_path):
    """After a step, G's w_avg equals the published update with the mean w of the *whole* D-pass batch,
    whether the batch ran in one pass or in two chunks (gradient accumulation)."""
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4)
    for batch_gpu in (4, 2):
        rec = AnyresRecipe(micro_config(phase="fixed", lr_data=lr))
        captured = {}
        trainer = Trainer(rec, _opts(tmp_path / f"r{batch_gpu}", batch_gpu=batch_gpu, max_steps=1, seed=4))
        real_dmain = AnyresRecipe.loss_Dmain

        def spy(self, chunk, z, ctx=None, _real=real_dmain, _cap=captured):
            _cap.setdefault("w_avg0", self.G.mapping.w_avg.clone())
            _cap.setdefault("z", []).append(z.clone())
            _cap.setdefault("c", []).append(self._fake_c(chunk))
            return _real(self, chunk, z, ctx)

        rec.loss_Dmain = spy.__get__(rec)
        trainer.run()
        z = torch.cat(captured["z"])
        c = [x for x in captured["c"] if x is not None]
        with torch.no_grad():
            w = rec.G.mapping(z, torch.cat(c) if c else None, update_emas=False)[:, 0]
        beta = rec.G.mapping.w_avg_beta
        want = w.mean(0).lerp(captured["w_avg0"], beta)          # StyleGAN3 MappingNetwork: w_avg.lerp_(mean, 1 - beta)
        assert torch.allclose(rec.G.mapping.w_avg, want, atol=1e-6), (rec.G.mapping.w_avg - want).abs().max()


def test_checkpoint_bytes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    """A power cut after the rename must find the whole file: fsync(file) precedes os.replace."""
    from anyres_fast.train import checkpoint
    from anyres_fast.utils import files

    events = []
    real_fsync, real_replace = files.os.fsync, files.os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    checkpoint.save_checkpoint(str(tmp_path / "run"), 1, {"step": 1})
    assert "replace" in events and events.index("fsync") < events.index("replace")
