"""`anyres-fast generate`: render images of any size (or a zoom window of a virtual canvas) to PNG.

    anyres-fast generate --weights DIR --seeds 0-3 --size 2048 --truncation 0.7 --out out/
    anyres-fast generate --weights random:64,channel_base=2048,channel_max=64 --seeds 0 --size 300 \
        --zoom 100,40,128 --out out/
    anyres-fast generate --weights runs/pano --panorama --height 512 --seeds 0 --out out/   # 360-degree strip
    anyres-fast generate --weights runs/pano --panorama --w-interp 1024 --seeds 0 --out out/

--weights takes the forms every command takes (anyres_fast/cli/weights.py): a save_pretrained folder,
a training run folder (its newest G_ema), a published StyleGAN3 / anyres-gan network pickle FILE.pkl
(read without executing anything from it; docs/published_models.md), or `random:P[,key=value...]` for a randomly initialised model
of patch size P (keys: config=T|R, channel_base, channel_max, z_dim, w_dim, seed), handy for demos and
smoke tests without trained weights (narrow widths like the example above render in seconds on a CPU;
the full config-T width takes minutes there). Its magnitude statistics are set from a seeded batch of
latents so the images have full contrast. InfinityGAN weights (or --model infinity) take the options
of the `--model infinity` group instead of --size/--zoom.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from ..serve.export import FORMATS as FILE_FORMATS, write_pyramid
from ..utils.files import save_png
from . import weights as weights_arg
from .args import CommandError, check_file_format, parse_seeds, parse_zoom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .args import finite_float, nonnegative_int, positive_float, positive_int

    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", choices=weights_arg.FAMILIES, default=None,
                        help="generator family (default: the one --weights names; infinity: see its options below)")
    parser.add_argument("--weights", required=True, help=weights_arg.FORMS)
    parser.add_argument("--seeds", type=parse_seeds, default=[0], help="latent seeds, e.g. 0-3 or 1,5,7 (default 0)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="canvas size N in pixels (required for --model anyres; N >= patch size unless "
                             "--zoom is given)")
    parser.add_argument("--zoom", type=parse_zoom, default=None,
                        help="render only the window x0,y0,w[,h] (pixels, inside the N x N canvas)")
    parser.add_argument("--truncation", type=finite_float, default=1.0, help="truncation psi (default 1)")
    parser.add_argument("--truncation-cutoff", type=nonnegative_int, default=None,
                        help="truncate only the first k ws (default: all)")
    parser.add_argument("--class", dest="class_idx", type=nonnegative_int, default=None,
                        help="class index (conditional models only)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--tile-batch", type=positive_int, default=8, help="tiles per forward pass (default 8)")
    parser.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default="fp16",
                        help="dtype of StyleGAN3's high-resolution layers on CUDA (default fp16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--format", choices=("png",) + FILE_FORMATS, default="png",
                        help="png (default): one PNG per seed; dzi: a Deep Zoom pyramid; tiff: a tiled "
                             "pyramidal BigTIFF (dzi and tiff are written tile by tile, for images too large "
                             "to hold; docs/serve.md)")
    parser.add_argument("--panorama", action="store_true",
                        help="a panorama model (train --phase panorama, anyres-gan global-360): write the full "
                             "360-degree strip, --height H pixels high (default the patch size; the width is "
                             "one turn; docs/panorama.md)")
    parser.add_argument("--w-interp", type=positive_float, default=None, metavar="SPACING",
                        help="--panorama: blend several latents around the strip, one every ~SPACING pixels "
                             "(seeds seed, seed+1000, ...), w interpolated along x")
    parser.add_argument("--tile-size", type=positive_int, default=256,
                        help="--format dzi/tiff: tile side (default 256; a multiple of the any-resolution "
                             "patch size)")
    from . import generate_infinity
    generate_infinity.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Render one PNG (or a dzi / tiff pyramid) per seed.

    Args:
        args: the parsed options (see add_arguments).

    Returns:
        0 on success.

    Raises:
        CommandError: any argument or file problem, found before the model is built (the weights file
            itself is checked while loading it).
    """
    from ..models import tiling as _render
    from .args import CommandError, check_extension_environment, parse_device, prepare_out_dir
    from ..models.anyres import estimate_tile_bytes, layer_schedule

    weights = weights_arg.resolve(args.weights, args.model, needed_by=f"--model {args.model}")
    if weights.family == "infinity":
        from . import generate_infinity
        return generate_infinity.main(args, weights)
    if getattr(args, "cyclic", False):
        raise CommandError("--cyclic: a canvas that wraps is InfinityGAN's (--model infinity); these weights are "
                           "an any-resolution generator")
    if args.panorama or weights.config.panorama:
        return _panorama(args, weights)
    if args.height is not None or args.w_interp is not None:
        raise CommandError("--height/--w-interp: only with --panorama")
    if args.size is None:
        raise CommandError("--size is required for an any-resolution generator")
    check_extension_environment()
    device = parse_device(args.device)
    cfg = weights.config
    p = cfg.resolution
    if args.zoom is None:
        if args.size < p:
            raise CommandError(f"--size {args.size}: smaller than the patch size {p} of this model "
                               f"(use --zoom for a window)")
        width = height = args.size
    else:
        x0, y0, width = args.zoom[:3]
        height = args.zoom[3] if len(args.zoom) == 4 else width
        if x0 < 0 or y0 < 0 or x0 + width > args.size or y0 + height > args.size:
            raise CommandError(f"--zoom {','.join(map(str, args.zoom))}: the window ({x0}..{x0 + width}, "
                               f"{y0}..{y0 + height}) must lie inside the {args.size}x{args.size} canvas of --size")
    _check_cutoff_and_class(args, cfg)
    tiled = check_file_format(args, p)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    try:
        # The uint8 canvas plus Pillow's height x width x channels copy of it, and the tiles in flight
        # (for dzi/tiff one file tile at a time is the canvas).
        held_w, held_h = (min(width, args.tile_size), min(height, args.tile_size)) if tiled else (width, height)
        tile_batch = _render.fitting_tile_batch(
            num_images=1, width=held_w, height=held_h, tile=p, channels=cfg.img_channels,
            tile_batch=args.tile_batch, device=device, out_dtype=torch.uint8,
            device_bytes_per_tile=estimate_tile_bytes(layer_schedule(cfg), half is not None and device.type == "cuda"),
            extra_host_bytes=held_w * held_h * cfg.img_channels)
        _say_fitted_tile_batch(tile_batch, args.tile_batch)
    except _render.MemoryLimitError as exc:
        flag = f"--size {args.size}" if args.zoom is None else f"--zoom {','.join(map(str, args.zoom))}"
        raise CommandError(f"{flag}: {exc}") from None
    out = prepare_out_dir(args.out)

    G = weights_arg.load(weights, device)
    c = _class_label(G.c_dim, args.class_idx)
    x0, y0 = (args.zoom[0], args.zoom[1]) if args.zoom is not None else (0, 0)
    for seed in args.seeds:
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))

        def render(window, progress):
            return G.render(z, args.size, c=c, window=window, tile_batch=tile_batch, device=device,
                            truncation_psi=args.truncation, truncation_cutoff=args.truncation_cutoff,
                            force_fp32=half is None, half_dtype=half or torch.float16,
                            progress=progress, out_dtype=torch.uint8)

        name = f"seed{seed:04d}_{args.size}"
        if args.zoom is not None:
            name += "_zoom" + "_".join(str(v) for v in args.zoom)
        if tiled:   # window tiles on the same p-grid as the whole image (tile size a multiple of p)
            path = write_pyramid(args.format, lambda x, y, w, h: render((x0 + x, y0 + y, w, h), False)[0].permute(1, 2, 0).numpy(),
                              width, height, os.path.join(out, name), args.tile_size, not args.no_progress)
            print(f"wrote {path} ({width}x{height}, {args.format})")
            continue
        img = render(args.zoom, not args.no_progress)
        path = os.path.join(out, name + ".png")
        save_png(path, img[0])
        print(f"wrote {path} ({img.shape[3]}x{img.shape[2]})")
    return 0


