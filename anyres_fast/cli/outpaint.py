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
import json
import os

from .args import CommandError, nonnegative_int, positive_int
from .weights import generator_config, load_generator

PLACES = ("left", "right", "centre")


# ----------------------------------------------------------------------------------------------------
# Shared with `anyres-fast inbetween`

def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both editing commands take (weights, inversion settings, seeds, output)."""
    from .generate import parse_seeds

    parser.add_argument("--weights", required=True,
                        help="InfinityGAN run folder, save_pretrained folder, or random[:key=value,...] (untrained; "
                             "random:preset=tiny is the small --tiny model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2, 3],
                        help="seeds of the new content, one output each (default 0-3)")
    parser.add_argument("--steps", type=positive_int, default=500, help="inversion steps (default 500)")
    parser.add_argument("--pixel", choices=("l2", "l1"), default="l2", help="pixel loss (default l2)")
    parser.add_argument("--lpips", choices=("alex", "random"), default="alex",
                        help="LPIPS backbone: alex (torchvision weights in the torch cache) or random")
    parser.add_argument("--init-seed", type=nonnegative_int, default=0, help="seed of the inversion's start (default 0)")
    parser.add_argument("--record", default=None,
                        help="an inversion.pt from an earlier run with the same photo(s), size and placement: "
                             "skip the inversion")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_image(path: str, flag: str):
    """(1, 3, H, W) float32 in [-1, 1] of an image file.

    Raises:
        CommandError: missing or unreadable file.
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise CommandError(f"{flag} {path!r}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CommandError(f"{flag} {path!r}: cannot read the image ({exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1


def check_lpips(mode: str) -> None:
    from ..models.infinity_inversion import ALEXNET_FILE, alexnet_weights_path

    if mode == "alex" and not os.path.isfile(alexnet_weights_path()):
        raise CommandError(f"--lpips alex: the LPIPS AlexNet backbone weights {ALEXNET_FILE} are not in the torch "
                           f"cache folder {os.path.dirname(alexnet_weights_path())} (copy the file there or set "
                           f"TORCH_HOME; --lpips random uses a random backbone)")


def run_edit(args, G, canvas, targets, sources: list, prefix: str, seam_cols: list, device) -> dict:
    """Invert (or load --record), render every seed, write PNGs, the record and report.json.

    Returns:
        The report dict.
    """
    from ..models import infinity_inversion as inv
    from ..train.infinity_recipe import save_png

    if args.record:
        try:
            record = inv.InversionRecord.load(args.record)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CommandError(f"--record {args.record!r}: cannot read it ({exc})") from None
        if record.generator != G.config.to_dict():
            raise CommandError(f"--record {args.record!r}: made with another generator")
        if record.canvas.to_dict() != canvas.to_dict():
            raise CommandError(f"--record {args.record!r}: made for another output size or placement "
                               f"(invert again without --record)")
    else:
        settings = inv.InversionSettings(steps=args.steps, pixel=args.pixel, lpips=args.lpips,
                                         init_seed=args.init_seed)
        record = inv.invert(G, canvas, targets, settings, device=device, progress=not args.no_progress)
        record.sources = sources
    record_path = record.save(os.path.join(args.out, "inversion.pt"))
    report = {"record": record_path, "size": [canvas.width, canvas.height], "inversion_psnr": record.psnr,
              "outputs": []}
    for seed in args.seeds:
        image = inv.render(G, record, seed, device=device)
        path = save_png(image, os.path.join(args.out, f"{prefix}_seed{seed:04d}.png"))
        entry = {"seed": seed, "path": path, "psnr": []}
        for r, t in zip(canvas.regions, targets):
            entry["psnr"].append(inv.psnr(image[..., r.top:r.top + r.height, r.left:r.left + r.width], t))
        entry["seams"] = [inv.seam_stats(image, col, inside) for col, inside in seam_cols]
        report["outputs"].append(entry)
        line = f"{path}: {canvas.width}x{canvas.height}, known region PSNR " + \
            ", ".join(f"{p:.2f}" for p in entry["psnr"]) + " dB"
        if entry["seams"]:
            line += ", seam |diff| " + ", ".join(f"{s['seam']:.2f} (inside {s['inside_mean']:.2f})"
                                                  for s in entry["seams"])
        print(line)
    tmp = os.path.join(args.out, f"report.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, os.path.join(args.out, "report.json"))
    return report


def inside_columns(left: int, width: int, count: int = 5) -> list:
    """A few column indices strictly inside [left, left + width) (for the seam comparison)."""
    if width < 3:
        return []
    step = max(1, (width - 2) // (count + 1))
    return sorted({left + 1 + step * (i + 1) for i in range(count) if 1 + step * (i + 1) < width})


# ----------------------------------------------------------------------------------------------------

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
    gcfg = generator_config(args.weights)
    patch = gcfg["patch_size"]
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

    G = load_generator(args.weights, device)
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
