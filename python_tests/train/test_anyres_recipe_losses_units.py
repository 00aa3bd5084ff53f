"""Per-chunk losses and draws of AnyresRecipe (docs/training.md, "Phase fixed" / "Phase patch" / "ADA";
docs/panorama.md §2): the non-saturating G loss plus the teacher term, the logistic D loss, lazy R1,
what D sees (blur, then augmentation), the counter-based draws (augmentation streams, fake labels,
panorama crops and splices), the cross-frame fakes of phase panorama, G_ema's update, and the small
helpers (save_grid, _loss_dtype, _null).

G, D, the teacher, the augmentation pipe and ADA are stubs that record their inputs and compute a
known function, so every expected value is written out here (softplus of hand-computed logits, the
gradient of a linear D, StyleGAN3's EMA half-life formula, ...). A real micro Generator is used only
where its geometry matters (the panorama input's turn and sampling rate)."""
import contextlib
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anyres_fast.models import Generator, GeneratorConfig
from anyres_fast.train import TrainOptions
from anyres_fast.train import anyres_recipe as ar
from anyres_fast.train.trainer import Context

from helpers import MICRO_G, micro_config

pytestmark = pytest.mark.usefixtures("one_thread")

B, ZD, P = 3, 5, 4         # chunk size, latent size, image side of the stubs


# ---------------------------------------------------------------------------------------------------
# stubs

class _Ctx(Context):
    """A real Context (counter-based generators) that records whether code runs inside its autocast."""

    def __init__(self, out, seed=7, step=3):
        super().__init__(TrainOptions(out=str(out), batch=B, kimg=1, workers=0, snap=0, tick=1, progress=False,
                                      seed=seed), torch.device("cpu"), 0, 1)
        self.step = step
        self.inside = 0

    @contextlib.contextmanager
    def autocast(self):
        self.inside += 1
        try:
            yield
        finally:
            self.inside -= 1


class _G(torch.nn.Module):
    """fake = a * z[:, :3] broadcast over (P, P) + column index / 10 (float64)."""

    def __init__(self, ctx=None):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.ctx, self.calls, self.out = ctx, [], None

    def forward(self, z, c, update_emas=False, **frame):
        self.calls.append(dict(z=z, c=c, update_emas=update_emas, frame=frame, grad=torch.is_grad_enabled(),
                               autocast=self.ctx.inside if self.ctx else None))
        cols = torch.arange(P, dtype=torch.float64) / 10
        self.out = self.a * z[:, :3, None, None].double() + cols
        return self.out


def _g_image(G, z):
    return G.a.detach() * z[:, :3, None, None].double() + torch.arange(P, dtype=torch.float64) / 10


class _D(torch.nn.Module):
    """A linear D: logits = sum(w * x) per sample (so grad_x = w and |grad_x|^2 = sum(w^2))."""

    def __init__(self, ctx=None, out_dtype=torch.float64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3, P, P, generator=g, dtype=torch.float64))
        self.ctx, self.calls, self.out_dtype = ctx, [], out_dtype

    def forward(self, img, c, force_fp32=False):
        self.calls.append(dict(img=img, c=c, force_fp32=force_fp32, grad=torch.is_grad_enabled(),
                               autocast=self.ctx.inside if self.ctx else None))
        return (img * self.w).flatten(1).sum(1, keepdim=True).to(self.out_dtype)


def _d_logits(D, x):
    return (x.double() * D.w.detach()).flatten(1).sum(1, keepdim=True)


class _Aug:
    """augment(x) = 2 x + 0.5, recording (input, p, generator)."""

    def __init__(self):
        self.calls = []

    def __call__(self, img, p, generator=None):
        self.calls.append(dict(img=img, p=p, generator=generator))
        return 2 * img + 0.5


def _aug(x):
    return 2 * x + 0.5


class _Ada:
    def __init__(self, p=0.3):
        self.p, self.seen = p, []

    def observe(self, logits):
        self.seen.append(logits.detach().clone())


def _recipe(c_dim=2, aug=True, ctx=None, d_dtype=torch.float64, **cfg):
    rec = ar.AnyresRecipe(micro_config(**cfg))
    rec.c_dim = c_dim
    rec.G, rec.D = _G(ctx), _D(ctx, out_dtype=d_dtype)
    if aug:
        rec.augment_pipe, rec.ada = _Aug(), _Ada()
    return rec


