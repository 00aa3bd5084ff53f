"""`anyres-fast plot RUN`: losses and metrics against kimg, and the sample grids over time, as PNGs.

    anyres-fast plot RUN [--out DIR] [--metrics FILE ...] [--frames 8]

Reads RUN/stats.jsonl (written by training), RUN/metrics.jsonl (written by `anyres-fast metrics
--weights RUN`, or the files given with --metrics) and RUN/samples/step*.png, and writes
losses.png, metrics.png and samples.png to RUN/plots (or --out). Needs matplotlib.
"""
from __future__ import annotations

import argparse
import os

from .args import CommandError, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="training run folder (stats.jsonl, samples/, metrics.jsonl)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default RUN/plots)")
    parser.add_argument("--metrics", action="append", default=None, metavar="FILE",
                        help="metrics.jsonl file(s) to plot (repeatable; default RUN/metrics.jsonl)")
    parser.add_argument("--frames", type=positive_int, default=8, help="most sample grids in the timeline (default 8)")


def main(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.run):
        raise CommandError(f"{args.run!r}: not a folder (expected a training run folder)")
    for path in args.metrics or []:
        if not os.path.isfile(path):
            raise CommandError(f"--metrics {path!r}: no such file")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CommandError(f"--out {args.out!r}: exists and is not a folder")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError("plot needs matplotlib (pip install matplotlib)") from None
    from ..train.plots import plot_run

    written = plot_run(args.run, args.out, args.metrics, args.frames)
    if not written:
        raise CommandError(f"{args.run!r}: nothing to plot (no stats.jsonl lines, metrics.jsonl lines or "
                           f"samples/step*.png)")
    for path in written:
        print(path)
    return 0
