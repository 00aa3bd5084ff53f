"""AnyresRecipe's construction, configuration and step logic (docs/training.md, "The any-resolution
recipe" and "The Recipe interface"): the refusals of __init__; generator_config / discriminator_kwargs;
the image sources (_sources: minimum sizes, labels, cache folder); build (optimisers with the lazy-R1
rescaling, EMA and blur schedules, augmentation, panorama, G_ema, datasets, a pickle teacher's D); the
Recipe interface methods; train_step's orchestration (batch kind, label and panorama draws, latents,
gradient accumulation with chunk_weight, optimiser order, lazy R1, the chunk-averaged running
statistics, EMA and ADA hooks, stats); snapshot grids; a published pickle as the teacher
(_student_config_for_pickle, _init_from_pickle).

train_step is driven by a recording Context and stub losses whose gradients and stats are known, so
each check compares with a value computed by hand here; the losses themselves are tested in
test_anyres_recipe_losses_units.py. Networks are the micro configuration of helpers.py at p = 64 (the
smallest resolution Generator accepts)."""
import contextlib
import dataclasses
import json
import os
import re
import types

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast import ops
from anyres_fast.data import HRPatchDataset, LRDataset
from anyres_fast.models import Discriminator, Generator, GeneratorConfig, perceptual
from anyres_fast.models import published
from anyres_fast.train import TrainOptions
from anyres_fast.train import anyres_recipe as ar
from anyres_fast.train import losses
from anyres_fast.train.augment import AdaController, AugmentPipe
from anyres_fast.train.checkpoint import save_checkpoint
from anyres_fast.train.trainer import Context

from helpers import MICRO_D, MICRO_G, micro_config, randn_filled, write_images
from published_pickles import write_pickle

pytestmark = pytest.mark.usefixtures("one_thread")

P = 64
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------- helpers

def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=1)
    base.update(kw)
    return TrainOptions(**base)


def _ctx(out, device=CPU, **kw):
    return Context(_opts(out, **kw), device, 0, 1)


def _gcfg(scale_branch, beta=0.999, **kw):
    return GeneratorConfig(resolution=P, scale_branch=scale_branch, magnitude_ema_beta=beta, **{**MICRO_G, **kw})


def _is_scale(k):
    return k.startswith("scale_mapping.") or ".scale_affine." in k


def _lr(tmp_path, name="lr", n=3, labels=None, bad=False):
    return write_images(str(tmp_path / name), [(P, P)] * n, labels=labels, bad=bad)


def _hr(tmp_path, name="hr", n=3, labels=None):
    return write_images(str(tmp_path / name), [(96, 80)] * n, seed=1, labels=labels)


def _built(tmp_path, batch=4, device=CPU, out="o", **kw):
    kw.setdefault("lr_data", _lr(tmp_path))
    rec = ar.AnyresRecipe(micro_config(**kw))
    ctx = _ctx(tmp_path / out, device=device, batch=batch)
    rec.build(ctx)
    return rec, ctx


@pytest.fixture
def lpips_calls(monkeypatch):
    """perceptual.build_lpips replaced by a recorder (phase patch's backbone is tested elsewhere)."""
    calls = []

    def fake(name, spatial=False, device=None):
        calls.append((name, spatial, device))
        return ("lpips", name)
    monkeypatch.setattr(perceptual, "build_lpips", fake)
    return calls


def _phase1(run, gcfg, seed=0, c_dim=0):
    """A phase-1 checkpoint of random G / G_ema / D (the teacher run of a patch build)."""
    mods = {"G": randn_filled(Generator(gcfg), seed).state_dict(),
            "G_ema": randn_filled(Generator(gcfg), seed + 1).state_dict(),
            "D": randn_filled(Discriminator(P, c_dim=c_dim, **MICRO_D), seed + 2).state_dict()}
    return save_checkpoint(str(run), 2, {"modules": mods, "config": {"generator": gcfg.to_dict()}}), mods


# ------------------------------------------------------------------------------------- __init__

def test_init_refuses_an_unknown_phase_with_its_name():
    for phase in ("Fixed", "patches", ""):
        with pytest.raises(ValueError, match=re.escape(f"phase must be fixed, patch or panorama, got {phase!r}") + "$"):
            ar.AnyresRecipe(micro_config(phase=phase))


@pytest.mark.parametrize("fov,shown", [(0, "0"), (-30, "-30"), (360.5, "360.5"), (1e9, "1e+09")])
def test_init_refuses_a_panorama_fov_outside_0_360(fov, shown):
    with pytest.raises(ValueError, match=re.escape(f"fov must be in (0, 360] degrees, got {shown}") + "$"):
        ar.AnyresRecipe(micro_config(phase="panorama", fov=fov))


def test_init_accepts_fov_360_and_small_ones_and_ignores_fov_outside_panorama():
    for fov in (360, 360.0, 0.5, 60):
        assert ar.AnyresRecipe(micro_config(phase="panorama", fov=fov)).cfg.fov == fov
    for phase in ("fixed", "patch"):          # only phase panorama reads fov
        ar.AnyresRecipe(micro_config(phase=phase, fov=0))


def test_init_refuses_an_unknown_aug_and_keeps_the_config():
    for aug in ("ADA", "none", "bgc", ""):
        with pytest.raises(ValueError, match=re.escape(f"aug must be noaug, ada or fixed, got {aug!r}") + "$"):
            ar.AnyresRecipe(micro_config(aug=aug))
    for phase in ("fixed", "patch", "panorama"):
        for aug in ("noaug", "ada", "fixed"):
            cfg = micro_config(phase=phase, aug=aug)
            rec = ar.AnyresRecipe(cfg)
            assert rec.cfg is cfg and rec.teacher is None and rec.lpips_net is None


def test_config_defaults_are_the_published_values():
    # docs/training.md, "Phase fixed" / "Phase patch": Adam lr 0.0025 / 0.002, beta (0, 0.99), gamma 2,
    # lazy R1 every 16 steps, EMA ramp-up 0.05, lambda 5, probability 1/2 of an HR batch; ADA 0.6 / 4 / 500.
    c = ar.AnyresTrainConfig()
    assert (c.phase, c.config, c.tiny, c.resolution, c.lpips) == ("fixed", "T", False, 256, "alex")
    assert (c.lr_g, c.lr_d, tuple(c.betas), c.r1_gamma, c.r1_interval) == (0.0025, 0.002, (0.0, 0.99), 2.0, 16)
    assert (c.ema_kimg, c.ema_rampup, c.teacher_lambda, c.patch_probability) == (None, 0.05, 5.0, 0.5)
    assert (c.aug, c.augpipe, c.aug_target, c.aug_p, c.ada_interval, c.ada_kimg) == ("noaug", "bgc", 0.6, None, 4, 500.0)
    assert (c.xflip, c.random_crop, c.min_size, c.blur_sigma, c.blur_fade_kimg, c.fov) == (True, True, None, None, None, 60.0)
    assert ar.AnyresConfig is ar.AnyresTrainConfig


# ----------------------------------------------------------------- generator / discriminator config

def test_generator_config_tiny_with_overrides_and_magnitude_beta():
    saved_tiny = dict(ar.TINY_G)
    cfg = ar.AnyresTrainConfig(resolution=128, config="R", tiny=True, g_kwargs={"z_dim": 5, "channel_max": 4})
    got = ar.generator_config(cfg, 32, 3, True)
    want = GeneratorConfig(**{**saved_tiny, "z_dim": 5, "channel_max": 4}, resolution=128, config="R", c_dim=3,
                           scale_branch=True, magnitude_ema_beta=0.5 ** (32 / 20000))
    assert got == want
    assert ar.TINY_G == saved_tiny and cfg.g_kwargs == {"z_dim": 5, "channel_max": 4}     # nothing modified
    # not tiny: GeneratorConfig's own defaults; beta 0.5^(batch/20000), exactly 1/2 at batch 20000
    got = ar.generator_config(ar.AnyresTrainConfig(resolution=64), 20000, 0, False)
    assert got == GeneratorConfig(resolution=64, config="T", c_dim=0, scale_branch=False, magnitude_ema_beta=0.5)
    assert got.z_dim == GeneratorConfig(resolution=64).z_dim != saved_tiny["z_dim"]


