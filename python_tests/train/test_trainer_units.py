"""The shared training loop (anyres_fast/train/trainer.py) with a toy recipe, each piece against an
independent definition: the batch split and its messages, counter-based seeds (blake2b of the parts,
docs/training.md "Random numbers are counter-based"), the key streams (an epoch-shuffled permutation,
rank slices), step_optimizer (rank mean, nan_to_num, hooks, skipped parameters), rank means, the tick
and snapshot schedule, stats.jsonl fields, checkpoint contents, resume, run-folder refusals and
messages, the progress bar, TensorBoard scalars, plots, Ctrl-C, and world > 1 with stand-ins for
torch.distributed (a second rank whose values are known)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import warnings

import numpy as np
import pytest
import torch

from anyres_fast.train import checkpoint, trainer
from anyres_fast.train.run_folder import RunFolderError, RunFolderLock
from anyres_fast.train.trainer import Context, Recipe, Trainer, TrainOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def seed_of(*parts):
    """docs/training.md: generators are seeded by a hash of (seed, step, tag[, chunk]): 8 bytes of
    blake2b of the parts' repr, little-endian, kept to 63 bits."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") & (2 ** 63 - 1)


def perm_keys(n, seed, start, count):
    """Global samples start..start+count-1 of an epoch-shuffled stream (KeySampler's definition:
    sample k is perm_e[k mod n], perm_e seeded by (seed, 7919, e))."""
    return [(int(np.random.default_rng([seed, 7919, k // n]).permutation(n)[k % n]), k)
            for k in range(start, start + count)]


class _DS(torch.utils.data.Dataset):
    def __init__(self, n=5):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        index, draw = key
        return {"key": torch.tensor([index, draw]), "v": torch.tensor(float(index)), "name": f"f{index}"}


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))


class Toy(Recipe):
    """A recipe with one parameter vector fitted to the data values; records what the Trainer does."""

    def __init__(self, report=None, lr=0.1):
        self.report, self.lr = report, lr
        self.keys, self.steps, self.snaps, self.ctx_seen = [], [], [], None
        self.extra = torch.zeros(2)

    def build(self, ctx):
        self.ctx_seen = ctx
        self.init_draw = (torch.rand(()).item(), float(np.random.rand()), random.random())
        self.net = _Net()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=0.5)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def datasets(self):
        return {"real": _DS()}

    def train_step(self, ctx, step):
        self.steps.append((step, ctx.step, ctx.nimg))
        chunks = ctx.next_batch("real")
        loss_sum = 0.0
        for chunk in chunks:
            self.keys.extend(tuple(k.tolist()) for k in chunk["key"])
            loss = (self.net.w.sum() - chunk["v"]).square().mean()
            (loss * ctx.chunk_weight).backward()
            loss_sum += loss.item() * ctx.chunk_weight
        ctx.step_optimizer("main", self.opt, list(self.net.parameters()))
        self.net.count += 1
        self.extra += 1
        return {"loss": loss_sum, "step_seen": float(step)}

    def snapshot(self, ctx, folder, step):
        self.snaps.append((folder, step))

    def state_dict(self):
        return {"extra": self.extra.clone()}

    def load_state_dict(self, state):
        self.extra = state["extra"].clone()

    def config(self):
        return {"kind": "toy"}

    def data_report(self):
        return self.report or {}


def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=0.02, workers=0, snap=0, tick=1, progress=False, seed=3)
    base.update(kw)
    return TrainOptions(**base)


def _train(out, recipe=None, logs=None, **kw):
    recipe = recipe or Toy()
    logs = [] if logs is None else logs
    stats = Trainer(recipe, _opts(out, **kw), log=logs.append).run()
    return recipe, stats, logs


def _lines(out):
    return [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- options and the Context

def test_option_defaults_are_the_documented_command_defaults():
    # anyres-fast train --help: seed 0, batch 32, tick 10, snap 500, keep 3, workers 2, precision fp32
    o = TrainOptions(out="x")
    assert (o.seed, o.batch, o.batch_gpu, o.kimg, o.tick, o.snap, o.keep, o.workers, o.device, o.precision) == \
        (0, 32, None, 25000, 10, 500, 3, 2, None, "fp32")
    assert (o.resume, o.progress, o.max_steps, o.plots, o.force_new) == (False, True, None, False, False)
    stored = TrainOptions(out="/a/run", force_new=True, seed=5).stored()
    assert stored["out"] == "." and stored["force_new"] is False and stored["seed"] == 5
    assert set(stored) == {f.name for f in trainer.dataclasses.fields(TrainOptions)}


def test_recipe_base_class_contract():
    r = Recipe()
    for call in (lambda: r.build(None), r.modules, r.optimizers, r.datasets, lambda: r.train_step(None, 0)):
        with pytest.raises(NotImplementedError):
            call()
    assert r.snapshot(None, "f", 0) is None and r.state_dict() == {} and r.config() == {} and r.data_report() == {}
    assert r.load_state_dict({}) is None


@pytest.mark.parametrize("batch,batch_gpu,world,per_rank,bg,chunks", [
    (8, None, 1, 8, 8, 1), (8, 2, 1, 8, 2, 4), (12, 3, 2, 6, 3, 2), (6, None, 3, 2, 2, 1)])
def test_batch_split(batch, batch_gpu, world, per_rank, bg, chunks):
    ctx = Context(_opts("x", batch=batch, batch_gpu=batch_gpu), torch.device("cpu"), 0, world)
    assert (ctx.batch, ctx.per_rank, ctx.batch_gpu, ctx.num_chunks) == (batch, per_rank, bg, chunks)
    assert ctx.chunk_weight == bg / per_rank and (ctx.step, ctx.nimg) == (0, 0) and ctx.seed == 3
    assert ctx.streams == {} and ctx.grad_hooks == [] and ctx.world == world and ctx.rank == 0


def test_batch_split_messages():
    with pytest.raises(ValueError, match=r"^--batch 6 is not divisible by the 4 processes$"):
        Context(_opts("x", batch=6), torch.device("cpu"), 0, 4)
    with pytest.raises(ValueError, match=r"^--batch-gpu 4 does not divide the per-process batch 6$"):
        Context(_opts("x", batch=12, batch_gpu=4), torch.device("cpu"), 1, 2)


def test_generators_are_seeded_by_the_hash_of_the_parts():
    ctx = Context(_opts("x", batch=8, batch_gpu=2, seed=11), torch.device("cpu"), 1, 2)   # 2 chunks per rank
    ctx.step = 7
    assert trainer._seed_of(11, 7, "z") == seed_of(11, 7, "z")
    # the 63-bit cut matters for about half of all parts: the hash's top bit is often set
    raw = [int.from_bytes(hashlib.blake2b(repr((1, t)).encode(), digest_size=8).digest(), "little") for t in range(16)]
    assert any(r >= 2 ** 63 for r in raw)
    assert [trainer._seed_of(1, t) for t in range(16)] == [r % 2 ** 63 for r in raw]
    want = torch.rand(5, generator=torch.Generator().manual_seed(seed_of(11, 7, "z")))
    assert torch.equal(torch.rand(5, generator=ctx.generator("z")), want)
    # per chunk: the global chunk index, rank * num_chunks + chunk = 1 * 2 + 1
    want = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed_of(11, 7, "z", 3)))
    assert torch.equal(ctx.randn((2, 3), "z", 1), want)
    meta = Context(_opts("x", batch=8, batch_gpu=2, seed=11), torch.device("meta"), 1, 2)
    assert ctx.randn((2, 3), "z", 1).device.type == "cpu" and meta.randn((2, 3), "z", 1).device.type == "meta"
    want = float(torch.rand((), generator=torch.Generator().manual_seed(seed_of(11, 7, "pick"))))
    u = ctx.uniform("pick")
    assert isinstance(u, float) and u == want and 0 <= u < 1


