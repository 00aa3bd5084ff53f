"""`anyres-fast generate`: render images of any size (or a zoom window of a virtual canvas) to PNG.

    anyres-fast generate --weights DIR --seeds 0-3 --size 2048 --truncation 0.7 --out out/
    anyres-fast generate --weights random:64 --seeds 0 --size 300 --zoom 100,40,128 --out out/

--weights is a directory written by Generator.save_pretrained, a training run folder (its newest
G_ema), or `random:P[,key=value...]` for a
randomly initialised model of patch size P (keys: config=T|R, channel_base, channel_max, z_dim, w_dim,
seed), handy for demos and smoke tests without trained weights. Its magnitude statistics are set from a
batch of latents so the images have full contrast.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

RANDOM_KEYS = {"config": str, "channel_base": int, "channel_max": int, "z_dim": int, "w_dim": int, "seed": int}


def parse_seeds(text: str) -> list:
    """'0-3' -> [0, 1, 2, 3]; '1,5,7-8' -> [1, 5, 7, 8]."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad seed list {text!r} (use e.g. 0-3 or 1,5,7-9)") from None
    if not seeds or any(s < 0 or s >= 2 ** 32 for s in seeds):
        raise argparse.ArgumentTypeError(f"bad seed list {text!r}: seeds must be in [0, 2^32)")
    return seeds


def parse_zoom(text: str) -> tuple:
    """'x0,y0,w' or 'x0,y0,w,h' (canvas pixels)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --zoom {text!r}: expected x0,y0,w or x0,y0,w,h") from None
    if len(vals) not in (3, 4) or any(v < 1 for v in vals[2:]):
        raise argparse.ArgumentTypeError(f"bad --zoom {text!r}: expected x0,y0,w or x0,y0,w,h with w, h >= 1")
    return vals


def load_generator(spec: str, device: torch.device):
    """A Generator from a save_pretrained directory or from `random:P[,key=value...]`."""
    from .models.anyres import Generator

    if spec.startswith("random:"):
        fields = spec[len("random:"):].split(",")
        try:
            resolution = int(fields[0])
        except ValueError:
            raise ValueError(f"--weights {spec!r}: expected random:P with an integer patch size P") from None
        kwargs = {}
        for item in fields[1:]:
            key, sep, value = item.partition("=")
            if not sep or key not in RANDOM_KEYS:
                raise ValueError(f"--weights {spec!r}: unknown option {item!r}; allowed: {sorted(RANDOM_KEYS)}")
            try:
                kwargs[key] = RANDOM_KEYS[key](value)
            except ValueError:
                raise ValueError(f"--weights {spec!r}: {key} must be {RANDOM_KEYS[key].__name__}") from None
        seed = kwargs.pop("seed", 0)
        torch.manual_seed(seed)
        G = Generator(resolution=resolution, **kwargs)
        G.calibrate_magnitudes_(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(seed)))
        return G.eval().to(device)
    if os.path.isdir(os.path.join(spec, "checkpoints")):   # a training run folder: its newest G_ema
        from .train.anyres_recipe import generator_from_run
        return generator_from_run(spec, map_location=device)
    if not os.path.isdir(spec):
        raise FileNotFoundError(f"--weights {spec!r}: not a directory (expected one written by "
                                f"Generator.save_pretrained, or random:P)")
    return Generator.from_pretrained(spec, map_location=device).eval()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", choices=("anyres", "infinity"), default="anyres",
                        help="generator family (default anyres; infinity: see its options below)")
    parser.add_argument("--weights", required=True, help="save_pretrained directory, or random:P[,key=value...]")
    parser.add_argument("--seeds", type=parse_seeds, default=[0], help="latent seeds, e.g. 0-3 or 1,5,7 (default 0)")
    parser.add_argument("--size", type=int, default=None, help="canvas size N in pixels (N >= patch size; anyres)")
    parser.add_argument("--zoom", type=parse_zoom, default=None,
                        help="render only the window x0,y0,w[,h] (pixels) of the N x N canvas")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi (default 1)")
    parser.add_argument("--truncation-cutoff", type=int, default=None, help="truncate only the first k ws")
    parser.add_argument("--class", dest="class_idx", type=int, default=None, help="class index (conditional models)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--tile-batch", type=int, default=8, help="tiles per forward pass (default 8)")
    parser.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default="fp16",
                        help="dtype of StyleGAN3's high-resolution layers on CUDA (default fp16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from . import generate_infinity
    generate_infinity.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from PIL import Image

    from .cli_args import CommandError, parse_device

    if args.model == "infinity":
        from . import generate_infinity
        return generate_infinity.main(args)
    if args.size is None:
        raise CommandError("--size is required for --model anyres")
    try:
        device = parse_device(args.device)
        G = load_generator(args.weights, device)
        if args.zoom is None and args.size < G.img_resolution:
            raise ValueError(f"--size {args.size} is smaller than the patch size {G.img_resolution}")
        if args.tile_batch < 1:
            raise ValueError("--tile-batch must be >= 1")
        c = None
        if G.c_dim > 0:
            if args.class_idx is None or not 0 <= args.class_idx < G.c_dim:
                raise ValueError(f"this model is conditional: pass --class in [0, {G.c_dim})")
            c = torch.zeros(1, G.c_dim)
            c[0, args.class_idx] = 1
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"anyres-fast generate: {exc}", file=sys.stderr)
        return 2

    os.makedirs(args.out, exist_ok=True)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    for seed in args.seeds:
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        img = G.render(z, args.size, c=c, window=args.zoom, tile_batch=args.tile_batch, device=device,
                       truncation_psi=args.truncation, truncation_cutoff=args.truncation_cutoff,
                       force_fp32=half is None, half_dtype=half or torch.float16,
                       progress=not args.no_progress, out_dtype=torch.uint8)
        name = f"seed{seed:04d}_{args.size}"
        if args.zoom is not None:
            name += "_zoom" + "_".join(str(v) for v in args.zoom)
        path = os.path.join(args.out, name + ".png")
        tmp = path + ".tmp"
        Image.fromarray(img[0].permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
        os.replace(tmp, path)
        print(f"wrote {path} ({img.shape[3]}x{img.shape[2]})")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="anyres-fast generate")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