def test_generator_config_takes_a_given_magnitude_beta():
    cfg = ar.AnyresTrainConfig(resolution=64, tiny=True, g_kwargs={"magnitude_ema_beta": 0.25})
    assert ar.generator_config(cfg, 8, 0, False).magnitude_ema_beta == 0.25
    assert cfg.g_kwargs == {"magnitude_ema_beta": 0.25}
    assert ar.generator_config(micro_config(), 8, 0, False).magnitude_ema_beta == 0.5 ** (8 / 20000)


def test_discriminator_kwargs_tiny_width_and_overrides():
    saved = dict(ar.TINY_D)
    T, R = (dict(resolution=64, config=c) for c in "TR")
    assert ar.discriminator_kwargs(ar.AnyresTrainConfig(tiny=True, **T)) == saved
    assert ar.discriminator_kwargs(ar.AnyresTrainConfig(tiny=True, **R)) == saved          # tiny stays tiny
    assert ar.discriminator_kwargs(ar.AnyresTrainConfig(**R)) == {"channel_base": 32768}   # SG2 width for R
    assert ar.discriminator_kwargs(ar.AnyresTrainConfig(**T)) == {}
    got = ar.discriminator_kwargs(ar.AnyresTrainConfig(d_kwargs={"channel_base": 100, "x": 1}, **R))
    assert got == {"channel_base": 100, "x": 1}                                          # d_kwargs last
    got = ar.discriminator_kwargs(ar.AnyresTrainConfig(tiny=True, d_kwargs={"mapping_layers": 5}, **T))
    assert got == {**saved, "mapping_layers": 5}
    assert ar.TINY_D == saved


# ------------------------------------------------------------------------------------- _sources

class _Sources:
    """Stands in for ImageSource: records its arguments; c_dim per path from `c_dims`."""

    def __init__(self, c_dims=None):
        self.made, self.c_dims = [], c_dims or {}

    def __call__(self, path, cache_dir=None, min_size=1, use_labels=False):
        self.made.append(dict(path=path, cache_dir=cache_dir, min_size=min_size, use_labels=use_labels))
        return types.SimpleNamespace(c_dim=self.c_dims.get(path, 0), path=path)


def _sources(tmp_path, monkeypatch, c_dims=None, **kw):
    rec_src = _Sources(c_dims)
    monkeypatch.setattr(ar, "ImageSource", rec_src)
    rec = ar.AnyresRecipe(micro_config(lr_data="LR", **kw))
    lr, hr = rec._sources(_ctx(tmp_path / "run"))
    return rec_src.made, lr, hr


@pytest.mark.parametrize("p,min_size,want", [(64, None, 32), (8, None, 8), (17, None, 8), (18, None, 9),
                                             (64, 10, 10), (64, 100, 100), (10, 3, 3)])
def test_sources_lr_min_size_is_the_given_one_or_half_p_at_least_8(tmp_path, monkeypatch, p, min_size, want):
    made, lr, hr = _sources(tmp_path, monkeypatch, resolution=p, min_size=min_size, hr_data="HR")
    assert made == [dict(path="LR", cache_dir=None, min_size=want, use_labels=True)]
    assert lr.path == "LR" and hr is None                  # phase fixed reads no HR set, even if given


@pytest.mark.parametrize("p,min_size,want", [(64, None, 64), (64, 10, 64), (64, 100, 100), (96, 0, 96)])
def test_sources_hr_min_size_is_at_least_p(tmp_path, monkeypatch, p, min_size, want):
    made, lr, hr = _sources(tmp_path, monkeypatch, phase="patch", hr_data="HR", resolution=p, min_size=min_size)
    assert made[1] == dict(path="HR", cache_dir=None, min_size=want, use_labels=True)
    assert [m["path"] for m in made] == ["LR", "HR"] and hr.path == "HR" and lr.path == "LR"


def test_sources_panorama_reads_only_the_lr_set(tmp_path, monkeypatch):
    made, _, hr = _sources(tmp_path, monkeypatch, phase="panorama", hr_data="HR")
    assert len(made) == 1 and hr is None


def test_sources_cache_dir_is_inside_the_run_folder(tmp_path, monkeypatch):
    made, _, _ = _sources(tmp_path, monkeypatch, phase="patch", hr_data="HR", cache_dir="cache")
    assert [m["cache_dir"] for m in made] == [os.path.join(str(tmp_path / "run"), "cache")] * 2
    absolute = str(tmp_path / "elsewhere")
    made, _, _ = _sources(tmp_path, monkeypatch, phase="patch", hr_data="HR", cache_dir=absolute)
    assert [m["cache_dir"] for m in made] == [absolute] * 2


def test_sources_phase_patch_needs_hr_data(tmp_path, monkeypatch):
    for hr in (None, ""):
        with pytest.raises(ValueError, match=re.escape("phase patch needs --hr-data") + "$"):
            _sources(tmp_path, monkeypatch, phase="patch", hr_data=hr)


def test_sources_refuse_lr_and_hr_sets_with_other_class_counts(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=re.escape("labels: the LR set has 2 classes, the HR set 3") + "$"):
        _sources(tmp_path, monkeypatch, {"LR": 2, "HR": 3}, phase="patch", hr_data="HR")
    _, lr, hr = _sources(tmp_path, monkeypatch, {"LR": 2, "HR": 2}, phase="patch", hr_data="HR")
    assert lr.c_dim == hr.c_dim == 2


def test_sources_with_real_folders_read_labels_and_refuse_a_label_mismatch(tmp_path):
    lr = _lr(tmp_path, labels=[0, 1, 0])
    hr_plain, hr_lab = _hr(tmp_path, "hr0"), _hr(tmp_path, "hr2", labels=[1, 0, 1])
    rec = ar.AnyresRecipe(micro_config(phase="patch", lr_data=lr, hr_data=hr_plain))
    with pytest.raises(ValueError, match=re.escape("labels: the LR set has 2 classes, the HR set 0") + "$"):
        rec._sources(_ctx(tmp_path / "run"))
    rec = ar.AnyresRecipe(micro_config(phase="patch", lr_data=lr, hr_data=hr_lab, cache_dir="cache"))
    a, b = rec._sources(_ctx(tmp_path / "run"))
    assert a.c_dim == b.c_dim == 2 and len(a) == len(b) == 3
    assert os.path.isdir(tmp_path / "run" / "cache")        # the listing cache is written in the run


def test_sources_refuse_images_below_the_minimum_size(tmp_path):
    # 40-pixel images: usable at p = 64 in phase fixed only with min_size <= 40 (default p/2 = 32)
    lr = write_images(str(tmp_path / "lr"), [(40, 40)] * 2 + [(30, 50)])
    rec = ar.AnyresRecipe(micro_config(lr_data=lr))
    assert len(rec._sources(_ctx(tmp_path / "a"))[0]) == 2
    rec = ar.AnyresRecipe(micro_config(lr_data=lr, min_size=30))
    assert len(rec._sources(_ctx(tmp_path / "b"))[0]) == 3


# ----------------------------------------------------------------------------------------- build

def test_build_optimisers_rescale_d_for_lazy_r1(tmp_path):
    rec, _ = _built(tmp_path, lr_g=0.003, lr_d=0.004, betas=(0.2, 0.9), r1_interval=4)
    ratio = 4 / 5
    for opt, net, lr, betas in ((rec.opt_G, rec.G, 0.003, (0.2, 0.9)),
                                (rec.opt_D, rec.D, 0.004 * ratio, (0.2 ** ratio, 0.9 ** ratio))):
        assert isinstance(opt, torch.optim.Adam) and len(opt.param_groups) == 1
        g = opt.param_groups[0]
        assert g["lr"] == pytest.approx(lr, rel=1e-12) and g["eps"] == 1e-8
        assert g["betas"] == pytest.approx(betas, rel=1e-12)
        assert [id(p) for p in g["params"]] == [id(p) for p in net.parameters()]
    assert rec.optimizers() == {"G": rec.opt_G, "D": rec.opt_D}


def test_build_default_optimisers_are_stylegan3s(tmp_path):
    rec, _ = _built(tmp_path, lr_g=0.0025, lr_d=0.002)
    g, d = rec.opt_G.param_groups[0], rec.opt_D.param_groups[0]
    assert (g["lr"], tuple(g["betas"])) == (0.0025, (0.0, 0.99))
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))


