"""Phase patch's initialisation in AnyresRecipe (docs/training.md, "Phase patch"): G, G_ema and D start
from the teacher run's newest checkpoint (G / G_ema / D, the scale branch left as built), the teacher is
that run's G_ema, frozen; a resumed run reads only the stored teacher configuration; the refusals and
their messages; how a teacher is recognised as a network pickle (loading one is tested end to end in
models/test_published.py). Phase-1 runs are hand-written checkpoints of tiny networks
with distinct random weights, so each assertion names exactly which stored tensor went where."""
import re
import types

import pytest
import torch

from anyres_fast.models import Discriminator, Generator, GeneratorConfig
from anyres_fast.train import TrainOptions
from anyres_fast.train import anyres_recipe as ar
from anyres_fast.train.checkpoint import save_checkpoint
from anyres_fast.train.trainer import Context

from helpers import MICRO_D, MICRO_G, micro_config, randn_filled

pytestmark = pytest.mark.usefixtures("one_thread")


def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=1)
    base.update(kw)
    return TrainOptions(**base)


def _gcfg(scale_branch, beta=0.999, **kw):
    return GeneratorConfig(resolution=64, scale_branch=scale_branch, magnitude_ema_beta=beta, **{**MICRO_G, **kw})


def _phase1(run, seed=0, step=2, gcfg=None, drop=(), extra=(), config=True):
    """A phase-1 checkpoint: G, G_ema, D with distinct random weights; returns (path, state dicts)."""
    gcfg = gcfg or _gcfg(False, beta=0.5 ** (32 / 20000))       # another batch than the patch run's
    mods = {"G": randn_filled(Generator(gcfg), seed).state_dict(),
            "G_ema": randn_filled(Generator(gcfg), seed + 1).state_dict(),
            "D": randn_filled(Discriminator(64, c_dim=0, **MICRO_D), seed + 2).state_dict()}
    for k in drop:
        del mods["G"][k]
    for i, k in enumerate(extra):
        mods["G"][k] = torch.full((2,), float(i))
    state = {"modules": mods}
    if config is not None:
        state["config"] = {"generator": gcfg.to_dict()} if config else {}
    return save_checkpoint(str(run), step, state), mods


def _bare(tmp_path, teacher, resume=False, out=None, device=None, **kw):
    """A patch recipe with G / G_ema / D built as build() builds them, before _init_from_teacher."""
    rec = ar.AnyresRecipe(micro_config(phase="patch", teacher=teacher, **kw))
    ctx = Context(_opts(out or tmp_path / "run", resume=resume), torch.device("cpu"), 0, 1)
    if device is not None:
        ctx = types.SimpleNamespace(options=ctx.options, device=device)
    rec.c_dim = 0
    rec.gcfg = _gcfg(True, beta=0.5 ** (4 / 20000))
    rec.G = Generator(rec.gcfg)
    rec.G_ema = Generator(rec.gcfg).eval().requires_grad_(False)
    rec.G_ema.load_state_dict(rec.G.state_dict())
    rec.D = Discriminator(64, c_dim=0, **MICRO_D)
    return rec, ctx


def _is_scale(k):
    return k.startswith("scale_mapping.") or ".scale_affine." in k


def test_weights_come_from_the_newest_checkpoint_of_the_teacher_run(tmp_path, monkeypatch):
    seen, real = [], ar.load_checkpoint       # the teacher run is read onto the CPU
    monkeypatch.setattr(ar, "load_checkpoint", lambda p, map_location="cpu": seen.append(map_location) or real(p, map_location))
    _phase1(tmp_path / "t1", seed=10, step=1)
    path, mods = _phase1(tmp_path / "t1", seed=20, step=2)
    rec, ctx = _bare(tmp_path, str(tmp_path / "t1"))
    fresh = {k: v.clone() for k, v in rec.G.state_dict().items()}
    rec._init_from_teacher(ctx)
    for name, target in (("G", rec.G), ("G_ema", rec.G_ema)):
        for k, v in target.state_dict().items():
            assert torch.equal(v, mods[name][k] if not _is_scale(k) else fresh[k]), (name, k)
    for k, v in rec.teacher.state_dict().items():
        assert torch.equal(v, mods["G_ema"][k]), k
    for k, v in rec.D.state_dict().items():
        assert torch.equal(v, mods["D"][k]), k
    assert not rec.teacher.training and not any(p.requires_grad for p in rec.teacher.parameters())
    assert not any(p.requires_grad for p in rec.G_ema.parameters())
    assert all(p.requires_grad for p in rec.G.parameters())
    assert rec.tcfg == _gcfg(False, beta=0.5 ** (32 / 20000))
    assert rec.teacher_path == path and seen == ["cpu"]
    assert rec.config()["teacher_generator"] == rec.tcfg.to_dict()


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_the_teacher_is_placed_on_the_run_device(tmp_path):
    _phase1(tmp_path / "t")
    rec, ctx = _bare(tmp_path, str(tmp_path / "t"), device=torch.device("meta"))
    rec._init_from_teacher(ctx)
    assert {p.device.type for p in rec.teacher.parameters()} == {"meta"}


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resume_reads_only_the_stored_teacher_config(tmp_path):
    tcfg = _gcfg(False, beta=0.25, z_dim=6)
    save_checkpoint(str(tmp_path / "run"), 5, {"config": {"teacher_generator": tcfg.to_dict()}, "modules": {}})
    rec, ctx = _bare(tmp_path, str(tmp_path / "gone"), resume=True)
    rec._init_from_teacher(ctx)
    assert rec.tcfg == tcfg and rec.teacher.config == tcfg
    assert not rec.teacher.training and not any(p.requires_grad for p in rec.teacher.parameters())
    rec, ctx = _bare(tmp_path, str(tmp_path / "gone"), resume=True, device=torch.device("meta"))
    rec._init_from_teacher(ctx)
    assert {p.device.type for p in rec.teacher.parameters()} == {"meta"}