def test_autocast_only_on_gpu_below_fp32():
    import contextlib
    assert isinstance(Context(_opts("x", precision="fp16"), torch.device("cpu"), 0, 1).autocast(),
                      contextlib.nullcontext)
    assert isinstance(Context(_opts("x"), torch.device("cuda"), 0, 1).autocast(), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # "CUDA is not available" on a CPU machine
        for prec, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            ac = Context(_opts("x", precision=prec), torch.device("cuda"), 0, 1).autocast()
            assert isinstance(ac, torch.autocast) and ac.device == "cuda" and ac.fast_dtype == dtype


# ---------------------------------------------------------------- optimiser steps and rank means

def test_step_optimizer_cleans_gradients_skips_unused_runs_hooks_and_clears():
    ctx = Context(_opts("x"), torch.device("cpu"), 0, 1)
    a = torch.nn.Parameter(torch.zeros(4))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    unused = torch.nn.Parameter(torch.ones(3))
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    frozen.grad = torch.ones(2)
    a.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0])
    b.grad = torch.tensor([[1.0, -1.0], [0.5, 3.0]])
    seen = []
    ctx.grad_hooks.append(lambda name, params: seen.append((name, [p.grad.clone() for p in params], params)))
    opt = torch.optim.SGD([a, b, unused, frozen], lr=1.0)
    ctx.step_optimizer("phase", opt, [a, b, unused, frozen])
    (name, grads, params), = seen
    assert name == "phase" and len(params) == 2 and params[0] is a and params[1] is b
    assert torch.equal(grads[0], torch.tensor([0.0, 1e5, -1e5, 2.0])) and torch.equal(grads[1], b.detach() * -1)
    assert torch.equal(a.detach(), torch.tensor([0.0, -1e5, 1e5, -2.0]))
    assert torch.equal(unused.detach(), torch.ones(3))
    assert a.grad is None and b.grad is None
    # a frozen parameter's stale gradient is dropped: the optimiser (SGD steps every p with a .grad)
    # leaves it as it was
    assert frozen.grad is None and torch.equal(frozen.detach(), torch.ones(2))
    ctx.step_optimizer("empty", opt, [unused])              # nothing with a gradient: hooks still run
    assert seen[-1][0] == "empty" and seen[-1][1] == []


def test_step_optimizer_keeps_adam_state_of_an_unused_parameter():
    ctx = Context(_opts("x"), torch.device("cpu"), 0, 1)
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    ctx.step_optimizer("x", opt, [a, b])
    a.grad = torch.ones(2)
    ctx.step_optimizer("x", opt, [a, b])
    assert int(opt.state[a]["step"]) == 2 and int(opt.state[b]["step"]) == 1


class _OtherRank:
    """torch.distributed stand-ins for world 2: all_reduce adds the other rank's tensor (SUM), or takes
    the maximum with it (MAX); records the calls."""

    def __init__(self, other=None):
        self.other, self.calls = other, []

    def all_reduce(self, t, op=None):
        self.calls.append(("all_reduce", t.dtype, t.numel(), op))
        other = self.other(t) if callable(self.other) else self.other
        if op is not None and op == torch.distributed.ReduceOp.MAX:
            t.copy_(torch.maximum(t, other.to(t)))
        else:
            t.add_(other.to(t))

    def broadcast(self, t, src):
        self.calls.append(("broadcast", src))
        self.sent = getattr(self, "sent", []) + [t]

    def barrier(self):
        self.calls.append(("barrier",))

    def all_gather_object(self, out, obj):
        self.calls.append(("gather",))
        out[0], out[1] = obj, {"other": True}

    def install(self, monkeypatch):
        for name in ("all_reduce", "broadcast", "barrier", "all_gather_object"):
            monkeypatch.setattr(torch.distributed, name, getattr(self, name))
        return self


def test_step_optimizer_averages_over_ranks_in_one_all_reduce(monkeypatch):
    other = torch.tensor([4.0, 0.0, 2.0, -6.0, float("nan")])       # the other rank's flattened gradients
    dist = _OtherRank(other).install(monkeypatch)
    ctx = Context(_opts("x", batch=4), torch.device("cpu"), 0, 2)
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([2.0, 2.0]), torch.tensor([0.0, 2.0, 1.0])
    got = []
    ctx.grad_hooks.append(lambda name, params: got.append(torch.cat([p.grad for p in params])))
    ctx.step_optimizer("x", torch.optim.SGD([a, b], lr=1.0), [a, b])
    assert dist.calls == [("all_reduce", torch.float32, 5, None)]
    assert torch.equal(got[0], torch.tensor([3.0, 1.0, 1.0, -2.0, 0.0]))     # (mine + other) / 2, nan -> 0
    assert a.grad is None and b.grad is None