@pytest.mark.parametrize("batch,kw,ema_kimg,rampup,sigma,fade", [
    (4, {}, 4 * 10 / 32, 0.05, 0.0, 4 * 200 / 32),
    (8, {"config": "R"}, 8 * 10 / 32, 0.05, 10.0, 8 * 200 / 32),
    (8, {"config": "R", "blur_sigma": 0.0, "blur_fade_kimg": 0.0, "ema_kimg": 0.0, "ema_rampup": None},
     0.0, None, 0.0, 0.0),
    (4, {"blur_sigma": 3, "blur_fade_kimg": 7, "ema_kimg": 2.5, "ema_rampup": 0.2}, 2.5, 0.2, 3.0, 7.0),
    (4, {"phase": "panorama", "config": "R"}, 4 * 10 / 32, 0.05, 10.0, 4 * 200 / 32),
])
def test_build_ema_and_blur_schedules(tmp_path, batch, kw, ema_kimg, rampup, sigma, fade):
    rec, _ = _built(tmp_path, batch=batch, **kw)
    assert rec.ema_kimg == pytest.approx(ema_kimg) and rec.ema_rampup == rampup
    assert rec.blur_init_sigma == sigma and isinstance(rec.blur_init_sigma, float)
    assert rec.blur_fade_kimg == pytest.approx(fade) and isinstance(rec.blur_fade_kimg, float)


def test_build_noaug_has_no_pipe_nor_controller(tmp_path):
    rec, _ = _built(tmp_path, aug="noaug", augpipe="no such preset", aug_p=0.5)
    assert rec.augment_pipe is None and rec.ada is None and rec.state_dict() == {}


@pytest.mark.parametrize("aug,aug_p,p0,target", [("fixed", None, 0.2, None), ("fixed", 0.0, 0.0, None),
                                                 ("fixed", 0.35, 0.35, None), ("ada", None, 0.0, 0.7),
                                                 ("ada", 0.1, 0.1, 0.7)])
def test_build_augmentation_p_and_target(tmp_path, aug, aug_p, p0, target):
    rec, _ = _built(tmp_path, aug=aug, aug_p=aug_p, aug_target=0.7, ada_interval=3, ada_kimg=123.0)
    assert rec.augment_pipe == AugmentPipe.preset("bgc")
    assert isinstance(rec.ada, AdaController)
    assert rec.ada.p == pytest.approx(p0, abs=1e-7) and rec.ada.target == target
    assert rec.ada.interval == 3 and rec.ada.kimg == 123.0


def test_build_refuses_an_unknown_augmentation_preset(tmp_path):
    with pytest.raises(ValueError, match="augmentation pipeline 'xyz'"):
        _built(tmp_path, aug="ada", augpipe="xyz")


def test_build_fixed_phase_networks_g_ema_and_datasets(tmp_path):
    rec, ctx = _built(tmp_path, batch=8, random_crop=False, xflip=False)
    assert rec.gcfg == _gcfg(False, beta=0.5 ** (8 / 20000)) and rec.G.config == rec.gcfg
    assert not rec.gcfg.panorama and rec.c_dim == 0 and rec.lpips_net is None and rec.teacher is None
    ref = Discriminator(P, c_dim=0, **MICRO_D).state_dict()
    assert {k: v.shape for k, v in rec.D.state_dict().items()} == {k: v.shape for k, v in ref.items()}
    assert rec.D.resolution == P and rec.D.c_dim == 0
    # G_ema: G's weights, a separate module, eval and frozen; G and D train
    assert rec.G_ema is not rec.G and rec.G_ema.config == rec.gcfg
    for k, v in rec.G.state_dict().items():
        assert torch.equal(rec.G_ema.state_dict()[k], v), k
    assert not rec.G_ema.training and not any(p.requires_grad for p in rec.G_ema.parameters())
    assert rec.G.training and all(p.requires_grad for p in rec.G.parameters())
    assert rec.D.training and all(p.requires_grad for p in rec.D.parameters())
    assert rec.modules() == {"G": rec.G, "D": rec.D, "G_ema": rec.G_ema}
    ds = rec.datasets()
    assert list(ds) == ["lr"] and isinstance(ds["lr"], LRDataset)
    lr = ds["lr"]
    assert (lr.source, lr.resolution, lr.random_crop, lr.xflip, lr.seed) == (rec.lr_source, P, False, False, 1)
    assert rec.hr_source is None
    ds.clear()
    assert list(rec.datasets()) == ["lr"]                  # a copy each time


def test_build_reads_the_class_count_from_the_lr_set(tmp_path):
    rec, _ = _built(tmp_path, lr_data=_lr(tmp_path, labels=[0, 2, 1]))
    assert rec.c_dim == 3 and rec.gcfg.c_dim == 3 and rec.G.c_dim == 3 and rec.D.c_dim == 3


def test_build_places_every_network_on_the_run_device(tmp_path):
    rec, _ = _built(tmp_path, device=torch.device("meta"))
    for m in (rec.G, rec.G_ema, rec.D):
        assert {t.device.type for t in list(m.parameters()) + list(m.buffers())} == {"meta"}


def test_build_panorama_generator_with_a_float_fov(tmp_path):
    rec, _ = _built(tmp_path, phase="panorama", fov=90)
    assert rec.gcfg.panorama and rec.gcfg.fov == 90.0 and type(rec.gcfg.fov) is float
    assert rec.G.config == rec.G_ema.config == rec.gcfg and not rec.gcfg.scale_branch
    assert rec.ema_rampup == 0.05 and list(rec.datasets()) == ["lr"]


def test_build_patch_from_a_run_teacher(tmp_path, lpips_calls):
    tg = _gcfg(False, beta=0.5, config="R")
    _, mods = _phase1(tmp_path / "t", tg)
    rec, ctx = _built(tmp_path, phase="patch", config="R", hr_data=_hr(tmp_path), teacher=str(tmp_path / "t"),
                      lpips="alex", scale_max=0.4, scale_min=0.1, random_crop=False, xflip=False,
                      ema_rampup=0.05)
    assert rec.gcfg == _gcfg(True, beta=0.5 ** (4 / 20000), config="R")
    assert rec.ema_rampup is None and rec.blur_init_sigma == 0.0        # no blur nor ramp-up after a teacher init
    assert lpips_calls == [("alex", True, CPU)] and rec.lpips_net == ("lpips", "alex")
    assert rec.tcfg == tg and rec.modules() == {"G": rec.G, "D": rec.D, "G_ema": rec.G_ema, "teacher": rec.teacher}
    for k, v in rec.G_ema.state_dict().items():
        if not _is_scale(k):
            assert torch.equal(v, mods["G_ema"][k]), k
    ds = rec.datasets()
    assert list(ds) == ["lr", "hr"] and isinstance(ds["hr"], HRPatchDataset)
    hr = ds["hr"]
    assert (hr.source, hr.resolution, hr.scale_max, hr.scale_min, hr.random_crop, hr.xflip, hr.seed) == \
        (rec.hr_source, P, 0.4, 0.1, False, False, 1)
    assert (ds["lr"].random_crop, ds["lr"].xflip) == (False, False)
    # optimisers over the weights as loaded from the teacher
    assert [id(p) for p in rec.opt_D.param_groups[0]["params"]] == [id(p) for p in rec.D.parameters()]
    for k, v in rec.D.state_dict().items():
        assert torch.equal(v, mods["D"][k]), k
    conf = rec.config()
    assert conf["teacher_generator"] == tg.to_dict() and conf["generator"] == rec.gcfg.to_dict()


# -------------------------------------------------------------------- Recipe interface methods

def test_config_is_the_settings_plus_generator_and_class_count(tmp_path):
    cfg = micro_config(lr_data=_lr(tmp_path), betas=(0.1, 0.8))
    rec = ar.AnyresRecipe(cfg)
    before = rec.config()
    assert before == {**dataclasses.asdict(cfg), "betas": [0.1, 0.8]}       # before build: the settings
    rec.build(_ctx(tmp_path / "o"))
    got = rec.config()
    assert got == {**dataclasses.asdict(cfg), "betas": [0.1, 0.8], "generator": rec.gcfg.to_dict(), "c_dim": 0}
    assert json.loads(json.dumps(got)) == got and cfg.betas == (0.1, 0.8)
    rec.tcfg = _gcfg(False, z_dim=6)
    assert rec.config()["teacher_generator"] == rec.tcfg.to_dict()
    rec.tcfg = None
    assert "teacher_generator" not in rec.config()


