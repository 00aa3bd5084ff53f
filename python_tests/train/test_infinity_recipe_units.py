"""anyres_fast.train.infinity_recipe unit checks (docs/infinitygan_training.md, docs/training.md).

Each part of InfinityRecipe against a statement written here: the published minibatch-std group rule by
brute force over batches 1..200; the generator configuration (tiny, patch, overrides) and the patch-size
refusal; what build() constructs (the image source and its cache folder, the patch dataset, the
discriminator's arguments through a recorder, the Adam settings with the lazy-regularisation ratios
applied to lr and betas, the frozen G_ema copy, pl_mean on the run device, checked on the meta device);
the small accessors (modules, optimizers, datasets, state_dict, load_state_dict, config, data_report);
the counter-based fake inputs (z_g and coordinates paired, z_l not) and style mixing; one training step
with a stand-in Context whose gradients and statistics are compared with the losses written out here
(D: adversarial + coordinate on reals and fakes, lazy R1; G: adversarial + coordinate + diversity, path
length on half the batch; every weight, interval and the chunk weight), the phase order and the
requires_grad flags; the EMA update; the panorama width from the generator's documented size rule
(2^d n - 5 (2^d - 1) for an n-column z_S) and the snapshot PNG.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anyres_fast.data import ImageSource
from anyres_fast.data.infinity import InfinityPatchDataset
from anyres_fast.models import Discriminator
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
from anyres_fast.train import checkpoint
from anyres_fast.train import infinity_losses as L
from anyres_fast.train import infinity_recipe as ir
from anyres_fast.train.checkpoint import save_checkpoint
from anyres_fast.train.trainer import Context, TrainOptions

from helpers import small_infinity, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder: a relative path that escapes the run folder lands here, not in the checkout."""
    monkeypatch.chdir(tmp_path)

# --tiny as docs/infinitygan_training.md describes it: 29-pixel patches, z_g 16, z_l 8 channels, 2 G_S
# layers of radius 1, G_T 11 -> 29 (depth 2: 4 * 11 - 5 * 3 = 29), trained on 53-pixel images.
TINY_P, TINY_ZG, TINY_ZL, TINY_DEPTH, TINY_N = 29, 16, 8, 2, 11
TINY_ZL_SIZE = TINY_N + 2 * 2 * 1          # z_l of one patch: n + 2 R, R = layers * radius
TINY_NUM_WS = 2 * TINY_DEPTH + 1           # one style per G_T conv, plus the last toRGB


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("photos")), [(60, 60), (70, 64)])


def _cfg(data, **kw):
    base = dict(data=data, tiny=True, cache_dir="cache")
    base.update(kw)
    return ir.InfinityTrainConfig(**base)


def _ctx(out, device="cpu", **kw):
    base = dict(out=str(out), batch=4, seed=5)
    base.update(kw)
    return Context(TrainOptions(**base), torch.device(device), 0, 1)


def _built(tmp_path, data, ctx_kw=None, **kw):
    rec = ir.InfinityRecipe(_cfg(data, **kw))
    ctx = _ctx(tmp_path / "run", **(ctx_kw or {}))
    rec.build(ctx)
    return rec, ctx


# -- published_mbstd_group, generator_config, __init__ -------------------------------------------------

def _group_rule(batch):
    """Published rule, stated directly: the smallest divisor i with 4 <= i < floor(sqrt(batch)), else batch."""
    divisors = [i for i in range(1, batch + 1) if batch % i == 0 and 4 <= i < math.isqrt(batch)]
    return min(divisors) if divisors else batch


def test_published_mbstd_group_is_the_published_rule_for_batches_1_to_200():
    assert [ir.published_mbstd_group(b) for b in range(1, 201)] == [_group_rule(b) for b in range(1, 201)]
    examples = {16: 16, 32: 4, 64: 4, 4: 4, 8: 8, 12: 12, 24: 24}       # the docstring's examples
    assert {b: ir.published_mbstd_group(b) for b in examples} == examples


def test_config_defaults_are_the_published_ones():
    """docs/infinitygan_training.md: lr 0.002, betas (0, 0.99), R1 10 every 16, path length 2 every 4
    (decay 0.01), coordinate and diversity weight 1 (angular form), mixing 0.9, G_ema 0.5^(32/10000),
    x-flips, three panoramas about four patches wide; the patch sizes 101 / 197 / 389 and --tiny."""
    c = ir.InfinityTrainConfig()
    assert (c.data, c.patch, c.full, c.tiny, c.g_kwargs, c.d_kwargs, c.cache_dir) == (None, 101, None, False, {}, {}, None)
    assert (c.lr, tuple(c.betas), c.r1_gamma, c.r1_every) == (0.002, (0.0, 0.99), 10.0, 16)
    assert (c.pl_weight, c.pl_every, c.pl_decay, c.coord_weight, c.diversity_weight) == (2.0, 4, 0.01, 1.0, 1.0)
    assert (c.diversity, c.mbstd_group, c.mixing_prob, c.xflip) == ("angular", None, 0.9, True)
    assert c.ema_decay == 0.5 ** (32 / 10000) and (c.grid_seeds, c.panorama_width) == (3, 4)
    assert ir.PATCH_SIZES == (101, 197, 389)
    g = ir.TINY_G
    assert (g["patch_size"], g["ts_input"], g["z_dim"], g["local_dim"], g["ss_layers"], g["ss_radius"]) == \
        (TINY_P, TINY_N, TINY_ZG, TINY_ZL, 2, 1)