def _chunk(c_dim=2, fake_c=True, index=2, seed=1, **extra):
    g = torch.Generator().manual_seed(seed)
    ch = {"image": torch.randn(B, 3, P, P, generator=g, dtype=torch.float64), "chunk_index": index}
    if c_dim:
        ch["c"] = torch.eye(c_dim, dtype=torch.float32)[torch.arange(B) % c_dim]
        if fake_c:
            ch["fake_c"] = torch.eye(c_dim, dtype=torch.float32)[(torch.arange(B) + 1) % c_dim]
    ch.update(extra)
    return ch


def _z(seed=5):
    return torch.randn(B, ZD, generator=torch.Generator().manual_seed(seed))


def _seed_of(gen):
    return gen.initial_seed()


def _aug_seed(ctx, tag, index):
    return ctx.generator(f"aug/{tag}", index).initial_seed()


def _exact(got, want):
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# labels

def test_c_and_fake_c_choose_the_labels():
    rec = _recipe(c_dim=0)
    ch = _chunk(c_dim=2)
    assert rec._c(ch) is None and rec._fake_c(ch) is None          # unconditional: never labels
    rec.c_dim = 2
    assert rec._c(ch) is ch["c"] and rec._fake_c(ch) is ch["fake_c"]
    ch2 = _chunk(c_dim=2, fake_c=False)
    assert rec._fake_c(ch2) is ch2["c"]                              # direct calls: the reals' labels
    rec.c_dim = 1                                                    # one class is still conditional
    ch1 = _chunk(c_dim=1)
    assert rec._c(ch1) is ch1["c"] and rec._fake_c(ch1) is ch1["fake_c"]


# ---------------------------------------------------------------------------------------------------
# loss_G

def test_loss_G_is_softplus_of_minus_D_of_augmented_fakes(tmp_path):
    ctx = _Ctx(tmp_path)
    rec = _recipe(ctx=ctx)
    ch, z = _chunk(), _z()
    loss, stats = rec.loss_G(ch, z, ctx)
    fake = _g_image(rec.G, z)
    logits = _d_logits(rec.D, _aug(fake))
    want = F.softplus(-logits).flatten()
    _exact(loss, want)
    assert loss.shape == (B,)
    assert set(stats) == {"G/loss_adv", "G/loss_total"}
    assert stats["G/loss_adv"] == pytest.approx(want.mean().item(), rel=1e-12)
    assert stats["G/loss_total"] == pytest.approx(want.mean().item(), rel=1e-12)
    (gc,) = rec.G.calls
    assert torch.equal(gc["z"], z) and gc["c"] is ch["fake_c"] and gc["update_emas"] is False
    assert gc["frame"] == {} and gc["grad"] and gc["autocast"] == 1
    (dc,) = rec.D.calls
    assert dc["c"] is ch["fake_c"] and dc["grad"] and dc["autocast"] == 1 and dc["force_fp32"] is False
    (ac,) = rec.augment_pipe.calls
    assert ac["img"] is rec.G.out and ac["p"] == 0.3
    assert _seed_of(ac["generator"]) == _aug_seed(ctx, "G", 2)
    assert rec.ada.seen == []                 # ADA observes reals only
    # the loss carries G's gradient: d/da softplus(-sum(w * (2 (a z + col) + 0.5))) summed over the batch
    loss.sum().backward()
    s = torch.sigmoid(-logits).flatten()
    dlogit_da = (rec.D.w.detach() * 2 * z[:, :3, None, None].double()).flatten(1).sum(1)
    assert rec.G.a.grad.item() == pytest.approx(-(s * dlogit_da).sum().item(), rel=1e-10)


def test_loss_G_without_ctx_or_labels_and_at_the_reals_frame():
    rec = _recipe(c_dim=0, aug=False)
    box = torch.tensor([[1.0, 2.0]] * B)
    ch, z = _chunk(c_dim=0, canvas=torch.full((B,), 9.0), box=box), _z()
    loss, _ = rec.loss_G(ch, z)              # no ctx: no autocast, no augmentation stream
    _exact(loss, F.softplus(-_d_logits(rec.D, _g_image(rec.G, z))).flatten())
    (gc,) = rec.G.calls
    assert gc["c"] is None and gc["frame"]["canvas"] is ch["canvas"] and gc["frame"]["box"] is ch["box"]
    assert rec.D.calls[0]["c"] is None and rec.D.calls[0]["img"] is rec.G.out


def test_loss_G_raises_half_logits_and_keeps_float64():
    for d_dtype, want in ((torch.float16, torch.float32), (torch.float64, torch.float64)):
        rec = _recipe(aug=False, d_dtype=d_dtype)
        loss, _ = rec.loss_G(_chunk(), _z())
        assert loss.dtype == want, d_dtype


class _Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.out = torch.full((B, 3, 8, 8), 0.25)

    def forward(self, z, c):
        self.calls.append(dict(z=z, c=c, grad=torch.is_grad_enabled()))
        return self.out


