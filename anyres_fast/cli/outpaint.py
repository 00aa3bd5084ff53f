"""`anyres-fast outpaint`: extend a real photo to any width (and height) with InfinityGAN.

    anyres-fast outpaint --weights runs/inf --image photo.png --width 1024 --place left --out out/
    anyres-fast outpaint --weights runs/inf --image photo.png --width 800 --height 300 --place centre \\
        --seeds 0-3 --steps 1000 --out out/

The photo is inverted into the generator (z_g, W+ styles, local latents and noise, with pixel +
LPIPS + prior losses), placed on a canvas of the requested size, and the canvas is rendered once per
seed: the photo's region comes out as inverted and the rest is new content that continues it. Writes
outpaint_seed<N>.png (exactly width x height) per seed, inversion.pt (the inversion record; give it
back with --record to skip the inversion for the same photo, size and placement) and report.json
(PSNR of the photo's region, seam continuity). --weights is an InfinityGAN training run folder, a
save_pretrained folder, or `random[:key=value,...]` (an untrained model for trying the command: keys
of InfinityConfig and seed; `random:preset=tiny` is the small model of `train --tiny`).
LPIPS uses torchvision's AlexNet weights from the torch cache; --lpips random uses a random backbone.
See docs/infinitygan_training.md.
"""
from __future__ import annotations

import argparse
import os

from . import weights as weights_arg
from .args import CommandError, positive_int
from .editing import add_common_arguments, check_lpips, inside_columns, read_image, run_edit

PLACES = ("left", "right", "centre")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the photo to extend (any Pillow-readable file)")
    parser.add_argument("--width", type=positive_int, required=True, help="output width in pixels (>= the photo's)")
    parser.add_argument("--height", type=positive_int, default=None,
                        help="output height (default: the photo's; larger centres the photo vertically)")
    parser.add_argument("--place", choices=PLACES, default="left",
                        help="where the photo sits: left (extend to the right), right or centre (default left)")
    add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Validate, invert, render one PNG per seed.

    Raises:
        CommandError: unreadable image, image smaller than the patch, output smaller than the image,
            bad weights, missing LPIPS weights.
    """
    from .args import parse_device, prepare_out_dir

    target = read_image(args.image, "--image")
    h, w = target.shape[2], target.shape[3]
    weights = weights_arg.resolve(args.weights, "infinity")
    patch = weights.config.patch_size
    if h < patch or w < patch:
        raise CommandError(f"--image {args.image!r}: {w}x{h} is smaller than the model's {patch}x{patch} patch")
    H = args.height or h
    if args.width < w:
        raise CommandError(f"--width {args.width}: smaller than the photo's width {w}")
    if H < h:
        raise CommandError(f"--height {H}: smaller than the photo's height {h}")
    check_lpips(args.lpips if not args.record else "random")
    device = parse_device(args.device)
    prepare_out_dir(args.out)

    from ..models import infinity_inversion as inv

    G = weights_arg.load(weights, device)
    x0 = {"left": 0, "right": args.width - w, "centre": (args.width - w) // 2}[args.place]
    y0 = (H - h) // 2
    canvas = inv.plan_canvas(G, H, args.width, [(y0, x0, h, w)])
    seams = []
    if x0 + w < args.width:
        seams.append((x0 + w, inside_columns(x0, w)))
    if x0 > 0:
        seams.append((x0, inside_columns(x0, w)))
    run_edit(args, G, canvas, [target], [os.path.abspath(args.image)], "outpaint", seams, device)
    return 0
