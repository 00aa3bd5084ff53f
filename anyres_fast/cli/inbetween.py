"""`anyres-fast inbetween`: join two real photos by generating what lies between them (InfinityGAN).

    anyres-fast inbetween --weights runs/inf --left a.png --right b.png --width 1280 --out out/
    anyres-fast inbetween --weights runs/inf --cyclic --left a.png --width 2224 --out out/

Both photos are inverted jointly into one canvas of the requested width (one global latent and W+
styles, local latents and noise per position), the left photo at the left edge and the right one at
the right edge, each centred vertically in a canvas as tall as the taller photo. Each seed renders the
whole canvas once: both photos come out as inverted and the middle is new content joining them.
Writes inbetween_seed<N>.png (exactly width x height), inversion.pt and report.json (PSNR of both
ends, seam continuity). Options as for `anyres-fast outpaint`; see docs/infinitygan_training.md.

With --cyclic there is one photo: the canvas is a ring --width pixels around (a multiple of 2^depth, at
least the photo's width), the photo sits at its left edge and, across the ring's seam, also closes it
from the right, so the output is a 360-degree panorama whose last column continues into its first
(the paper's cyclic panoramas; docs/infinitygan.md, "Cyclic canvas"). The report's seams are the
photo's right edge and the ring's seam (last column | first column).
"""
from __future__ import annotations

import argparse
import os

from .args import CommandError, positive_int
from . import weights as weights_arg
from .editing import add_common_arguments, check_lpips, inside_columns, read_image, run_edit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--left", required=True, help="photo at the left end")
    parser.add_argument("--right", default=None, help="photo at the right end (not with --cyclic)")
    parser.add_argument("--width", type=positive_int, required=True,
                        help="output width in pixels (>= the two photos' widths together; with --cyclic >= the "
                             "photo's and a multiple of 2^depth)")
    parser.add_argument("--cyclic", action="store_true",
                        help="close a ring with --left alone: a 360-degree panorama of --width pixels whose right "
                             "end continues into the photo at its left end")
    add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Validate, invert both photos, render one PNG per seed.

    Raises:
        CommandError: unreadable image, image smaller than the patch, width below the two photos', bad
            weights, missing LPIPS weights.
    """
    from .args import parse_device, prepare_out_dir

    if args.cyclic:
        if args.right is not None:
            raise CommandError("--cyclic closes the ring with the --left photo on both sides; drop --right")
        return _cyclic(args)
    if args.right is None:
        raise CommandError("--right is required (or --cyclic, to close a ring with the --left photo alone)")
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


def _cyclic(args: argparse.Namespace) -> int:
    """`inbetween --cyclic --left A`: invert A into a ring of --width pixels, render one PNG per seed."""
    from .args import parse_device, prepare_out_dir
    from ..models import infinity_canvas

    a = read_image(args.left, "--left")
    weights = weights_arg.resolve(args.weights, "infinity")
    cfg = weights.config
    if a.shape[2] < cfg.patch_size or a.shape[3] < cfg.patch_size:
        raise CommandError(f"--left {args.left!r}: {a.shape[3]}x{a.shape[2]} is smaller than the model's "
                           f"{cfg.patch_size}x{cfg.patch_size} patch")
    H, wa, W = a.shape[2], a.shape[3], args.width
    if W < wa:
        raise CommandError(f"--cyclic --width {W}: smaller than the --left photo's width {wa}")
    try:
        infinity_canvas.ring_columns(W, 2 ** cfg.depth, cfg.patch_size, "--cyclic --width")
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    check_lpips(args.lpips if not args.record else "random")
    device = parse_device(args.device)
    prepare_out_dir(args.out)

    from ..models import infinity_inversion as inv

    G = weights_arg.load(weights, device)
    canvas = inv.plan_canvas(G, H, W, [(0, 0, H, wa)], cyclic=True)
    inside = inside_columns(0, wa)
    # The photo's right edge into the new content, and the ring's seam: column W - 1 into column 0
    # (seam_stats reads column -1 for seam column 0). A photo as wide as the ring has only the latter.
    seams = ([(wa, inside)] if wa < W else []) + [(0, inside)]
    run_edit(args, G, canvas, [a], [os.path.abspath(args.left)], "inbetween", seams, device)
    return 0