def test_generator_config_tiny_patch_and_overrides():
    assert ir.generator_config(ir.InfinityTrainConfig(tiny=True, patch=197)) == InfinityConfig(**ir.TINY_G)
    assert ir.generator_config(ir.InfinityTrainConfig(patch=197)) == InfinityConfig(patch_size=197)
    assert ir.generator_config(ir.InfinityTrainConfig(patch=389)) == InfinityConfig(patch_size=389)
    over = ir.generator_config(ir.InfinityTrainConfig(tiny=True, g_kwargs={"z_dim": 12, "channel_max": 8}))
    assert over == InfinityConfig(**{**ir.TINY_G, "z_dim": 12, "channel_max": 8})
    small = dict(patch_size=21, ts_input=7, z_dim=8, local_dim=4, ss_layers=1, ss_radius=1, mapping_layers=1,
                 channel_base=16, channel_max=4)
    assert ir.generator_config(ir.InfinityTrainConfig(patch=101, g_kwargs=small)) == InfinityConfig(**small)


def test_init_refuses_unsupported_patch_unless_tiny_or_overridden():
    for p in (100, 29, 102, 0):
        with pytest.raises(ValueError, match=re.escape(f"patch must be one of (101, 197, 389), got {p}") + "$"):
            ir.InfinityRecipe(ir.InfinityTrainConfig(patch=p))
    for p in ir.PATCH_SIZES:
        rec = ir.InfinityRecipe(ir.InfinityTrainConfig(patch=p))
        assert rec.cfg.patch == p
    cfg = ir.InfinityTrainConfig(patch=100, tiny=True)
    assert ir.InfinityRecipe(cfg).cfg is cfg
    ir.InfinityRecipe(ir.InfinityTrainConfig(patch=100, g_kwargs={"patch_size": 29}))
    with pytest.raises(ValueError, match="patch must be one of"):          # another override is not enough
        ir.InfinityRecipe(ir.InfinityTrainConfig(patch=100, g_kwargs={"z_dim": 16}))
    pl = ir.InfinityRecipe(ir.InfinityTrainConfig()).pl_mean
    assert pl.shape == () and pl.item() == 0.0


# -- build ----------------------------------------------------------------------------------------------

def test_build_refuses_missing_data_and_unknown_diversity(tmp_path, data):
    ctx = _ctx(tmp_path / "run")
    for missing in (None, ""):
        with pytest.raises(ValueError, match="^" + re.escape("InfinityGAN training needs --data (a folder or zip of images)") + "$"):
            ir.InfinityRecipe(_cfg(missing)).build(ctx)
    with pytest.raises(ValueError, match=re.escape("diversity must be one of ('angular', 'l1'), got 'cosine'")):
        ir.InfinityRecipe(_cfg(data, diversity="cosine")).build(ctx)
    for form in ("angular", "l1"):
        rec = ir.InfinityRecipe(_cfg(data, diversity=form))
        rec.build(ctx)
        assert isinstance(rec.G, InfinityGenerator)


@pytest.fixture
def recorded(monkeypatch):
    """Records the arguments of ImageSource, InfinityPatchDataset and Discriminator as build() calls them."""
    seen = {"src": [], "ds": [], "D": []}

    def wrap(name, real):
        def made(*a, **kw):
            seen[name].append((a, kw))
            return real(*a, **kw)
        return made

    monkeypatch.setattr(ir, "ImageSource", wrap("src", ImageSource))
    monkeypatch.setattr(ir, "InfinityPatchDataset", wrap("ds", InfinityPatchDataset))
    monkeypatch.setattr(ir, "Discriminator", wrap("D", Discriminator))
    return seen


def test_build_reads_the_images_at_least_one_patch_large_with_the_cache_in_the_run(tmp_path, data, recorded):
    rec, ctx = _built(tmp_path, data, ctx_kw=dict(seed=7), xflip=False)
    out = str(tmp_path / "run")
    assert recorded["src"] == [((data,), dict(cache_dir=os.path.join(out, "cache"), min_size=TINY_P))]
    assert rec.source.path == data and rec.source.min_size == TINY_P
    # Full training size: 53 for the tiny 29-pixel patch (about 2p - 5, docs/infinitygan_training.md).
    assert rec.full == 2 * TINY_P - 5 == 53
    assert recorded["ds"] == [((rec.source, TINY_P, 53), dict(xflip=False, seed=7))]
    assert rec.datasets()["real"].full == 53 and rec.datasets()["real"].source is rec.source
    rec, _ = _built(tmp_path, data, full=61, cache_dir=str(tmp_path / "abs"))
    assert rec.full == 61 and recorded["ds"][-1] == ((rec.source, TINY_P, 61), dict(xflip=True, seed=5))
    assert recorded["src"][-1][1]["cache_dir"] == str(tmp_path / "abs")
    _built(tmp_path, data, cache_dir=None)
    assert recorded["src"][-1][1]["cache_dir"] is None
    # The patch comes from the generator's configuration (here 29 through g_kwargs, not cfg.patch = 101).
    rec, _ = _built(tmp_path, data, tiny=False, patch=101, g_kwargs=dict(ir.TINY_G))
    assert recorded["src"][-1][1]["min_size"] == TINY_P and rec.full == 53
    assert recorded["ds"][-1][0] == (rec.source, TINY_P, 53)


