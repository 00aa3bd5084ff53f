"""What `anyres-fast outpaint` and `anyres-fast inbetween` share: their common options, reading the
photos, the LPIPS check, and inverting + rendering + reporting (docs/infinitygan_training.md)."""
from __future__ import annotations

import argparse
import math
import os

from ..utils.files import save_image, write_json
from ..utils.images import to_rgb8
from . import weights as weights_arg
from .args import CommandError, nonnegative_int, parse_seeds, positive_int


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both editing commands take (weights, inversion settings, seeds, output)."""
    parser.add_argument("--weights", required=True,
                        help=f"{weights_arg.FORMS}; an InfinityGAN generator (random:preset=tiny is the small "
                             f"untrained --tiny model)")
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
            arr = np.asarray(to_rgb8(im), dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CommandError(f"{flag} {path!r}: cannot read the image ({exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1


def check_lpips(mode: str) -> None:
    """CommandError naming the missing file when --lpips alex has no AlexNet weights on this machine."""
    from ..models import perceptual

    try:
        perceptual.check_weights(mode)
    except perceptual.LPIPSWeightsMissing as exc:
        raise CommandError(f"--lpips {mode}: {exc}") from None


def check_inversion_memory(G, canvas, device, lpips_net) -> None:
    """Refuse at once, with the numbers, a photo whose inversion cannot fit the available memory.

    Raises:
        CommandError: the estimate (infinity_inversion.estimate_inversion_bytes) exceeds what is free.
    """
    from ..models import infinity_inversion as inv
    from ..models import tiling

    need = inv.estimate_inversion_bytes(G, canvas, device, lpips_net)
    have = tiling.available_host_memory() if device.type != "cuda" else tiling.available_device_memory(device)
    if have is None or need <= have:
        return
    px = sum(r.height * r.width for r in canvas.regions)
    factor = math.sqrt(have / need) * 0.9
    sizes = ", ".join(f"{r.width}x{r.height}" for r in canvas.regions)
    raise CommandError(f"inverting the photo(s) ({sizes}, {px / 1e6:.1f} MP) needs an estimated "
                       f"{tiling.format_bytes(need)} on {device}, {tiling.format_bytes(have)} is available; downscale the "
                       f"photo(s) by about {factor:.2f} (each side) or use a device with more memory")


def run_edit(args, G, canvas, targets, sources: list, prefix: str, seam_cols: list, device) -> dict:
    """Invert (or load --record), render every seed, write PNGs, the record and report.json.

    Returns:
        The report dict.
    """
    from ..models import infinity_inversion as inv

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
        lpips_net = inv.build_lpips(settings.lpips, device) if settings.lpips_weight > 0 else None
        check_inversion_memory(G, canvas, device, lpips_net)
        record = inv.invert(G, canvas, targets, settings, device=device, progress=not args.no_progress,
                            lpips_net=lpips_net)
        record.sources = sources
    record_path = record.save(os.path.join(args.out, "inversion.pt"))
    report = {"record": record_path, "size": [canvas.width, canvas.height], "cyclic": bool(canvas.ring),
              "inversion_psnr": record.psnr, "outputs": []}
    for seed in args.seeds:
        image = inv.render(G, record, seed, device=device)
        path = save_image(os.path.join(args.out, f"{prefix}_seed{seed:04d}.png"), image)
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
    write_json(os.path.join(args.out, "report.json"), report, sort_keys=False)
    return report


def inside_columns(left: int, width: int, count: int = 5) -> list:
    """A few column indices strictly inside [left, left + width) (for the seam comparison)."""
    if width < 3:
        return []
    step = max(1, (width - 2) // (count + 1))
    return sorted({left + 1 + step * (i + 1) for i in range(count) if 1 + step * (i + 1) < width})