def _teacher_recipe(monkeypatch, lam=0.75, ctx=None):
    rec = _recipe(ctx=ctx, teacher_lambda=lam)
    rec.teacher, rec.lpips_net = _Teacher(), object()
    seen = []
    l1 = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64)
    lp = torch.tensor([0.25, 3.0, 0.125], dtype=torch.float64)

    def teacher_loss(student, canvas, box, t_img, lpips_net=None):
        seen.append(dict(student=student, canvas=canvas, box=box, t_img=t_img, lpips_net=lpips_net))
        return {"l1": l1 * (1 + 0 * student.sum()), "lpips": lp, "mask_fraction": torch.ones(B)}

    monkeypatch.setattr(ar.losses, "teacher_loss", teacher_loss)
    return rec, seen, l1, lp


def test_loss_G_adds_lambda_times_teacher_l1_plus_lpips(tmp_path, monkeypatch):
    ctx = _Ctx(tmp_path)
    rec, seen, l1, lp = _teacher_recipe(monkeypatch, lam=0.75, ctx=ctx)
    ch, z = _chunk(), _z()
    loss, stats = rec.loss_G(ch, z, ctx)
    adv = F.softplus(-_d_logits(rec.D, _aug(_g_image(rec.G, z)))).flatten()
    want = adv + 0.75 * (l1 + lp)
    _exact(loss, want)
    assert set(stats) == {"G/loss_adv", "G/teacher_l1", "G/teacher_lpips", "G/loss_total"}
    assert stats["G/loss_adv"] == pytest.approx(adv.mean().item(), rel=1e-12)
    assert stats["G/teacher_l1"] == pytest.approx(l1.mean().item(), rel=1e-12)
    assert stats["G/teacher_lpips"] == pytest.approx(lp.mean().item(), rel=1e-12)
    assert stats["G/loss_total"] == pytest.approx(want.mean().item(), rel=1e-12)
    (tc,) = rec.teacher.calls
    assert tc["z"] is z and tc["c"] is ch["fake_c"] and not tc["grad"]     # the fake's own label, no grad
    (s,) = seen
    assert s["student"] is rec.G.out and s["t_img"] is rec.teacher.out and s["lpips_net"] is rec.lpips_net
    # no canvas/box in the chunk (LR images): N = p, box (0, 0)
    assert s["canvas"].shape == (B,) and s["canvas"].dtype == torch.float32
    assert torch.equal(s["canvas"], torch.full((B,), 64.0))
    assert s["box"].shape == (B, 2) and torch.equal(s["box"], torch.zeros(B, 2))


def test_loss_G_teacher_reads_the_host_copies_of_canvas_and_box(monkeypatch):
    rec, seen, _, _ = _teacher_recipe(monkeypatch)
    n, box = torch.full((B,), 96.0), torch.tensor([[3.0, 4.0]] * B)
    nh, bh = torch.full((B,), 128.0), torch.tensor([[5.0, 6.0]] * B)
    rec.loss_G(_chunk(canvas=n, box=box), _z())
    assert seen[-1]["canvas"] is n and seen[-1]["box"] is box
    rec.loss_G(_chunk(canvas=n, box=box, canvas_host=nh, box_host=bh), _z())
    assert seen[-1]["canvas"] is nh and seen[-1]["box"] is bh
    assert rec.G.calls[-1]["frame"]["canvas"] is n           # G itself gets the device copies


def test_loss_G_teacher_term_only_with_a_teacher_and_positive_lambda(monkeypatch):
    rec, seen, _, _ = _teacher_recipe(monkeypatch, lam=0.0)
    ch, z = _chunk(), _z()
    loss, stats = rec.loss_G(ch, z)
    assert seen == [] and rec.teacher.calls == [] and "G/teacher_l1" not in stats
    _exact(loss, F.softplus(-_d_logits(rec.D, _aug(_g_image(rec.G, z)))).flatten())
    rec, seen, _, _ = _teacher_recipe(monkeypatch, lam=5.0)
    rec.teacher = None
    loss, stats = rec.loss_G(ch, z)
    assert seen == [] and "G/teacher_lpips" not in stats
    _exact(loss, F.softplus(-_d_logits(rec.D, _aug(_g_image(rec.G, z)))).flatten())


# ---------------------------------------------------------------------------------------------------
# loss_Dmain