def test_ada_state_round_trips_and_a_missing_entry_is_ignored(tmp_path):
    a, _ = _built(tmp_path, out="a", aug="ada")
    b, _ = _built(tmp_path, out="b", aug="ada")
    a.ada.load_state_dict({"p": 0.375, "sum": 3.0, "count": 8.0})
    sd = a.state_dict()
    assert list(sd) == ["ada"] and sd["ada"] == a.ada.state_dict() and sd["ada"]["p"] == 0.375
    b.load_state_dict(sd)
    assert b.ada.state_dict() == sd["ada"]
    b.load_state_dict({})
    assert b.ada.p == 0.375
    n, _ = _built(tmp_path, out="n")
    n.load_state_dict(sd)                         # noaug: nothing to restore
    assert n.ada is None and n.state_dict() == {}


def test_data_report_names_each_source(tmp_path, lpips_calls):
    tg = _gcfg(False)
    _phase1(tmp_path / "t", tg)
    rec, _ = _built(tmp_path, lr_data=_lr(tmp_path, bad=True))
    rep = rec.data_report()
    assert list(rep) == ["lr"] and rep["lr"] == rec.lr_source.report() and rep["lr"]["skipped"] == 4
    rec, _ = _built(tmp_path, out="p", phase="patch", hr_data=_hr(tmp_path), teacher=str(tmp_path / "t"))
    rep = rec.data_report()
    assert list(rep) == ["lr", "hr"] and rep["hr"] == rec.hr_source.report() and rep["hr"]["images"] == 3


# ------------------------------------------------------------------------------------ train_step

class _StepCtx:
    """A Context that records what train_step asks of it; chunks come from `batches[kind]`."""

    def __init__(self, batches, log, u=0.0, nimg=0, batch=4, chunk_weight=0.5, offset=0.0):
        self.device, self.batch, self.nimg, self.chunk_weight = CPU, batch, nimg, chunk_weight
        self.batches, self.log, self.u, self.offset = batches, log, u, offset
        self.uniform_tags, self.next_calls, self.randn_calls, self.opt_calls, self.mean_calls = [], [], [], [], []

    def uniform(self, tag):
        self.uniform_tags.append(tag)
        return self.u

    def next_batch(self, name, host_keys=()):
        self.next_calls.append((name, tuple(host_keys)))
        return [dict(c) for c in self.batches[name]]

    def randn(self, shape, tag, chunk):
        self.randn_calls.append((tuple(shape), tag, chunk))
        return torch.full(tuple(shape), float(chunk) + (0.5 if tag.endswith("G") else 0.25))

    def generator(self, tag, chunk=None):
        return torch.Generator().manual_seed(0)

    def autocast(self):
        return contextlib.nullcontext()

    def step_optimizer(self, name, opt, params):
        self.log.append(("opt", name))
        self.opt_calls.append(dict(name=name, opt=opt, params=list(params),
                                   grads=[None if p.grad is None else p.grad.clone() for p in params]))
        for p in params:
            p.grad = None

    def mean_over_ranks_tensors(self, tensors):
        self.log.append(("mean",))
        self.mean_calls.append([t.clone() for t in tensors])
        return [t + self.offset for t in tensors]


class _Ada:
    def __init__(self, log, p=0.25):
        self.log, self.p, self.ends = log, p, []

    def end_step(self, ctx, step):
        self.log.append(("ada_end",))
        self.ends.append((ctx, step))
        self.p = 0.5


def _emas(G):
    return [(n, b) for n, b in G.named_buffers() if n.endswith("magnitude_ema") or n.endswith("w_avg")]


def _stepper(phase="fixed", c_dim=0, **kw):
    """A recipe with micro G / D and stub losses / draws / update_ema recording into rec.log:
    loss_G of chunk k is (k+1) * sum(G's first weight) per sample with stats G/x = k+1, G/y = 10(k+1);
    loss_Dmain (k+1) * sum(D's first weight) with D/x = 2(k+1), and adds (k+1) * (i+1) / 8 to the i-th
    running statistic of G; loss_Dreg 3 * sum(D's first weight) with D/r = 4 + k."""
    rec = ar.AnyresRecipe(micro_config(phase=phase, **kw))
    rec.c_dim = c_dim
    rec.gcfg = _gcfg(phase == "patch", c_dim=c_dim)
    torch.manual_seed(0)
    rec.G, rec.D = Generator(rec.gcfg), Discriminator(P, c_dim=c_dim, **MICRO_D)
    rec.opt_G, rec.opt_D = object(), object()
    rec.blur_init_sigma, rec.blur_fade_kimg, rec.blur_sigma = 0.0, 25.0, 5.0
    log = rec.log = []
    rec.seen = {"G": [], "D": [], "Dreg": []}
    pg, pd = next(rec.G.parameters()), next(rec.D.parameters())
    with torch.no_grad():
        for i, (_, b) in enumerate(_emas(rec.G)):
            b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(i)))

    def state(chunk, z=None):
        return dict(chunk=chunk, z=z, blur=rec.blur_sigma,
                    G_grad=[p.requires_grad for p in rec.G.parameters()],
                    D_grad=[p.requires_grad for p in rec.D.parameters()],
                    emas=[b.clone() for _, b in _emas(rec.G)])

    def loss_G(chunk, z, ctx):
        k = chunk["chunk_index"]
        log.append(("G", k))
        rec.seen["G"].append(dict(state(chunk, z), ctx=ctx))
        return (k + 1) * pg.sum() * torch.ones(z.shape[0]), {"G/x": float(k + 1), "G/y": 10.0 * (k + 1)}

    def loss_Dmain(chunk, z, ctx):
        k = chunk["chunk_index"]
        log.append(("D", k))
        rec.seen["D"].append(dict(state(chunk, z), ctx=ctx))
        with torch.no_grad():
            for i, (_, b) in enumerate(_emas(rec.G)):
                b += (k + 1) * (i + 1) / 8
        return (k + 1) * pd.sum() * torch.ones(z.shape[0]), {"D/x": 2.0 * (k + 1)}

    def loss_Dreg(chunk, ctx):
        k = chunk["chunk_index"]
        log.append(("Dreg", k))
        rec.seen["Dreg"].append(dict(state(chunk), ctx=ctx))
        return 3 * pd.sum() * torch.ones(chunk["image"].shape[0]), {"D/r": 4.0 + k}

    def fake_labels(ctx, kind, n, tag, k):
        log.append(("labels", kind, n, tag, k))
        return torch.full((n, c_dim), float(ord(tag) + k))

    def panorama_draws(ctx, tag, k, n):
        log.append(("pano", tag, k, n))
        return {"pano_crop": torch.full((n,), 100.0 * ord(tag) + k), "pano_splice": torch.full((n,), float(k))}

    def update_ema(nimg, batch):
        log.append(("ema", nimg, batch, [b.clone() for _, b in _emas(rec.G)]))

    rec.loss_G, rec.loss_Dmain, rec.loss_Dreg = loss_G, loss_Dmain, loss_Dreg
    rec.fake_labels, rec.panorama_draws, rec.update_ema = fake_labels, panorama_draws, update_ema
    rec.pg, rec.pd = pg, pd
    return rec


def _chunks(kind, n=2, b=2, c_dim=0):
    out = []
    for k in range(n):
        ch = {"image": torch.full((b, 3, 4, 4), float(k)), "c": torch.zeros(b, c_dim), "tag": f"{kind}{k}"}
        if kind == "hr":
            ch.update(canvas=torch.full((b,), 128.0), box=torch.zeros(b, 2))
        out.append(ch)
    if kind == "hr":
        out[0].update(s=torch.tensor([0.25, 0.5]), reduction=torch.tensor([0, 2]), prepared=torch.tensor([1, 0]))
        out[1].update(s=torch.tensor([0.125, 0.875]), reduction=torch.tensor([0, 0]), prepared=torch.tensor([1, 1]))
    return out


