"""`anyres-fast metrics`: FID at any resolution, patch-FID (also on downsampled R-px patches), ScaleInv-FID,
KID, precision/recall (full images and patches) and StyleGAN3's equivariance metrics of a generator.

    anyres-fast metrics --weights DIR|RUN --metric fid@1024,pfid,kid --data DIR [--hr-data DIR]
                        --num 50000 [--detector PATH]
    anyres-fast metrics --weights RUN --metric pr@256,ppr,pfid-down@1024 --data DIR --hr-data DIR [--detector-vgg PATH]
    anyres-fast metrics --weights RUN --metric eqt-int,eqt-frac,eqr --num 50000      (no data, no detector)

--weights takes the forms of every command (anyres_fast/cli/weights.py): a save_pretrained folder, a
training run folder (its newest G_ema), a published network pickle, or random weights. Results are
appended as JSON lines to <that folder>/metrics.jsonl (or --out FILE, required for random weights and
pickles). Real images: --data (generator-size set) and --hr-data (high-resolution set; used for
pfid and for fid@R with R above the generator size, as the published evaluation does).
The detector is NVIDIA's TorchScript inception-2015-12-05.pt or pytorch-fid's
pt_inception-2015-12-05-6726825d.pth, from --detector or the usual caches; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from . import weights as weights_arg
from .args import CommandError, nonnegative_int, parse_device, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help=weights_arg.FORMS)
    parser.add_argument("--metric", required=True,
                        help="comma list of fid@R, pfid, pfid-down@R, scaleinv-fid@k, pr@R, ppr, eqt-int, eqt-frac, "
                             "eqr; add kid for KID beside each FID")
    parser.add_argument("--data", default=None,
                        help="folder or .zip of real images (generator-size set; labels of a conditional model "
                             "from its dataset.json); not needed for the equivariance metrics")
    parser.add_argument("--hr-data", default=None, help="folder or .zip of high-resolution real images")
    parser.add_argument("--num", type=positive_int, default=50_000, help="generated images (default 50000)")
    parser.add_argument("--max-real", type=positive_int, default=None,
                        help="use at most this many real images for fid@R / scaleinv (default all)")
    parser.add_argument("--num-real", type=positive_int, default=None,
                        help="real patches for pfid (default --num)")
    parser.add_argument("--detector", default=None, help="detector weights file (.pt TorchScript or .pth)")
    parser.add_argument("--detector-kind", choices=("auto", "nvidia", "pytorch-fid"), default="auto",
                        help="which detector to look for in the caches (default auto: NVIDIA's first)")
    parser.add_argument("--detector-vgg", default=None,
                        help="pr@R / ppr: NVIDIA's TorchScript vgg16.pt (default: the usual caches)")
    parser.add_argument("--translate-max", type=positive_float, default=0.125,
                        help="eqt-int / eqt-frac: largest translation, fraction of the image (default 0.125)")
    parser.add_argument("--rotate-max", type=positive_float, default=1.0,
                        help="eqr: largest rotation in units of pi (default 1)")
    parser.add_argument("--out", default=None, help="JSON lines file to append to (default <weights>/metrics.jsonl)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--batch", type=positive_int, default=4, help="images per generator call (default 4)")
    parser.add_argument("--tile-batch", type=positive_int, default=8, help="tiles per synthesis pass (default 8)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                        help="StyleGAN3 high-resolution layers on CUDA (default fp16, as published)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="seed of latents and real sampling")
    parser.add_argument("--crop", choices=("center", "random"), default="center", help="square crop of reals")
    parser.add_argument("--patch-min", type=positive_int, default=None,
                        help="pfid: smallest resized HR size (default the patch size p; scale_max = p/min)")
    parser.add_argument("--patch-max", type=nonnegative_int, default=0,
                        help="pfid: largest resized HR size, 0 = native (default; scale_min = p/max)")
    parser.add_argument("--xflip", action="store_true", help="pfid: random x-flips of real patches")
    parser.add_argument("--train-size", type=positive_int, default=None,
                        help="scaleinv-fid: real/training image size (default the generator's size)")
    parser.add_argument("--fov-scale", type=positive_float, default=1.0,
                        help="scaleinv-fid: full training size / real size (InfinityGAN main model: 197/128)")
    parser.add_argument("--kid-subsets", type=positive_int, default=100, help="KID subsets (default 100)")
    parser.add_argument("--kid-subset-size", type=positive_int, default=1000, help="KID subset size (default 1000)")
    parser.add_argument("--cache-dir", default=None, help="real-statistics cache folder")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    parser.add_argument("--workers", type=nonnegative_int, default=min(4, os.cpu_count() or 1),
                        help="image-decoding worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _listing(path, flag):
    from ..metrics.real_images import list_images

    try:
        return list_images(path)
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(f"{flag} {path!r}: {exc}") from None


def _labels_from(path, seed: int):
    """labels(count) for a conditional generator: labels of uniformly drawn dataset images (as published,
    but from a numpy Generator seeded with --seed)."""
    import numpy as np
    import torch

    from ..data import ImageSource

    try:
        source = ImageSource(path, use_labels=True)
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(f"--data {path!r}: {exc}") from None
    if not source.c_dim or not len(source):
        raise CommandError(f"--data {path!r}: a conditional generator needs labels (dataset.json) in the dataset")
    rng = np.random.default_rng(seed)

    def labels(count: int):
        return torch.from_numpy(np.stack([source.label(int(i)) for i in rng.integers(0, len(source), count)]))

    return labels, source.c_dim


def main(args: argparse.Namespace) -> int:
    """Check every argument, build the generator, compute each metric, append its JSON line.

    Returns:
        0 on success.

    Raises:
        CommandError: a bad argument, a missing detector or data folder, unusable weights.
    """
    from ..metrics.compute import (EQ_KINDS, FID_KINDS, PR_KINDS, Options, StatsCache, append_jsonl,
                                   fid_at_resolution, parse_metric_list, patch_fid, patch_fid_down,
                                   patch_precision_recall, precision_recall_at_resolution, scaleinv_fid)
    from ..metrics.detectors import DetectorNotFound, load_detector, load_vgg16
    from ..metrics.equivariance import equivariance_metric

    # Everything the user can get wrong is checked before a model is built.
    try:
        specs, with_kid = parse_metric_list(args.metric)
    except ValueError as exc:
        raise CommandError(f"--metric {args.metric!r}: {exc}") from None
    kinds = {s.kind for s in specs}
    device = parse_device(args.device)
    weights = weights_arg.resolve(args.weights)
    if args.data is None and kinds - set(EQ_KINDS):
        raise CommandError(f"--data is needed for {', '.join(s.name for s in specs if s.kind not in EQ_KINDS)}")
    data = _listing(args.data, "--data") if args.data else None
    hr = _listing(args.hr_data, "--hr-data") if args.hr_data else None
    if args.out is None and (weights.path is None or not os.path.isdir(weights.path)):
        raise CommandError(f"--out: required with --weights {args.weights!r} (no folder to write metrics.jsonl into)")
    out = args.out or os.path.join(os.path.abspath(weights.path), "metrics.jsonl")
    if os.path.isdir(out):
        raise CommandError(f"--out {out!r}: is a folder (expected a .jsonl file)")
    detector = vgg = None
    for flag, needed, load in (("--detector", kinds & set(FID_KINDS),
                                lambda: load_detector(args.detector, args.detector_kind, device=device)),
                               ("--detector-vgg", kinds & set(PR_KINDS), lambda: load_vgg16(args.detector_vgg, device=device))):
        if not needed:
            continue
        try:
            loaded = load()
        except DetectorNotFound as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(f"{flag}: {exc}") from None
        detector, vgg = (loaded, vgg) if flag == "--detector" else (detector, loaded)

    G = weights_arg.load(weights, device)
    p = G.img_resolution if weights.family == "anyres" else weights.config.patch_size
    patch_min = args.patch_min or p
    if patch_min < p or (args.patch_max and args.patch_max < patch_min):
        raise CommandError(f"--patch-min {patch_min} / --patch-max {args.patch_max}: need p = {p} <= min <= max "
                           f"(max 0 = native)")
    labels = None
    if getattr(G, "c_dim", 0):
        if args.data is None:
            raise CommandError("a conditional generator needs --data with labels (dataset.json) to draw them from")
        labels, c_dim = _labels_from(args.data, args.seed)
        if c_dim != G.c_dim:
            raise CommandError(f"--data {args.data!r}: {c_dim} classes, the generator has {G.c_dim}")
    opts = Options(num=args.num, max_real=args.max_real, num_real=args.num_real, batch=args.batch,
                   tile_batch=args.tile_batch, seed=args.seed, precision=args.precision, crop=args.crop,
                   workers=args.workers, device=device, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                   progress=not args.no_progress, kid=with_kid, kid_subsets=args.kid_subsets,
                   kid_subset_size=args.kid_subset_size, scale_max=p / patch_min,
                   scale_min=(p / args.patch_max) if args.patch_max else None, xflip=args.xflip,
                   train_size=args.train_size or p, fov_scale=args.fov_scale, translate_max=args.translate_max,
                   rotate_max=args.rotate_max, labels=labels)
    cache = StatsCache(opts.cache_dir, opts.use_cache)
    for spec in specs:
        try:
            if spec.kind in ("fid", "pr"):
                listing = hr if (hr is not None and spec.value > p) else data
                run = fid_at_resolution if spec.kind == "fid" else precision_recall_at_resolution
                result = run(G, detector if spec.kind == "fid" else vgg, listing, spec.value, opts, cache)
            elif spec.kind == "pfid":
                result = patch_fid(G, detector, hr or data, opts, cache)
            elif spec.kind == "ppr":
                result = patch_precision_recall(G, vgg, hr or data, opts, cache)
            elif spec.kind == "pfid-down":
                # Canvas bounds relative to R: [max(--patch-min, R), --patch-max or native].
                low = max(patch_min, spec.value)
                down = dataclasses.replace(opts, scale_max=spec.value / low,
                                           scale_min=(spec.value / args.patch_max) if args.patch_max else None)
                if args.patch_max and args.patch_max < low:
                    raise ValueError(f"--patch-max {args.patch_max} is below R = {spec.value}")
                result = patch_fid_down(G, detector, hr or data, spec.value, down, cache)
            elif spec.kind in EQ_KINDS:
                result = equivariance_metric(G, spec.kind, opts)
            else:
                result = scaleinv_fid(G, detector, data, spec.value, opts, cache)
        except ValueError as exc:
            raise CommandError(f"{spec.name}: {exc}") from None
        result["weights"] = os.path.abspath(weights.path) if weights.path else weights.text
        result["weights_kind"] = weights.kind
        append_jsonl(out, result)
        print(f"{summary(result)}  -> {out}")
    return 0


def summary(result: dict) -> str:
    """One printed line per result: the value(s), counts and the detector."""
    if "psnr" in result:
        return f"{result['metric']}: {result['psnr']:.3f} dB  [{result['num_fake']} samples]"
    if "precision" in result:
        line = f"{result['metric']}: precision {result['precision']:.4f}, recall {result['recall']:.4f}"
    else:
        line = f"{result['metric']}: fid {result['fid']:.4f}"
        if "kid" in result:
            line += f", kid {result['kid']:.6f} (std {result['kid_std']:.6f})"
    return (f"{line}  [{result['num_fake']} fake, {result['num_real']} real, {result['detector']['name']}, "
            f"real stats cache {result['real_stats_cache']}]")