def test_rank_means_with_a_second_rank(monkeypatch):
    ctx1 = Context(_opts("x"), torch.device("cpu"), 0, 1)
    ts = [torch.ones(2)]
    assert ctx1.mean_over_ranks_tensors(ts) is ts
    d = {"a": 1.0}
    assert ctx1.mean_over_ranks(d) is d
    ctx = Context(_opts("x", batch=4), torch.device("cpu"), 0, 2)
    assert ctx.mean_over_ranks({}) == {} and ctx.mean_over_ranks_tensors([]) == []
    dist = _OtherRank(torch.tensor([3.0, 5.0, 1.0], dtype=torch.float64)).install(monkeypatch)
    x, y = torch.tensor([1.0, 1.0], dtype=torch.float32), torch.tensor(7, dtype=torch.int64).reshape(1)
    mx, my = ctx.mean_over_ranks_tensors([x, y])
    assert dist.calls == [("all_reduce", torch.float64, 3, None)]
    assert mx.dtype == torch.float32 and my.dtype == torch.int64 and my.shape == (1,)
    assert torch.equal(mx, torch.tensor([2.0, 3.0])) and torch.equal(my, torch.tensor([4]))
    # keys in sorted order on every rank: the other rank's vector is (a, b)
    dist.other = torch.tensor([10.0, 20.0], dtype=torch.float64)
    assert ctx.mean_over_ranks({"b": 2, "a": 4.0}) == {"a": 7.0, "b": 11.0}
    assert dist.calls[-1] == ("all_reduce", torch.float64, 2, None)


def test_rng_state_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()                                       # numpy now holds a cached second gaussian
    state = trainer._rng_state()
    assert state["numpy"][3] == 1 and ("cuda" in state) == torch.cuda.is_available()
    first = (torch.rand(3), np.random.randn(), np.random.rand(3), random.random())
    trainer._set_rng_state(state)
    again = (torch.rand(3), np.random.randn(), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])
    assert first[3] == again[3]