def _ctx_for(rec, **kw):
    c = rec.c_dim
    return _StepCtx({"lr": _chunks("lr", c_dim=c), "hr": _chunks("hr", c_dim=c)}, rec.log, **kw)


def _loss_events(log):
    return [e for e in log if e[0] in ("G", "D", "Dreg", "opt", "ema", "ada_end")]


def test_step_fixed_phase_order_gradients_and_stats(tmp_path):
    rec = _stepper(r1_interval=4)
    rec.ada = _Ada(rec.log)
    ctx = _ctx_for(rec, nimg=1234, batch=4, chunk_weight=0.5)
    stats = rec.train_step(ctx, 8)
    ev = _loss_events(rec.log)
    assert [e[:2] if e[0] != "ema" else e[:3] for e in ev] == [
        ("G", 0), ("G", 1), ("opt", "G"), ("D", 0), ("D", 1), ("opt", "D"),
        ("Dreg", 0), ("Dreg", 1), ("opt", "Dreg"), ("ema", 1234, 4), ("ada_end",)]
    assert ctx.uniform_tags == [] and ctx.next_calls == [("lr", ("canvas", "box"))]
    assert rec.ada.ends == [(ctx, 8)]
    # the optimiser of each phase over its network's parameters
    calls = {c["name"]: c for c in ctx.opt_calls}
    assert calls["G"]["opt"] is rec.opt_G and calls["D"]["opt"] is calls["Dreg"]["opt"] is rec.opt_D
    assert [id(p) for p in calls["G"]["params"]] == [id(p) for p in rec.G.parameters()]
    assert [id(p) for p in calls["D"]["params"]] == [id(p) for p in rec.D.parameters()] == \
        [id(p) for p in calls["Dreg"]["params"]]
    # d/dw of sum_k chunk_weight * mean((k+1) * sum(w)) = chunk_weight * (1 + 2); R1: 0.5 * 3 * 2 chunks
    for name, want in (("G", 1.5), ("D", 1.5), ("Dreg", 3.0)):
        grads = calls[name]["grads"]
        torch.testing.assert_close(grads[0], torch.full_like(grads[0], want), rtol=0, atol=0)
        assert all(g is None for g in grads[1:]), name
    # stats: each loss stat averaged over the chunks; the batch kind; ADA's p before end_step
    assert stats == {"patch_batch": 0.0, "Progress/augment": 0.25, "G/x": 1.5, "G/y": 15.0, "D/x": 3.0, "D/r": 4.5}


def test_step_networks_train_in_turn(tmp_path):
    rec = _stepper(r1_interval=1)
    rec.train_step(_ctx_for(rec), 3)
    for s in rec.seen["G"]:
        assert all(s["G_grad"]) and not any(s["D_grad"])
    for s in rec.seen["D"] + rec.seen["Dreg"]:
        assert not any(s["G_grad"]) and all(s["D_grad"])
    assert not any(p.requires_grad for p in rec.D.parameters())


def test_step_chunks_latents_and_context(tmp_path):
    rec = _stepper(r1_interval=4)
    ctx = _ctx_for(rec)
    rec.train_step(ctx, 4)
    for name in ("G", "D", "Dreg"):
        seen = rec.seen[name]
        assert [s["chunk"]["chunk_index"] for s in seen] == [0, 1]
        assert [s["chunk"]["tag"] for s in seen] == ["lr0", "lr1"] and all(s["ctx"] is ctx for s in seen)
        assert all("fake_c" not in s["chunk"] and "pano_crop" not in s["chunk"] for s in seen)
    zd = rec.gcfg.z_dim
    zg = [c for c in ctx.randn_calls if c[1] == ctx.randn_calls[0][1]]
    zdc = [c for c in ctx.randn_calls if c[1] != ctx.randn_calls[0][1]]
    assert [(c[0], c[2]) for c in zg] == [((2, zd), 0), ((2, zd), 1)] == [(c[0], c[2]) for c in zdc]
    assert len({c[1] for c in ctx.randn_calls}) == 2            # G's and D's latents are separate draws
    # the tags name counter-based streams: a renamed one changes every draw of a run resumed across versions
    assert [c[1] for c in zg] == ["z_G", "z_G"] and [c[1] for c in zdc] == ["z_D", "z_D"]
    for name in ("G", "D"):
        for k, s in enumerate(rec.seen[name]):
            assert torch.equal(s["z"], torch.full((2, zd), k + (0.5 if name == "G" else 0.25)))
    assert [e for e in rec.log if e[0] in ("labels", "pano")] == []


@pytest.mark.parametrize("step,r1", [(0, True), (3, False), (4, True), (6, False), (12, True)])
def test_step_lazy_r1_every_interval(tmp_path, step, r1):
    rec = _stepper(r1_interval=4)
    ctx = _ctx_for(rec)
    stats = rec.train_step(ctx, step)
    assert [c["name"] for c in ctx.opt_calls] == (["G", "D", "Dreg"] if r1 else ["G", "D"])
    assert ("D/r" in stats) is r1 and len(rec.seen["Dreg"]) == (2 if r1 else 0)
    assert "Progress/augment" not in stats


@pytest.mark.parametrize("u,prob,kind", [(0.25, 0.5, "hr"), (0.5, 0.5, "lr"), (0.75, 0.5, "lr"),
                                         (0.75, 0.8, "hr"), (0.0, 0.0, "lr"), (0.999, 1.0, "hr")])
def test_step_patch_batch_kind_from_one_shared_draw(tmp_path, u, prob, kind):
    rec = _stepper(phase="patch", patch_probability=prob)
    ctx = _ctx_for(rec, u=u)
    stats = rec.train_step(ctx, 1)
    # the tag is part of the counter-based draw: resumed runs must draw the same kind
    assert ctx.uniform_tags == ["batch_kind"] and ctx.next_calls == [(kind, ("canvas", "box"))]
    assert stats["patch_batch"] == float(kind == "hr")
    assert [s["chunk"]["tag"] for s in rec.seen["G"]] == [f"{kind}0", f"{kind}1"]


def test_step_patch_hr_batch_reports_scales_and_decoding(tmp_path):
    rec = _stepper(phase="patch")
    stats = rec.train_step(_ctx_for(rec, u=0.1), 1)
    # scale of the first chunk; reductions [0, 2, 0, 0]: a quarter decoded fast, max 2; prepared 3 of 4
    assert stats == {"patch_batch": 1.0, "G/x": 1.5, "G/y": 15.0, "D/x": 3.0, "scale/min_s": 0.25,
                     "scale/max_s": 0.5, "data/fast_decode": 0.25, "data/max_reduction": 2.0,
                     "data/prepared": 0.75}
    for key in ("scale/min_s", "scale/max_s", "data/fast_decode", "data/max_reduction", "data/prepared"):
        assert type(stats[key]) is float, key
    rec = _stepper(phase="patch")
    stats = rec.train_step(_ctx_for(rec, u=0.9), 1)
    assert not any(k.startswith(("scale/", "data/")) for k in stats)


def test_step_patch_hr_batch_counts_reduction_1_as_fast_decoding(tmp_path):
    rec = _stepper(phase="patch")
    ctx = _ctx_for(rec, u=0.1)
    for ch, red in zip(ctx.batches["hr"], ([1, 0], [0, 0])):
        ch["reduction"] = torch.tensor(red)
    stats = rec.train_step(ctx, 1)
    # reduction 1 is the fast path at full size (docs/data.md); only 0 is the exact path
    assert stats["data/fast_decode"] == 0.25 and stats["data/max_reduction"] == 1.0


@pytest.mark.parametrize("c_dim", [1, 3])
def test_step_draws_fake_labels_per_phase_only_with_classes(tmp_path, c_dim):
    for phase, u, kind in (("fixed", 0.0, "lr"), ("patch", 0.1, "hr")):
        rec = _stepper(phase=phase, c_dim=c_dim, r1_interval=1)
        rec.train_step(_ctx_for(rec, u=u), 0)
        draws = [e for e in rec.log if e[0] == "labels"]
        assert sorted(draws) == sorted(("labels", kind, 2, tag, k) for tag in "GD" for k in range(2))
        for name, tag in (("G", "G"), ("D", "D")):
            for k, s in enumerate(rec.seen[name]):
                assert torch.equal(s["chunk"]["fake_c"], torch.full((2, c_dim), float(ord(tag) + k))), (name, k)
                assert s["chunk"]["chunk_index"] == k
        assert all("fake_c" not in s["chunk"] for s in rec.seen["Dreg"])   # R1 scores reals only


