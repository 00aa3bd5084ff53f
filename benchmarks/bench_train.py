"""Training speed: s/kimg of whole steps and (any-resolution recipe) the time of each loss term.

    python benchmarks/bench_train.py [--resolution 256] [--config T] [--batch 32] [--batch-gpu 8]
                                     [--phase patch] [--steps 8] [--precision fp32] [--quick] [--out FILE.md]

--quick: the --tiny model at 64 px, batch 4, on the CPU (a smoke run; says nothing about GPU speed).
Terms, each forward + backward on one chunk of batch-gpu samples after a warm-up: G (mapping +
synthesis at the reals' transforms, adversarial loss through D), D (logistic loss on reals and fakes),
R1 (lazy, |grad D|^2 with a double backward; runs every 16th step), teacher forward, teacher warp
(Lanczos placement into the teacher frame), LPIPS (AlexNet spatial map). Whole steps: a phase-patch
(or fixed) run of --steps steps through the Trainer; s/kimg is the median step time / batch * 1000
(steps without R1; the R1 step is listed separately). StyleGAN3's published figure for config T at
256^2 is 49.81 s/kimg on one A100 at batch 32. Random weights: speed does not depend on them.

--model infinity: the InfinityGAN recipe (patch --inf-patch, default 101 on 197-px training images;
--quick: the --tiny 29-px model), whole steps through the Trainer only: s/kimg of the steps without
the lazy R1 / path-length passes and of the step with them (step 0, which also warms up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyres_fast import ops  # noqa: E402
from anyres_fast.train import Trainer, TrainOptions, losses, save_checkpoint  # noqa: E402
from anyres_fast.train.anyres_recipe import AnyresTrainConfig, AnyresRecipe  # noqa: E402
from anyres_fast.train.trainer import Context  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps=3) -> float:
    fn()
    sync(device)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def images(folder: Path, n: int, size: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.integers(0, 255, (size + 13 * i, size + 29 * i, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")
    return str(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--config", default="T")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch-gpu", type=int, default=8)
    ap.add_argument("--phase", choices=("fixed", "patch"), default="patch")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--lpips", choices=("alex", "random"), default="random")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="CPU, --tiny model at 64 px, batch 4, 3 steps")
    ap.add_argument("--out", default=None)
    ap.add_argument("--model", choices=("anyres", "infinity"), default="anyres")
    ap.add_argument("--inf-patch", type=int, default=101, choices=(101, 197, 389))
    a = ap.parse_args()
    if a.model == "infinity":
        return bench_infinity(a)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = a.quick
    if a.quick:
        a.resolution, a.batch, a.batch_gpu, a.steps, device = 64, 4, 4, 3, torch.device("cpu")
    p = a.resolution
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lr = images(tmp / "lr", 8, p)
        hr = images(tmp / "hr", 8, 4 * p)
        common = dict(resolution=p, config=a.config, tiny=tiny, lpips=a.lpips, lr_data=lr, cache_dir=str(tmp / "c"))
        # A phase-1 "run" with random weights as the teacher (speed does not depend on the weights).
        p1 = AnyresRecipe(AnyresTrainConfig(phase="fixed", **common))
        p1.build(Context(TrainOptions(out=str(tmp / "x"), batch=a.batch), device, 0, 1))
        save_checkpoint(str(tmp / "p1"), 0, {"config": p1.config(),
                                              "modules": {k: m.state_dict() for k, m in p1.modules().items()}})
        del p1
        cfg = AnyresTrainConfig(phase=a.phase, hr_data=hr, teacher=str(tmp / "p1"), **common)
        opts = TrainOptions(out=str(tmp / "run"), batch=a.batch, batch_gpu=a.batch_gpu, kimg=1e6, workers=2,
                            tick=1, snap=0, progress=False, max_steps=a.steps, device=str(device),
                            precision=a.precision)
        # 1. loss terms on one chunk
        rec = AnyresRecipe(cfg)
        ctx = Context(opts, device, 0, 1)
        rec.build(ctx)
        b = a.batch_gpu
        z = torch.randn(b, rec.gcfg.z_dim, device=device)
        canvas = torch.full((b,), 2.0 * p)
        box = torch.tensor([[p / 2, p / 4]] * b)
        chunk = {"image": torch.rand(b, 3, p, p, device=device) * 2 - 1, "c": torch.zeros(b, 0, device=device),
                 "canvas": canvas.to(device), "box": box.to(device)}
        rows = {}
        lam = rec.cfg.teacher_lambda
        rec.cfg.teacher_lambda = 0
        rec.G.requires_grad_(True)
        rec.D.requires_grad_(False)
        rows["G (adversarial)"] = timed(lambda: rec.loss_G(chunk, z, ctx)[0].mean().backward(), device)
        rec.G.requires_grad_(False)
        rec.D.requires_grad_(True)
        rows["D (logistic)"] = timed(lambda: rec.loss_Dmain(chunk, z, ctx)[0].mean().backward(), device)
        rows["R1 (lazy, per R1 step)"] = timed(lambda: rec.loss_Dreg(chunk)[0].mean().backward(), device)
        rec.cfg.teacher_lambda = lam
        if rec.teacher is not None:
            with torch.no_grad():
                t_img = rec.teacher(z)
            rows["teacher forward"] = timed(lambda: rec.teacher(z), device)
            fake = rec.G(z, canvas=chunk["canvas"], box=chunk["box"]).detach().requires_grad_(True)

            def warp():
                w, m = ops.teacher_warp(fake, canvas, box, p)
                (w * m).sum().backward()
            rows["teacher warp"] = timed(warp, device)
            warped = ops.teacher_warp(fake, canvas, box, p)[0].detach().requires_grad_(True)
            rows["LPIPS"] = timed(lambda: rec.lpips_net(warped.clamp(-1, 1), t_img.clamp(-1, 1)).mean().backward(), device)
        del rec
        # 2. whole steps through the Trainer
        Trainer(AnyresRecipe(cfg), opts).run()
        stats = [json.loads(l) for l in open(tmp / "run" / "stats.jsonl")]
    per_step = [s["sec_per_kimg"] for s in stats]
    r1_step = per_step[0]       # step 0 runs the lazy R1 pass (and warms up)
    rest = per_step[1:] or per_step
    lines = [f"any-resolution training, phase {a.phase}, p={p}, config {a.config}{' (tiny)' if tiny else ''}, "
             f"batch {a.batch} (chunks of {a.batch_gpu}), {device}, precision {a.precision}", "",
             "| term (one chunk, fwd+bwd) | ms |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in rows.items()]
    lines += ["", "| whole step | s/kimg |", "|---|---|",
              f"| median of steps 1..{len(per_step) - 1} (no R1) | {statistics.median(rest):.2f} |",
              f"| step 0 (with R1, warm-up) | {r1_step:.2f} |",
              "| StyleGAN3-T 256^2, 1x A100, batch 32 (published) | 49.81 |"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


def bench_infinity(a) -> int:
    """Whole InfinityGAN training steps through the Trainer; prints (and writes) the s/kimg table."""
    from anyres_fast.train.infinity_recipe import InfinityRecipe, InfinityTrainConfig

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if a.quick:
        a.batch, a.batch_gpu, a.steps, device = 4, 4, 3, torch.device("cpu")
    full = {101: 197, 197: 389, 389: 773}[a.inf_patch]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = images(tmp / "data", 8, 64 if a.quick else full)
        cfg = InfinityTrainConfig(data=data, patch=a.inf_patch, tiny=a.quick, cache_dir=str(tmp / "c"))
        opts = TrainOptions(out=str(tmp / "run"), batch=a.batch, batch_gpu=a.batch_gpu, kimg=1e6, workers=2,
                            tick=1, snap=0, progress=False, max_steps=a.steps, device=str(device),
                            precision=a.precision)
        Trainer(InfinityRecipe(cfg), opts).run()
        per_step = [json.loads(l)["sec_per_kimg"] for l in open(tmp / "run" / "stats.jsonl")]
    rest = per_step[1:] or per_step
    lines = [f"InfinityGAN training, patch {29 if a.quick else a.inf_patch}{' (tiny)' if a.quick else ''}, "
             f"batch {a.batch} (chunks of {a.batch_gpu}), {device}, precision {a.precision}", "",
             "| whole step | s/kimg |", "|---|---|",
             f"| median of steps 1..{len(per_step) - 1} | {statistics.median(rest):.2f} |",
             f"| step 0 (lazy R1 + path length, warm-up) | {per_step[0]:.2f} |"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
