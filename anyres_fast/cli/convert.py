"""`anyres-fast convert`: a published network pickle to our save format, executing nothing from it.

    anyres-fast convert mountain_pretrained_final.pkl --out weights/mountain
    anyres-fast generate --weights weights/mountain --seeds 0 --size 4096 --out out/

Reads StyleGAN3 (configs T and R) and anyres-gan (global and patch mode) network pickles with a
restricted unpickler (anyres_fast.models.published; docs/published_models.md) and writes the
generator (G_ema, or --which G) with Generator.save_pretrained: config.json + model.safetensors. The folder
then loads with Generator.from_pretrained and `--weights DIR` everywhere, without the pickle.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pickle", metavar="FILE.pkl", help="a StyleGAN3 / anyres-gan network pickle")
    parser.add_argument("--out", required=True, help="folder to write config.json and the weights into")
    parser.add_argument("--which", choices=("G_ema", "G"), default="G_ema",
                        help="which generator of the snapshot to write (default G_ema, the one to render with)")


def main(args: argparse.Namespace) -> int:
    """Convert the pickle and print one line on what was written.

    Args:
        args: `pickle` (the file), `out` (the folder), `which` (G_ema or G).

    Returns:
        0 on success.

    Raises:
        CommandError: a missing, truncated, unsafe or unsupported pickle, or an unusable --out.
    """
    from .args import CommandError, prepare_out_dir
    from ..models.published import load_network_pickle

    try:
        nets = load_network_pickle(args.pickle, with_training_networks=args.which == "G")
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    G = nets.G_ema if args.which == "G_ema" else nets.G
    if G is None:
        raise CommandError(f"--which G: {args.pickle} holds no G (only G_ema)")
    out = prepare_out_dir(args.out)
    try:
        G.save_pretrained(out)
    except NotADirectoryError as exc:
        raise CommandError(f"--out: {exc}") from None
    cfg = nets.config
    print(f"{args.pickle}: {nets.kind}, {cfg.resolution}px patches, {sum(p.numel() for p in G.parameters()):,} "
          f"parameters -> {out} ({args.which})")
    return 0