def test_build_discriminator_arguments(tmp_path, data, recorded):
    tiny_d = dict(ir.TINY_D)

    def d_call(**kw):
        ctx_kw = {"batch": kw.pop("batch")} if "batch" in kw else None
        _built(tmp_path, data, ctx_kw=ctx_kw, **kw)
        (args, kwargs), = recorded["D"][-1:]
        assert args == (TINY_P,)
        return kwargs

    base = dict(aux_outputs=1, any_resolution=True)
    for batch in (4, 24, 32, 36):                     # group None: the published rule for the global batch
        assert d_call(batch=batch) == {**base, **tiny_d, "mbstd_group_size": _group_rule(batch)}
    assert d_call(batch=32, mbstd_group=2) == {**base, **tiny_d, "mbstd_group_size": 2}
    # d_kwargs are applied last: over the tiny settings and over the group.
    assert d_call(mbstd_group=2, d_kwargs={"channel_max": 8, "mbstd_group_size": 1}) == \
        {**base, **tiny_d, "channel_max": 8, "mbstd_group_size": 1}
    # Not tiny (a small generator through g_kwargs): no tiny D settings.
    assert d_call(batch=32, tiny=False, g_kwargs=dict(ir.TINY_G), d_kwargs={"channel_base": 256, "channel_max": 8}) == \
        {**base, "mbstd_group_size": 4, "channel_base": 256, "channel_max": 8}
    rec, _ = _built(tmp_path, data, ctx_kw=dict(batch=32))
    assert rec.D.b4.mbstd.group_size == 4


def test_build_optimisers_apply_the_lazy_regularisation_ratios(tmp_path, data):
    rec, _ = _built(tmp_path, data, lr=0.01, betas=(0.5, 0.9), pl_every=3, r1_every=7)
    for opt, net, ratio in ((rec.opt_G, rec.G, 3 / 4), (rec.opt_D, rec.D, 7 / 8)):
        (group,) = opt.param_groups
        assert isinstance(opt, torch.optim.Adam)
        assert group["lr"] == pytest.approx(0.01 * ratio, rel=1e-12)
        assert group["betas"] == pytest.approx((0.5 ** ratio, 0.9 ** ratio), rel=1e-12)
        assert group["eps"] == 1e-8
        assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()]
    rec, _ = _built(tmp_path, data)                                # published: G 4/5, D 16/17
    assert rec.opt_G.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    assert rec.opt_D.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))


def test_build_with_a_lazy_regulariser_off_uses_plain_adam_settings(tmp_path, data):
    # interval 0 turns the regulariser off (train_step); its optimiser then has no lazy ratio to apply
    for r1_every, pl_every in ((0, 0), (0, 4), (16, 0), (1, 1)):
        rec, _ = _built(tmp_path, data, r1_every=r1_every, pl_every=pl_every)
        for opt, every in ((rec.opt_G, pl_every), (rec.opt_D, r1_every)):
            ratio = every / (every + 1) if every else 1.0
            assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * ratio, rel=1e-12)
            assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** ratio), rel=1e-12)


def test_build_g_ema_is_a_frozen_eval_copy_and_g_is_trainable(tmp_path, data):
    rec, _ = _built(tmp_path, data)
    assert rec.G_ema is not rec.G and isinstance(rec.G_ema, InfinityGenerator)
    assert rec.G.config == InfinityConfig(**ir.TINY_G) and rec.G_ema.config == rec.G.config
    ema, g = rec.G_ema.state_dict(), rec.G.state_dict()
    assert ema.keys() == g.keys() and all(torch.equal(ema[k], g[k]) for k in g)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(rec.G_ema.parameters(), rec.G.parameters()))
    assert not rec.G_ema.training and not any(p.requires_grad for p in rec.G_ema.parameters())
    assert rec.G.training and all(p.requires_grad for p in rec.G.parameters())
    assert rec.gcfg == rec.G.config


def test_build_places_networks_and_pl_mean_on_the_run_device(tmp_path, data):
    rec = ir.InfinityRecipe(_cfg(data))
    rec.pl_mean = torch.tensor(3.0)
    rec.build(_ctx(tmp_path / "run", device="meta"))
    for net in (rec.G, rec.D, rec.G_ema):
        assert {p.device.type for p in net.parameters()} == {"meta"}
    assert rec.pl_mean.device.type == "meta" and rec.pl_mean.shape == ()
    rec, _ = _built(tmp_path, data)
    assert rec.pl_mean.device.type == "cpu" and rec.pl_mean.shape == () and rec.pl_mean.item() == 0.0


# -- accessors ------------------------------------------------------------------------------------------

def test_modules_optimizers_datasets_and_data_report(tmp_path, data):
    rec, _ = _built(tmp_path, data)
    mods = rec.modules()
    assert mods.keys() == {"G", "D", "G_ema"}
    assert mods["G"] is rec.G and mods["D"] is rec.D and mods["G_ema"] is rec.G_ema
    opts = rec.optimizers()
    assert opts.keys() == {"G", "D"} and opts["G"] is rec.opt_G and opts["D"] is rec.opt_D
    ds = rec.datasets()
    assert list(ds) == ["real"] and isinstance(ds["real"], InfinityPatchDataset)
    ds.clear()                                                      # the caller gets its own dict
    assert list(rec.datasets()) == ["real"]
    assert rec.data_report() == {"real": rec.source.report()}
    assert rec.data_report()["real"]["images"] == 2


def test_state_dict_holds_pl_mean_detached_on_the_host():
    rec = ir.InfinityRecipe(ir.InfinityTrainConfig())
    rec.pl_mean = torch.tensor(1.5, requires_grad=True) * 1.0
    state = rec.state_dict()
    assert state.keys() == {"pl_mean"} and state["pl_mean"].item() == 1.5
    assert not state["pl_mean"].requires_grad and state["pl_mean"].device.type == "cpu"
    calls = []

    class Tracked:                       # what a device tensor sees: detached, then copied to the host
        def detach(self):
            calls.append("detach")
            return self

        def cpu(self):
            calls.append("cpu")
            return "host copy"

    rec.pl_mean = Tracked()
    assert rec.state_dict() == {"pl_mean": "host copy"} and calls == ["detach", "cpu"]