def test_cuda_rng_states_are_kept_and_restored_only_with_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(states))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["gpu0"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    state = trainer._rng_state()
    assert state["cuda"] == ["gpu0"]
    trainer._set_rng_state(state)
    assert calls == [["gpu0"]]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "cuda" not in trainer._rng_state()
    trainer._set_rng_state(state)                           # a GPU run's state resumed on a CPU machine
    del state["cuda"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer._set_rng_state(state)                           # a CPU run's state resumed on a GPU machine
    assert calls == [["gpu0"]]


# ---------------------------------------------------------------- the data streams

def test_next_batch_chunks_host_copies_and_positions(tmp_path):
    ctx = Context(_opts(tmp_path, batch=6, batch_gpu=3, seed=5), torch.device("cpu"), 1, 2)   # rank 1 of 2
    ctx.streams["real"] = trainer._Stream(_DS(), 5, "real", 6, 1, 2, 0, start=4)
    chunks = ctx.next_batch("real", host_keys=("v", "missing"))
    s = seed_of(5, "stream", "real") & 0xFFFFFFFF
    want = perm_keys(5, s, 4 + 3, 3)                           # rank 1 takes samples 3..5 of the global batch
    assert len(chunks) == 1
    assert [tuple(k.tolist()) for k in chunks[0]["key"]] == want
    assert chunks[0]["name"] == [f"f{i}" for i, _ in want]
    assert torch.equal(chunks[0]["v_host"], chunks[0]["v"]) and "missing_host" not in chunks[0]
    assert "key_host" not in chunks[0]
    assert ctx.streams["real"].consumed == 4 + 6
    ctx2 = Context(_opts(tmp_path, batch=6, batch_gpu=1, seed=5), torch.device("cpu"), 0, 2)
    ctx2.streams["real"] = trainer._Stream(_DS(), 5, "real", 6, 0, 2, 0, start=10)
    chunks = ctx2.next_batch("real", host_keys=("key",))
    assert [[tuple(k.tolist()) for k in c["key"]] for c in chunks] == [[k] for k in perm_keys(5, s, 10, 3)]
    assert all(c["v"].shape == (1,) and torch.equal(c["key_host"], c["key"]) for c in chunks)
    # tensors go to the run's device, the host copies stay on the CPU ("meta" stands in for a GPU)
    ctx3 = Context(_opts(tmp_path, batch=6, batch_gpu=3, seed=5), torch.device("meta"), 0, 1)
    ctx3.streams["real"] = trainer._Stream(_DS(), 5, "real", 6, 0, 1, 0)
    chunks = ctx3.next_batch("real", host_keys=("v",))
    assert [(c["v"].device.type, c["v_host"].device.type, c["key"].shape) for c in chunks] == [("meta", "cpu", (3, 2))] * 2
    assert [c["name"] for c in chunks] == [[f"f{i}" for i, _ in perm_keys(5, s, 3 * j, 3)] for j in range(2)]


def test_a_stream_with_a_loader_worker_resumes_at_its_position(tmp_path):
    st = trainer._Stream(_DS(), 2, "x", 4, 0, 1, 1, start=8)
    first = st.next()
    s = seed_of(2, "stream", "x") & 0xFFFFFFFF
    assert [tuple(k.tolist()) for k in first["key"]] == perm_keys(5, s, 8, 4)
    assert st._iter._persistent_workers and st._iter._prefetch_factor == 2 and st.consumed == 12
    assert [tuple(k.tolist()) for k in st.next()["key"]] == perm_keys(5, s, 12, 4)
    del st


# ---------------------------------------------------------------- the loop

def test_stats_ticks_checkpoints_and_snapshots(tmp_path, monkeypatch):
    out = tmp_path / "run"
    times = iter(float(t) for t in range(100, 200))
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(times))   # one second per call
    rec, stats, logs = _train(out, batch=4, kimg=0.028, tick=3, snap=2, keep=2)   # 28 images: 7 steps
    assert [s[0] for s in rec.steps] == list(range(7)) and [s[1] for s in rec.steps] == list(range(7))
    assert [s[2] for s in rec.steps] == [4 * i for i in range(7)]
    lines = _lines(out)
    assert [x["step"] for x in lines] == [3, 6, 7]               # every tick, and the last step
    assert [x["kimg"] for x in lines] == [0.012, 0.024, 0.028]
    assert [x["step_seen"] for x in lines] == [1.0, 4.0, 6.0]   # the mean of the tick's steps
    # one perf_counter second per tick (100 at the start, then one call per tick): 1 s over 3 / 3 / 1 steps
    assert [x["sec_per_kimg"] for x in lines] == pytest.approx([1 / 0.012, 1 / 0.012, 1 / 0.004])
    assert set(lines[0]) == {"loss", "step_seen", "step", "kimg", "sec_per_kimg"}
    assert stats == lines[-1]
    assert [s for s, _ in checkpoint.list_checkpoints(str(out))] == [6, 7]      # snap 2, keep 2, the end
    assert rec.snaps == [(str(out / "samples"), s) for s in (2, 4, 6, 7)] and (out / "samples").is_dir()
    assert logs == []


def test_tick_zero_means_every_step_and_snap_zero_only_the_end(tmp_path):
    out = tmp_path / "run"
    rec, _, _ = _train(out, tick=0, snap=0, kimg=0.012)
    assert [x["step"] for x in _lines(out)] == [1, 2, 3]
    assert [s for s, _ in checkpoint.list_checkpoints(str(out))] == [3] and rec.snaps == [(str(out / "samples"), 3)]


def test_max_steps_and_kimg_rounding(tmp_path):
    out = tmp_path / "run"
    rec, stats, _ = _train(out, max_steps=2, kimg=1, tick=5)
    assert len(rec.steps) == 2 and stats["step"] == 2 and _lines(out)[-1]["step"] == 2
    assert [s for s, _ in checkpoint.list_checkpoints(str(out))] == [2]
    rec, _, _ = _train(tmp_path / "r2", kimg=0.0099)            # round(9.9) = 10 images: 3 steps of 4
    assert len(rec.steps) == 3


def test_checkpoint_contents(tmp_path):
    out = tmp_path / "run"
    rec, _, _ = _train(out, batch=4, batch_gpu=2, kimg=0.008, seed=9)
    (step, path), = checkpoint.list_checkpoints(str(out))
    state = checkpoint.load_checkpoint(path)
    assert state["format"] == "anyres_fast.checkpoint/1" and state["step"] == 2 and state["nimg"] == 8
    assert state["options"] == _opts(out, batch=4, batch_gpu=2, kimg=0.008, seed=9).stored()
    assert state["config"] == {"kind": "toy"} and state["data"] == {"real": 8}
    assert set(state["modules"]) == {"net"} and torch.equal(state["modules"]["net"]["w"], rec.net.w.detach())
    assert state["modules"]["net"]["count"].item() == 2 and not state["modules"]["net"]["w"].requires_grad
    assert set(state["optimizers"]) == {"opt"} and state["optimizers"]["opt"]["state"][0]["momentum_buffer"] is not None
    assert torch.equal(state["recipe"]["extra"], torch.full((2,), 2.0))
    assert len(state["rng"]) == 1 and set(state["rng"][0]) >= {"torch", "numpy", "python"}
    # the keys the run drew: the global samples 0..7 of the stream, in order
    assert rec.keys == perm_keys(5, seed_of(9, "stream", "real") & 0xFFFFFFFF, 0, 8)
    opts = json.loads((out / "training_options.json").read_text())
    assert opts == {"options": state["options"], "config": {"kind": "toy"}, "world": 1}


def test_build_is_seeded_from_the_run_seed(tmp_path):
    rec, _, _ = _train(tmp_path / "run", seed=6, max_steps=1)
    torch.manual_seed(seed_of(6, "build"))
    np.random.seed(seed_of(6, "numpy", 0) & 0xFFFFFFFF)
    random.seed(seed_of(6, "python", 0))
    assert rec.init_draw == (torch.rand(()).item(), float(np.random.rand()), random.random())
    assert rec.ctx_seen.options.seed == 6 and rec.ctx_seen.world == 1


def test_resume_continues_exactly_and_says_so(tmp_path):
    straight, _, _ = _train(tmp_path / "a", kimg=0.02, tick=1)
    out = tmp_path / "b"
    _train(out, kimg=0.02, max_steps=2, snap=1)
    with open(out / "stats.jsonl", "a") as f:                   # a killed run's line of a later step
        f.write(json.dumps({"step": 3}) + "\n")
    os.remove(checkpoint.list_checkpoints(str(out))[-1][1])    # resume from step 1: step 2's line is dropped too
    rec, _, logs = _train(out, kimg=0.02, resume=True)
    assert [s[0] for s in rec.steps] == [1, 2, 3, 4] and rec.steps[0][2] == 4
    assert torch.equal(rec.net.w, straight.net.w) and torch.equal(rec.extra, straight.extra)
    assert rec.net.count.item() == 5 and rec.keys == straight.keys[4:]
    assert rec.opt.state_dict()["state"][0]["momentum_buffer"].equal(straight.opt.state_dict()["state"][0]["momentum_buffer"])
    assert logs[0] == f"resumed from {os.path.join(str(out), 'checkpoints', 'checkpoint-00000001.pt')} at step 1 " \
                      f"(0.004 kimg); 2 stats line(s) of later steps dropped (they are trained again)"
    assert [x["step"] for x in _lines(out)] == [1, 2, 3, 4, 5]
    # already at its kimg: nothing trained, and it says so
    rec, stats, logs = _train(out, kimg=0.02, resume=True)
    assert stats == {} and rec.steps == []
    assert logs == [f"resumed from {os.path.join(str(out), 'checkpoints', 'checkpoint-00000005.pt')} at step 5 "
                    f"(0.020 kimg)", "nothing to train: the run is at 0.02 kimg, --kimg is 0.02"]


def test_resume_restores_each_ranks_rng_state(tmp_path):
    out = tmp_path / "run"
    _train(out, max_steps=1)
    path = checkpoint.list_checkpoints(str(out))[-1][1]
    state = checkpoint.load_checkpoint(path)
    torch.manual_seed(123)
    r0 = trainer._rng_state()
    want = torch.rand(4)
    torch.manual_seed(456)
    r1 = trainer._rng_state()
    want1 = torch.rand(4)
    t = Trainer(Toy(), _opts(out, resume=True))
    t.ctx = Context(t.options, torch.device("cpu"), 0, 1)
    t.recipe.build(t.ctx)
    state["rng"] = [r0]
    t._restore(state)
    assert torch.equal(torch.rand(4), want) and t._data_start == {"real": 4} and (t.ctx.step, t.ctx.nimg) == (1, 4)
    t.ctx = Context(t.options, torch.device("cpu"), 1, 2)      # rank 1 of 2 takes its own
    state["rng"] = [r0, r1]
    t._restore(state)
    assert torch.equal(torch.rand(4), want1)
    t.ctx = Context(_opts(out, resume=True, batch=12), torch.device("cpu"), 2, 3)   # other world: rank 0's
    t._restore(state)
    assert torch.equal(torch.rand(4), want)


def test_resume_without_a_checkpoint_is_refused_before_writing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=re.escape(f"--resume: no checkpoint in {os.path.join(str(out), 'checkpoints')}")):
        _train(out, resume=True)
    assert not out.exists()


