"""`anyres-fast train --model infinity`: InfinityGAN training through the shared Trainer.

    anyres-fast train --model infinity --data PHOTOS/ --out runs/inf [--patch 101|197|389] [--batch 16]
    anyres-fast train --model infinity --data PHOTOS/ --out runs/tiny --tiny     # 2-core CPU, minutes
    anyres-fast train --out runs/inf --resume                                    # continue exactly
    torchrun --nproc-per-node 4 -m anyres_fast train --model infinity ...        # several GPUs

Reals are p x p crops of the images centre-cropped and resized to the full training size (197 for
p = 101); see docs/infinitygan_training.md. The arguments are those of `anyres-fast train` (this module
is called by anyres_fast.cli.train when --model infinity is given or the resumed run is one).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

from .args import CommandError


def is_infinity_run(out: str) -> bool:
    """Whether the run folder `out` holds an InfinityGAN run (its training_options.json says so)."""
    try:
        with open(os.path.join(out, "training_options.json")) as f:
            return json.load(f).get("config", {}).get("model") == "infinity"
    except (OSError, ValueError):
        return False


def options_from_args(args: argparse.Namespace) -> tuple:
    """(InfinityTrainConfig, TrainOptions) from parsed `anyres-fast train` arguments; nothing built.

    Raises:
        CommandError: a missing or inconsistent argument.
    """
    from .args import parse_device, prepare_out_dir
    from ..train.checkpoint import latest_checkpoint
    from ..train.infinity_recipe import PATCH_SIZES, InfinityTrainConfig, published_mbstd_group
    from ..train.trainer import TrainOptions

    if args.resume:
        if latest_checkpoint(args.out) is None:
            raise CommandError(f"--resume: no checkpoint in {os.path.join(args.out, 'checkpoints')}")
        with open(os.path.join(args.out, "training_options.json")) as f:
            saved = json.load(f)
        fields = {f.name for f in dataclasses.fields(InfinityTrainConfig)}
        cfg_d = {k: v for k, v in saved["config"].items() if k in fields}
        cfg_d["betas"] = tuple(cfg_d["betas"])
        cfg = InfinityTrainConfig(**cfg_d)
        opts = TrainOptions(**saved["options"])
        opts.resume = True
        for name in ("kimg", "max_steps"):
            if getattr(args, name, None) is not None:
                setattr(opts, name, getattr(args, name))
        opts.progress = not args.no_progress
        return cfg, opts

    data = getattr(args, "data", None) or args.lr_data
    if not data:
        raise CommandError("--data: required for --model infinity (a folder or .zip of images)")
    if not os.path.exists(data):
        raise CommandError(f"--data {data!r}: no such folder or zip file")
    if not (os.path.isdir(data) or data.lower().endswith(".zip")):
        raise CommandError(f"--data {data!r}: expected a folder or a .zip file")
    patch = getattr(args, "patch", None) or 101
    if patch not in PATCH_SIZES:
        raise CommandError(f"--patch {patch}: expected one of {', '.join(map(str, PATCH_SIZES))}")
    if args.tiny and getattr(args, "patch", None):
        raise CommandError("--patch: not with --tiny (the tiny model has 29-pixel patches)")
    batch = args.batch or (4 if args.tiny else 16)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch % world:
        raise CommandError(f"--batch {batch}: not divisible by the {world} processes")
    per_rank = batch // world
    if args.batch_gpu is not None and per_rank % args.batch_gpu:
        raise CommandError(f"--batch-gpu {args.batch_gpu}: does not divide the per-process batch {per_rank}")
    chunk = args.batch_gpu or per_rank
    group = published_mbstd_group(batch)
    if chunk % min(group, chunk):
        raise CommandError(f"--batch/--batch-gpu: {chunk} samples per pass must be a multiple of {group} "
                           f"(the discriminator's minibatch-std group for batch {batch}) or below it")
    if args.device is not None:
        parse_device(args.device)
    prepare_out_dir(args.out)
    cfg = InfinityTrainConfig(data=os.path.abspath(data), patch=patch, tiny=args.tiny,
                              cache_dir=os.path.abspath(args.cache_dir or os.path.join(args.out, "cache")),
                              xflip=not args.no_xflip, diversity=getattr(args, "diversity", "angular"))
    if args.gamma is not None and args.gamma != 2.0:     # the shared flag's default is the SG3 value
        cfg.r1_gamma = args.gamma
    from .train import trainer_options
    return cfg, trainer_options(args, batch, default_kimg=12800)


def main(args: argparse.Namespace) -> int:
    """Validate, then train InfinityGAN.

    Returns:
        0 when the run finished (or stopped at --max-steps).

    Raises:
        CommandError: bad arguments or unusable data.
    """
    from ..train.infinity_recipe import InfinityRecipe
    from ..train.trainer import Trainer

    cfg, opts = options_from_args(args)
    try:
        stats = Trainer(InfinityRecipe(cfg), opts).run()
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:
        if "InfinityGenerator" in str(exc) or "Discriminator" in str(exc):
            raise
        raise CommandError(str(exc)) from None
    if stats and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in stats.items()}))
    return 0