def test_loss_Dmain_is_the_logistic_loss_of_fake_and_real_logits(tmp_path):
    ctx = _Ctx(tmp_path)
    rec = _recipe(ctx=ctx)
    ch, z = _chunk(index=4), _z()
    loss, stats = rec.loss_Dmain(ch, z, ctx)
    fake_logits = _d_logits(rec.D, _aug(_g_image(rec.G, z)))
    real_logits = _d_logits(rec.D, _aug(ch["image"]))
    want = (F.softplus(fake_logits) + F.softplus(-real_logits)).flatten()
    _exact(loss, want)
    assert loss.shape == (B,)
    assert set(stats) == {"D/loss", "D/real", "D/fake"}
    assert stats["D/loss"] == pytest.approx(want.mean().item(), rel=1e-12)
    assert stats["D/real"] == pytest.approx(real_logits.mean().item(), rel=1e-12)
    assert stats["D/fake"] == pytest.approx(fake_logits.mean().item(), rel=1e-12)
    # fakes: the fakes' labels, G's EMAs updated, no graph through G, under autocast
    (gc,) = rec.G.calls
    assert gc["update_emas"] is True and not gc["grad"] and gc["c"] is ch["fake_c"] and gc["autocast"] == 1
    assert torch.equal(gc["z"], z)
    fake_call, real_call = rec.D.calls
    assert fake_call["c"] is ch["fake_c"] and real_call["c"] is ch["c"]
    assert fake_call["grad"] and real_call["grad"] and fake_call["autocast"] == 1 and real_call["autocast"] == 1
    fa, ra = rec.augment_pipe.calls
    assert fa["img"] is rec.G.out and ra["img"] is ch["image"] and fa["p"] == ra["p"] == 0.3
    assert _seed_of(fa["generator"]) == _aug_seed(ctx, "Dfake", 4)
    assert _seed_of(ra["generator"]) == _aug_seed(ctx, "Dreal", 4)
    (obs,) = rec.ada.seen                                       # ADA sees the real logits only
    _exact(obs, real_logits)
    # gradient reaches D only through the logits (G's output was made under no_grad)
    loss.sum().backward()
    assert rec.G.a.grad is None and rec.D.w.grad is not None


def test_loss_Dmain_without_ctx_labels_or_augmentation():
    rec = _recipe(c_dim=0, aug=False, d_dtype=torch.float16)
    ch, z = _chunk(c_dim=0), _z()
    loss, _ = rec.loss_Dmain(ch, z)
    assert loss.dtype == torch.float32
    fake_call, real_call = rec.D.calls
    assert fake_call["c"] is None and real_call["c"] is None
    assert fake_call["img"] is rec.G.out and real_call["img"] is ch["image"]
    fl = _d_logits(rec.D, _g_image(rec.G, z)).half().float()
    rl = _d_logits(rec.D, ch["image"]).half().float()
    torch.testing.assert_close(loss, (F.softplus(fl) + F.softplus(-rl)).flatten())


# ---------------------------------------------------------------------------------------------------
# loss_Dreg

@pytest.mark.parametrize("aug", [False, True])
def test_loss_Dreg_is_the_r1_penalty_times_gamma_over_2_times_interval(tmp_path, aug):
    ctx = _Ctx(tmp_path)
    rec = _recipe(ctx=ctx, aug=aug, r1_gamma=3.0, r1_interval=5)
    ch = _chunk(index=1)
    loss, stats = rec.loss_Dreg(ch, ctx)
    # D(x) = sum(w * x); with aug(x) = 2 x + 0.5 before D, the gradient w.r.t. the reals (before
    # augmentation) is 2 w, so |grad|^2 = 4 sum(w^2); without augmentation sum(w^2).
    w2 = (rec.D.w.detach() ** 2).sum()
    pen = (4 if aug else 1) * w2 * torch.ones(B, dtype=torch.float64)
    _exact(loss, pen * (3.0 / 2) * 5)
    assert stats == {"D/r1_penalty": pytest.approx(pen.mean().item(), rel=1e-12)}
    (dc,) = rec.D.calls
    assert dc["force_fp32"] is True and dc["c"] is ch["c"]            # the reals' labels, never fake_c
    assert not ch["image"].requires_grad                               # the chunk's tensor is left alone
    if aug:
        (ac,) = rec.augment_pipe.calls
        assert torch.equal(ac["img"], ch["image"]) and ac["img"].requires_grad and ac["p"] == 0.3
        assert _seed_of(ac["generator"]) == _aug_seed(ctx, "Dr1", 1)
        (obs,) = rec.ada.seen
        _exact(obs, _d_logits(rec.D, _aug(ch["image"])))
    # differentiable w.r.t. D: d/dw of sum_b k |grad|^2 * 7.5 = B * k * 2 w * 7.5
    loss.sum().backward()
    _exact(rec.D.w.grad, B * (4 if aug else 1) * 2 * rec.D.w.detach() * 7.5)