def test_step_panorama_draws_per_phase(tmp_path):
    rec = _stepper(phase="panorama", c_dim=2)
    rec.train_step(_ctx_for(rec), 1)
    draws = [e for e in rec.log if e[0] == "pano"]
    assert sorted(draws) == sorted(("pano", tag, k, 2) for tag in "GD" for k in range(2))
    for name in ("G", "D"):
        for k, s in enumerate(rec.seen[name]):
            ch = s["chunk"]
            assert torch.equal(ch["pano_crop"], torch.full((2,), 100.0 * ord(name) + k))
            assert torch.equal(ch["pano_splice"], torch.full((2,), float(k)))
            assert torch.equal(ch["fake_c"], torch.full((2, 2), float(ord(name) + k)))     # both kept
            assert ch["chunk_index"] == k


@pytest.mark.parametrize("init,fade,nimg", [(10.0, 25.0, 5000), (10.0, 25.0, 30000), (2.0, 4.0, 1000),
                                            (0.5, 25.0, 0), (0.0, 25.0, 0)])
def test_step_blur_sigma_follows_the_schedule(tmp_path, init, fade, nimg):
    rec = _stepper()
    rec.blur_init_sigma, rec.blur_fade_kimg = init, fade
    stats = rec.train_step(_ctx_for(rec, nimg=nimg), 1)
    want = max(0.0, init * (1 - nimg / (fade * 1000)))        # StyleGAN3's linear fade
    assert rec.blur_sigma == pytest.approx(want) == losses.blur_sigma_at(nimg, init, fade)
    assert all(s["blur"] == pytest.approx(want) for s in rec.seen["G"] + rec.seen["D"])
    if init > 0:
        assert stats["D/blur_sigma"] == pytest.approx(want)
    else:
        assert "D/blur_sigma" not in stats


def test_step_running_statistics_are_the_mean_of_the_chunk_updates(tmp_path):
    rec = _stepper(r1_interval=1)
    names = [n for n, _ in _emas(rec.G)]
    assert len(names) == 6 and names[-1] == "mapping.w_avg"          # 5 layer magnitudes and w_avg
    start = [b.clone() for _, b in _emas(rec.G)]
    others = {n: b.clone() for n, b in rec.G.named_buffers() if n not in names}
    ctx = _ctx_for(rec, offset=0.0)
    rec.train_step(ctx, 0)
    for s in rec.seen["D"]:                   # every chunk starts from the step's values
        for got, s0 in zip(s["emas"], start):
            assert torch.equal(got, s0)
    # chunks add (k+1)(i+1)/8: the mean over chunks k = 0, 1 is 1.5 (i+1)/8
    want = [s0 + 1.5 * (i + 1) / 8 for i, s0 in enumerate(start)]
    assert len(ctx.mean_calls) == 1
    for got, w in zip(ctx.mean_calls[0], want):
        torch.testing.assert_close(got, w, rtol=0, atol=1e-6)
    for (_, b), w in zip(_emas(rec.G), want):
        torch.testing.assert_close(b, w, rtol=0, atol=1e-6)
    for n, b in rec.G.named_buffers():
        if n in others:
            assert torch.equal(b, others[n]), n
    # update_ema sees the averaged statistics (it copies G's buffers into G_ema)
    ema = [e for e in rec.log if e[0] == "ema"][0]
    for got, (_, b) in zip(ema[3], _emas(rec.G)):
        assert torch.equal(got, b)
    assert rec.log.index(("mean",)) > max(i for i, e in enumerate(rec.log) if e[:1] == ("D",))
    assert rec.log.index(("mean",)) < rec.log.index(ema)


def test_step_running_statistics_take_the_mean_over_ranks(tmp_path):
    rec = _stepper()
    start = [b.clone() for _, b in _emas(rec.G)]
    ctx = _ctx_for(rec, offset=100.0)          # the "other ranks" shift the mean by 100
    rec.train_step(ctx, 1)
    for (_, b), s0, i in zip(_emas(rec.G), start, range(6)):
        torch.testing.assert_close(b, s0 + 1.5 * (i + 1) / 8 + 100.0, rtol=0, atol=1e-5)


def test_step_with_three_chunks_and_another_chunk_weight(tmp_path):
    rec = _stepper()
    start = [b.clone() for _, b in _emas(rec.G)]
    ctx = _StepCtx({"lr": _chunks("lr", n=3)}, rec.log, chunk_weight=0.25)
    stats = rec.train_step(ctx, 1)
    grads = {c["name"]: c["grads"][0] for c in ctx.opt_calls}
    # 0.25 * (1 + 2 + 3) = 1.5; the stats' chunk means (1+2+3)/3 = 2
    assert torch.equal(grads["G"], torch.full_like(grads["G"], 1.5))
    assert stats["G/x"] == pytest.approx(2.0) and stats["D/x"] == pytest.approx(4.0)
    for (_, b), s0, i in zip(_emas(rec.G), start, range(6)):
        torch.testing.assert_close(b, s0 + 2.0 * (i + 1) / 8, rtol=0, atol=1e-6)


def test_step_with_real_losses_on_a_built_recipe(tmp_path):
    """One step of the real losses on a built micro recipe through a real Context (two chunks, R1 step)."""
    rec, ctx = _built(tmp_path, batch=4)
    ctx.batch_gpu, ctx.num_chunks, ctx.chunk_weight = 2, 2, 0.5
    batch = {"image": torch.rand(4, 3, P, P) * 2 - 1, "c": torch.zeros(4, 0)}

    class _Stream:
        def next(self):
            return batch
    ctx.streams["lr"] = _Stream()
    d0 = {k: v.clone() for k, v in rec.D.state_dict().items()}
    g0 = {k: v.clone() for k, v in rec.G.state_dict().items()}
    stats = rec.train_step(ctx, 0)
    assert set(stats) == {"patch_batch", "G/loss_adv", "G/loss_total", "D/loss", "D/real", "D/fake", "D/r1_penalty"}
    assert all(np.isfinite(v) for v in stats.values())
    assert any(not torch.equal(v, d0[k]) for k, v in rec.D.state_dict().items())
    assert any(not torch.equal(v, g0[k]) for k, v in rec.G.named_parameters() for v in [v.detach()])
    for (n, b), (_, be) in zip(rec.G.named_buffers(), rec.G_ema.named_buffers()):
        assert torch.equal(b, be), n


# -------------------------------------------------------------------------------------- snapshot

class _SnapG:
    """Stands in for G_ema: images that depend on the latent, canvases that are coordinate ramps."""

    def __init__(self, z_dim=3):
        self.z_dim, self.calls = z_dim, []

    @staticmethod
    def _ramp(z, h, w):
        yy, xx = torch.meshgrid(torch.linspace(-0.9, 0.9, h), torch.linspace(-0.9, 0.9, w), indexing="ij")
        chan = torch.stack([xx, yy, xx * yy])
        return (chan[None] * 0.5 + 0.4 * torch.tanh(z[:, :1, None, None])).clamp(-1, 1)

    def __call__(self, z, c=None):
        self.calls.append(("G", z, c))
        p = self.p
        return self._ramp(z, p, p)

    def render(self, z, size, c=None, tile_batch=None, progress=True):
        self.calls.append(("render", z, c, size, progress))
        return self._ramp(z, size, size) * (0.5 if size == 2 * self.p else 0.8)

    def render_panorama(self, z, c=None, tile_batch=None, progress=True):
        self.calls.append(("pano", z, c, progress))
        return self._ramp(z, self.p, 5 * self.p)


def _snap_recipe(phase="fixed", c_dim=0, n=3, p=8):
    rec = ar.AnyresRecipe(micro_config(phase=phase, resolution=p, grid_seeds=n))
    rec.c_dim = c_dim
    rec.G_ema = _SnapG()
    rec.G_ema.p = p
    return rec


def _grids(monkeypatch):
    saved = []
    monkeypatch.setattr(ar, "save_grid", lambda images, path: saved.append((images.clone(), path)) or path)
    return saved


