"""`anyres-fast generate`: render images of any size (or a zoom window of a virtual canvas) to PNG.

    anyres-fast generate --weights DIR --seeds 0-3 --size 2048 --truncation 0.7 --out out/
    anyres-fast generate --weights random:64,channel_base=2048,channel_max=64 --seeds 0 --size 300 \
        --zoom 100,40,128 --out out/

--weights is a directory written by Generator.save_pretrained, a training run folder (its newest
G_ema), a published StyleGAN3 / anyres-gan network pickle FILE.pkl (read without executing anything
from it; docs/published_models.md), or `random:P[,key=value...]` for a
randomly initialised model of patch size P (keys: config=T|R, channel_base, channel_max, z_dim, w_dim,
seed), handy for demos and smoke tests without trained weights (narrow widths like the example above
render in seconds on a CPU; the full config-T width takes minutes there). Its magnitude statistics are set
from a seeded batch of latents so the images have full contrast.
"""
from __future__ import annotations

import argparse
import os

import torch

RANDOM_KEYS = {"config": str, "channel_base": int, "channel_max": int, "z_dim": int, "w_dim": int, "seed": int}


def parse_seeds(text: str) -> list:
    """'0-3' -> [0, 1, 2, 3]; '1,5,7-8' -> [1, 5, 7, 8] (argparse type; raises ArgumentTypeError)."""
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
    if not seeds:
        raise argparse.ArgumentTypeError(f"bad seed list {text!r}: no seeds (use e.g. 0-3 or 1,5,7-9)")
    if any(s < 0 or s >= 2 ** 32 for s in seeds):
        raise argparse.ArgumentTypeError(f"bad seed list {text!r}: seeds must be in [0, 2^32)")
    return seeds