def _say_fitted_tile_batch(tile_batch: int, asked: int) -> None:
    """One stderr line when fitting_tile_batch lowered --tile-batch to fit memory."""
    if tile_batch < asked:
        print(f"anyres-fast generate: {tile_batch} tile(s) per pass instead of --tile-batch {asked}, "
              f"to fit the available memory", file=sys.stderr)


def _class_label(c_dim: int, class_idx) -> torch.Tensor | None:
    """The (1, c_dim) one-hot label of --class for a conditional model, None for an unconditional one."""
    if c_dim == 0:
        return None
    c = torch.zeros(1, c_dim)
    c[0, class_idx] = 1
    return c


def _check_cutoff_and_class(args: argparse.Namespace, cfg) -> None:
    """--truncation-cutoff within the model's ws; --class given exactly when the model is conditional."""
    num_ws = cfg.num_layers + 2
    if args.truncation_cutoff is not None and args.truncation_cutoff > num_ws:
        raise CommandError(f"--truncation-cutoff {args.truncation_cutoff}: this model has {num_ws} ws "
                           f"(use 0..{num_ws})")
    if cfg.c_dim == 0 and args.class_idx is not None:
        raise CommandError(f"--class {args.class_idx}: this model is unconditional (it has no classes)")
    if cfg.c_dim > 0 and (args.class_idx is None or args.class_idx >= cfg.c_dim):
        got = "missing" if args.class_idx is None else f"got {args.class_idx}"
        raise CommandError(f"--class: this model is conditional, pass --class in [0, {cfg.c_dim}) ({got})")