def test_snapshot_fixed_one_row_of_fixed_seeds(tmp_path, monkeypatch):
    saved = _grids(monkeypatch)
    rec = _snap_recipe(n=3)
    rec.snapshot(_ctx(tmp_path / "o"), str(tmp_path), 7)
    rec.snapshot(_ctx(tmp_path / "o"), str(tmp_path), 8)
    (a, path_a), (b, path_b) = saved
    assert path_a == os.path.join(str(tmp_path), "step00000007.png")
    assert path_b == os.path.join(str(tmp_path), "step00000008.png")
    (_, z, c), (_, z2, _) = rec.G_ema.calls
    assert z.shape == (3, 3) and c is None and torch.equal(z, z2)        # the same seeds at every snapshot
    assert len({tuple(r.tolist()) for r in z}) == 3
    assert a.shape == (1, 3, 3, 8, 8) and torch.equal(a[0], _SnapG._ramp(z, 8, 8)) and torch.equal(a, b)


def test_snapshot_patch_rows_base_downsized_and_centre_crops(tmp_path, monkeypatch):
    saved = _grids(monkeypatch)
    rec = _snap_recipe(phase="patch", n=2, p=8)
    rec.snapshot(_ctx(tmp_path / "o"), str(tmp_path), 3)
    (grid, _), = saved
    (_, z, _), r2, r4 = rec.G_ema.calls
    assert (r2[0], r2[3], r4[3]) == ("render", 16, 32) and r2[4] is False and r4[4] is False
    assert torch.equal(r2[1], z) and torch.equal(r4[1], z)
    c2, c4 = _SnapG._ramp(z, 16, 16) * 0.5, _SnapG._ramp(z, 32, 32) * 0.8
    assert grid.shape == (5, 2, 3, 8, 8)
    assert torch.equal(grid[0], _SnapG._ramp(z, 8, 8))
    assert torch.equal(grid[1], ops.lanczos_resample(c2, (8, 8)))
    assert torch.equal(grid[2], c2[..., 4:12, 4:12])             # the centre 8 x 8 of the 16-pixel canvas
    assert torch.equal(grid[3], ops.lanczos_resample(c4, (8, 8)))
    assert torch.equal(grid[4], c4[..., 12:20, 12:20])
    # the downsized canvas is the canvas's low-pass image: a 2x2 box average is close to it
    box = torch.nn.functional.avg_pool2d(c2, 2)
    assert (grid[1] - box)[..., 1:-1, 1:-1].abs().max() < 0.05


def test_snapshot_panorama_one_strip_per_seed(tmp_path, monkeypatch):
    saved = _grids(monkeypatch)
    rec = _snap_recipe(phase="panorama", n=3, p=8, c_dim=2)
    rec.snapshot(_ctx(tmp_path / "o"), str(tmp_path), 12)
    (grid, path), = saved
    (kind, z, c, progress), = rec.G_ema.calls
    assert kind == "pano" and progress is False and torch.equal(c, torch.eye(2)[[0, 1, 0]])
    assert grid.shape == (3, 1, 3, 8, 40) and torch.equal(grid[:, 0], _SnapG._ramp(z, 8, 40))
    assert path.endswith("step00000012.png")


def test_snapshot_cycles_through_the_classes(tmp_path, monkeypatch):
    _grids(monkeypatch)
    rec = _snap_recipe(phase="patch", c_dim=3, n=5)
    rec.snapshot(_ctx(tmp_path / "o"), str(tmp_path), 0)
    want = torch.zeros(5, 3)
    for i in range(5):
        want[i, i % 3] = 1
    assert len(rec.G_ema.calls) == 3
    for call in rec.G_ema.calls:
        assert torch.equal(call[2], want)


@pytest.mark.parametrize("phase,n,size", [("fixed", 3, (24, 8)), ("patch", 2, (16, 40)), ("panorama", 3, (40, 24))])
def test_snapshot_png_size(tmp_path, phase, n, size):
    rec = _snap_recipe(phase=phase, n=n, p=8)
    rec.snapshot(_ctx(tmp_path / "o"), str(tmp_path), 5)
    with Image.open(tmp_path / "step00000005.png") as im:
        assert im.size == size and im.mode == "RGB"


def test_snapshot_with_a_real_generator(tmp_path):
    rec, ctx = _built(tmp_path, grid_seeds=2)
    rec.snapshot(ctx, str(tmp_path), 1)
    with Image.open(tmp_path / "step00000001.png") as im:
        assert im.size == (2 * P, P)


# ------------------------------------------------------------------------- a pickle as the teacher

def _pickle_bare(tmp_path, nets=None, c_dim=0, resume=False, **kw):
    """A patch recipe with a pickle teacher, G / G_ema built as build() builds them; cached_network_pickle
    answers `nets` (or fails the test when nets is None)."""
    rec = ar.AnyresRecipe(micro_config(phase="patch", teacher=str(tmp_path / "net.pkl"), **kw))
    ctx = _ctx(tmp_path / "run", resume=resume)
    rec.c_dim = c_dim
    rec.gcfg = _gcfg(True, beta=0.5 ** (4 / 20000), c_dim=c_dim)
    rec.G = Generator(rec.gcfg)
    rec.G_ema = Generator(rec.gcfg).eval().requires_grad_(False)
    rec.G_ema.load_state_dict(rec.G.state_dict())
    return rec, ctx


@pytest.fixture
def fake_pickle(monkeypatch):
    holder = {}

    def cached(path, with_training_networks=True):
        holder.setdefault("paths", []).append(path)
        assert "nets" in holder, "the pickle must not be read"
        return holder["nets"]
    monkeypatch.setattr(published, "cached_network_pickle", cached)
    return holder


def test_student_config_is_the_teachers_with_a_scale_branch_and_this_runs_beta(tmp_path, fake_pickle):
    tcfg = _gcfg(False, beta=0.9, z_dim=6, scale_branch_style="anyres-gan", scale_norm="zerocentered")
    fake_pickle["nets"] = types.SimpleNamespace(config=tcfg)
    rec, ctx = _pickle_bare(tmp_path)
    got = rec._student_config_for_pickle(ctx)
    assert got.scale_branch is True and got.magnitude_ema_beta == 0.5 ** (4 / 20000)
    assert {k: v for k, v in got.to_dict().items() if k not in ("scale_branch", "magnitude_ema_beta")} == \
        {k: v for k, v in tcfg.to_dict().items() if k not in ("scale_branch", "magnitude_ema_beta")}
    assert got.z_dim == 6 and got.scale_branch_style == "anyres-gan" and tcfg.scale_branch is False
    assert fake_pickle["paths"] == [str(tmp_path / "net.pkl")]


def test_student_config_refuses_another_resolution_or_class_count(tmp_path, fake_pickle):
    t = str(tmp_path / "net.pkl")
    fake_pickle["nets"] = types.SimpleNamespace(config=GeneratorConfig(resolution=128, **MICRO_G))
    rec, ctx = _pickle_bare(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"--teacher {t}: a 128-pixel generator, but this run trains "
                                                   "at 64 (pass --resolution 128)") + "$"):
        rec._student_config_for_pickle(ctx)
    fake_pickle["nets"] = types.SimpleNamespace(config=_gcfg(False, c_dim=3))
    for c_dim in (0, 2):
        rec, ctx = _pickle_bare(tmp_path, c_dim=c_dim)
        with pytest.raises(ValueError, match=re.escape(f"--teacher {t}: the teacher has 3 classes, the data {c_dim}") + "$"):
            rec._student_config_for_pickle(ctx)
    rec, ctx = _pickle_bare(tmp_path, c_dim=3)
    assert rec._student_config_for_pickle(ctx).c_dim == 3


def test_student_config_on_resume_is_the_stored_one(tmp_path, fake_pickle):
    stored = _gcfg(True, beta=0.125, z_dim=5)
    save_checkpoint(str(tmp_path / "run"), 3, {"config": {"generator": stored.to_dict()}, "modules": {}})
    rec, ctx = _pickle_bare(tmp_path, resume=True)
    assert rec._student_config_for_pickle(ctx) == stored and "paths" not in fake_pickle
    # without --resume the stored run is not read; a checkpoint without a generator config reads the pickle
    fake_pickle["nets"] = types.SimpleNamespace(config=_gcfg(False, z_dim=7))
    rec, ctx = _pickle_bare(tmp_path, resume=False)
    assert rec._student_config_for_pickle(ctx).z_dim == 7
    save_checkpoint(str(tmp_path / "run"), 4, {"config": {}, "modules": {}})
    rec, ctx = _pickle_bare(tmp_path, resume=True)
    assert rec._student_config_for_pickle(ctx).z_dim == 7