def test_loss_Dreg_without_ctx_or_labels():
    rec = _recipe(c_dim=0, aug=False)
    loss, stats = rec.loss_Dreg(_chunk(c_dim=0))
    w2 = (rec.D.w.detach() ** 2).sum()
    _exact(loss, w2 * torch.ones(B, dtype=torch.float64) * (2.0 / 2) * 16)   # the published gamma 2, interval 16
    assert rec.D.calls[0]["c"] is None


# ---------------------------------------------------------------------------------------------------
# d_input, aug_generator

def _blur_spy(monkeypatch):
    seen = []

    def blur(img, sigma):
        seen.append((img, sigma))
        return img + 100.0

    monkeypatch.setattr(ar.losses, "blur_images", blur)
    return seen


def test_d_input_blurs_only_with_a_positive_sigma_then_augments(monkeypatch):
    seen = _blur_spy(monkeypatch)
    rec = _recipe(aug=False)
    x = torch.randn(2, 3, P, P, dtype=torch.float64)
    assert rec.d_input(x) is x and seen == []                # blur_sigma 0 (the default), no augmentation
    for sigma in (0.25, 2.0):
        rec.blur_sigma = sigma
        _exact(rec.d_input(x), x + 100.0)
        assert seen[-1][0] is x and seen[-1][1] == sigma
    rec.blur_sigma = -1.0
    assert rec.d_input(x) is x and len(seen) == 2
    rec = _recipe(aug=True)
    rec.ada.p = 0.625
    g = torch.Generator().manual_seed(3)
    rec.blur_sigma = 1.5
    _exact(rec.d_input(x, g), _aug(x + 100.0))               # blur first, then augment (StyleGAN3's order)
    (ac,) = rec.augment_pipe.calls
    assert ac["p"] == 0.625 and ac["generator"] is g
    rec.blur_sigma = 0.0
    _exact(rec.d_input(x), _aug(x))
    assert rec.augment_pipe.calls[-1]["generator"] is None and rec.augment_pipe.calls[-1]["img"] is x


def test_aug_generator_is_counter_based_per_tag_and_chunk_index(tmp_path):
    ctx = _Ctx(tmp_path)
    rec = _recipe(aug=True)

    def draw(tag, chunk):
        return torch.rand(8, generator=rec.aug_generator(ctx, tag, chunk))

    assert _seed_of(rec.aug_generator(ctx, "Dreal", {"chunk_index": 3})) == _aug_seed(ctx, "Dreal", 3)
    assert torch.equal(draw("G", {"chunk_index": 1}), draw("G", {"chunk_index": 1}))
    assert not torch.equal(draw("G", {"chunk_index": 1}), draw("Dfake", {"chunk_index": 1}))
    assert not torch.equal(draw("G", {"chunk_index": 1}), draw("G", {"chunk_index": 2}))
    assert torch.equal(draw("G", {}), draw("G", {"chunk_index": 0}))     # no index: chunk 0
    assert not torch.equal(draw("G", {}), draw("G", {"chunk_index": 1}))
    assert rec.aug_generator(None, "G", {"chunk_index": 1}) is None
    assert _recipe(aug=False).aug_generator(ctx, "G", {"chunk_index": 1}) is None


# ---------------------------------------------------------------------------------------------------
# fake_images, fake_labels

@pytest.mark.parametrize("update_emas", [False, True])
def test_fake_images_in_phase_panorama_are_cross_frame_fakes(monkeypatch, update_emas):
    seen = []
    monkeypatch.setattr(ar, "cross_frame_fakes", lambda *a, **k: seen.append((a, k)) or "pano")
    rec = _recipe(phase="panorama")
    z, c = _z(), torch.ones(B, 2)
    ch = {"pano_crop": torch.tensor([1, 2, 3]), "pano_splice": torch.tensor([0, 4, 2]), "canvas": 1, "box": 2}
    assert rec.fake_images(z, c, ch, update_emas=update_emas) == "pano"
    ((args, kw),) = seen
    assert args[0] is rec.G and args[1] is z and args[2] is c
    assert args[3] is ch["pano_crop"] and args[4] is ch["pano_splice"]
    assert kw == {"update_emas": update_emas} and rec.G.calls == []