def test_data_report_file_and_line(tmp_path):
    files = [{"name": f"b{i}.png"} for i in range(11)]
    report = {"real": {"skipped": 11, "skipped_files": files}, "hr": {"skipped": 1, "skipped_files": []}, "ok": {}}
    out = tmp_path / "run"
    _, _, logs = _train(out, recipe=Toy(report), max_steps=1)
    assert json.loads((out / "data_report.json").read_text()) == report
    names = ", ".join(f"real:b{i}.png" for i in range(10))
    assert logs == [f"data: skipped 12 bad file(s): {names} ... (details in {os.path.join(str(out), 'data_report.json')})"]
    out = tmp_path / "r2"
    _, _, logs = _train(out, recipe=Toy({"real": {"skipped": 2}}), max_steps=1)
    assert logs == [f"data: skipped 2 bad file(s) (details in {os.path.join(str(out), 'data_report.json')})"]
    out = tmp_path / "r3"
    _, _, logs = _train(out, recipe=Toy({"real": {"skipped": 1, "skipped_files": files[:10]}}), max_steps=1)
    assert logs[0].startswith("data: skipped 1 bad file(s): real:b0.png, ") and " ... " not in logs[0]
    assert logs[0].endswith("real:b9.png (details in " + os.path.join(str(out), "data_report.json") + ")")
    out = tmp_path / "r4"
    _, _, logs = _train(out, recipe=Toy({"real": {"skipped": 0}}), max_steps=1)
    assert logs == [] and (out / "data_report.json").exists()
    out = tmp_path / "r5"
    _train(out, max_steps=1)
    assert not (out / "data_report.json").exists()


def test_run_folder_refusal_force_new_and_release(tmp_path):
    out = tmp_path / "run"
    _train(out, max_steps=1)
    for name in ("a", "b", "c"):
        (out / name).write_text("x")
    with pytest.raises(RunFolderError) as err:
        _train(out, max_steps=1)
    found = sorted(os.listdir(out))
    assert str(err.value).startswith(f"{out}: already holds a training run (")
    assert str(err.value).endswith(", ...); continue it with --resume, or start over with --force-new "
                                   "(the old run is moved aside, not deleted)")
    RunFolderLock(str(out)).release()                          # the refusal released the lock
    # sorted: a, b, c, checkpoints, samples, stats.jsonl (.lock and training_options.json do not count)
    assert str(err.value).startswith(f"{out}: already holds a training run (a, b, c, checkpoints, ...); ")
    for n, shown in ((1, "a"), (4, "a, b, c, d"), (5, "a, b, c, d, ...")):
        other = tmp_path / f"other{n}"
        other.mkdir()
        for name in "abcde"[:n]:
            (other / name).write_text("x")
        (other / "training_options.json").write_text("{}")        # what a start writes does not count
        with pytest.raises(RunFolderError, match=re.escape(f"{other}: already holds a training run ({shown}); ")):
            _train(other, max_steps=1)
    rec, _, logs = _train(out, max_steps=1, force_new=True)
    old = [p for p in os.listdir(tmp_path) if p.startswith("run.old-")]
    assert len(old) == 1 and sorted(os.listdir(tmp_path / old[0])) == found
    assert logs == [f"{out}: the run that was here is now {tmp_path / old[0]}"]
    assert len(rec.steps) == 1 and (out / "checkpoints").is_dir() and not (out / "a").exists()
    RunFolderLock(str(out)).release()                          # released at the end of the run
    # a resume is no new training: the folder's contents are expected
    rec, _, _ = _train(out, max_steps=1, resume=True)
    assert len(rec.steps) == 1


def test_the_run_folder_is_locked_while_training(tmp_path):
    out = tmp_path / "run"
    held = []

    class Probe(Toy):
        def train_step(self, ctx, step):
            with pytest.raises(RunFolderError):
                RunFolderLock(str(out))
            held.append(step)
            return super().train_step(ctx, step)
    _train(out, recipe=Probe(), max_steps=1)
    assert held == [0]


def test_progress_bar_tensorboard_and_plots(tmp_path, monkeypatch):
    import tqdm as tqdm_module
    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.n, self.updates, self.post, self.closed = kw, kw["initial"], [], [], False
            self.total = kw["total"]
            bars.append(self)

        def update(self, k):
            self.updates.append((k, self.n))

        def set_postfix(self, d, refresh=True):
            self.post.append((d, refresh))

        def close(self):
            self.closed = True

    class Writer:
        def __init__(self):
            self.scalars, self.flushes, self.closed = [], 0, False

        def add_scalar(self, k, v, global_step):
            self.scalars.append((k, v, global_step))

        def flush(self):
            self.flushes += 1

        def close(self):
            self.closed = True

    writer = Writer()
    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    monkeypatch.setattr(trainer, "_tensorboard", lambda out: writer)
    plotted = []
    from anyres_fast.train import plots
    monkeypatch.setattr(plots, "plot_run", lambda out: plotted.append(out))
    out = tmp_path / "myrun"
    _train(out, kimg=0.012, progress=True, plots=True, snap=2, tick=2)
    (bar,) = bars
    assert bar.kw["total"] == 0.012 and bar.kw["initial"] == 0 and bar.kw["unit"] == "kimg"
    assert bar.kw["desc"] == "myrun" and bar.kw["leave"] is True
    assert bar.kw["bar_format"] == "{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}{postfix}]"
    assert bar.updates == [(0, 0.004), (0, 0.008), (0, 0.012)] and bar.closed
    assert all(refresh is False and set(d) == {"loss", "step_seen"} for d, refresh in bar.post)
    assert bar.post[1][0]["step_seen"] == f"{1.0:.3g}"
    lines = _lines(out)
    keys = ["loss", "step_seen", "sec_per_kimg"]
    assert writer.scalars == [(k, lines[i][k], g) for i, g in ((0, 8), (1, 12)) for k in keys]
    assert writer.flushes == 2 and writer.closed
    assert plotted == [str(out), str(out)]                       # after each snapshot: step 2 and the end
    # a failing plot only warns, naming the run and the error
    monkeypatch.setattr(plots, "plot_run", lambda out: (_ for _ in ()).throw(RuntimeError("no axes")))
    with pytest.warns(UserWarning, match=re.escape(f"plots of {tmp_path / 'r2'} not redrawn: RuntimeError: no axes")):
        _train(tmp_path / "r2", max_steps=1, plots=True)