def test_load_state_dict_restores_pl_mean_on_its_device_only_when_present():
    rec = ir.InfinityRecipe(ir.InfinityTrainConfig())
    rec.load_state_dict({"pl_mean": torch.tensor(2.5)})
    assert rec.pl_mean.item() == 2.5
    rec.load_state_dict({})
    assert rec.pl_mean.item() == 2.5
    rec.load_state_dict({"other": torch.tensor(9.0)})
    assert rec.pl_mean.item() == 2.5
    rec.pl_mean = torch.zeros((), device="meta")
    rec.load_state_dict({"pl_mean": torch.tensor(4.0)})
    assert rec.pl_mean.device.type == "meta"


def test_config_is_the_settings_plus_model_and_after_build_the_generator(tmp_path, data):
    cfg = _cfg(data, betas=(0.25, 0.5), g_kwargs={"z_dim": 12}, d_kwargs={"channel_max": 8}, full=57)
    rec = ir.InfinityRecipe(cfg)
    want = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    want.update(betas=[0.25, 0.5], model="infinity")
    got = rec.config()
    assert got == want and isinstance(got["betas"], list)
    assert cfg.betas == (0.25, 0.5)                                  # the settings themselves untouched
    rec.build(_ctx(tmp_path / "run"))
    got = rec.config()
    want.update(infinity_generator=dataclasses.asdict(InfinityConfig(**{**ir.TINY_G, "z_dim": 12})), full_size=57)
    assert got == want and isinstance(got["betas"], list)
    rec, _ = _built(tmp_path, data)                               # full None: the size build chose
    assert rec.config()["full_size"] == rec.full == 53


def test_generator_from_run_loads_the_newest_g_ema_frozen(tmp_path, monkeypatch):
    G, G_ema = small_infinity(seed=1), small_infinity(seed=2)
    run = str(tmp_path / "run")
    save_checkpoint(run, 3, {"config": {"infinity_generator": G.config.to_dict()},
                             "modules": {"G": G.state_dict(), "G_ema": G_ema.state_dict()}})
    seen, real = [], checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda p, map_location="cpu": seen.append(map_location) or real(p, map_location))
    for which, want in ((None, G_ema), ("G", G)):
        got = ir.generator_from_run(run) if which is None else ir.generator_from_run(run, which)
        assert isinstance(got, InfinityGenerator) and got.config == G.config
        assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
        assert not got.training and not any(p.requires_grad for p in got.parameters())
    assert seen == ["cpu", "cpu"]
    ir.generator_from_run(run, map_location=torch.device("cpu"))             # passed on as given
    assert isinstance(seen[-1], torch.device) and seen[-1].type == "cpu"
    other = str(tmp_path / "other")
    path = save_checkpoint(other, 1, {"config": {"generator": {}}, "modules": {"G_ema": {}}})
    with pytest.raises(ValueError, match=re.escape(f"{path}: not an InfinityGAN training checkpoint "
                                                   "(no infinity_generator / G_ema)")):
        ir.generator_from_run(other)


# -- fake inputs and style mixing ---------------------------------------------------------------------