@pytest.mark.parametrize("phase", ["fixed", "patch"])
def test_fake_images_elsewhere_are_G_at_the_reals_frame(monkeypatch, phase):
    monkeypatch.setattr(ar, "cross_frame_fakes", lambda *a, **k: pytest.fail("not a panorama run"))
    rec = _recipe(phase=phase)
    z, c = _z(), torch.ones(B, 2)
    assert rec.fake_images(z, c, {"canvas": 7, "box": 8}, update_emas=True) is rec.G.out
    assert rec.G.calls[-1]["frame"] == {"canvas": 7, "box": 8} and rec.G.calls[-1]["update_emas"] is True
    assert rec.G.calls[-1]["z"] is z and rec.G.calls[-1]["c"] is c
    rec.fake_images(z, None, {})
    assert rec.G.calls[-1]["frame"] == {} and rec.G.calls[-1]["update_emas"] is False
    assert rec.G.calls[-1]["c"] is None


class _Source:
    def __init__(self, n, base):
        self.n, self.base = n, base

    def __len__(self):
        return self.n

    def label(self, i):
        return np.array([self.base + i, -i], dtype=np.float32)


def test_fake_labels_are_labels_of_uniformly_drawn_images_of_the_kind(tmp_path):
    ctx = _Ctx(tmp_path)
    rec = _recipe()
    rec.lr_source, rec.hr_source = _Source(5, 100), _Source(9, 200)
    for kind, src in (("lr", rec.lr_source), ("hr", rec.hr_source)):
        for tag, k in (("G", 0), ("D", 3)):
            got = rec.fake_labels(ctx, kind, 40, tag, k)
            idx = torch.randint(len(src), (40,), generator=ctx.generator(f"fake_c/{tag}", k))
            want = torch.tensor([[src.base + i, -i] for i in idx.tolist()], dtype=torch.float32)
            assert got.dtype == torch.float32 and torch.equal(got, want), (kind, tag, k)
    got = rec.fake_labels(ctx, "hr", 400, "G", 1)                # every image of the set can be drawn
    assert set(got[:, 0].tolist()) == {200.0 + i for i in range(9)}
    meta = types.SimpleNamespace(generator=ctx.generator, device=torch.device("meta"))
    out = rec.fake_labels(meta, "lr", 4, "G", 0)
    assert out.device.type == "meta" and out.shape == (4, 2)


# ---------------------------------------------------------------------------------------------------
# panorama: draws, crop box, cross-frame fakes

def _pano_G(fov=50.0):
    return Generator(GeneratorConfig(resolution=64, panorama=True, fov=fov, magnitude_ema_beta=0.9, **MICRO_G))


