"""The model-independent training loop: one Trainer, driven by a model-specific Recipe.

The Trainer owns everything every GAN run needs: process group setup under torchrun (NCCL on GPU,
gloo on CPU), the per-rank data streams with their positions, counter-based random numbers,
gradient averaging across ranks, atomic checkpoints with every RNG state and exact resume, the tqdm
bar, `stats.jsonl`, TensorBoard events and the snapshot schedule. A Recipe (see `Recipe` and
docs/training.md) builds the networks and optimisers, names its datasets, runs one training step
(forward/backward passes, calling `ctx.step_optimizer`) and draws sample grids.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..data import KeySampler
from ..utils.distributed import init_distributed
from ..utils.files import write_json
from . import checkpoint as ckpt
from .run_folder import RunFolderError, RunFolderLock, move_aside, run_contents, trim_stats


@dataclass
class TrainOptions:
    """Loop settings shared by every recipe.

    out: run folder. seed: run seed. batch: samples per step over all processes. batch_gpu: samples
    per forward pass (None: batch / world); batch / world must be a multiple of it (the rest is
    gradient accumulation). kimg: length of the run in thousands of real samples. tick: steps per
    stats line. snap: steps per checkpoint + snapshot (0: only at the end). keep: checkpoints kept.
    workers: loader processes per rank. device: None (cuda:LOCAL_RANK when available, else cpu).
    precision: "fp32", "fp16" or "bf16" (autocast on GPU; the CPU always runs fp32). resume: continue
    from the newest checkpoint of `out`. progress: show the tqdm bar. max_steps: stop after this many
    steps in this process (None: run to kimg), used to stop and resume. plots: after every snapshot,
    redraw <out>/plots/*.png (train.plots.plot_run; needs matplotlib, a failure only warns).
    force_new: `out` already holds a run and this is not a resume: move that run aside to
    `<out>.old-<time>` and start afresh (without it such a folder is refused; train.run_folder).
    """
    out: str
    seed: int = 0
    batch: int = 32
    batch_gpu: Optional[int] = None
    kimg: float = 25000
    tick: int = 10
    snap: int = 500
    keep: int = 3
    workers: int = 2
    device: Optional[str] = None
    precision: str = "fp32"
    resume: bool = False
    progress: bool = True
    max_steps: Optional[int] = None
    plots: bool = False
    force_new: bool = False

    def stored(self) -> dict:
        """These options as a run stores them: `out` is "." (a run is identified by where it is, so a
        copied or renamed run resumes in its new place); force_new applies to one start only."""
        d = dataclasses.asdict(self)
        d.update(out=".", force_new=False)
        return d


class Recipe:
    """What a model family contributes to a run. Subclass and override; the Trainer calls:

    build(ctx)                 create networks and optimisers (on ctx.device); seeded by the Trainer
    modules() -> {name: nn.Module}        saved in checkpoints (trained nets, EMA copies, frozen teachers)
    optimizers() -> {name: Optimizer}     saved in checkpoints
    datasets() -> {name: Dataset}         keyed by (index, draw); items are dicts of tensors
    train_step(ctx, step) -> {stat: float}  one full step: draw batches with ctx.next_batch(name),
                               backward per chunk (scale by ctx.chunk_weight), ctx.step_optimizer(name)
    snapshot(ctx, folder, step)           rank 0 only: PNG grids etc. (optional)
    state_dict() / load_state_dict(d)     extra recipe state (plain values/tensors) (optional)
    config() -> dict           JSON-able description stored in checkpoints and the run folder
    data_report() -> dict      bad-file report of the datasets, written to <run>/data_report.json
    """

    def build(self, ctx: "Context") -> None:
        raise NotImplementedError

    def modules(self) -> dict:
        raise NotImplementedError

    def optimizers(self) -> dict:
        raise NotImplementedError

    def datasets(self) -> dict:
        raise NotImplementedError

    def train_step(self, ctx: "Context", step: int) -> dict:
        raise NotImplementedError

    def snapshot(self, ctx: "Context", folder: str, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def config(self) -> dict:
        return {}

    def data_report(self) -> dict:
        return {}


def _seed_of(*parts) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class _Stream:
    """One dataset's sharded key stream and its prefetching DataLoader."""

    def __init__(self, dataset, seed: int, name: str, global_batch: int, rank: int, world: int, workers: int,
                 start: int = 0):
        self.dataset, self.name, self.workers = dataset, name, workers
        self.sampler = KeySampler(len(dataset), _seed_of(seed, "stream", name) & 0xFFFFFFFF, global_batch, rank,
                                  world, start)
        self.consumed = start            # position of the next batch this rank will use
        self._iter = None

    def _batches(self):
        s = KeySampler(self.sampler.n, self.sampler.seed, self.sampler.global_batch, self.sampler.rank,
                       self.sampler.world, self.consumed)
        while True:
            yield s.next_keys()

    def next(self):
        if self._iter is None:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=self._batches(), num_workers=self.workers,
                persistent_workers=self.workers > 0, prefetch_factor=2 if self.workers > 0 else None)
            self._iter = iter(loader)
        batch = next(self._iter)
        self.consumed += self.sampler.global_batch
        return batch


class Context:
    """What a Recipe sees during a run: device, ranks, batch split, data, random numbers, optimiser steps.

    Attributes: device, rank, world, seed, batch (global), per_rank, batch_gpu, num_chunks,
    chunk_weight (batch_gpu / per_rank: multiply each chunk's mean loss by it), step (current step),
    nimg (real samples seen before this step), options (TrainOptions), grad_hooks (callables
    (name, params) run after gradients are averaged, before the optimiser step; tests use them).
    """

    def __init__(self, options: TrainOptions, device: torch.device, rank: int, world: int):
        self.options, self.device, self.rank, self.world = options, device, rank, world
        self.seed, self.batch = options.seed, options.batch
        if options.batch % world:
            raise ValueError(f"--batch {options.batch} is not divisible by the {world} processes")
        self.per_rank = options.batch // world
        self.batch_gpu = options.batch_gpu or self.per_rank
        if self.per_rank % self.batch_gpu:
            raise ValueError(f"--batch-gpu {self.batch_gpu} does not divide the per-process batch {self.per_rank}")
        self.num_chunks = self.per_rank // self.batch_gpu
        self.chunk_weight = self.batch_gpu / self.per_rank
        self.step, self.nimg = 0, 0
        self.streams = {}
        self.grad_hooks = []

    # -- data ---------------------------------------------------------------------------------------
    def next_batch(self, name: str, host_keys: Sequence[str] = ()) -> list:
        """This rank's share of the next global batch of dataset `name`, as `num_chunks` dicts of
        tensors on the device (each with batch_gpu samples).

        Args:
            name: dataset name.
            host_keys: keys whose CPU slices are also kept, as chunk[key + "_host"], for code that
                needs the values on the host (reading them back from the GPU would synchronise).
        Returns:
            list of num_chunks dicts.
        """
        batch = self.streams[name].next()
        chunks = []
        for k in range(self.num_chunks):
            sl = slice(k * self.batch_gpu, (k + 1) * self.batch_gpu)
            chunk = {key: (v[sl].to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v[sl])
                     for key, v in batch.items()}
            chunk.update({key + "_host": batch[key][sl] for key in host_keys if key in batch})
            chunks.append(chunk)
        return chunks

    # -- random numbers -----------------------------------------------------------------------------
    def generator(self, tag: str, chunk: Optional[int] = None) -> torch.Generator:
        """A CPU generator for (seed, step, tag[, global chunk]): the same numbers whatever the number of
        processes, workers or restarts. chunk None: shared by all ranks (e.g. the batch type)."""
        parts = (self.seed, self.step, tag) if chunk is None else \
            (self.seed, self.step, tag, self.rank * self.num_chunks + chunk)
        return torch.Generator().manual_seed(_seed_of(*parts))

    def randn(self, shape, tag: str, chunk: int) -> torch.Tensor:
        """Standard normal samples for one chunk, drawn on the CPU and moved to the device."""
        return torch.randn(shape, generator=self.generator(tag, chunk)).to(self.device)

    def uniform(self, tag: str) -> float:
        """One number in [0, 1), identical on every rank for this step."""
        return float(torch.rand((), generator=self.generator(tag)))

    # -- optimisation -------------------------------------------------------------------------------
    def autocast(self):
        """Autocast on GPU at the run's precision; a no-op on CPU or at fp32."""
        prec = self.options.precision
        if self.device.type != "cuda" or prec == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if prec == "fp16" else torch.bfloat16)

    def step_optimizer(self, name: str, optimizer: torch.optim.Optimizer, params: list) -> None:
        """Average gradients over ranks (one all_reduce of the flattened gradients, as StyleGAN2/3 do),
        replace non-finite values, run the grad hooks, step, and clear the gradients.

        Only parameters that received a gradient take part (as StyleGAN3's training loop): a parameter
        unused in this phase (e.g. D's output bias in the R1 pass) keeps its value and its Adam state,
        step count included. Every rank runs the same phases on the same networks, so the set of
        parameters with a gradient is the same on every rank and the all_reduce stays aligned.

        DistributedDataParallel's reducer is not used: a GAN step runs several forward passes per
        optimiser step and R1 differentiates D's output w.r.t. its input with create_graph, which the
        reducer does not support; the gradient arithmetic is the same.

        Args:
            name: the phase (passed to the grad hooks). optimizer: the optimiser to step.
            params: the parameters of this phase (those without requires_grad or a gradient are skipped;
                a frozen one's stale gradient is dropped, so that the optimiser leaves it as it is).
        """
        for p in params:
            if not p.requires_grad and p.grad is not None:
                p.grad = None
        params = [p for p in params if p.requires_grad and p.grad is not None]
        grads = [p.grad for p in params]
        if params:
            flat = torch.cat([g.flatten() for g in grads])
            if self.world > 1:
                torch.distributed.all_reduce(flat)
                flat /= self.world
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.reshape(p.shape)
        for hook in self.grad_hooks:
            hook(name, params)
        optimizer.step()
        for p in params:
            p.grad = None

    def mean_over_ranks_tensors(self, tensors: list) -> list:
        """The mean over ranks of each tensor (one all_reduce); the tensors themselves when world == 1."""
        if self.world == 1 or not tensors:
            return tensors
        flat = torch.cat([t.flatten().to(torch.float64) for t in tensors])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        return [f.reshape(t.shape).to(t.dtype) for f, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def mean_over_ranks(self, stats: dict) -> dict:
        """Average a dict of floats over ranks (same keys on every rank)."""
        if self.world == 1 or not stats:
            return stats
        keys = sorted(stats)
        t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs a Recipe under TrainOptions: `Trainer(recipe, options).run()` -> last stats dict.

    Raises:
        ValueError: inconsistent batch settings, or --resume without a checkpoint.
    """

    def __init__(self, recipe: Recipe, options: TrainOptions, log: Callable = None):
        self.recipe, self.options = recipe, options
        self.log_fn = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def log(self, msg: str) -> None:
        if self.ctx.rank == 0:
            self.log_fn(msg)

    def _state(self) -> dict:
        r = self.recipe
        state = {
            "format": "anyres_fast.checkpoint/1", "step": self.ctx.step, "nimg": self.ctx.nimg,
            "options": self.options.stored(), "config": r.config(),
            "modules": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in r.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in r.optimizers().items()},
            "recipe": r.state_dict(),
            "data": {k: s.consumed for k, s in self.ctx.streams.items()},
        }
        rng = _rng_state()
        if self.ctx.world > 1:
            gathered = [None] * self.ctx.world
            torch.distributed.all_gather_object(gathered, rng)
            state["rng"] = gathered
        else:
            state["rng"] = [rng]
        return state

    def _restore(self, state: dict) -> None:
        r = self.recipe
        for k, m in r.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in r.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        r.load_state_dict(state["recipe"])
        self.ctx.step, self.ctx.nimg = int(state["step"]), int(state["nimg"])
        self._data_start = dict(state["data"])
        rngs = state["rng"]
        _set_rng_state(rngs[self.ctx.rank] if len(rngs) == self.ctx.world else rngs[0])

    def run(self) -> dict:
        """Train until `kimg` (or `max_steps`); returns the last tick's stats ({} when nothing was left).

        Raises:
            RunFolderError: the run folder is in use by another training, or holds a run and this is
                neither a resume nor `force_new`.
        """
        o = self.options
        device, rank, world = init_distributed(o.device)
        self.ctx = Context(o, device, rank, world)
        if o.resume and ckpt.latest_checkpoint(o.out) is None:   # before anything is written there
            raise ValueError(f"--resume: no checkpoint in {ckpt.checkpoint_dir(o.out)}")
        lock = self._claim_run_folder() if rank == 0 else None
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _claim_run_folder(self) -> RunFolderLock:
        """Lock the run folder (one writer); refuse or move aside a run a new training would overwrite."""
        o = self.options
        os.makedirs(o.out, exist_ok=True)
        lock = RunFolderLock(o.out)
        found = [] if o.resume else run_contents(o.out)
        if not found:
            lock.mark()
            return lock
        if not o.force_new:
            lock.release()
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            raise RunFolderError(f"{o.out}: already holds a training run ({shown}); continue it with --resume, "
                                 f"or start over with --force-new (the old run is moved aside, not deleted)")
        old = move_aside(o.out)
        os.makedirs(o.out)
        new_lock = RunFolderLock(o.out)
        new_lock.mark()
        lock.release()
        self.log_fn(f"{o.out}: the run that was here is now {old}")
        return new_lock

    def _run(self) -> dict:
        o, ctx = self.options, self.ctx
        device, rank, world = ctx.device, ctx.rank, ctx.world
        self._data_start = {}
        torch.manual_seed(_seed_of(o.seed, "build"))   # same initial weights on every rank
        np.random.seed(_seed_of(o.seed, "numpy", rank) & 0xFFFFFFFF)
        random.seed(_seed_of(o.seed, "python", rank))
        self.recipe.build(ctx)
        resumed_from = None
        if o.resume:
            resumed_from = ckpt.latest_checkpoint(o.out)
            if resumed_from is None:
                raise ValueError(f"--resume: no checkpoint in {ckpt.checkpoint_dir(o.out)}")
            self._restore(ckpt.load_checkpoint(resumed_from, map_location=device))
        elif world > 1:
            for m in self.recipe.modules().values():
                for t in list(m.parameters()) + list(m.buffers()):
                    torch.distributed.broadcast(t.data, src=0)
        for name, ds in self.recipe.datasets().items():
            ctx.streams[name] = _Stream(ds, o.seed, name, o.batch, rank, world, o.workers,
                                        start=self._data_start.get(name, 0))
        if rank == 0:
            report = self.recipe.data_report()
            if report:
                _write_json(os.path.join(o.out, "data_report.json"), report)
                skipped = sum(v.get("skipped", 0) for v in report.values())
                names = [f"{k}:{f['name']}" for k, v in report.items() for f in v.get("skipped_files", [])]
                if skipped:
                    self.log(f"data: skipped {skipped} bad file(s)" + (f": {', '.join(names[:10])}"
                             + (" ..." if len(names) > 10 else "") if names else "")
                             + f" (details in {os.path.join(o.out, 'data_report.json')})")
            _write_json(os.path.join(o.out, "training_options.json"),
                        {"options": o.stored(), "config": self.recipe.config(), "world": world})
        if resumed_from:
            dropped = trim_stats(o.out, ctx.step) if rank == 0 else 0
            self.log(f"resumed from {resumed_from} at step {ctx.step} ({ctx.nimg / 1000:.3f} kimg)"
                     + (f"; {dropped} stats line(s) of later steps dropped (they are trained again)" if dropped else ""))
            if ctx.nimg >= int(round(o.kimg * 1000)):
                self.log(f"nothing to train: the run is at {ctx.nimg / 1000:g} kimg, --kimg is {o.kimg:g}")
                return {}
        return self._loop()

    def _loop(self) -> dict:
        o, ctx = self.options, self.ctx
        total = int(round(o.kimg * 1000))
        writer = None
        bar = None
        if ctx.rank == 0:
            writer = _tensorboard(o.out)
            if o.progress:
                from tqdm import tqdm
                bar = tqdm(total=round(total / 1000, 3), initial=round(ctx.nimg / 1000, 3), unit="kimg",
                           desc=os.path.basename(os.path.abspath(o.out)) or "train", leave=True,
                           bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}{postfix}]")
        stats, acc, t_tick, steps_here, tick_steps = {}, {}, time.perf_counter(), 0, 0
        interrupt = _Interrupt(True, grace=2.0 if ctx.world > 1 else 0.0)
        try:
            while ctx.nimg < total and (o.max_steps is None or steps_here < o.max_steps):
                step_stats = ctx.mean_over_ranks(self.recipe.train_step(ctx, ctx.step))
                ctx.step += 1
                ctx.nimg += o.batch
                steps_here += 1
                tick_steps += 1
                for k, v in step_stats.items():
                    acc.setdefault(k, []).append(v)
                if bar is not None:   # set, not summed: float sums of batch/1000 overshoot the total
                    bar.n = min(bar.total, round(ctx.nimg / 1000, 6))
                    bar.update(0)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in list(step_stats.items())[:4]}, refresh=False)
                done = ctx.nimg >= total or (o.max_steps is not None and steps_here >= o.max_steps)
                if ctx.step % max(1, o.tick) == 0 or done:
                    now = time.perf_counter()
                    stats = {k: float(np.mean(v)) for k, v in acc.items()}
                    stats.update(step=ctx.step, kimg=ctx.nimg / 1000,
                                 sec_per_kimg=(now - t_tick) / (tick_steps * o.batch / 1000))
                    # a stat may be missing on some steps (e.g. a lazy regulariser's): its mean is over
                    # the steps that report it, while the time is per image of every step of the tick
                    acc, t_tick, tick_steps = {}, now, 0
                    if ctx.rank == 0:
                        _append_line(os.path.join(o.out, "stats.jsonl"), json.dumps(stats))
                        if writer is not None:
                            for k, v in stats.items():
                                if k not in ("step", "kimg"):
                                    writer.add_scalar(k, v, global_step=int(ctx.nimg / 1000 * 1000))
                            writer.flush()
                stop = self._agreed_stop(interrupt.requested)
                if (o.snap and ctx.step % o.snap == 0) or done or stop:
                    self.save()
                if stop:
                    self.log(f"interrupted: checkpoint of step {ctx.step} written; --resume continues from it")
                    raise KeyboardInterrupt
        finally:
            interrupt.restore()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return stats

    def _agreed_stop(self, requested: bool) -> bool:
        """Whether any rank was interrupted (one tiny all_reduce per step under torchrun), so that every
        rank stops after the same step and the checkpoint, which needs them all, can be written."""
        if self.ctx.world == 1:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self.ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def save(self) -> Optional[str]:
        """Checkpoint (every rank takes part in gathering RNG states; rank 0 writes) and snapshot."""
        state = self._state()
        path = None
        if self.ctx.rank == 0:
            path = ckpt.save_checkpoint(self.options.out, self.ctx.step, state, keep=self.options.keep)
            folder = os.path.join(self.options.out, "samples")
            os.makedirs(folder, exist_ok=True)
            self.recipe.snapshot(self.ctx, folder, self.ctx.step)
            if self.options.plots:
                _redraw_plots(self.options.out)
        if self.ctx.world > 1:
            torch.distributed.barrier()
        return path


class _Interrupt:
    """Ctrl-C (SIGINT) during training: the first one lets the step in progress finish, then the loop
    writes a checkpoint and stops (KeyboardInterrupt); a later one stops at once, as Python's default.
    Under torchrun a terminal's Ctrl-C reaches the agent and every worker, and the agent then sends each
    worker a SIGINT of its own: a second SIGINT within `grace` seconds of the first is that echo and is
    ignored, and the ranks agree on the step to stop after (Trainer._agreed_stop). Main thread only."""

    def __init__(self, active: bool, grace: float = 0.0):
        self.requested, self._installed, self._previous, self._first_at = False, False, None, None
        self.grace = grace
        if active and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True

    def _on_sigint(self, signum, frame):
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first_at = True, now
            return
        if now - self._first_at <= self.grace:
            return
        raise KeyboardInterrupt     # a second Ctrl-C interrupts at once

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False


def _redraw_plots(out: str) -> None:
    # Pictures are a convenience: a missing matplotlib or a plotting error must not stop training.
    try:
        from .plots import plot_run
        plot_run(out)
    except Exception as exc:
        warnings.warn(f"plots of {out} not redrawn: {type(exc).__name__}: {exc}", stacklevel=2)


def _tensorboard(out: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:   # tensorboard not installed: stats.jsonl only
        return None
    return SummaryWriter(os.path.join(out, "tensorboard"))


def _append_line(path: str, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as exc:   # a full disk: name the file (the checkpoints are written atomically)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None


def _write_json(path: str, obj) -> None:
    write_json(path, obj, sort_keys=False)
