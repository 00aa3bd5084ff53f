"""Train phase `fixed` side by side with the published StyleGAN3 training phases, step for step.

    python scripts/check_training_against_stylegan3.py --src /path/to/stylegan3-checkout [--steps 18]
        [--config T|R] [--per-sample-styles] [--aug noaug|fixed|ada [--p P] [--ada-kimg K]]

Needs a checkout of NVlabs/stylegan3 (not shipped, not fetched by CI; that is why this is a script and
not a test). It runs, on the CPU in float64, a tiny phase-`fixed` run through our `Trainer` and
`AnyresRecipe`, recording every real batch and latent the run draws; then the same number of steps
through the published `StyleGAN2Loss.accumulate_gradients` with the published networks, driven by a
loop of the published training phases (Gboth -> Gmain since StyleGAN3 has no path-length term, Dmain,
Dreg every 16 steps with gain 16; Adam with the lazy-regularisation ratio on D; only parameters with
a gradient stepped; G_ema with the half-life batch*10/32 kimg and ramp-up 0.05), fed the recorded
reals and latents. Both start from the published networks' random initial weights. Per step it
prints the largest relative difference max|ours - published| / max|published| over the tensors of
G, D and G_ema (parameters and buffers). With --config R the published D-input blur (sigma 10 fading
over batch*200/32 kimg) runs in both.

--aug fixed|ada adds ADA (train/augment.py) on both sides: ours in the Trainer, the published
`AugmentPipe` (bgc preset) as the published loss's augment_pipe, fed the same random numbers: our run
records the state of each counter-based generator it hands to the pipeline, and the published pipe
draws from torch's global RNG set to that state for the same D pass (G, D fake, D real, R1, per
chunk, in the published order). For ada the published side runs the published training loop's
heuristic (a `training_stats.Collector` of 'Loss/signs/real', adjusted every 4 steps) with our
--ada-kimg; --p is the fixed p (fixed) or the initial p (ada). Before the run it prints the largest
difference between the two pipelines on one batch from the same RNG state at a few p.

float64: the published code casts to float32 in many places, so the checkout is copied to a temporary
folder and `torch.float32` / `np.float32` are replaced by their float64 counterparts in the copy (the
checkout itself is not modified); our models run in float64 after `.double()`.

Exits non-zero if the final difference exceeds --tol (default 1e-9).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import re
import shutil
import sys
import tempfile
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from anyres_fast.train import Trainer, TrainOptions                      # noqa: E402
from anyres_fast.train.anyres_recipe import AnyresConfig, AnyresRecipe, generator_config  # noqa: E402
from anyres_fast.train.augment import PIPES, AdaController, AugmentPipe   # noqa: E402

TINY_G = dict(z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4, scale_dim=8, mapping_width=8)
TINY_D = dict(channel_base=256, channel_max=8, mapping_layers=1)


# -- the published code, in float64 ------------------------------------------------------------------
# The published modulated conv pre-normalises the styles by their RMS over the whole batch, ours per
# sample (a sample's image must not depend on the other samples of a batch: tiles are batched). With
# the demodulation's eps = 1e-8 the two differ by ~1e-11 relative per layer. --per-sample-styles makes
# the float64 copy normalise per sample too, to show that nothing else differs.
BATCH_STYLE_NORM = "s = s * s.square().mean().rsqrt()"
SAMPLE_STYLE_NORM = "s = s * s.square().mean(dim=1, keepdim=True).rsqrt()"


def float64_copy(src: str, per_sample_styles: bool = False) -> str:
    """Copy dnnlib/, torch_utils/ and training/ of the checkout to a temporary folder with every
    float32 dtype replaced by float64 (and optionally the style normalisation made per sample);
    returns the folder."""
    if not os.path.isdir(os.path.join(src, "training")) or not os.path.isdir(os.path.join(src, "torch_utils")):
        raise SystemExit(f"{src} does not look like a stylegan3 checkout (no training/ or torch_utils/)")
    root = tempfile.mkdtemp(prefix="sg3_fp64_")
    for sub in ("dnnlib", "torch_utils", "training"):
        shutil.copytree(os.path.join(src, sub), os.path.join(root, sub))
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                text = open(path).read()
                text = re.sub(r"\btorch\.float32\b", "torch.float64", text)
                text = re.sub(r"\bnp\.float32\b", "np.float64", text)
                if per_sample_styles and name == "networks_stylegan3.py":
                    if BATCH_STYLE_NORM not in text:
                        raise SystemExit(f"--per-sample-styles: {BATCH_STYLE_NORM!r} not found in {name}")
                    text = text.replace(BATCH_STYLE_NORM, SAMPLE_STYLE_NORM)
                open(path, "w").write(text)
    return root


def import_published(root: str, module: str):
    sys.modules.setdefault("requests", types.ModuleType("requests"))   # only used for downloads there
    if "pkg_resources" not in sys.modules:                              # gone from new setuptools
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"training.{module}")


def published_networks(root: str, g, seed: int):
    """The published G and D (float64) of the same architecture as our GeneratorConfig g and TINY_D,
    randomly initialised."""
    sg3 = import_published(root, "networks_stylegan3")
    sg2 = import_published(root, "networks_stylegan2")
    extra = dict(conv_kernel=1, use_radial_filters=True) if g.config == "R" else {}
    torch.manual_seed(seed)
    G = sg3.Generator(z_dim=g.z_dim, c_dim=g.c_dim, w_dim=g.w_dim, img_resolution=g.resolution, img_channels=3,
                      channel_base=g.channel_base, channel_max=g.channel_max, num_layers=g.num_layers,
                      magnitude_ema_beta=g.magnitude_ema_beta, num_fp16_res=0,
                      mapping_kwargs=dict(num_layers=g.mapping_layers), **extra)
    D = sg2.Discriminator(c_dim=g.c_dim, img_resolution=g.resolution, img_channels=3,
                          channel_base=TINY_D["channel_base"], channel_max=TINY_D["channel_max"], num_fp16_res=0,
                          mapping_kwargs=dict(num_layers=TINY_D["mapping_layers"]))
    return G.double().train().requires_grad_(False), D.double().train().requires_grad_(False)


# -- our run, recording its draws --------------------------------------------------------------------
class RecordingRecipe(AnyresRecipe):
    """AnyresRecipe in float64 that starts from given weights and records reals, latents and states."""

    def __init__(self, cfg, init_G, init_D):
        super().__init__(cfg)
        self.init_G, self.init_D = init_G, init_D
        self.draws, self.states = [], []

    def build(self, ctx):
        super().build(ctx)
        if self.ada is not None:     # p as the published float64 buffer (the published copy runs in float64)
            a = self.ada
            self.ada = AdaController(target=a.target, p=a.p, interval=a.interval, kimg=a.kimg, dtype="float64")
        for ours, theirs in ((self.G, self.init_G), (self.G_ema, self.init_G), (self.D, self.init_D)):
            ours.double()       # same Parameter objects: the optimisers still hold them
            ours.load_state_dict(theirs.state_dict(), strict=True)
        next_batch, randn = ctx.next_batch, ctx.randn

        def next_batch64(name):
            chunks = next_batch(name)
            for ch in chunks:
                ch["image"] = ch["image"].double()
                if "c" in ch:
                    ch["c"] = ch["c"].double()
            self.draws[-1]["reals"] = [ch["image"].clone() for ch in chunks]
            self.draws[-1]["c"] = [ch["c"].clone() for ch in chunks if "c" in ch]
            return chunks

        def randn64(shape, tag, chunk):
            z = randn(shape, tag, chunk).double()
            self.draws[-1].setdefault(tag, []).append(z.clone())
            return z

        ctx.next_batch, ctx.randn = next_batch64, randn64

    def aug_generator(self, ctx, tag, chunk):
        g = super().aug_generator(ctx, tag, chunk)
        if g is not None:
            self.draws[-1].setdefault("aug", []).append(g.get_state().clone())
        return g

    def train_step(self, ctx, step):
        self.draws.append({})
        self.p_used = getattr(self, "p_used", [])
        self.p_used.append(self.ada.p if self.ada is not None else 0.0)
        stats = super().train_step(ctx, step)
        self.states.append({name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                            for name, m in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema))})
        return stats


# -- the published phases ----------------------------------------------------------------------------
class ReplayedPipe(torch.nn.Module):
    """The published AugmentPipe drawing, for each call, from torch's global RNG set to the next
    recorded generator state (restored afterwards)."""

    def __init__(self, pipe):
        super().__init__()
        self.pipe, self.states = pipe, []

    def forward(self, img):
        saved = torch.get_rng_state()
        torch.set_rng_state(self.states.pop(0))
        try:
            return self.pipe(img)
        finally:
            torch.set_rng_state(saved)


def published_pipe(root: str):
    augment = import_published(root, "augment")
    return augment.AugmentPipe(**PIPES["bgc"]).train().requires_grad_(False)


def compare_pipelines(root: str, ps=(0.0, 0.2, 1.0)) -> list:
    """max |published - ours| on one float64 batch from the same RNG state, per p."""
    out = []
    x = torch.rand(8, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for p in ps:
        pub = published_pipe(root)
        pub.p.copy_(torch.tensor(p))
        torch.manual_seed(11)
        a = pub(x)
        b = AugmentPipe.preset("bgc")(x, p, generator=torch.Generator().manual_seed(11))
        out.append((p, float((a - b).abs().max())))
    return out


def published_run(root: str, G, D, draws: list, batch: int, cfg: AnyresConfig, blur_sigma: float,
                  blur_fade_kimg: float, shift_draws: bool = False) -> list:
    """Run the published loss through the published training phases on the recorded draws; returns
    the per-step states of G, D and G_ema (and, with augmentation, the p of each step)."""
    loss_mod = import_published(root, "loss")
    G_ema = copy.deepcopy(G).eval()
    pipe, ada_stats = None, None
    if cfg.aug != "noaug":
        pipe = ReplayedPipe(published_pipe(root))
        p0 = cfg.aug_p if cfg.aug_p is not None else (0.2 if cfg.aug == "fixed" else 0.0)
        pipe.pipe.p.copy_(torch.as_tensor(p0))
        if cfg.aug == "ada":
            training_stats = importlib.import_module("torch_utils.training_stats")
            ada_stats = training_stats.Collector(regex="Loss/signs/real")
    loss = loss_mod.StyleGAN2Loss(device=torch.device("cpu"), G=G, D=D, augment_pipe=pipe, r1_gamma=cfg.r1_gamma,
                                  blur_init_sigma=blur_sigma, blur_fade_kimg=blur_fade_kimg)
    ratio = cfg.r1_interval / (cfg.r1_interval + 1)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d * ratio, betas=tuple(b ** ratio for b in cfg.betas),
                             eps=1e-8)
    # (name, module, optimiser, interval, which recorded latents)
    phases = [("Gmain", G, opt_G, 1, "z_G"), ("Dmain", D, opt_D, 1, "z_D"), ("Dreg", D, opt_D, cfg.r1_interval, "z_D")]
    ema_kimg = batch * 10 / 32
    states, nimg = [], 0
    for step, d in enumerate(draws):
        if pipe is not None:
            pipe.states = list(d["aug"])
            if shift_draws:     # the control: each D pass gets the next pass's random numbers
                pipe.states = pipe.states[1:] + pipe.states[:1]
        p_step = float(pipe.pipe.p) if pipe is not None else 0.0
        reals = d["reals"]
        cs = d["c"] or [torch.zeros(r.shape[0], 0, dtype=r.dtype) for r in reals]
        for name, module, opt, interval, ztag in phases:
            if step % interval:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            for k, (real, c) in enumerate(zip(reals, cs)):
                loss.accumulate_gradients(phase=name, real_img=real, real_c=c, gen_z=d[ztag][k], gen_c=c,
                                          gain=interval, cur_nimg=nimg)
            module.requires_grad_(False)
            params = [p for p in module.parameters() if p.grad is not None]
            if params:
                flat = torch.cat([p.grad.flatten() for p in params])
                torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
                for p, g in zip(params, flat.split([p.numel() for p in params])):
                    p.grad = g.reshape(p.shape)
            opt.step()
        with torch.no_grad():
            ema_nimg = min(ema_kimg * 1000, nimg * cfg.ema_rampup)
            beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.copy_(p.lerp(pe, beta))
            for be, b in zip(G_ema.buffers(), G.buffers()):
                be.copy_(b)
        nimg += batch
        if pipe is not None:
            assert not pipe.states, "the two runs made a different number of D passes"
        if ada_stats is not None and (step + 1) % cfg.ada_interval == 0:     # the published heuristic
            ada_stats.update()
            adjust = np.sign(ada_stats["Loss/signs/real"] - cfg.aug_target) * (batch * cfg.ada_interval) / (
                cfg.ada_kimg * 1000)
            pipe.pipe.p.copy_((pipe.pipe.p + adjust).max(torch.zeros([], dtype=pipe.pipe.p.dtype)))
        states.append({name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                       for name, m in (("G", G), ("D", D), ("G_ema", G_ema))})
        states[-1]["p"] = p_step
    return states


def relative_difference(ours: dict, theirs: dict) -> float:
    """max over tensors of max|ours - theirs| / max|theirs| (tensors that are zero in both count 0)."""
    worst = 0.0
    for k, t in theirs.items():
        o = ours[k]
        if not t.is_floating_point():
            continue
        scale = float(t.abs().max())
        diff = float((o - t).abs().max())
        if scale == 0:
            worst = max(worst, 0.0 if diff == 0 else math.inf)
        else:
            worst = max(worst, diff / scale)
    return worst


def write_dataset(folder: str, n: int, size: int, seed: int) -> str:
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size]
        a = np.stack([128 + 90 * np.sin(xx / (4.0 + c) + yy / (7.0 + i) + i) for c in range(3)], 2)
        a = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(os.path.join(folder, f"img{i}.png"))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="path of a NVlabs/stylegan3 checkout")
    parser.add_argument("--steps", type=int, default=18, help="training steps (default 18: R1 at 0 and 16)")
    parser.add_argument("--batch", type=int, default=4, help="batch (default 4: one minibatch-std group)")
    parser.add_argument("--config", choices=("T", "R"), default="T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--aug", choices=("noaug", "fixed", "ada"), default="noaug",
                        help="augmentation on both sides (default noaug)")
    parser.add_argument("--p", type=float, default=None,
                        help="--aug fixed: p (default 0.2); --aug ada: initial p (default 0)")
    parser.add_argument("--ada-kimg", type=float, default=0.1,
                        help="--aug ada: ADA's speed on both sides (default 0.1: p moves by 0.16 every 4 "
                             "steps at batch 4, so that it moves within a short check; published 500)")
    parser.add_argument("--control-shift-draws", action="store_true",
                        help="control for --aug: give each published D pass the random numbers of the next "
                             "one (the differences must then be large)")
    parser.add_argument("--per-sample-styles", action="store_true",
                        help="make the published copy pre-normalise styles per sample, as ours does")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = float64_copy(args.src, args.per_sample_styles)
    work = tempfile.mkdtemp(prefix="sg3_train_check_")
    try:
        data = write_dataset(os.path.join(work, "data"), 8, 64, args.seed)
        cfg = AnyresConfig(phase="fixed", lr_data=data, resolution=64, config=args.config, tiny=True,
                           lpips="random", g_kwargs=dict(TINY_G, num_fp16_res=0), d_kwargs=dict(TINY_D, num_fp16_res=0),
                           cache_dir=os.path.join(work, "cache"), grid_seeds=1, aug=args.aug, aug_p=args.p,
                           ada_kimg=args.ada_kimg)
        G_pub, D_pub = published_networks(root, generator_config(cfg, args.batch, 0, scale_branch=False), args.seed)
        rec = RecordingRecipe(cfg, G_pub, D_pub)
        opts = TrainOptions(out=os.path.join(work, "run"), seed=args.seed, batch=args.batch, kimg=1000,
                            tick=1000, snap=0, workers=0, progress=False, device="cpu", max_steps=args.steps)
        Trainer(rec, opts, log=lambda m: None).run()
        blur_sigma = rec.blur_init_sigma if hasattr(rec, "blur_init_sigma") else 0.0
        blur_fade = rec.blur_fade_kimg if hasattr(rec, "blur_fade_kimg") else 0.0
        # The published code makes some tensors with the default dtype (torch.eye in the input layer):
        # float64 for its run only (our run above used the usual float32 default).
        torch.set_default_dtype(torch.float64)
        try:
            if args.aug != "noaug":
                print("bgc pipeline, float64, same RNG state: max |published - ours| "
                      + ", ".join(f"p={p:g}: {d:.2e}" for p, d in compare_pipelines(root)))
            theirs = published_run(root, G_pub, D_pub, rec.draws, args.batch, cfg, blur_sigma, blur_fade,
                                   shift_draws=args.control_shift_draws)
        finally:
            torch.set_default_dtype(torch.float32)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"phase fixed, config {args.config}, batch {args.batch}, float64, CPU, published styles normalised "
          f"{'per sample (patched copy)' if args.per_sample_styles else 'per batch (as published)'}; R1 at steps "
          f"{[s for s in range(args.steps) if s % cfg.r1_interval == 0]}")
    aug = args.aug != "noaug"
    if aug:
        print(f"augmentation {args.aug} (bgc), p {'initial ' if args.aug == 'ada' else ''}"
              f"{cfg.aug_p if cfg.aug_p is not None else (0.2 if args.aug == 'fixed' else 0.0):g}"
              + (f", target {cfg.aug_target:g}, ada_kimg {cfg.ada_kimg:g}, every {cfg.ada_interval} steps"
                 if args.aug == "ada" else ""))
    print(f"{'step':>4}  {'G':>10}  {'D':>10}  {'G_ema':>10}" + ("  p (ours / published)" if aug else ""))
    last = None
    for step, (o, t) in enumerate(zip(rec.states, theirs)):
        last = [relative_difference(o[n], t[n]) for n in ("G", "D", "G_ema")]
        print(f"{step + 1:>4}  " + "  ".join(f"{v:10.2e}" for v in last)
              + (f"  {rec.p_used[step]:.4f} / {t['p']:.4f}" if aug else ""))
    ok = last is not None and max(last) <= args.tol
    print(f"after {args.steps} steps: max relative difference {max(last):.2e} "
          f"({'<=' if ok else '>'} {args.tol:g})")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