def _nets(G=True, seed=10):
    g = randn_filled(Generator(_gcfg(False)), seed).eval() if G else None
    ge = randn_filled(Generator(_gcfg(False)), seed + 1).eval()
    return types.SimpleNamespace(config=_gcfg(False, beta=0.75), G=g, G_ema=ge, D=None)


def test_init_from_pickle_loads_g_g_ema_and_a_frozen_teacher(tmp_path, fake_pickle):
    nets = fake_pickle["nets"] = _nets()
    rec, ctx = _pickle_bare(tmp_path)
    fresh = {k: v.clone() for k, v in rec.G.state_dict().items()}
    rec._init_from_pickle(ctx)
    for name, target, source in (("G", rec.G, nets.G), ("G_ema", rec.G_ema, nets.G_ema)):
        src = source.state_dict()
        for k, v in target.state_dict().items():
            assert torch.equal(v, src[k] if not _is_scale(k) else fresh[k]), (name, k)
    for k, v in rec.teacher.state_dict().items():
        assert torch.equal(v, nets.G_ema.state_dict()[k]), k
    assert rec.teacher is not nets.G_ema                              # the cached modules stay as read
    assert not rec.teacher.training and not any(p.requires_grad for p in rec.teacher.parameters())
    assert not any(p.requires_grad for p in rec.G_ema.parameters()) and all(p.requires_grad for p in rec.G.parameters())
    assert all(p.requires_grad for p in nets.G_ema.parameters())      # not frozen in place
    assert rec.tcfg is nets.config and rec.teacher_path == str(tmp_path / "net.pkl")


def test_init_from_pickle_without_g_uses_g_ema_for_both(tmp_path, fake_pickle):
    nets = fake_pickle["nets"] = _nets(G=False)
    rec, ctx = _pickle_bare(tmp_path)
    rec._init_from_pickle(ctx)
    src = nets.G_ema.state_dict()
    for k, v in rec.G.state_dict().items():
        if not _is_scale(k):
            assert torch.equal(v, src[k]), k


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_init_from_pickle_places_the_teacher_on_the_run_device(tmp_path, fake_pickle):
    fake_pickle["nets"] = _nets()
    rec, ctx = _pickle_bare(tmp_path)
    ctx = types.SimpleNamespace(options=ctx.options, device=torch.device("meta"))
    rec._init_from_pickle(ctx)
    assert {p.device.type for p in rec.teacher.parameters()} == {"meta"}


class _Weights:
    def __init__(self, sd):
        self.sd = sd

    def state_dict(self):
        return self.sd


@pytest.mark.parametrize("which", ["G", "G_ema"])
@pytest.mark.parametrize("drop,extra", [
    (("mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight", "mapping.fc1.bias"), ("e0", "e1", "e2", "e3")),
    (("mapping.fc1.bias",), ()),
    ((), ("e0",)),
])
def test_init_from_pickle_refuses_weights_that_do_not_match(tmp_path, fake_pickle, which, drop, extra):
    nets = _nets()
    sd = dict(getattr(nets, which).state_dict())
    for k in drop:
        del sd[k]
    for i, k in enumerate(extra):
        sd[k] = torch.zeros(1) + i
    if which == "G":
        nets.G = _Weights(sd)
    else:
        nets.G_ema.state_dict = lambda: sd
    fake_pickle["nets"] = nets
    rec, ctx = _pickle_bare(tmp_path)
    want = f"--teacher {tmp_path / 'net.pkl'}: weights do not match ({list(drop[:3])} {list(extra[:3])})"
    with pytest.raises(ValueError, match=re.escape(want) + "$"):
        rec._init_from_pickle(ctx)


def _pickle(tmp_path, name="net.pkl", with_d=True, d_res=P, c_dim=0, seed=0):
    torch.manual_seed(seed)
    G = randn_filled(Generator(GeneratorConfig(resolution=P, scale_branch=False, c_dim=c_dim, **MICRO_G)), seed)
    D = randn_filled(Discriminator(d_res, c_dim=c_dim, **MICRO_D), seed + 1) if with_d else None
    path = str(tmp_path / name)
    write_pickle(path, G.eval(), D)
    return path, G, D


def test_build_with_a_pickle_teacher_takes_its_generator_and_discriminator(tmp_path, lpips_calls):
    path, G, D = _pickle(tmp_path)
    rec, ctx = _built(tmp_path, phase="patch", hr_data=_hr(tmp_path), teacher=path, d_kwargs={"channel_max": 4})
    nets = published.cached_network_pickle(path)
    assert rec.gcfg == dataclasses.replace(nets.config, scale_branch=True, magnitude_ema_beta=0.5 ** (4 / 20000))
    for k, v in rec.D.state_dict().items():
        assert torch.equal(v, D.state_dict()[k]), k
    assert rec.D is not nets.D and rec.D.training and all(p.requires_grad for p in rec.D.parameters())
    # its own tensors: training must not move the cached pickle's D (a shallow copy would share them)
    assert not {id(p) for p in rec.D.parameters()} & {id(p) for p in nets.D.parameters()}
    assert not {p.data_ptr() for p in rec.D.parameters()} & {p.data_ptr() for p in nets.D.parameters()}
    assert [id(p) for p in rec.opt_D.param_groups[0]["params"]] == [id(p) for p in rec.D.parameters()]
    # stored so that a resume rebuilds this D: the pickle's settings without resolution and c_dim
    want = {k: v for k, v in nets.D_kwargs.items() if k not in ("resolution", "c_dim")}
    assert rec.cfg.d_kwargs == want and want["channel_max"] == 8 and rec.config()["d_kwargs"] == want
    for k, v in rec.teacher.state_dict().items():
        assert torch.equal(v, G.state_dict()[k]), k
    for k, v in rec.G.state_dict().items():
        if not _is_scale(k):
            assert torch.equal(v, G.state_dict()[k]), k


def test_build_with_a_pickle_without_d_builds_a_fresh_one(tmp_path, lpips_calls):
    path, _, _ = _pickle(tmp_path, with_d=False)
    rec, _ = _built(tmp_path, phase="patch", hr_data=_hr(tmp_path), teacher=path)
    ref = Discriminator(P, c_dim=0, **MICRO_D).state_dict()
    assert {k: v.shape for k, v in rec.D.state_dict().items()} == {k: v.shape for k, v in ref.items()}
    assert rec.cfg.d_kwargs == MICRO_D


@pytest.mark.parametrize("d_res,c_dim", [(128, 0), (P, 2)])
def test_resume_with_a_pickle_whose_d_does_not_fit_builds_a_fresh_d(tmp_path, lpips_calls, d_res, c_dim):
    path, _, _ = _pickle(tmp_path, d_res=d_res, c_dim=c_dim)
    stored = _gcfg(True, beta=0.5 ** (4 / 20000))
    save_checkpoint(str(tmp_path / "o"), 1, {"config": {"generator": stored.to_dict(),
                                                        "teacher_generator": _gcfg(False).to_dict()},
                                             "modules": {}})
    rec = ar.AnyresRecipe(micro_config(phase="patch", lr_data=_lr(tmp_path), hr_data=_hr(tmp_path), teacher=path))
    rec.build(_ctx(tmp_path / "o", resume=True))
    assert rec.gcfg == stored and rec.D.resolution == P and rec.D.c_dim == 0 and rec.cfg.d_kwargs == MICRO_D


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_build_with_a_pickle_teacher_places_its_discriminator_on_the_run_device(tmp_path, lpips_calls):
    path, _, _ = _pickle(tmp_path)
    rec, _ = _built(tmp_path, device=torch.device("meta"), phase="patch", hr_data=_hr(tmp_path), teacher=path)
    assert rec.D.resolution == P and rec.cfg.d_kwargs != MICRO_D          # the pickle's D, not a fresh one
    for m in (rec.G, rec.G_ema, rec.D, rec.teacher):
        assert {t.device.type for t in list(m.parameters()) + list(m.buffers())} == {"meta"}