def _panorama(args: argparse.Namespace, weights) -> int:
    """`generate --panorama`: one PNG per seed with the whole 360-degree strip (docs/panorama.md)."""
    from ..models import tiling as _render
    from ..models.anyres import estimate_tile_bytes, layer_schedule, panorama_turn_samples
    from .args import CommandError, check_extension_environment, parse_device, prepare_out_dir

    cfg = weights.config
    if not cfg.panorama:
        raise CommandError(f"--panorama: {args.weights} is not a panorama model (train one with "
                           f"--phase panorama, or load anyres-gan's global-360 pickle)")
    if not args.panorama:
        raise CommandError(f"{args.weights} is a panorama model: pass --panorama [--height H] (not --size)")
    if args.size is not None or args.zoom is not None:
        raise CommandError("--panorama: takes --height, not --size/--zoom (the strip is one full turn)")
    if args.format != "png":
        raise CommandError("--panorama: writes PNG strips only (--format png)")
    p = cfg.resolution
    height = args.height or p
    if height < p:
        raise CommandError(f"--height {height}: smaller than the patch size {p} of this model")
    rate = layer_schedule(cfg).input.rate
    turn = panorama_turn_samples(rate, cfg.fov)
    if turn * height % rate:
        step = rate // math.gcd(turn, rate)
        raise CommandError(f"--height {height}: not a whole number of pixels per turn at fov {cfg.fov:g}; "
                           f"use a multiple of {step}")
    width = turn * height // rate
    anchors = None
    if args.w_interp is not None:
        anchors = max(2, round(width / args.w_interp))
    _check_cutoff_and_class(args, cfg)
    check_extension_environment()
    device = parse_device(args.device)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    try:
        tile_batch = _render.fitting_tile_batch(
            num_images=1 if anchors is None else 3, width=width + (p if anchors else 0), height=height, tile=p,
            channels=cfg.img_channels, tile_batch=args.tile_batch, device=device,
            out_dtype=torch.uint8 if anchors is None else torch.float32,
            device_bytes_per_tile=estimate_tile_bytes(layer_schedule(cfg), half is not None and device.type == "cuda"),
            extra_host_bytes=width * height * cfg.img_channels)
        _say_fitted_tile_batch(tile_batch, args.tile_batch)
    except _render.MemoryLimitError as exc:
        raise CommandError(f"--height {height}: {exc}") from None
    out = prepare_out_dir(args.out)
    G = weights_arg.load(weights, device)
    c = _class_label(G.c_dim, args.class_idx)
    for seed in args.seeds:
        if anchors is None:
            z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        else:   # anchor i from seed + 1000 i, so each anchor is also a plain seed's panorama
            z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(seed + 1000 * i))
                             for i in range(anchors)]).unsqueeze(0)
        img = G.render_panorama(z, height, c=c, w_interp=None if anchors is None else width / anchors,
                                tile_batch=tile_batch, device=device, truncation_psi=args.truncation,
                                truncation_cutoff=args.truncation_cutoff, force_fp32=half is None,
                                half_dtype=half or torch.float16, progress=not args.no_progress,
                                out_dtype=torch.uint8)
        name = f"seed{seed:04d}_pano{height}" + (f"_winterp{anchors}" if anchors else "")
        path = os.path.join(out, name + ".png")
        save_png(path, img[0])
        print(f"wrote {path} ({img.shape[3]}x{img.shape[2]}, 360 degrees"
              + (f", {anchors} latents" if anchors else "") + ")")
    return 0
