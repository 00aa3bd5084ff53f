"""`anyres-fast inbetween`: join two real photos by generating what lies between them (InfinityGAN).

    anyres-fast inbetween --weights runs/inf --left a.png --right b.png --width 1280 --out out/

Both photos are inverted jointly into one canvas of the requested width (one global latent and W+
styles, local latents and noise per position), the left photo at the left edge and the right one at
the right edge, each centred vertically in a canvas as tall as the taller photo. Each seed renders the
whole canvas once: both photos come out as inverted and the middle is new content joining them.
Writes inbetween_seed<N>.png (exactly width x height), inversion.pt and report.json (PSNR of both
ends, seam continuity). Options as for `anyres-fast outpaint`; see docs/infinitygan_training.md.
"""
from __future__ import annotations

import argparse
import os

from .args import CommandError, positive_int
from . import weights as weights_arg
from .editing import add_common_arguments, check_lpips, inside_columns, read_image, run_edit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--left", required=True, help="photo at the left end")
    parser.add_argument("--right", required=True, help="photo at the right end")
    parser.add_argument("--width", type=positive_int, required=True,
                        help="output width in pixels (>= the two photos' widths together)")
    add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Validate, invert both photos, render one PNG per seed.

    Raises:
        CommandError: unreadable image, image smaller than the patch, width below the two photos', bad
            weights, missing LPIPS weights.
    """
    from .args import parse_device, prepare_out_dir

    a = read_image(args.left, "--left")
    b = read_image(args.right, "--right")
    weights = weights_arg.resolve(args.weights, "infinity")
    patch = weights.config.patch_size
    for img, flag, path in ((a, "--left", args.left), (b, "--right", args.right)):
        if img.shape[2] < patch or img.shape[3] < patch:
            raise CommandError(f"{flag} {path!r}: {img.shape[3]}x{img.shape[2]} is smaller than the model's "
                               f"{patch}x{patch} patch")
    wa, wb = a.shape[3], b.shape[3]
    if args.width < wa + wb:
        raise CommandError(f"--width {args.width}: smaller than the two photos side by side ({wa} + {wb} = {wa + wb})")
    check_lpips(args.lpips if not args.record else "random")
    device = parse_device(args.device)
    prepare_out_dir(args.out)

    from ..models import infinity_inversion as inv

    G = weights_arg.load(weights, device)
    H = max(a.shape[2], b.shape[2])
    W = args.width
    boxes = [((H - a.shape[2]) // 2, 0, a.shape[2], wa), ((H - b.shape[2]) // 2, W - wb, b.shape[2], wb)]
    canvas = inv.plan_canvas(G, H, W, boxes)
    seams = [(wa, inside_columns(0, wa)), (W - wb, inside_columns(W - wb, wb))]
    if W == wa + wb:
        seams = seams[:1]
    run_edit(args, G, canvas, [a, b], [os.path.abspath(args.left), os.path.abspath(args.right)], "inbetween",
             seams, device)
    return 0
