"""`anyres-fast generate --model infinity`: InfinityGAN images of any height and width (PNG).

    anyres-fast generate --model infinity --weights random --seeds 0-3 --height 512 --width 2048 --out out/
    anyres-fast generate --model infinity --weights DIR --seeds 0 --height 256 --width 1024 \\
        --fuse 5,9 --centres "100,128;900,128" --fusion-kernel 127 --patch-batch 16 --out out/
    anyres-fast generate --model infinity --weights DIR --seeds 0 --height 256 --width 2224 --cyclic --out out/

Each seed S is one canvas: z_l, coordinates and noise come from S and z_g from S (or, with --fuse, one z_g
per listed seed, placed at the --centres, given as x,y pixels of the output image). The image is the
window whose top-left corner sits at canvas pixel (--left, --top); --top defaults to -height/2 so the
horizon (vertical coordinate 0) runs through the middle. --weights: an InfinityGAN training run (its
newest G_ema), a save_pretrained folder, or `random[:key=value,...]` (keys of InfinityConfig, e.g.
random:patch_size=197, plus seed=N and preset=tiny). With --cyclic the canvas wraps horizontally every
--width pixels (a 360-degree panorama: the last column continues into the first; --width a multiple of
2^depth and at least one patch; docs/infinitygan.md, "Cyclic canvas"). Under torchrun the patches are
shared out to the ranks and rank 0 writes the PNGs.
"""
from __future__ import annotations

import argparse
import os

import torch