def test_fake_inputs_are_the_counter_based_draws_with_z_g_and_coordinates_paired(tmp_path, data):
    rec, ctx = _built(tmp_path, data)
    for b, tag, chunk in ((4, "G", 1), (5, "D", 0), (2, "PL", 3)):
        inp = rec.fake_inputs(ctx, b, tag, chunk)
        pair = [i // 2 * 2 for i in range(b)]                           # [A, A, C, C, E]
        z_g = torch.randn((b, 2, TINY_ZG), generator=ctx.generator(f"{tag}/z_g", chunk))
        assert inp["z_g"].shape == (b, 2, TINY_ZG) and torch.equal(inp["z_g"], z_g[pair])
        z_l = torch.randn((b, TINY_ZL, TINY_ZL_SIZE, TINY_ZL_SIZE), generator=ctx.generator(f"{tag}/z_l", chunk))
        assert torch.equal(inp["z_l"], z_l)                             # not paired: pairs differ in z_l
        assert not torch.equal(inp["z_l"][0], inp["z_l"][1])
        coords, label = rec.G.training_coords(b, generator=ctx.generator(f"{tag}/coords", chunk))
        assert torch.equal(inp["coords"], coords[pair]) and torch.equal(inp["label"], label[pair])
        noises = rec.G.make_noises(b, TINY_ZL_SIZE, generator=ctx.generator(f"{tag}/noise", chunk))
        assert len(inp["noises"]) == len(noises) == 2 * TINY_DEPTH
        assert all(torch.equal(a, n) for a, n in zip(inp["noises"], noises))
        want_mix = torch.rand(8, generator=ctx.generator(f"{tag}/mix", chunk))
        assert torch.equal(torch.rand(8, generator=inp["mix"]), want_mix)
        assert set(inp) == {"z_g", "z_l", "coords", "label", "noises", "mix"}


def test_fake_inputs_depend_on_tag_and_chunk_only(tmp_path, data):
    rec, ctx = _built(tmp_path, data)

    def draws(tag, chunk):
        inp = rec.fake_inputs(ctx, 4, tag, chunk)
        return [inp["z_g"], inp["z_l"], inp["coords"], inp["noises"][0], torch.rand(4, generator=inp["mix"])]

    base = draws("G", 0)
    assert all(torch.equal(a, b) for a, b in zip(base, draws("G", 0)))
    for other in (draws("D", 0), draws("G", 1)):
        assert all(not torch.equal(a, b) for a, b in zip(base, other))


def test_fake_inputs_land_on_the_run_device(tmp_path, data):
    rec, _ = _built(tmp_path, data)
    inp = rec.fake_inputs(_ctx(tmp_path / "run", device="meta"), 4, "G", 0)
    tensors = [inp["z_g"], inp["z_l"], inp["coords"], inp["label"], *inp["noises"]]
    assert {t.device.type for t in tensors} == {"meta"}
    assert inp["label"].shape == (4,) and inp["coords"].shape == (4, 3, TINY_ZL_SIZE, TINY_ZL_SIZE)


def test_styles_mix_the_two_mapped_global_latents(tmp_path, data):
    rec, ctx = _built(tmp_path, data)
    G = rec.G
    with torch.no_grad():
        rec.cfg.mixing_prob = 0.0
        for k in range(4):
            inp = rec.fake_inputs(ctx, 4, "G", k)
            w0 = G.mapping(inp["z_g"][:, 0])
            ws = rec._styles(inp)
            assert ws.shape == (4, TINY_NUM_WS, TINY_ZG)
            assert torch.equal(ws, w0[:, None].expand(-1, TINY_NUM_WS, -1))
        rec.cfg.mixing_prob = 1.0
        crosses = set()
        for k in range(12):
            inp = rec.fake_inputs(ctx, 4, "G", k)
            w0, w1 = G.mapping(inp["z_g"][:, 0]), G.mapping(inp["z_g"][:, 1])
            ws = rec._styles(inp)
            first = [i for i in range(TINY_NUM_WS) if torch.equal(ws[:, i], w1)]
            assert first and first == list(range(first[0], TINY_NUM_WS)) and 1 <= first[0] <= TINY_NUM_WS - 1
            assert all(torch.equal(ws[:, i], w0) for i in range(first[0]))
            crosses.add(first[0])
        assert len(crosses) >= 2
        # The crossover comes from the inputs' own "mix" generator, not the global RNG.
        rec.cfg.mixing_prob = 0.5
        mixed = []
        for k in range(10):
            runs = []
            for seed in (0, 1, 2):
                torch.manual_seed(seed)
                runs.append(rec._styles(rec.fake_inputs(ctx, 2, "D", k)))
            assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
            mixed.append(not torch.equal(runs[0][:, -1], runs[0][:, 0]))
        assert 0 < sum(mixed) < 10


# -- one training step --------------------------------------------------------------------------------

class _StubCtx:
    """The parts of Context a step uses: random numbers from a real Context, the chunks given, a chosen
    chunk weight, no autocast; step_optimizer records the phase, its optimiser and parameters, the
    gradients and the requires_grad flags, then clears every gradient (nothing is stepped, so the
    networks stay as they were and the expected values can be recomputed after the step)."""

    def __init__(self, real, rec, chunks, chunk_weight):
        self.real, self.rec, self.chunks, self.chunk_weight = real, rec, chunks, chunk_weight
        self.device = torch.device("cpu")
        self.phases = []

    def next_batch(self, name):
        return {"real": self.chunks}[name]

    def generator(self, tag, chunk=None):
        return self.real.generator(tag, chunk)

    def randn(self, shape, tag, chunk):
        return self.real.randn(shape, tag, chunk)

    def autocast(self):
        return contextlib.nullcontext()

    def mean_over_ranks_tensors(self, tensors):
        self.reduced = [t.clone() for t in tensors]
        return tensors

    def step_optimizer(self, name, optimizer, params):
        G, D = self.rec.G, self.rec.D
        self.phases.append(dict(
            name=name, opt=optimizer, params=[id(p) for p in params],
            grads=[None if p.grad is None else p.grad.clone() for p in params],
            g_flags={p.requires_grad for p in G.parameters()}, d_flags={p.requires_grad for p in D.parameters()},
            g_grads=any(p.grad is not None for p in G.parameters()),
            d_grads=any(p.grad is not None for p in D.parameters())))
        for p in list(G.parameters()) + list(D.parameters()):
            p.grad = None


def _chunks(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(b, 3, TINY_P, TINY_P, generator=g) * 0.5,
             "coord_v": torch.rand(b, generator=g) * 2 - 1} for b in sizes]


