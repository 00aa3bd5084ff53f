"""`anyres-fast prepare SRC OUT`: the prepared form of an HR set, whose JPEGs the patch loader decodes
region by region (docs/data.md, "Prepared HR sets").

    anyres-fast prepare SRC OUT [--workers N] [--min-size P]

SRC is a folder or a .zip of images; OUT a new folder (outside SRC) with the same names: every usable
JPEG losslessly transcoded by jpegtran (libjpeg-turbo) to one restart marker per MCU plus its
`<name>.mcu.npy` marker index, other images copied. Train with `--hr-data OUT`. Bad files are left
out and named. Needs the `jpegtran` program (Debian/Ubuntu: apt-get install libjpeg-turbo-progs).
"""
from __future__ import annotations

import argparse
import os

from .args import CommandError, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="HR images: a folder (searched recursively) or a .zip")
    parser.add_argument("out", help="output folder (created; must lie outside SRC)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes for listing and transcoding (default: every CPU)")
    parser.add_argument("--min-size", type=positive_int, default=1,
                        help="skip images whose short side is below this (default 1; training uses p)")


def main(args: argparse.Namespace) -> int:
    from ..data import ImageSource
    from ..data.prepare import jpegtran, prepare_source

    if jpegtran() is None:
        raise CommandError("prepare needs the jpegtran program (Debian/Ubuntu: apt-get install libjpeg-turbo-progs)")
    if not (os.path.isdir(args.src) or os.path.isfile(args.src)):
        raise CommandError(f"{args.src!r}: no such folder or .zip file")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CommandError(f"{args.out!r}: exists and is not a folder")
    src_abs, out_abs = os.path.abspath(args.src), os.path.abspath(args.out)
    if out_abs == src_abs or out_abs.startswith(src_abs + os.sep):
        raise CommandError(f"{args.out!r}: the prepared folder must lie outside {args.src!r}")
    try:
        source = ImageSource(args.src, min_size=args.min_size, list_workers=args.workers)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    info = prepare_source(source, args.out, workers=args.workers)
    print(f"prepared {args.out}: {info['jpegs']} JPEGs transcoded, {info['copied']} other images copied, "
          f"{info['bytes_in'] / 1e6:.1f} MB -> {info['bytes_out'] / 1e6:.1f} MB")
    for bad in source.listing.bad:
        print(f"skipped {bad.name}: {bad.reason}")
    return 0