def test_bar_on_resume_starts_at_the_run_position_and_stays_in_range(tmp_path, monkeypatch):
    import tqdm as tqdm_module
    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.n, self.total, self.seen = kw, kw["initial"], kw["total"], []
            bars.append(self)

        def update(self, k):
            self.seen.append(self.n)

        def set_postfix(self, *a, **k):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    out = tmp_path / "x"
    _train(out, kimg=0.01, max_steps=1)
    _train(out, kimg=0.01, resume=True, progress=True)          # 10 images: steps 2 and 3 reach 12 > 10
    assert bars[0].kw["initial"] == 0.004 and bars[0].kw["total"] == 0.01
    assert bars[0].seen == [0.008, 0.01]
    monkeypatch.setattr(trainer.os.path, "basename", lambda p: "")
    _train(tmp_path / "y", max_steps=1, progress=True)
    assert bars[-1].kw["desc"] == "train"


def test_tensorboard_events_are_written(tmp_path):
    out = tmp_path / "run"
    _train(out, max_steps=1)
    assert any(n.startswith("events.") for n in os.listdir(out / "tensorboard"))
    w = trainer._tensorboard(str(tmp_path / "t"))
    assert w.log_dir == os.path.join(str(tmp_path / "t"), "tensorboard")
    w.close()


def test_first_sigint_finishes_the_step_checkpoints_and_stops(tmp_path):
    out = tmp_path / "run"

    class Interrupted(Toy):
        def train_step(self, ctx, step):
            stats = super().train_step(ctx, step)
            if step == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return stats
    rec, logs = Interrupted(), []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        Trainer(rec, _opts(out, kimg=1, snap=0, tick=10), log=logs.append).run()
    assert signal.getsignal(signal.SIGINT) is before
    assert len(rec.steps) == 2 and [s for s, _ in checkpoint.list_checkpoints(str(out))] == [2]
    assert logs == ["interrupted: checkpoint of step 2 written; --resume continues from it"]
    RunFolderLock(str(out)).release()


def test_interrupt_handler_grace_and_restore(monkeypatch):
    clock = [10.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock[0])
    prev = signal.getsignal(signal.SIGINT)
    it = trainer._Interrupt(True, grace=2.0)
    assert signal.getsignal(signal.SIGINT) == it._on_sigint and not it.requested
    it._on_sigint(signal.SIGINT, None)
    assert it.requested
    clock[0] = 12.0
    it._on_sigint(signal.SIGINT, None)                        # the echo, within the grace
    clock[0] = 12.5
    with pytest.raises(KeyboardInterrupt):
        it._on_sigint(signal.SIGINT, None)
    it.restore()
    assert signal.getsignal(signal.SIGINT) is prev
    mine = lambda signum, frame: None                         # noqa: E731
    signal.signal(signal.SIGINT, mine)
    try:
        it.restore()                                          # a second restore changes nothing
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, prev)
    quiet = trainer._Interrupt(False)
    assert signal.getsignal(signal.SIGINT) is prev and not quiet._installed
    quiet.restore()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:                                                      # a previous handler that is no Python callable
        monkeypatch.setattr(trainer.signal, "signal", lambda s, h: None)
        odd = trainer._Interrupt(True)
        assert odd._installed and odd._previous is None
        calls = []
        monkeypatch.setattr(trainer.signal, "signal", lambda s, h: calls.append(h))
        odd.restore()
        assert calls == [signal.default_int_handler]
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGINT, prev)
    zero = trainer._Interrupt(True)
    zero._on_sigint(signal.SIGINT, None)
    try:
        with pytest.raises(KeyboardInterrupt):                # grace 0 by default: the second one stops
            zero._on_sigint(signal.SIGINT, None)
    finally:
        zero.restore()


def test_interrupt_outside_the_main_thread_installs_nothing():
    import threading
    prev = signal.getsignal(signal.SIGINT)
    got = []
    t = threading.Thread(target=lambda: got.append(trainer._Interrupt(True)._installed))
    t.start()
    t.join()
    assert got == [False] and signal.getsignal(signal.SIGINT) is prev


def test_append_line_names_the_file(tmp_path):
    path = str(tmp_path / "missing" / "stats.jsonl")
    with pytest.raises(OSError, match=re.escape(f"cannot write {path}: No such file or directory")) as err:
        trainer._append_line(path, "x")
    assert err.value.errno == 2
    ok = str(tmp_path / "s.jsonl")
    trainer._append_line(ok, "a")
    trainer._append_line(ok, "b")
    assert open(ok).read() == "a\nb\n"


def test_only_rank_zero_logs(tmp_path):
    logs = []
    t = Trainer(Toy(), _opts(tmp_path), log=logs.append)
    t.ctx = Context(t.options, torch.device("cpu"), 1, 2)
    t.log("hidden")
    t.ctx = Context(t.options, torch.device("cpu"), 0, 2)
    t.log("shown")
    assert logs == ["shown"]


def test_default_log_goes_to_stderr(tmp_path, capsys):
    t = Trainer(Toy(), _opts(tmp_path))
    t.ctx = Context(t.options, torch.device("cpu"), 0, 1)
    t.log("hello")
    captured = capsys.readouterr()
    assert captured.err == "hello\n" and captured.out == ""


# ---------------------------------------------------------------- world > 1 with stand-ins

def _two_ranks(monkeypatch, rank):
    monkeypatch.setattr(trainer, "init_distributed", lambda device: (torch.device("cpu"), rank, 2))
    # the other rank: same gradients and stats as this one, so the means equal this rank's values
    return _OtherRank(lambda t: t.clone()).install(monkeypatch)


