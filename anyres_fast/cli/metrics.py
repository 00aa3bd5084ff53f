"""`anyres-fast metrics`: FID at any resolution, patch-FID, ScaleInv-FID and KID of a generator.

    anyres-fast metrics --weights DIR|RUN --metric fid@1024,pfid,kid --data DIR [--hr-data DIR]
                        --num 50000 [--detector PATH]

--weights takes the forms of every command (anyres_fast/cli/weights.py): a save_pretrained folder, a
training run folder (its newest G_ema) or random weights. Results are appended as JSON lines to
<that folder>/metrics.jsonl (or --out FILE, required for random weights). Real images: --data (generator-size set) and --hr-data (high-resolution set; used for
pfid and for fid@R with R above the generator size, as the published evaluation does).
The detector is NVIDIA's TorchScript inception-2015-12-05.pt or pytorch-fid's
pt_inception-2015-12-05-6726825d.pth, from --detector or the usual caches; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os

from . import weights as weights_arg
from .args import CommandError, nonnegative_int, parse_device, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help=weights_arg.FORMS)
    parser.add_argument("--metric", required=True,
                        help="comma list of fid@R, pfid, scaleinv-fid@k; add kid for KID beside each FID")
    parser.add_argument("--data", required=True, help="folder of real images (generator-size set)")
    parser.add_argument("--hr-data", default=None, help="folder of high-resolution real images")
    parser.add_argument("--num", type=positive_int, default=50_000, help="generated images (default 50000)")
    parser.add_argument("--max-real", type=positive_int, default=None,
                        help="use at most this many real images for fid@R / scaleinv (default all)")
    parser.add_argument("--num-real", type=positive_int, default=None,
                        help="real patches for pfid (default --num)")
    parser.add_argument("--detector", default=None, help="detector weights file (.pt TorchScript or .pth)")
    parser.add_argument("--detector-kind", choices=("auto", "nvidia", "pytorch-fid"), default="auto",
                        help="which detector to look for in the caches (default auto: NVIDIA's first)")
    parser.add_argument("--out", default=None,
                        help="JSON lines file to append to (default <weights folder>/metrics.jsonl)")
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


def main(args: argparse.Namespace) -> int:
    """Check every argument, build the generator, compute each metric, append its JSON line.

    Returns:
        0 on success.

    Raises:
        CommandError: a bad argument, a missing detector or data folder, unusable weights.
    """
    from ..metrics.compute import Options, StatsCache, append_jsonl, fid_at_resolution, parse_metric_list, patch_fid, scaleinv_fid
    from ..metrics.detectors import DetectorNotFound, load_detector

    # Everything the user can get wrong is checked before a model is built.
    try:
        specs, with_kid = parse_metric_list(args.metric)
    except ValueError as exc:
        raise CommandError(f"--metric {args.metric!r}: {exc}") from None
    device = parse_device(args.device)
    weights = weights_arg.resolve(args.weights)
    data = _listing(args.data, "--data")
    hr = _listing(args.hr_data, "--hr-data") if args.hr_data else None
    if args.out is None and weights.path is None:
        raise CommandError(f"--out: required with --weights {args.weights!r} (no folder to write metrics.jsonl into)")
    out = args.out or os.path.join(os.path.abspath(weights.path), "metrics.jsonl")
    if os.path.isdir(out):
        raise CommandError(f"--out {out!r}: is a folder (expected a .jsonl file)")
    try:
        detector = load_detector(args.detector, args.detector_kind, device=device)
    except DetectorNotFound as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:
        raise CommandError(f"--detector {args.detector!r}: {exc}") from None

    G = weights_arg.load(weights, device)
    p = G.img_resolution if weights.family == "anyres" else weights.config.patch_size
    patch_min = args.patch_min or p
    if patch_min < p or (args.patch_max and args.patch_max < patch_min):
        raise CommandError(f"--patch-min {patch_min} / --patch-max {args.patch_max}: need p = {p} <= min <= max "
                           f"(max 0 = native)")
    opts = Options(num=args.num, max_real=args.max_real, num_real=args.num_real, batch=args.batch,
                   tile_batch=args.tile_batch, seed=args.seed, precision=args.precision, crop=args.crop,
                   workers=args.workers, device=device, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                   progress=not args.no_progress, kid=with_kid, kid_subsets=args.kid_subsets,
                   kid_subset_size=args.kid_subset_size, scale_max=p / patch_min,
                   scale_min=(p / args.patch_max) if args.patch_max else None, xflip=args.xflip,
                   train_size=args.train_size or p, fov_scale=args.fov_scale)
    cache = StatsCache(opts.cache_dir, opts.use_cache)
    for spec in specs:
        try:
            if spec.kind == "fid":
                listing = hr if (hr is not None and spec.value > p) else data
                result = fid_at_resolution(G, detector, listing, spec.value, opts, cache)
            elif spec.kind == "pfid":
                result = patch_fid(G, detector, hr or data, opts, cache)
            else:
                result = scaleinv_fid(G, detector, data, spec.value, opts, cache)
        except ValueError as exc:
            raise CommandError(f"{spec.name}: {exc}") from None
        result["weights"] = os.path.abspath(weights.path) if weights.path else weights.text
        result["weights_kind"] = weights.kind
        append_jsonl(out, result)
        line = f"{result['metric']}: fid {result['fid']:.4f}"
        if "kid" in result:
            line += f", kid {result['kid']:.6f} (std {result['kid_std']:.6f})"
        print(f"{line}  [{result['num_fake']} fake, {result['num_real']} real, {detector.name}, "
              f"real stats cache {result['real_stats_cache']}] -> {out}")
    return 0