def test_panorama_draws_cover_crop_starts_of_one_turn_and_splices_0_to_p(tmp_path):
    ctx = _Ctx(tmp_path)
    rec = _recipe(phase="panorama", fov=50.0)
    rec.G = _pano_G(50.0)
    turn = math.floor(16 * 360 / 50)                  # docs/panorama.md §1: floor(rate * 360 / fov) = 115
    assert rec.G.synthesis.input.turn_samples == turn
    d = rec.panorama_draws(ctx, "G", 0, 20000)
    assert set(d) == {"pano_crop", "pano_splice"}
    assert set(d["pano_crop"].tolist()) == set(range(turn))
    assert set(d["pano_splice"].tolist()) == set(range(65))          # [0, p] inclusive
    g = ctx.generator("pano/G", 0)
    assert torch.equal(d["pano_crop"], torch.randint(turn, (20000,), generator=g))
    assert torch.equal(d["pano_splice"], torch.randint(65, (20000,), generator=g))
    # counter-based: same (seed, step, tag, k) -> the same draws; another tag or chunk -> others
    a = rec.panorama_draws(ctx, "D", 2, 16)
    b = rec.panorama_draws(_Ctx(tmp_path), "D", 2, 16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for other in (rec.panorama_draws(ctx, "G", 2, 16), rec.panorama_draws(ctx, "D", 1, 16)):
        assert not torch.equal(a["pano_crop"], other["pano_crop"])
        assert not torch.equal(a["pano_splice"], other["pano_splice"])
    meta = types.SimpleNamespace(generator=ctx.generator, device=torch.device("meta"))
    d = rec.panorama_draws(meta, "G", 0, 3)
    assert d["pano_crop"].device.type == "meta" and d["pano_splice"].device.type == "meta"


def test_published_crop_box():
    crop = torch.tensor([0, 1, 7, 115])
    got = ar.published_crop_box(crop, 20, 8)            # docs/panorama.md §1: x0 = (c - 1/2) p / rate
    assert got.dtype == torch.float64
    assert got.tolist() == [(c - 0.5) * 20 / 8 for c in (0, 1, 7, 115)]


class _StripG:
    """A stand-in panorama G: slice at box (x0, y0) has channel 0 = strip column x0 + j, channel 1 =
    the sample's w, channel 2 = its label (so the test sees which slice / w / label each column used)."""

    img_resolution, check_inputs = 6, True

    def __init__(self):
        self.synthesis = types.SimpleNamespace(input=types.SimpleNamespace(sampling_rate=3))
        self.calls = []

    def mapping(self, z, c, update_emas=False, check_inputs=None):
        self.calls.append(("mapping", update_emas, check_inputs, c))
        return z[:, None, :1].repeat(1, 2, 1) * 10      # (B, num_ws, 1)

    def synthesize(self, ws, *, canvas, box, update_emas=False, c=None):
        self.calls.append(("synthesize", update_emas, canvas, box, c))
        p, n = self.img_resolution, ws.shape[0]
        x = box[:, 0].view(n, 1, 1) + torch.arange(p, dtype=torch.float64).view(1, 1, p)
        out = torch.zeros(n, 3, p, p, dtype=torch.float64)
        out[:, 0] = x.expand(n, p, p)
        out[:, 1] = ws[:, 0, 0].view(n, 1, 1).double()
        out[:, 2] = 0 if c is None else c[:, :1].view(n, 1, 1).double()
        return out


@pytest.mark.parametrize("update_emas", [False, True])
def test_cross_frame_fakes_are_the_p_columns_from_the_splice_of_two_adjacent_slices(update_emas):
    G = _StripG()
    z = torch.tensor([[1.0], [2.0], [3.0]])
    c = torch.tensor([[5.0, 0.0], [6.0, 0.0], [7.0, 0.0]])
    crop = torch.tensor([0, 4, 9])
    splice = torch.tensor([0, 6, 2])                     # the first slice, the second, and a mix
    out = ar.cross_frame_fakes(G, z, c, crop, splice, update_emas=update_emas)
    p = 6
    assert out.shape == (3, 3, p, p)
    for i in range(3):
        x0 = (crop[i].item() - 0.5) * p / 3
        # the strip is continuous across the two slices [x0, x0 + p) and [x0 + p, x0 + 2p)
        want_cols = torch.tensor([x0 + splice[i].item() + j for j in range(p)], dtype=torch.float64)
        assert torch.equal(out[i, 0], want_cols.expand(p, p)), i
        assert torch.equal(out[i, 1], torch.full((p, p), 10.0 * z[i, 0].item(), dtype=torch.float64))
        assert torch.equal(out[i, 2], torch.full((p, p), c[i, 0].item(), dtype=torch.float64))
    assert G.calls[0][:3] == ("mapping", update_emas, True) and G.calls[0][3] is c
    (_, ue, canvas, boxes, cc) = G.calls[1]
    assert ue is update_emas and canvas == p and len(G.calls) == 2
    x0s = [(k - 0.5) * 2 for k in (0, 4, 9)]
    assert boxes.tolist() == [[x, 0.0] for x in x0s] + [[x + p, 0.0] for x in x0s]
    assert torch.equal(cc, torch.cat([c, c]))
    ar.cross_frame_fakes(G, z, None, crop, splice)
    assert G.calls[-1][4] is None and G.calls[-2][1] is False and G.calls[-2][3] is None


class _DeviceStripG(_StripG):
    """_StripG that only follows devices: it checks that the boxes are on the latents' device."""

    def synthesize(self, ws, *, canvas, box, update_emas=False, c=None):
        assert box.device == ws.device and box.dtype == torch.float64
        return torch.zeros(ws.shape[0], 3, self.img_resolution, self.img_resolution, device=ws.device)


def test_cross_frame_fakes_follow_the_latents_device():
    # crop and splice arrive on the host (counter-based draws); every tensor built from them must move to
    # z's device. The meta device stands in for a GPU here: mixing it with a host tensor is an error.
    z = torch.zeros(3, 1, device="meta")
    out = ar.cross_frame_fakes(_DeviceStripG(), z, None, torch.tensor([0, 4, 9]), torch.tensor([0, 6, 2]))
    assert out.device.type == "meta" and out.shape == (3, 3, 6, 6)


def test_cross_frame_fakes_match_two_separately_rendered_slices():
    G = _pano_G(60.0).eval()
    p, rate = 64, G.synthesis.input.sampling_rate
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    crop, splice = torch.tensor([0, 50, 95]), torch.tensor([0, 64, 23])
    out = ar.cross_frame_fakes(G, z, None, crop, splice)
    for i in range(3):
        x0 = (crop[i].item() - 0.5) * p / rate
        zi = z[i:i + 1]
        first = G(zi, canvas=p, box=(x0, 0.0))
        second = G(zi, canvas=p, box=(x0 + p, 0.0))
        want = torch.cat([first, second], dim=3)[..., splice[i]:splice[i] + p]
        torch.testing.assert_close(out[i:i + 1], want, rtol=0, atol=2e-5)


# ---------------------------------------------------------------------------------------------------
# update_ema

class _Tiny(torch.nn.Module):
    def __init__(self, a, b, buf):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float64))
        self.register_buffer("m", torch.tensor(buf, dtype=torch.float64))