def test_rank_zero_of_two_broadcasts_gathers_and_writes(tmp_path, monkeypatch):
    dist = _two_ranks(monkeypatch, 0)
    out = tmp_path / "run"
    rec, stats, _ = _train(out, batch=4, kimg=0.008, seed=2)
    n_tensors = len(list(rec.net.parameters())) + len(list(rec.net.buffers()))
    assert [c for c in dist.calls if c[0] == "broadcast"] == [("broadcast", 0)] * n_tensors
    # the tensors themselves (in place), parameters then buffers
    assert [t.data_ptr() for t in dist.sent] == [t.data_ptr() for t in [rec.net.w, rec.net.count]]
    assert dist.calls.count(("barrier",)) == 1 and dist.calls.count(("gather",)) == 1
    maxes = [c for c in dist.calls if c[0] == "all_reduce" and c[3] == torch.distributed.ReduceOp.MAX]
    assert len(maxes) == 2 and all(c[2] == 1 for c in maxes)     # the stop flag, once per step
    state = checkpoint.load_checkpoint(checkpoint.list_checkpoints(str(out))[-1][1])
    assert len(state["rng"]) == 2 and state["rng"][1] == {"other": True} and "torch" in state["rng"][0]
    assert json.loads((out / "training_options.json").read_text())["world"] == 2
    s = seed_of(2, "stream", "real") & 0xFFFFFFFF              # rank 0 takes the first half of each batch
    assert rec.keys == perm_keys(5, s, 0, 2) + perm_keys(5, s, 4, 2)
    assert rec.ctx_seen.per_rank == 2 and stats["loss"] == pytest.approx(_lines(out)[-1]["loss"])


def test_rank_one_writes_nothing_and_resume_broadcasts_nothing(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _train(out, max_steps=1)
    with open(out / "stats.jsonl", "a") as f:                   # rank 0 trims this; rank 1 leaves it
        f.write(json.dumps({"step": 9}) + "\n")
    before = sorted(os.listdir(out)), open(out / "stats.jsonl").read()
    dist = _two_ranks(monkeypatch, 1)
    logs = []
    rec, _, _ = _train(out, logs=logs, resume=True, max_steps=1)
    assert not [c for c in dist.calls if c[0] == "broadcast"]
    assert logs == [] and (sorted(os.listdir(out)), open(out / "stats.jsonl").read()) == before
    assert [s for s, _ in checkpoint.list_checkpoints(str(out))] == [1] and rec.snaps == []
    s = seed_of(3, "stream", "real") & 0xFFFFFFFF
    assert rec.keys == perm_keys(5, s, 4 + 2, 2)                # rank 1's half, from the stored position
    dist = _two_ranks(monkeypatch, 1)
    _train(tmp_path / "fresh", max_steps=1)
    assert not (tmp_path / "fresh").exists() or not os.listdir(tmp_path / "fresh")


def test_a_stop_on_another_rank_stops_this_one(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "init_distributed", lambda device: (torch.device("cpu"), 0, 2))
    dist = _OtherRank(lambda t: torch.ones_like(t) if t.numel() == 1 else t.clone()).install(monkeypatch)
    out = tmp_path / "run"
    logs = []
    rec = Toy()
    with pytest.raises(KeyboardInterrupt):
        Trainer(rec, _opts(out, kimg=1), log=logs.append).run()
    assert len(rec.steps) == 1 and logs == ["interrupted: checkpoint of step 1 written; --resume continues from it"]
    t = Trainer(Toy(), _opts(out))
    t.ctx = Context(t.options, torch.device("cpu"), 0, 2)
    dist.other = lambda t: torch.zeros_like(t)
    assert t._agreed_stop(False) is False and t._agreed_stop(True) is True


class _Graces(trainer._Interrupt):
    made = []

    def __init__(self, active, grace=0.0):
        super().__init__(active, grace)
        _Graces.made.append((active, grace))


def test_the_echo_grace_is_two_seconds_only_under_torchrun(tmp_path, monkeypatch):
    # docs/training.md: a second SIGINT within 2 s of the first is torchrun's echo
    _Graces.made = []
    monkeypatch.setattr(trainer, "_Interrupt", _Graces)
    _train(tmp_path / "one", max_steps=1)
    _two_ranks(monkeypatch, 0)
    _train(tmp_path / "two", max_steps=1)
    assert _Graces.made == [(True, 0.0), (True, 2.0)]


class _ManyStats(Toy):
    def train_step(self, ctx, step):
        super().train_step(ctx, step)
        return {"a": 1 / 3, "b": 2.0, "c": 12345.678, "d": 0.5, "e": 9.0}


class _NoStats(Toy):
    def train_step(self, ctx, step):
        super().train_step(ctx, step)
        return {}


def test_bar_shows_four_stats_in_three_digits_and_a_recipe_without_stats(tmp_path, monkeypatch):
    import tqdm as tqdm_module
    posts = []

    class Bar:
        def __init__(self, **kw):
            self.n, self.total = 0, kw["total"]

        def update(self, k):
            pass

        def set_postfix(self, d, refresh=True):
            posts.append(d)

        def close(self):
            pass

    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    _train(tmp_path / "run", recipe=_ManyStats(), max_steps=1, progress=True)
    assert posts == [{"a": "0.333", "b": "2", "c": "1.23e+04", "d": "0.5"}]
    times = iter([10.0, 12.0])
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(times))
    out = tmp_path / "empty"
    _, stats, _ = _train(out, recipe=_NoStats(), max_steps=1, batch=4)
    # no stats: the tick still counts its steps' images, 2 s for 4 images
    assert stats == {"step": 1, "kimg": 0.004, "sec_per_kimg": pytest.approx(2 / 0.004)}


class _LazyStat(Toy):
    """A stat reported on even steps only, first in the dict (as a lazy regulariser's would be)."""

    def train_step(self, ctx, step):
        st = super().train_step(ctx, step)
        return {"reg": float(step), **st} if step % 2 == 0 else st