from ..models import infinity_canvas as _canvas
from ..models import tiling as _render
from .args import CommandError, check_file_format, parse_device, prepare_out_dir
from . import weights as weights_arg
from .args import parse_seeds
from ..utils.distributed import init_distributed
from ..utils.files import save_png


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The InfinityGAN options of `anyres-fast generate` (added next to the anyres ones)."""
    from .args import nonnegative_int, positive_int
    g = parser.add_argument_group("--model infinity")
    g.add_argument("--height", type=positive_int, default=None, help="image height in pixels")
    g.add_argument("--width", type=positive_int, default=None, help="image width in pixels")
    g.add_argument("--top", type=int, default=None, help="canvas row of the image's first row (default -height/2)")
    g.add_argument("--left", type=int, default=0, help="canvas column of the image's first column (default 0)")
    g.add_argument("--cyclic", action="store_true",
                   help="wrap the canvas every --width pixels: a 360-degree panorama whose last column continues "
                        "into the first (--width a multiple of 2^depth, at least one patch)")
    g.add_argument("--patch-batch", type=positive_int, default=8, help="patches per forward pass (default 8)")
    g.add_argument("--fuse", default=None, help="seeds of the style latents to fuse, e.g. 5,9")
    g.add_argument("--centres", default=None, help="one x,y pixel per --fuse seed, e.g. '100,50;400,50'")
    g.add_argument("--fusion-kernel", type=positive_int, default=127, help="odd mean-filter size (default 127)")
    g.add_argument("--fusion-demod", choices=("exact", "pointwise"), default="exact",
                   help="demodulation of fused styles: exact, or the published pointwise approximation")
    del nonnegative_int


def parse_centres(text: str) -> list:
    """'x,y;x,y' -> [(x, y), ...] (floats)."""
    out = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        xy = part.split(",")
        try:
            if len(xy) != 2:
                raise ValueError
            out.append((float(xy[0]), float(xy[1])))
        except ValueError:
            raise CommandError(f"--centres {text!r}: expected x,y pairs separated by ';' (e.g. '100,50;400,50')") from None
    if not out:
        raise CommandError(f"--centres {text!r}: expected at least one x,y pair")
    return out


def main(args: argparse.Namespace, weights=None) -> int:
    """Validate everything, then build the model and write one PNG per seed.

    Args:
        args: the parsed `generate` options.
        weights: the resolved --weights (anyres_fast.cli.weights.resolve), when the caller has it.

    Returns:
        0 on success.

    Raises:
        CommandError: any argument or file problem, found before the model is built.
    """
    if weights is None:
        weights = weights_arg.resolve(args.weights, "infinity")
    if args.height is None or args.width is None:
        raise CommandError("--model infinity needs --height and --width (pixels)")
    if args.size is not None or args.zoom is not None:
        raise CommandError("--size/--zoom belong to --model anyres; use --height/--width/--top/--left")
    fuse = None
    if args.fuse is not None or args.centres is not None:
        if args.fuse is None or args.centres is None:
            raise CommandError("--fuse and --centres go together (one x,y centre per fused seed)")
        try:
            fuse = parse_seeds(args.fuse)
        except argparse.ArgumentTypeError as exc:
            raise CommandError(f"--fuse: {exc}") from None
        centres = parse_centres(args.centres)
        if len(centres) != len(fuse):
            raise CommandError(f"--centres has {len(centres)} x,y pairs but --fuse lists {len(fuse)} seeds")
        for x, y in centres:
            if not (0 <= x < args.width and 0 <= y < args.height):
                raise CommandError(f"--centres {x:g},{y:g}: outside the {args.width}x{args.height} image")
        if args.fusion_kernel % 2 == 0:
            raise CommandError(f"--fusion-kernel {args.fusion_kernel}: must be odd")
    cyclic_width = None
    if getattr(args, "cyclic", False):
        if fuse is not None:
            raise CommandError("--cyclic with --fuse: style fusion is not available on a cyclic canvas")
        cfg = weights.config
        try:
            _canvas.ring_columns(args.width, 2 ** cfg.depth, cfg.patch_size, "--cyclic --width")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        cyclic_width = args.width
    tiled = check_file_format(args)
    device = parse_device(args.device)
    # Activations in --precision on CUDA; the CPU always runs float32.
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision] \
        if device.type == "cuda" else torch.float32
    rank = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and tiled:
        raise CommandError(f"--format {args.format}: one process only (torchrun shares out the patches of "
                           f"one PNG; a pyramid is written tile by tile)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:      # torchrun: share the patches out to the ranks
        device, rank, _ = init_distributed(str(device))
    _check_host_memory(args, weights.config, device, tiled)
    out_dir = prepare_out_dir(args.out) if not rank else args.out

    G = weights_arg.load(weights, device)
    top = -(args.height // 2) if args.top is None else args.top
    style, z_g = None, None
    if fuse is not None:
        z_g = torch.cat([torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s)) for s in fuse])
        style = [(x + args.left, y + top) for x, y in centres]
    with _render.sharding(rank is not None):
        _write_all(args, G, fuse, z_g if fuse is not None else None, style, top, device, dtype, out_dir, tiled,
                   cyclic_width)
    return 0


def _check_host_memory(args, cfg, device, tiled: bool) -> None:
    """Before building anything: the image this command holds at once fits the available memory (a
    PNG: the float32 canvas, its uint8 copy and Pillow's; a pyramid: one file tile)."""
    held_w, held_h = (min(args.width, args.tile_size), min(args.height, args.tile_size)) if tiled \
        else (args.width, args.height)
    channels = getattr(cfg, "img_channels", 3)
    try:
        _render.check_render_memory(num_images=1, width=held_w, height=held_h, tile=1, channels=channels,
                                    tile_batch=args.patch_batch, device=device,
                                    extra_host_bytes=2 * held_w * held_h * channels)
    except _render.MemoryLimitError as exc:
        hint = "" if tiled else "; or write it tile by tile with --format dzi or --format tiff"
        raise CommandError(f"--width {args.width} --height {args.height}: {exc}{hint}") from None


def _write_all(args, G, fuse, z_fused, style, top, device, dtype, out_dir, tiled=False, cyclic_width=None) -> None:
    from ..serve.export import write_pyramid

    z_g = z_fused
    for seed in args.seeds:
        if fuse is None:
            z_g = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))

        def render(height, width, row, col, progress):
            # The canvas is addressed by absolute pixel, so a tile at (row, col) of the image is the
            # render of that window (the style centres stay in canvas pixels).
            img = G.render(z_g, height, width, top=top + row, left=args.left + col, patch_batch=args.patch_batch,
                           seed=seed, style_centres=style, fusion_kernel=args.fusion_kernel,
                           fusion_demod=args.fusion_demod, device=device, dtype=dtype, progress=progress,
                           cyclic_width=cyclic_width)
            return None if img is None else (img[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # truncating, as StyleGAN

        base = f"seed{seed:04d}_{args.width}x{args.height}" + ("_fused" if fuse else "") + \
            ("_cyclic" if cyclic_width else "")
        if tiled:
            path = write_pyramid(args.format, lambda x, y, w, h: render(h, w, y, x, False).permute(1, 2, 0).numpy(),
                              args.width, args.height, os.path.join(out_dir, base), args.tile_size,
                              not args.no_progress)
            print(f"wrote {path} ({args.width}x{args.height}, {args.format})")
            continue
        u8 = render(args.height, args.width, 0, 0, not args.no_progress)
        if u8 is None:                      # another rank: rank 0 assembles and writes
            continue
        path = save_png(os.path.join(out_dir, base + ".png"), u8)
        print(f"wrote {path} ({args.width}x{args.height})")