@pytest.mark.parametrize("ema_kimg,rampup,nimg,batch", [
    (0.004, None, 0, 4),          # no ramp-up: half-life ema_kimg
    (0.004, 0.05, 10_000, 4),     # ramp-up longer than the half-life: the half-life
    (0.004, 0.05, 40, 4),         # ramp-up shorter: nimg * rampup images
    (0.004, 0.5, 0, 4),           # at the start: beta 0, G_ema = G
    (1.5, None, 0, 32),
])
def test_update_ema_lerps_parameters_with_the_stylegan3_half_life_and_copies_buffers(ema_kimg, rampup, nimg, batch):
    rec = _recipe()
    rec.G, rec.G_ema = _Tiny([-6.0, 1.0], [2.0], [3.0, 4.0]), _Tiny([10.0, -2.0], [0.5], [9.0, 9.0])
    rec.ema_kimg, rec.ema_rampup = ema_kimg, rampup
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, nimg * rampup)
    beta = 0.5 ** (batch / ema_nimg) if ema_nimg > 0 else 0.0
    rec.update_ema(nimg, batch)
    for name, g, e in (("a", [-6.0, 1.0], [10.0, -2.0]), ("b", [2.0], [0.5])):
        want = torch.tensor([gi + beta * (ei - gi) for gi, ei in zip(g, e)], dtype=torch.float64)
        _exact(getattr(rec.G_ema, name).detach(), want)
    assert torch.equal(rec.G_ema.m, torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert torch.equal(rec.G.a.detach(), torch.tensor([-6.0, 1.0], dtype=torch.float64))   # G untouched


def test_update_ema_beta_values_by_hand():
    # batch 4, half-life 4 images -> beta 1/2; ramp-up 0.05 at 40 images -> 2 images -> beta 1/4
    for rampup, nimg, beta in ((None, 0, 0.5), (0.05, 40, 0.25), (0.05, 1e9, 0.5)):
        rec = _recipe()
        rec.G, rec.G_ema = _Tiny([0.0], [0.0], [0.0]), _Tiny([1.0], [1.0], [1.0])
        rec.ema_kimg, rec.ema_rampup = 0.004, rampup
        rec.update_ema(nimg, 4)
        assert rec.G_ema.a.item() == pytest.approx(beta, rel=1e-12), (rampup, nimg)


# ---------------------------------------------------------------------------------------------------
# save_grid, _loss_dtype, _null

def test_save_grid_puts_image_r_k_at_row_r_column_k(tmp_path):
    r, k, h, w = 2, 3, 4, 5
    # distinct 8-bit levels per image, channel, row and column; [-1, 1] <-> [0, 255] by (x + 1) * 127.5
    levels = torch.empty(r, k, 3, h, w, dtype=torch.int64)
    for i in range(r):
        for j in range(k):
            for ch in range(3):
                levels[i, j, ch] = (i * k * 3 + j * 3 + ch) * 12 + torch.arange(h)[:, None] * 2 + torch.arange(w) % 2
    imgs = (levels.float() / 127.5 - 1).clamp(-1, 1)
    path = str(tmp_path / "g.png")
    assert ar.save_grid(imgs, path) == path
    a = np.asarray(Image.open(path))
    assert a.shape == (r * h, k * w, 3) and a.dtype == np.uint8
    for i in range(r):
        for j in range(k):
            block = a[i * h:(i + 1) * h, j * w:(j + 1) * w]
            assert np.array_equal(block, levels[i, j].permute(1, 2, 0).numpy()), (i, j)


def test_loss_dtype_raises_half_precision_and_keeps_float64():
    for dt, want in ((torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                     (torch.float32, torch.float32), (torch.float64, torch.float64)):
        x = torch.tensor([1.5, -2.25], dtype=dt)
        y = ar._loss_dtype(x)
        assert y.dtype == want and y.tolist() == [1.5, -2.25], dt
    x = torch.ones(2, dtype=torch.float64)
    assert ar._loss_dtype(x) is x


def test_null_context_yields_none_and_lets_exceptions_through():
    with ar._null() as v:
        assert v is None
    assert ar._null().__exit__(None, None, None) is False
    with pytest.raises(ZeroDivisionError):
        with ar._null():
            1 / 0
