"""`anyres-fast train`: train the any-resolution GAN (phase `fixed`, then phase `patch`) or InfinityGAN.

    anyres-fast train --phase fixed --lr-data LR/ --out runs/p1 --kimg 25000 --batch 32
    anyres-fast train --phase patch --lr-data LR/ --hr-data HR/ --teacher runs/p1 --out runs/p2
    anyres-fast train --phase panorama --fov 60 --lr-data LR/ --out runs/pano   # 360-degree strips
    anyres-fast train --model infinity --data PHOTOS/ --out runs/inf [--patch 101|197|389] [--batch 16]
    anyres-fast train --phase fixed --lr-data LR/ --out runs/p1 --aug ada [--target 0.6]   # with ADA
    anyres-fast train --out runs/p2 --resume                      # continue exactly where it stopped
    torchrun --nproc-per-node 8 -m anyres_fast train --phase fixed ...   # 8 GPUs (or CPU processes)

--tiny trains a small model that runs on a 2-core CPU in minutes (any-resolution: 64 px, implies
--lpips random; InfinityGAN: 29-px patches), for TINY_KIMG thousand images unless --kimg says otherwise. Phase patch needs torchvision's AlexNet weights for LPIPS
in the torch cache unless --lpips random. InfinityGAN reals are p x p crops of the images centre-
cropped and resized to the full training size (197 for p = 101). See docs/training.md and
docs/infinitygan_training.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

from .args import (CommandError, finite_float, nonnegative_float, nonnegative_int, parse_device, positive_float,
                   positive_int, prepare_out_dir)

# --tiny means minutes on a 2-core CPU: 1000 images (250 steps at its batch of 4), not the full length.
TINY_KIMG = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("anyres", "infinity"), default="anyres",
                        help="anyres: the any-resolution GAN (default); infinity: InfinityGAN (--data, --patch)")
    parser.add_argument("--data", help="--model infinity: folder or .zip of images")
    parser.add_argument("--patch", type=int, choices=(101, 197, 389), default=None,
                        help="--model infinity: patch size (default 101; trained on 197/389/773 images)")
    parser.add_argument("--diversity", choices=("angular", "l1"), default="angular",
                        help="--model infinity: diversity loss form (default angular, as the published "
                             "configs, computed NaN-free; l1: the L1-distance ratio)")
    parser.add_argument("--phase", choices=("fixed", "patch", "panorama"), default=None,
                        help="fixed: StyleGAN3 at the patch size on --lr-data; patch: any-resolution training; "
                             "panorama: a 360-degree panorama generator from ordinary photos (--fov)")
    parser.add_argument("--fov", type=float, default=None,
                        help="--phase panorama: degrees of the turn one p x p frame covers, in (0, 360] (default 60)")
    parser.add_argument("--lr-data", help="folder or .zip of images (any sizes; squared and resized to --resolution)")
    parser.add_argument("--hr-data", help="folder or .zip of native-resolution images (phase patch)")
    parser.add_argument("--teacher", help="phase-1 run folder, or a StyleGAN3 / anyres-gan network pickle (.pkl), "
                                          "(phase patch): initialisation and frozen teacher")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, stats, samples)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--force-new", action="store_true",
                        help="--out holds a run: move it aside to OUT.old-<time> (nothing is deleted) and start anew")
    parser.add_argument("--kimg", type=positive_float, default=None,
                        help=f"length in thousands of real images (default 25000 any-resolution, 12800 InfinityGAN, "
                             f"{TINY_KIMG:g} with --tiny)")
    parser.add_argument("--batch", type=positive_int, default=None, help="global batch size (default 32; 4 with --tiny)")
    parser.add_argument("--batch-gpu", type=positive_int, default=None, help="samples per forward pass (default: batch / processes)")
    parser.add_argument("--config", choices=("T", "R"), default="T", help="StyleGAN3 config (default T)")
    parser.add_argument("--resolution", type=positive_int, default=None, help="patch size p (default 256; 64 with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="small CPU configuration (implies --lpips random)")
    parser.add_argument("--lpips", choices=("alex", "random"), default=None,
                        help="LPIPS backbone: alex (torchvision weights from the torch cache) or random")
    parser.add_argument("--gamma", type=positive_float, default=None,
                        help="R1 weight (default 2 for the any-resolution GAN, 10 for InfinityGAN, as published)")
    parser.add_argument("--teacher-lambda", type=finite_float, default=5.0, help="teacher loss weight (default 5)")
    parser.add_argument("--scale-max", type=positive_float, default=0.5, help="largest s = p/N of HR patches (default 0.5)")
    parser.add_argument("--scale-min", type=positive_float, default=None, help="smallest s (default: native resolution)")
    parser.add_argument("--no-xflip", action="store_true", help="no horizontal flips")
    parser.add_argument("--blur-sigma", type=nonnegative_float, default=None,
                        help="phase fixed: blur of D's inputs at the start, fading to 0 (default 10 for "
                             "--config R as StyleGAN3, 0 for T; 0 turns it off)")
    parser.add_argument("--blur-fade-kimg", type=positive_float, default=None,
                        help="kimg over which the blur fades out (default batch * 200 / 32)")
    parser.add_argument("--aug", choices=("noaug", "ada", "fixed"), default=None,
                        help="augmentation of every image D sees: noaug (default, as the any-resolution "
                             "paper's runs), ada (adaptive p, StyleGAN3's default) or fixed (p = --p)")
    parser.add_argument("--augpipe", default=None, help="augmentation pipeline (only bgc, StyleGAN3's default)")
    parser.add_argument("--target", type=finite_float, default=None,
                        help="--aug ada: target of mean(sign(D(real))) (default 0.6)")
    parser.add_argument("--p", type=finite_float, default=None,
                        help="--aug fixed: the augmentation probability (default 0.2); --aug ada: the initial p "
                             "(default 0)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="run seed (default 0)")
    parser.add_argument("--workers", type=nonnegative_int, default=2, help="loader processes per process (default 2)")
    parser.add_argument("--tick", type=positive_int, default=10, help="steps per stats line (default 10)")
    parser.add_argument("--snap", type=nonnegative_int, default=500, help="steps per checkpoint + sample grid (default 500)")
    parser.add_argument("--keep", type=positive_int, default=3, help="checkpoints kept (default 3)")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps (then --resume)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="autocast dtype on GPU (default fp32; StyleGAN3's fp16 layers are used regardless)")
    parser.add_argument("--cache-dir", default=None, help="listing cache folder (default <out>/cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--plots", action="store_true", help="redraw OUT/plots/*.png at every snapshot (matplotlib)")


def _check_data(path, flag):
    if not path:
        raise CommandError(f"{flag}: required")
    if not os.path.exists(path):
        raise CommandError(f"{flag} {path!r}: no such folder or zip file")
    if not (os.path.isdir(path) or path.lower().endswith(".zip")):
        raise CommandError(f"{flag} {path!r}: expected a folder or a .zip file")


def augment_options(args: argparse.Namespace) -> dict:
    """The AnyresTrainConfig fields of --aug, --augpipe, --target and --p, validated.

    Raises:
        CommandError: an unknown pipeline, a value outside [0, 1], or a flag its --aug does not use.
    """
    from ..train.augment import PIPES

    aug = args.aug or "noaug"
    pipe = args.augpipe or "bgc"
    if pipe not in PIPES:
        raise CommandError(f"--augpipe {pipe}: only {', '.join(sorted(PIPES))} is available "
                           f"(StyleGAN3's default preset; its other presets are not implemented)")
    for flag, value in (("--target", args.target), ("--p", args.p)):
        if value is not None and not 0 <= value <= 1:
            raise CommandError(f"{flag} {value:g}: expected a number in [0, 1]")
    if args.target is not None and aug != "ada":
        raise CommandError(f"--target: only with --aug ada (this run has --aug {aug})")
    if args.p is not None and aug == "noaug":
        raise CommandError("--p: only with --aug fixed or --aug ada (this run has --aug noaug)")
    if args.augpipe is not None and aug == "noaug":
        raise CommandError("--augpipe: only with --aug ada or --aug fixed (this run has --aug noaug)")
    return dict(aug=aug, augpipe=pipe, aug_target=0.6 if args.target is None else args.target, aug_p=args.p)


def anyres_options(args: argparse.Namespace) -> tuple:
    """(AnyresTrainConfig, TrainOptions) from parsed arguments; validated, nothing built.

    Raises:
        CommandError: a missing or inconsistent argument, a missing teacher checkpoint, absent LPIPS weights.
    """
    from ..train.anyres_recipe import AnyresTrainConfig
    from ..train.checkpoint import latest_checkpoint

    if args.resume:
        return resumed_options(args, AnyresTrainConfig)

    if args.phase is None:
        raise CommandError("--phase: required (fixed, patch or panorama) unless --resume")
    fov = panorama_fov(args)
    _check_data(args.lr_data, "--lr-data")
    resolution = args.resolution or (64 if args.tiny else 256)
    from ..models.published import is_network_pickle
    teacher_pickle = args.phase == "patch" and bool(args.teacher) and is_network_pickle(args.teacher)
    if teacher_pickle and not args.resolution:   # a published pickle as the teacher: its patch size
        from ..models.published import cached_network_pickle
        try:
            resolution = cached_network_pickle(args.teacher).config.resolution
        except ValueError as exc:
            raise CommandError(f"--teacher: {exc}") from None
    if resolution < 64 or resolution & (resolution - 1):
        raise CommandError(f"--resolution {resolution}: expected a power of two >= 64")
    lpips_mode = args.lpips or ("random" if args.tiny else "alex")
    if args.phase == "patch":
        _check_data(args.hr_data, "--hr-data")
        if not args.teacher:
            raise CommandError("--teacher: required for --phase patch (a phase-1 run folder)")
        if not teacher_pickle and latest_checkpoint(args.teacher) is None:
            raise CommandError(f"--teacher {args.teacher!r}: no checkpoint in {os.path.join(args.teacher, 'checkpoints')}")
        from .editing import check_lpips
        check_lpips(lpips_mode)
    if args.scale_max > 1 or (args.scale_min is not None and args.scale_min > args.scale_max):
        raise CommandError("--scale-max/--scale-min: expected 0 < scale-min <= scale-max <= 1")
    batch = args.batch or (4 if args.tiny else 32)
    _check_batch(args, batch)
    aug = augment_options(args)
    _check_device_and_out(args)
    cfg = AnyresTrainConfig(phase=args.phase, lr_data=os.path.abspath(args.lr_data),
                            hr_data=os.path.abspath(args.hr_data) if args.hr_data else None,
                            teacher=os.path.abspath(args.teacher) if args.teacher else None, resolution=resolution,
                            config=args.config, tiny=args.tiny, lpips=lpips_mode,
                            cache_dir=_cache_dir(args), r1_gamma=2.0 if args.gamma is None else args.gamma,
                            teacher_lambda=args.teacher_lambda, scale_max=args.scale_max,
                            scale_min=args.scale_min, xflip=not args.no_xflip, blur_sigma=args.blur_sigma,
                            blur_fade_kimg=args.blur_fade_kimg, fov=fov, **aug)
    return cfg, trainer_options(args, batch, default_kimg=TINY_KIMG if args.tiny else 25000)


def panorama_fov(args: argparse.Namespace) -> float:
    """--fov for --phase panorama (default 60), checked; refused with any other phase.

    Raises:
        CommandError: --fov outside (0, 360], or given without --phase panorama.
    """
    if args.phase != "panorama":
        if args.fov is not None:
            raise CommandError(f"--fov: only for --phase panorama (this is --phase {args.phase})")
        return 60.0
    fov = 60.0 if args.fov is None else args.fov
    if not 0 < fov <= 360:      # NaN fails too
        raise CommandError(f"--fov {fov:g}: expected degrees per frame in (0, 360]")
    return fov


def trainer_options(args: argparse.Namespace, batch: int, default_kimg: float):
    """The TrainOptions of a new run from the shared `anyres-fast train` flags (both models)."""
    from ..train.trainer import TrainOptions
    return TrainOptions(out=os.path.abspath(args.out), seed=args.seed, batch=batch, batch_gpu=args.batch_gpu,
                        kimg=args.kimg if args.kimg is not None else default_kimg, tick=args.tick, snap=args.snap,
                        keep=args.keep, workers=args.workers, device=args.device, precision=args.precision,
                        progress=not args.no_progress, max_steps=args.max_steps, plots=args.plots,
                        force_new=args.force_new)


def _cache_dir(args: argparse.Namespace) -> str:
    """The listing cache as the run stores it: inside the run ("cache", relative, so it moves with the
    run) unless --cache-dir names a folder elsewhere."""
    from ..train.run_folder import relative_to_run
    return relative_to_run(args.out, args.cache_dir or os.path.join(args.out, "cache"))


def infinity_options(args: argparse.Namespace) -> tuple:
    """(InfinityTrainConfig, TrainOptions) from parsed arguments (`--model infinity`); nothing built.

    Raises:
        CommandError: a missing or inconsistent argument.
    """
    from ..train.infinity_recipe import PATCH_SIZES, InfinityTrainConfig, published_mbstd_group

    if args.resume:
        return resumed_options(args, InfinityTrainConfig)
    if any(v is not None for v in (args.aug, args.augpipe, args.target, args.p)) and args.aug != "noaug":
        raise CommandError("--aug/--augpipe/--target/--p: the any-resolution GAN only (InfinityGAN's "
                           "published training has no augmentation)")
    data = args.data or args.lr_data
    if not data:
        raise CommandError("--data: required for --model infinity (a folder or .zip of images)")
    _check_data(data, "--data")
    patch = args.patch or 101
    if patch not in PATCH_SIZES:
        raise CommandError(f"--patch {patch}: expected one of {', '.join(map(str, PATCH_SIZES))}")
    if args.tiny and args.patch:
        raise CommandError("--patch: not with --tiny (the tiny model has 29-pixel patches)")
    batch = args.batch or (4 if args.tiny else 16)
    chunk = args.batch_gpu or _check_batch(args, batch)
    group = published_mbstd_group(batch)
    if chunk % min(group, chunk):
        raise CommandError(f"--batch/--batch-gpu: {chunk} samples per pass must be a multiple of {group} "
                           f"(the discriminator's minibatch-std group for batch {batch}) or below it")
    _check_device_and_out(args)
    cfg = InfinityTrainConfig(data=os.path.abspath(data), patch=patch, tiny=args.tiny,
                              cache_dir=_cache_dir(args), xflip=not args.no_xflip, diversity=args.diversity)
    if args.gamma is not None:
        cfg.r1_gamma = args.gamma
    return cfg, trainer_options(args, batch, default_kimg=TINY_KIMG if args.tiny else 12800)


def _check_batch(args: argparse.Namespace, batch: int) -> int:
    """The batch splits over the processes and their passes; returns the per-process batch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch % world:
        raise CommandError(f"--batch {batch}: not divisible by the {world} processes")
    if args.batch_gpu is not None and (batch // world) % args.batch_gpu:
        raise CommandError(f"--batch-gpu {args.batch_gpu}: does not divide the per-process batch {batch // world}")
    return batch // world


def _check_device_and_out(args: argparse.Namespace) -> None:
    """The device exists and the run folder can be made."""
    if args.device is not None:
        parse_device(args.device)
    prepare_out_dir(args.out)


def run_model(out: str) -> str:
    """The model family ("anyres" or "infinity") of the run folder `out`, from its training_options.json."""
    try:
        with open(os.path.join(out, "training_options.json")) as f:
            return "infinity" if json.load(f).get("config", {}).get("model") == "infinity" else "anyres"
    except (OSError, ValueError, AttributeError):
        return "anyres"


# Options that may differ on --resume (they change how the run continues, not what it trains); every
# other option given with --resume must equal the run's own value (docs/training.md, "Resuming").
RESUME_MAY_CHANGE = ("kimg", "max_steps", "tick", "snap", "keep", "workers", "device", "plots", "no_progress")
# option -> (section of training_options.json, key, how the option's value is stored there)
_STORED_AS = {
    "phase": ("config", "phase", None), "lr_data": ("config", "lr_data", os.path.abspath),
    "hr_data": ("config", "hr_data", os.path.abspath), "teacher": ("config", "teacher", os.path.abspath),
    "data": ("config", "data", os.path.abspath), "patch": ("config", "patch", None),
    "resolution": ("config", "resolution", None), "config": ("config", "config", None),
    "tiny": ("config", "tiny", None), "lpips": ("config", "lpips", None), "gamma": ("config", "r1_gamma", float),
    "teacher_lambda": ("config", "teacher_lambda", float), "scale_max": ("config", "scale_max", float),
    "scale_min": ("config", "scale_min", float), "no_xflip": ("config", "xflip", lambda v: not v),
    "blur_sigma": ("config", "blur_sigma", float), "blur_fade_kimg": ("config", "blur_fade_kimg", float),
    "diversity": ("config", "diversity", None), "aug": ("config", "aug", None),
    "augpipe": ("config", "augpipe", None), "target": ("config", "aug_target", float),
    "p": ("config", "aug_p", float), "seed": ("options", "seed", None),
    "batch": ("options", "batch", None), "batch_gpu": ("options", "batch_gpu", None),
    "precision": ("options", "precision", None), "fov": ("config", "fov", float),
}


def _given_options(args: argparse.Namespace) -> dict:
    """The options of `args` that differ from the parser's defaults (those the user gave)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--out", "."]))
    return {k: v for k, v in vars(args).items()
            if k in defaults and k not in ("out", "resume") and v != defaults[k]}


def _resume_conflicts(args: argparse.Namespace, saved: dict) -> list:
    """'--flag value (the run has ...)' for every given option the run being resumed does not share."""
    conflicts = []
    for name, value in _given_options(args).items():
        if name in RESUME_MAY_CHANGE:
            continue
        flag = "--" + name.replace("_", "-")
        shown = flag if isinstance(value, bool) else f"{flag} {value}"
        if name == "model":
            have = run_model(args.out)
            if value != have:
                conflicts.append(f"{shown} (the run trains --model {have})")
            continue
        if name == "cache_dir":
            have = saved.get("config", {}).get("cache_dir")
            if os.path.abspath(value) != os.path.abspath(os.path.join(args.out, have or "")):
                conflicts.append(f"{shown} (the run's cache is {have})")
            continue
        if name == "force_new":
            conflicts.append(f"{flag} (it starts a new run; --resume continues this one)")
            continue
        section, key, stored = _STORED_AS.get(name, (None, None, None))
        if section is None:
            conflicts.append(f"{shown} (cannot change on resume)")
            continue
        have = saved.get(section, {}).get(key)
        want = stored(value) if stored is not None and value is not None else value
        if want != have:
            conflicts.append(f"{shown} (the run has {key} = {have})")
    return conflicts


def resumed_options(args: argparse.Namespace, config_class) -> tuple:
    """(training config, TrainOptions) of the run in --out, as it was started. The run is the folder
    --out, wherever it is now (copied or renamed runs resume in place); the options of
    RESUME_MAY_CHANGE apply, any other option given must agree with the run.

    Raises:
        CommandError: no checkpoint in the run, an unreadable training_options.json, or options that
            conflict with the run.
    """
    from ..train.checkpoint import latest_checkpoint
    from ..train.trainer import TrainOptions

    if latest_checkpoint(args.out) is None:
        raise CommandError(f"--resume: no checkpoint in {os.path.join(args.out, 'checkpoints')}")
    path = os.path.join(args.out, "training_options.json")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        fields = {f.name for f in dataclasses.fields(config_class)}
        cfg_d = {k: v for k, v in saved["config"].items() if k in fields}
        if "betas" in cfg_d:
            cfg_d["betas"] = tuple(cfg_d["betas"])
        cfg = config_class(**cfg_d)
        option_fields = {f.name for f in dataclasses.fields(TrainOptions)}
        opts = TrainOptions(**{k: v for k, v in saved["options"].items() if k in option_fields})
    except OSError as exc:
        raise CommandError(f"--resume: cannot read {path} ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        what = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else \
            f"{type(exc).__name__}: {exc}"
        raise CommandError(f"--resume: {path} is damaged or not a training_options.json ({what})") from None
    conflicts = _resume_conflicts(args, saved)
    if conflicts:
        may = ", ".join("--" + n.replace("_", "-") for n in RESUME_MAY_CHANGE)
        raise CommandError(f"--resume: {'; '.join(conflicts)}; on resume only {may} may change")
    from ..train.run_folder import relative_to_run
    if getattr(cfg, "cache_dir", None) and opts.out not in (".", ""):
        # runs started before paths were stored relative: the cache inside the run moves with it
        cfg.cache_dir = relative_to_run(opts.out, cfg.cache_dir)
    opts.out = os.path.abspath(args.out)   # the run is where it is now, not where it was started
    if args.device is not None:
        parse_device(args.device)
    opts.resume, opts.force_new = True, False
    for name in ("kimg", "max_steps", "tick", "snap", "keep", "workers", "device", "plots"):
        if name in _given_options(args):
            setattr(opts, name, getattr(args, name))
    opts.progress = not args.no_progress
    return cfg, opts


def main(args: argparse.Namespace) -> int:
    """Validate the arguments, then train.

    Returns:
        0 when the run finished (or stopped at --max-steps).

    Raises:
        CommandError: bad arguments, unusable data, a teacher that does not fit.
    """
    from ..models.perceptual import LPIPSWeightsMissing
    from ..train.run_folder import RunFolderError
    from ..train.trainer import Trainer

    if args.resume and args.force_new:
        raise CommandError("--force-new: not with --resume (one starts a new run, the other continues this one)")
    model = run_model(args.out) if args.resume else args.model
    if model == "infinity":
        from ..train.infinity_recipe import InfinityRecipe as recipe_class
        cfg, opts = infinity_options(args)
    else:
        from ..train.anyres_recipe import AnyresRecipe as recipe_class
        cfg, opts = anyres_options(args)
    try:
        stats = Trainer(recipe_class(cfg), opts).run()
    except (FileNotFoundError, LPIPSWeightsMissing, RunFolderError) as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:   # unusable data, a teacher of another configuration, a bad batch split
        if model == "infinity" and ("InfinityGenerator" in str(exc) or "Discriminator" in str(exc)):
            raise           # a bad model configuration is a bug, not a user mistake
        raise CommandError(str(exc)) from None
    if stats and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in stats.items()}))
    return 0