def parse_zoom(text: str) -> tuple:
    """'x0,y0,w' or 'x0,y0,w,h' (canvas pixels) -> tuple of ints (argparse type)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --zoom {text!r}: expected x0,y0,w or x0,y0,w,h") from None
    if len(vals) not in (3, 4) or any(v < 1 for v in vals[2:]):
        raise argparse.ArgumentTypeError(f"bad --zoom {text!r}: expected x0,y0,w or x0,y0,w,h with w, h >= 1")
    return vals


def parse_random_spec(spec: str):
    """`random:P[,key=value...]` -> (GeneratorConfig, seed), checked without building a model.

    Raises:
        CommandError: not an integer P, an unknown key, a value of the wrong type or out of range.
    """
    from .args import CommandError
    from ..models.anyres import GeneratorConfig

    fields = spec[len("random:"):].split(",")
    try:
        resolution = int(fields[0])
    except ValueError:
        raise CommandError(f"--weights {spec!r}: expected random:P with an integer patch size P") from None
    kwargs = {}
    for item in fields[1:]:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in RANDOM_KEYS:
            raise CommandError(f"--weights {spec!r}: unknown option {item!r}; allowed: {', '.join(RANDOM_KEYS)}")
        try:
            kwargs[key] = RANDOM_KEYS[key](value.strip())
        except ValueError:
            raise CommandError(f"--weights {spec!r}: {key} must be {RANDOM_KEYS[key].__name__}, "
                               f"got {value!r}") from None
    seed = kwargs.pop("seed", 0)
    if not 0 <= seed < 2 ** 63:
        raise CommandError(f"--weights {spec!r}: seed must be in [0, 2^63)")
    try:
        return GeneratorConfig(resolution=resolution, **kwargs), seed
    except (TypeError, ValueError) as exc:
        raise CommandError(f"--weights {spec!r}: {exc}") from None


def resolve_weights(spec: str):
    """The checked config of --weights: (GeneratorConfig, seed for random weights or None).

    Raises:
        CommandError: a bad random: spec, a missing folder or files, an unreadable or bad config.json.
    """
    from .args import CommandError
    from ..models.anyres import read_pretrained_config

    if spec.startswith("random:"):
        return parse_random_spec(spec)
    from ..models.published import cached_network_pickle, is_network_pickle
    if is_network_pickle(spec):   # a published StyleGAN3 / anyres-gan pickle, read without running it
        try:
            return cached_network_pickle(spec, with_training_networks=False).config, None
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(f"--weights: {exc}") from None
    if not os.path.isdir(spec):
        raise CommandError(f"--weights {spec!r}: not a folder (expected one written by "
                           f"Generator.save_pretrained, a network pickle FILE.pkl, or random:P)")
    try:
        if _is_run_folder(spec):
            from ..models.anyres import GeneratorConfig
            from ..train.anyres_recipe import run_generator_config
            return GeneratorConfig.from_dict(run_generator_config(spec)), None
        return read_pretrained_config(spec), None
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise CommandError(f"--weights {spec!r}: {_strip(exc)}") from None


def _is_run_folder(spec: str) -> bool:
    """A folder written by `anyres-fast train` (it has checkpoints/), rather than by save_pretrained."""
    return os.path.isdir(os.path.join(spec, "checkpoints")) and not os.path.isfile(os.path.join(spec, "config.json"))


def _strip(exc: Exception) -> str:
    return str(exc).replace("Generator.from_pretrained: ", "")


def load_generator(spec: str, device: torch.device, resolved=None):
    """A Generator (eval mode, on device) from a save_pretrained folder or `random:P[,key=value...]`.

    Random weights are seeded, and their magnitude statistics (and w_avg) are set from a seeded batch
    of latents (Generator.calibrate_magnitudes_) so the images have full contrast.

    Args:
        spec: the --weights value.
        device: target device.
        resolved: resolve_weights(spec), when the caller already has it.

    Raises:
        CommandError: any problem with the spec or the files (one line, names the file).
    """
    from .args import CommandError
    from ..models.anyres import Generator

    cfg, seed = resolve_weights(spec) if resolved is None else resolved
    if seed is not None:
        torch.manual_seed(seed)
        G = Generator(cfg)
        G.calibrate_magnitudes_(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(seed)))
        return G.eval().to(device)
    from ..models.published import cached_network_pickle, is_network_pickle
    if is_network_pickle(spec):
        try:
            return cached_network_pickle(spec, with_training_networks=False).G_ema.to(device).eval()
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(f"--weights: {exc}") from None
    try:
        if _is_run_folder(spec):   # a training run folder: its newest G_ema
            from ..train.anyres_recipe import generator_from_run
            return generator_from_run(spec, map_location=device)
        return Generator.from_pretrained(spec, map_location=device).eval()
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise CommandError(f"--weights {spec!r}: {_strip(exc)}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .args import finite_float, nonnegative_int, positive_int

    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", choices=("anyres", "infinity"), default="anyres",
                        help="generator family (default anyres; infinity: see its options below)")
    parser.add_argument("--weights", required=True,
                        help="save_pretrained directory, run folder, network pickle FILE.pkl, or random:P[,key=value...]")
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
    from . import generate_infinity
    generate_infinity.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Render one PNG per seed.

    Args:
        args: the parsed options (see add_arguments).

    Returns:
        0 on success.

    Raises:
        CommandError: any argument or file problem, found before the model is built (the weights file
            itself is checked while loading it).
    """
    from PIL import Image

    from ..models import tiling as _render
    from .args import CommandError, check_extension_environment, parse_device, prepare_out_dir
    from ..models.anyres import estimate_tile_bytes, layer_schedule

    if args.model == "infinity":
        from . import generate_infinity
        return generate_infinity.main(args)
    if args.size is None:
        raise CommandError("--size is required for --model anyres")
    check_extension_environment()
    device = parse_device(args.device)
    resolved = resolve_weights(args.weights)
    cfg = resolved[0]
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
    num_ws = cfg.num_layers + 2
    if args.truncation_cutoff is not None and args.truncation_cutoff > num_ws:
        raise CommandError(f"--truncation-cutoff {args.truncation_cutoff}: this model has {num_ws} ws "
                           f"(use 0..{num_ws})")
    if cfg.c_dim == 0 and args.class_idx is not None:
        raise CommandError(f"--class {args.class_idx}: this model is unconditional (it has no classes)")
    if cfg.c_dim > 0 and (args.class_idx is None or args.class_idx >= cfg.c_dim):
        got = "missing" if args.class_idx is None else f"got {args.class_idx}"
        raise CommandError(f"--class: this model is conditional, pass --class in [0, {cfg.c_dim}) ({got})")
    half = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    try:
        # The uint8 canvas plus Pillow's height x width x channels copy of it, and the tiles in flight.
        _render.check_render_memory(
            num_images=1, width=width, height=height, tile=p, channels=cfg.img_channels,
            tile_batch=args.tile_batch, device=device, out_dtype=torch.uint8,
            device_bytes_per_tile=estimate_tile_bytes(layer_schedule(cfg), half is not None and device.type == "cuda"),
            extra_host_bytes=width * height * cfg.img_channels)
    except _render.MemoryLimitError as exc:
        flag = f"--size {args.size}" if args.zoom is None else f"--zoom {','.join(map(str, args.zoom))}"
        raise CommandError(f"{flag}: {exc}") from None
    out = prepare_out_dir(args.out)

    G = load_generator(args.weights, device, resolved)
    c = None
    if G.c_dim > 0:
        c = torch.zeros(1, G.c_dim)
        c[0, args.class_idx] = 1
    for seed in args.seeds:
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        img = G.render(z, args.size, c=c, window=args.zoom, tile_batch=args.tile_batch, device=device,
                       truncation_psi=args.truncation, truncation_cutoff=args.truncation_cutoff,
                       force_fp32=half is None, half_dtype=half or torch.float16,
                       progress=not args.no_progress, out_dtype=torch.uint8)
        name = f"seed{seed:04d}_{args.size}"
        if args.zoom is not None:
            name += "_zoom" + "_".join(str(v) for v in args.zoom)
        path = os.path.join(out, name + ".png")
        tmp = path + ".tmp"
        Image.fromarray(img[0].permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
        os.replace(tmp, path)
        print(f"wrote {path} ({img.shape[3]}x{img.shape[2]})")
    return 0