def _expected(rec, ctx, chunks, weight, phases):
    """The step's gradients and statistics from the losses written out (docs/infinitygan_training.md)."""
    cfg, G, D = rec.cfg, rec.G, rec.D
    G.requires_grad_(True)
    D.requires_grad_(True)
    n = len(chunks)
    stats, grads = {}, {}

    def add(key, value):
        stats[key] = stats.get(key, 0.0) + float(value) / n

    def fake_of(inp):
        w0, w1 = G.mapping(inp["z_g"][:, 0]), G.mapping(inp["z_g"][:, 1])
        ws = L.mix_styles(w0, w1, G.num_ws, cfg.mixing_prob, generator=inp["mix"])[0]
        img, z_s = G.synthesis(inp["z_g"][:, 0], inp["z_l"], ws, inp["coords"], inp["noises"], return_structure=True)
        return img, z_s, ws

    total = 0.0
    for k, ch in enumerate(chunks):
        inp = rec.fake_inputs(ctx, ch["image"].shape[0], "D", k)
        with torch.no_grad():
            fake = fake_of(inp)[0]
        rl, ra = D(ch["image"])
        fl, fa = D(fake)
        adv = F.softplus(-rl).mean() + F.softplus(fl).mean()
        c_real = (ra[:, 0] - ch["coord_v"]).abs().mean()
        c_fake = (fa[:, 0] - inp["label"]).abs().mean()
        total = total + weight * (adv + cfg.coord_weight * (c_real + c_fake))
        for key, v in (("D/loss", adv), ("D/coord_real", c_real), ("D/coord_fake", c_fake),
                       ("D/real", rl.mean()), ("D/fake", fl.mean())):
            add(key, v.item())
    grads["D"] = torch.autograd.grad(total, list(D.parameters()), allow_unused=True)

    if "Dreg" in phases:
        total = 0.0
        for ch in chunks:
            real = ch["image"].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(D(real)[0].sum(), real, create_graph=True)
            pen = g.square().sum(dim=[1, 2, 3]).mean()
            total = total + weight * pen * cfg.r1_gamma / 2 * cfg.r1_every
            add("D/r1_penalty", pen.item())
        grads["Dreg"] = torch.autograd.grad(total, list(D.parameters()), allow_unused=True)

    total = 0.0
    for k, ch in enumerate(chunks):
        b = ch["image"].shape[0]
        inp = rec.fake_inputs(ctx, b, "G", k)
        fake, z_s, _ = fake_of(inp)
        logits, aux = D(fake)
        adv = F.softplus(-logits).mean()
        c_fake = (aux[:, 0] - inp["label"]).abs().mean()
        div = L.diversity(cfg.diversity, inp["z_l"], z_s) if b >= 2 else torch.zeros(())
        total = total + weight * (adv + cfg.coord_weight * c_fake + cfg.diversity_weight * div)
        add("G/loss", adv.item())
        add("G/coord", c_fake.item())
        add("G/diversity", div.item())
    grads["G"] = torch.autograd.grad(total, list(G.parameters()), allow_unused=True)

    new_mean = None
    if "Greg" in phases:
        total = 0.0
        for k, ch in enumerate(chunks):
            inp = rec.fake_inputs(ctx, max(1, ch["image"].shape[0] // 2), "PL", k)     # half the batch
            fake, _, ws = fake_of(inp)
            pen, new_mean, lengths = L.path_length_penalty(fake, ws, rec.pl_mean, cfg.pl_decay,
                                                           generator=ctx.generator("PL/proj", k))
            total = total + weight * pen * cfg.pl_weight * cfg.pl_every
            add("G/path_length", lengths.mean().item())
        grads["Greg"] = torch.autograd.grad(total, list(G.parameters()), allow_unused=True)
    G.requires_grad_(False)
    D.requires_grad_(False)
    return grads, stats


def _phases_for(step, r1_every, pl_every, pl_weight):
    """Lazy regularisation: R1 every r1_every steps, path length every pl_every steps (0: never)."""
    out = ["D"]
    if r1_every > 0 and step % r1_every == 0:
        out.append("Dreg")
    out.append("G")
    if pl_every > 0 and pl_weight > 0 and step % pl_every == 0:
        out.append("Greg")
    return out


def _prepared(tmp_path, data, **kw):
    """A built tiny recipe whose G_ema differs from G (to see the EMA update) and pl_mean is 0.3."""
    rec, ctx = _built(tmp_path, data, **kw)
    with torch.no_grad():
        for p in rec.G_ema.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    rec.pl_mean = torch.tensor(0.3)
    return rec, ctx


STEP_CFG = dict(r1_every=2, pl_every=2, r1_gamma=3.0, pl_weight=1.5, pl_decay=0.2, coord_weight=0.37,
                diversity_weight=0.61, mixing_prob=0.5, ema_decay=0.3)


@pytest.mark.parametrize("sizes,step,weight,form", [
    ((4, 4), 2, 0.5, "l1"),        # every phase, two chunks
    ((1,), 2, 0.7, "angular"),     # one sample: no diversity term, path length on max(1, 1 // 2) = 1
    ((2,), 3, 0.7, "angular"),     # no regularisation this step; the smallest batch with a pair
])
def test_train_step_gradients_statistics_and_phases(tmp_path, data, sizes, step, weight, form):
    rec, real_ctx = _prepared(tmp_path, data, diversity=form, **STEP_CFG)
    calls, fake_inputs = [], rec.fake_inputs
    rec.fake_inputs = lambda ctx, b, tag, chunk: calls.append((b, tag, chunk)) or fake_inputs(ctx, b, tag, chunk)
    chunks = _chunks(sizes)
    ctx = _StubCtx(real_ctx, rec, chunks, weight)
    G_before = [p.detach().clone() for p in rec.G.parameters()]
    ema_before = [p.detach().clone() for p in rec.G_ema.parameters()]
    old_mean = rec.pl_mean.clone()
    stats = rec.train_step(ctx, step)
    phases = _phases_for(step, 2, 2, 1.5)
    rec.fake_inputs = fake_inputs

    # Phases in order, each with its optimiser and all parameters of its network.
    assert [ph["name"] for ph in ctx.phases] == phases
    d_ids, g_ids = [id(p) for p in rec.D.parameters()], [id(p) for p in rec.G.parameters()]
    for ph in ctx.phases:
        is_d = ph["name"].startswith("D")
        assert ph["opt"] is (rec.opt_D if is_d else rec.opt_G) and ph["params"] == (d_ids if is_d else g_ids)
        # Only the network being trained requires (and has) gradients.
        assert (ph["d_flags"], ph["g_flags"]) == (({True}, {False}) if is_d else ({False}, {True})), ph["name"]
        assert (ph["d_grads"], ph["g_grads"]) == ((True, False) if is_d else (False, True)), ph["name"]
    assert not any(p.requires_grad for p in rec.G.parameters())
    want_calls = [(b, "D", k) for k, b in enumerate(sizes)] + [(b, "G", k) for k, b in enumerate(sizes)]
    if "Greg" in phases:
        want_calls += [(max(1, b // 2), "PL", k) for k, b in enumerate(sizes)]
    assert calls == want_calls

    # Expected gradients and statistics (pl_mean: the step's starting value in every chunk).
    new_mean = rec.pl_mean
    rec.pl_mean = old_mean
    grads, want_stats = _expected(rec, real_ctx, chunks, weight, phases)
    for ph in ctx.phases:
        assert any(g is not None for g in ph["grads"])
        for got, want in zip(ph["grads"], grads[ph["name"]]):
            assert (got is None) == (want is None), ph["name"]
            if want is not None:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8, msg=ph["name"])
    assert stats.keys() == want_stats.keys()
    for key in stats:
        assert stats[key] == pytest.approx(want_stats[key], rel=1e-5, abs=1e-7), key
    if max(sizes) < 2:
        assert stats["G/diversity"] == 0.0
    else:
        assert stats["G/diversity"] > 0

    # pl_mean: moved by decay towards the mean length when the path-length phase ran (one chunk here).
    if "Greg" in phases and len(sizes) == 1:
        inp = fake_inputs(real_ctx, max(1, sizes[0] // 2), "PL", 0)
        torch.testing.assert_close(new_mean, old_mean + 0.2 * (want_stats["G/path_length"] - old_mean))
        assert inp["z_g"].shape[0] == 1
    elif "Greg" not in phases:
        assert torch.equal(new_mean, old_mean)
    assert not new_mean.requires_grad

    # G_ema <- lerp(G, G_ema, decay) with the networks as the stub left them (not stepped).
    for p, g0, e0, e in zip(rec.G.parameters(), G_before, ema_before, rec.G_ema.parameters()):
        assert torch.equal(p, g0)
        _assert_lerp(e, g0, e0, 0.3)


@pytest.mark.parametrize("r1_every,pl_every,pl_weight,step", [
    (2, 2, 1.5, 4), (2, 2, 1.5, 3), (0, 2, 1.5, 2), (2, 0, 1.5, 2), (2, 2, 0.0, 2),
    (3, 2, 1.5, 6), (3, 2, 1.5, 4), (3, 2, 1.5, 3), (1, 1, 1.5, 5), (2, 2, 0.5, 2),
])
def test_train_step_runs_the_lazy_regularisers_on_their_steps(tmp_path, data, r1_every, pl_every, pl_weight, step):
    rec, real_ctx = _built(tmp_path, data, pl_weight=pl_weight, r1_every=r1_every, pl_every=pl_every)
    ctx = _StubCtx(real_ctx, rec, _chunks((2,)), 1.0)
    stats = rec.train_step(ctx, step)
    phases = _phases_for(step, r1_every, pl_every, pl_weight)
    assert [ph["name"] for ph in ctx.phases] == phases
    assert ("D/r1_penalty" in stats) == ("Dreg" in phases)
    assert ("G/path_length" in stats) == ("Greg" in phases)
    assert all(np.isfinite(v) for v in stats.values())


def test_train_step_r1_scores_the_reals_in_float32(tmp_path, data):
    rec, real_ctx = _built(tmp_path, data, r1_every=1)
    calls, forward = [], rec.D.forward

    def recording(x, **kw):
        calls.append(kw.get("force_fp32", False))
        return forward(x, **kw)
    rec.D.forward = recording
    rec.train_step(_StubCtx(real_ctx, rec, _chunks((2, 2)), 0.5), 1)
    # D (reals, fakes), R1 and G passes over two chunks: only R1's forces float32 (its input gradient)
    assert calls == [False] * 4 + [True] * 2 + [False] * 2


@pytest.mark.parametrize("sizes", [(4, 4), (2, 4, 2)])
def test_pl_mean_moves_towards_the_mean_length_of_all_chunks(tmp_path, data, sizes):
    # Equal chunks: the mean of the chunks' updates is the update with the whole batch's mean length.
    rec, real_ctx = _prepared(tmp_path, data, **STEP_CFG)
    old, decay = rec.pl_mean.clone(), STEP_CFG["pl_decay"]
    ctx = _StubCtx(real_ctx, rec, _chunks(sizes), 0.5)
    stats = rec.train_step(ctx, 2)
    want = old + decay * (stats["G/path_length"] - old)     # the stat is the mean over chunks of their means
    torch.testing.assert_close(rec.pl_mean, want.to(rec.pl_mean.dtype), rtol=1e-6, atol=1e-7)
    # what is kept is what went through the mean over ranks, detached
    assert len(ctx.reduced) == 1 and torch.equal(ctx.reduced[0], rec.pl_mean) and not rec.pl_mean.requires_grad


# -- EMA, panorama, snapshot --------------------------------------------------------------------------

def _assert_lerp(got, g, ema, decay):
    """got == decay * ema + (1 - decay) * g up to float32 rounding of the operands (the mapping's weights
    are stored 1 / lr_multiplier = 100 times larger, so the bound is relative to them)."""
    want = decay * ema.double() + (1 - decay) * g.double()
    bound = 1e-6 * (g.double().abs() + ema.double().abs()) + 1e-8
    assert ((got.double() - want).abs() <= bound).all()

def test_update_ema_lerps_parameters_and_copies_buffers():
    rec = ir.InfinityRecipe(ir.InfinityTrainConfig(ema_decay=0.3))
    rec.G, rec.G_ema = small_infinity(seed=1), small_infinity(seed=2).requires_grad_(False)
    with torch.no_grad():
        for b in rec.G_ema.buffers():
            b.fill_(7.0)
    assert len(list(rec.G.buffers())) > 0
    g0 = [p.detach().clone() for p in rec.G.parameters()]
    e0 = [p.detach().clone() for p in rec.G_ema.parameters()]
    rec.update_ema()
    for p, a, b, e in zip(rec.G.parameters(), g0, e0, rec.G_ema.parameters()):
        assert torch.equal(p, a)
        _assert_lerp(e, a, b, 0.3)
    assert all(torch.equal(be, b) for be, b in zip(rec.G_ema.buffers(), rec.G.buffers()))
    rec.cfg.ema_decay = 1.0                                       # decay 1: G_ema stays
    before = [p.clone() for p in rec.G_ema.parameters()]
    rec.update_ema()
    assert all(torch.equal(a, b) for a, b in zip(before, rec.G_ema.parameters()))


def _panorama_width(p, depth, n, width_patches):
    """Columns of the padding-free pass: an m-column z_S gives 2^d m - 5 (2^d - 1) pixels
    (docs/infinitygan.md; patch = the same for n = ts_input); each extra patch adds ceil(p / 2^d) z_S
    columns, so consecutive patches overlap by less than one z_S column's worth of pixels."""
    m = n + (width_patches - 1) * max(1, math.ceil(p / 2 ** depth))
    return 2 ** depth * m - 5 * (2 ** depth - 1)


def _with_g_ema(G):
    rec = ir.InfinityRecipe(ir.InfinityTrainConfig(tiny=True, grid_seeds=2, panorama_width=2))
    rec.G, rec.G_ema, rec.gcfg = small_infinity(seed=9), G, G.config
    return rec


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_panorama_width_follows_the_generator_size_rule(which):
    if which == "tiny":
        G, (p, depth, n) = InfinityGenerator(InfinityConfig(**ir.TINY_G)).eval(), (TINY_P, TINY_DEPTH, TINY_N)
    else:
        G, (p, depth, n) = small_infinity(), (21, 3, 7)
    rec = _with_g_ema(G)
    widths = []
    for w in (1, 2, 4):
        img = rec.panorama(3, w)
        assert img.shape == (1, 3, p, _panorama_width(p, depth, n, w)) and img.dtype == torch.float32
        assert img.device.type == "cpu" and img.shape[3] >= w * p and torch.isfinite(img).all()
        widths.append(img.shape[3])
    assert widths[0] == p                                          # one patch: the training patch
    assert widths[2] - widths[1] == 2 * (widths[1] - widths[0])    # the same step per extra patch


def test_panorama_is_seeded_and_drawn_from_g_ema(tmp_path):
    rec = _with_g_ema(small_infinity(seed=0))
    a = rec.panorama(3, 2)
    assert torch.equal(a, rec.panorama(3, 2))
    assert (a - rec.panorama(4, 2)).abs().mean() > 1e-3
    with torch.no_grad():
        for p in rec.G.parameters():
            p.add_(1.0)
    assert torch.equal(a, rec.panorama(3, 2))                     # G does not matter
    with torch.no_grad():
        for p in rec.G_ema.parameters():
            p.mul_(1.5)
    assert not torch.equal(a, rec.panorama(3, 2))
    torch.manual_seed(0)
    b = rec.panorama(5, 2)
    torch.manual_seed(1)
    assert torch.equal(b, rec.panorama(5, 2))                     # the seed alone decides, not the global RNG


def test_panorama_inputs_come_from_the_seed_and_are_centred():
    """z_g, then z_l, are the seed's first N(0, 1) draws (torch.Generator().manual_seed(seed)); the
    coordinates are those of a z_l centred on the canvas origin; G_S and the styles take that z_g."""
    G = small_infinity(seed=0)
    rec = _with_g_ema(G)
    seen, real = {}, G.synthesis
    G.synthesis = lambda *a: seen.update(args=a) or real(*a)
    R, n, w = G.ss_margin, 7, 3
    m = n + (w - 1) * math.ceil(21 / 8)
    img = rec.panorama(11, w)
    z_g, z_l, ws, coords, noises = seen["args"]
    g = torch.Generator().manual_seed(11)
    assert torch.equal(z_g, torch.randn(1, G.z_dim, generator=g))
    assert torch.equal(z_l, torch.randn(1, G.local_dim, n + 2 * R, m + 2 * R, generator=g))
    assert torch.equal(coords, G.centred_coords(1, n + 2 * R, m + 2 * R))
    torch.testing.assert_close(ws, G.mapping(z_g))
    assert [tuple(x.shape[2:]) for x in noises] == G.noise_shapes((n + 2 * R, m + 2 * R))
    assert img.shape[3] == _panorama_width(21, 3, n, w)


def test_snapshot_writes_the_grid_seed_panoramas_stacked(tmp_path):
    rec = _with_g_ema(small_infinity(seed=0))
    rec.cfg.grid_seeds, rec.cfg.panorama_width = 3, 2
    folder = tmp_path / "samples"
    folder.mkdir()
    rec.snapshot(type("Ctx", (), {"device": torch.device("cpu")})(), str(folder), 12)
    assert os.listdir(folder) == ["step00000012.png"]
    png = Image.open(folder / "step00000012.png")
    width = _panorama_width(21, 3, 7, 2)
    assert png.size == (width, 3 * 21)
    pixels = np.asarray(png.convert("RGB")).astype(np.float64)
    for i in range(3):
        want = (rec.panorama(1000 + i, 2)[0].permute(1, 2, 0).numpy() * 127.5 + 128).clip(0, 255)
        assert np.abs(pixels[21 * i:21 * (i + 1)] - want).max() <= 1, i


def test_snapshot_renders_on_the_run_device(tmp_path):
    rec = _with_g_ema(small_infinity(seed=0))
    rec.cfg.grid_seeds, rec.cfg.panorama_width = 2, 3
    seen = []
    rec.panorama = lambda seed, width, device=None: seen.append((seed, width, device)) or torch.zeros(1, 3, 4, 8)
    dev = torch.device("meta")
    rec.snapshot(type("Ctx", (), {"device": dev})(), str(tmp_path), 1)
    assert seen == [(1000, 3, dev), (1001, 3, dev)]
    assert Image.open(tmp_path / "step00000001.png").size == (8, 8)