def test_resume_without_stored_teacher_config_and_a_fresh_run_read_the_teacher_run(tmp_path):
    _, mods = _phase1(tmp_path / "t", seed=3)
    other = _gcfg(False, z_dim=6).to_dict()
    for resume, cfg in ((True, {}), (False, {"teacher_generator": other})):
        out = tmp_path / f"run{resume}"
        save_checkpoint(str(out), 5, {"config": cfg, "modules": {}})
        rec, ctx = _bare(tmp_path, str(tmp_path / "t"), resume=resume, out=out)
        rec._init_from_teacher(ctx)
        for k, v in rec.teacher.state_dict().items():
            assert torch.equal(v, mods["G_ema"][k]), (resume, k)


def test_refusals(tmp_path):
    rec, ctx = _bare(tmp_path, None)
    with pytest.raises(ValueError, match="^" + re.escape("phase patch needs --teacher (a phase-1 run folder)") + "$"):
        rec._init_from_teacher(ctx)
    empty = str(tmp_path / "empty")
    rec, ctx = _bare(tmp_path, empty)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty}: no checkpoint in {empty}/checkpoints")):
        rec._init_from_teacher(ctx)
    for name, config in (("noconf", None), ("nogen", False)):
        path, _ = _phase1(tmp_path / name, config=config)
        rec, ctx = _bare(tmp_path, str(tmp_path / name))
        with pytest.raises(ValueError, match=re.escape(f"--teacher {tmp_path / name}: {path} is not an any-resolution run")):
            rec._init_from_teacher(ctx)


def test_another_generator_config_is_refused_with_its_differences(tmp_path):
    _phase1(tmp_path / "t", gcfg=_gcfg(False, beta=0.5, z_dim=16, channel_max=16))
    rec, ctx = _bare(tmp_path, str(tmp_path / "t"))
    want = (f"--teacher {tmp_path / 't'}: its generator differs from this run's: "
            "{'z_dim': (16, 8), 'channel_max': (16, 8)} (teacher, this run)")
    with pytest.raises(ValueError, match=re.escape(want) + "$"):
        rec._init_from_teacher(ctx)


@pytest.mark.parametrize("drop,extra", [
    (("mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight", "mapping.fc1.bias"),
     ("extra_0", "extra_1", "extra_2", "extra_3")),
    (("mapping.fc0.bias",), ()),
    ((), ("extra_0",)),
])
def test_weights_that_do_not_match_are_refused(tmp_path, drop, extra):
    _phase1(tmp_path / "t", drop=drop, extra=extra)
    rec, ctx = _bare(tmp_path, str(tmp_path / "t"))
    want = f"--teacher {tmp_path / 't'}: weights do not match ({list(drop[:3])} {list(extra[:3])})"
    with pytest.raises(ValueError, match=re.escape(want) + "$"):
        rec._init_from_teacher(ctx)


def test_load_run_modules_and_generator_from_run(tmp_path, monkeypatch):
    path, mods = _phase1(tmp_path / "t")
    seen = []
    real = ar.load_checkpoint
    monkeypatch.setattr(ar, "load_checkpoint", lambda p, map_location="cpu": seen.append(map_location) or real(p, map_location))
    state, got = ar.load_run_modules(str(tmp_path / "t"))
    assert got == path and seen == ["cpu"] and torch.equal(state["modules"]["D"]["b4.out.bias"], mods["D"]["b4.out.bias"])
    ar.load_run_modules(str(tmp_path / "t"), map_location=torch.device("cpu"))   # passed on as given
    assert isinstance(seen[-1], torch.device) and seen[-1].type == "cpu"
    from anyres_fast.train import checkpoint
    real2 = checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda p, map_location="cpu": seen.append(map_location) or real2(p, map_location))
    G = ar.generator_from_run(str(tmp_path / "t"))
    assert seen[-1] == "cpu"
    for k, v in G.state_dict().items():
        assert torch.equal(v, mods["G_ema"][k]), k
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    empty = str(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty}: no checkpoint in {empty}/checkpoints")):
        ar.load_run_modules(empty)
    save_checkpoint(empty, 1, {"config": {}, "modules": {}})
    with pytest.raises(ValueError, match=re.escape("not an any-resolution training checkpoint (no generator / G_ema)")):
        ar.generator_from_run(empty)


def test_teacher_is_pickle_by_name_or_content(tmp_path):
    rec = ar.AnyresRecipe(micro_config(phase="patch"))
    for teacher, want in ((None, False), ("", False), ("x/NET.PKL", True), ("a.Pickle", True), ("run", False)):
        rec.cfg.teacher = teacher
        assert rec._teacher_is_pickle() is want, teacher
    blob = tmp_path / "net"
    blob.write_bytes(b"\x80\x04rest")
    rec.cfg.teacher = str(blob)
    assert rec._teacher_is_pickle() is True


def test_frame_and_null_context():
    assert ar.AnyresRecipe.frame({"canvas": 1, "box": 2}) == {"canvas": 1, "box": 2}
    assert ar.AnyresRecipe.frame({"image": 0}) == {}
    with pytest.raises(KeyError):
        with ar._null():
            raise KeyError("x")