@pytest.mark.parametrize("recipe", [_LazyStat, _NoStats])
def test_sec_per_kimg_counts_every_step_of_the_tick(tmp_path, monkeypatch, recipe):
    times = iter([0.0, 6.0, 9.0])
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(times))
    out = tmp_path / "run"
    _train(out, recipe=recipe(), batch=4, kimg=0.02, tick=3)      # 5 steps: ticks after 3 and 5
    lines = _lines(out)
    assert [x["step"] for x in lines] == [3, 5]
    # 6 s over 3 steps of 4 images, then 3 s over 2 steps, whatever stats the steps report
    assert [x["sec_per_kimg"] for x in lines] == pytest.approx([6 / 0.012, 3 / 0.008])
    if recipe is _LazyStat:
        assert [x["reg"] for x in lines] == [1.0, 4.0]              # steps 0, 2, then step 4 alone


def test_without_tensorboard_the_run_keeps_stats_jsonl_only(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)    # import fails
    assert trainer._tensorboard(str(tmp_path / "x")) is None
    out = tmp_path / "run"
    _train(out, max_steps=2)
    assert not (out / "tensorboard").exists() and [x["step"] for x in _lines(out)] == [1, 2]


def test_training_options_file_keeps_the_field_order(tmp_path):
    out = tmp_path / "run"
    _train(out, max_steps=1)
    text = (out / "training_options.json").read_text()
    obj = json.loads(text)
    assert list(obj) == ["options", "config", "world"]
    assert list(obj["options"]) == [f.name for f in trainer.dataclasses.fields(TrainOptions)]


def test_save_returns_the_checkpoint_on_rank_zero_only(tmp_path, monkeypatch):
    out = tmp_path / "run"
    t = Trainer(Toy(), _opts(out, max_steps=1))
    t.run()
    assert t.save() == os.path.join(str(out), "checkpoints", "checkpoint-00000001.pt")
    dist = _OtherRank().install(monkeypatch)
    t.ctx = Context(t.options, torch.device("cpu"), 1, 2)
    assert t.save() is None and dist.calls[-1] == ("barrier",)


def test_run_body_refuses_a_resume_whose_checkpoint_is_gone(tmp_path):
    # run() checks first; the body checks again (the folder may change in between)
    t = Trainer(Toy(), _opts(tmp_path, resume=True))
    t.ctx = Context(t.options, torch.device("cpu"), 0, 1)
    with pytest.raises(ValueError, match=re.escape(f"--resume: no checkpoint in {os.path.join(str(tmp_path), 'checkpoints')}")):
        t._run()


def test_the_device_option_reaches_the_process_group_setup(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(trainer, "init_distributed", lambda device: (asked.append(device), (torch.device("cpu"), 0, 1))[1])
    _train(tmp_path / "run", max_steps=1, device="cpu")
    assert asked == ["cpu"]


# ---------------------------------------------------------------- what the recipes hand the loop

def _adam(opt):
    g = opt.param_groups[0]
    return g["lr"], g["betas"], g["eps"]


def test_lazy_regularisation_rescales_lr_and_betas_by_interval_over_interval_plus_one(tmp_path):
    """StyleGAN2 (Karras et al. 2020, appendix B): a regulariser applied every k steps in its own step
    scales Adam's lr by c = k / (k + 1) and its betas to beta ** c. Anyres: R1 on D only (k = 16 by
    default); InfinityGAN: R1 on D (16) and path length on G (4)."""
    from anyres_fast.train.anyres_recipe import AnyresRecipe
    from anyres_fast.train.infinity_recipe import InfinityRecipe, InfinityTrainConfig
    from helpers import micro_config, write_images

    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 2)
    ctx = Context(_opts(tmp_path / "a", batch=4), torch.device("cpu"), 0, 1)
    rec = AnyresRecipe(micro_config(phase="fixed", lr_data=lr, r1_interval=3, lr_g=0.01, lr_d=0.02,
                                    betas=(0.5, 0.9)))
    rec.build(ctx)
    c = 3 / 4
    assert _adam(rec.opt_G) == (0.01, (0.5, 0.9), 1e-8)
    lr_d, betas_d, eps_d = _adam(rec.opt_D)
    assert lr_d == pytest.approx(0.02 * c, rel=1e-15) and eps_d == 1e-8
    assert betas_d == pytest.approx((0.5 ** c, 0.9 ** c), rel=1e-15)
    rec = AnyresRecipe(micro_config(phase="fixed", lr_data=lr))
    rec.build(ctx)
    assert _adam(rec.opt_G) == (0.0025, (0.0, 0.99), 1e-8)            # docs/training.md, phase fixed
    assert _adam(rec.opt_D)[0] == pytest.approx(0.002 * 16 / 17, rel=1e-15)
    assert _adam(rec.opt_D)[1] == pytest.approx((0.0, 0.99 ** (16 / 17)), rel=1e-15)

    inf = InfinityRecipe(InfinityTrainConfig(data=lr, tiny=True, lr=0.004, r1_every=5, pl_every=2,
                                             betas=(0.25, 0.8)))
    inf.build(Context(_opts(tmp_path / "b", batch=4), torch.device("cpu"), 0, 1))
    for opt, k in ((inf.opt_G, 2), (inf.opt_D, 5)):
        c = k / (k + 1)
        got_lr, got_betas, eps = _adam(opt)
        assert got_lr == pytest.approx(0.004 * c, rel=1e-15) and eps == 1e-8
        assert got_betas == pytest.approx((0.25 ** c, 0.8 ** c), rel=1e-15)


def test_regularisation_steps_come_every_interval_from_step_zero(tmp_path):
    """Lazy R1 at steps 0, k, 2k, ... (docs/training.md "The lazy-R1 step is step 0, 16, 32"), seen as
    the optimiser phases the loop steps."""
    from anyres_fast.train.anyres_recipe import AnyresRecipe
    from helpers import micro_config, write_images

    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 2)
    rec = AnyresRecipe(micro_config(phase="fixed", lr_data=lr, r1_interval=2))
    phases = []

    class Spy(Trainer):
        def _loop(self):
            self.ctx.grad_hooks.append(lambda name, params: phases.append((self.ctx.step, name)))
            return super()._loop()
    Spy(rec, _opts(tmp_path / "run", batch=2, max_steps=3), log=lambda m: None).run()
    regs = [s for s, n in phases if n == "Dreg"]
    assert regs == [0, 2] and sorted({n for _, n in phases}) == ["D", "Dreg", "G"]
    assert [s for s, n in phases if n == "G"] == [0, 1, 2]
