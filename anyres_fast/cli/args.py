"""What every `anyres-fast` command shares: the user-error type and argument validators.

A command raises `CommandError` for anything the user can fix (a bad value, a missing or unreadable
file, a device that does not exist). `anyres_fast.cli.main` prints it as one line
`anyres-fast <command>: <message>` and exits with code 2; `--debug` shows the traceback instead.
Validators here are used as argparse `type=` callables or called directly at the start of a command,
before any model is built.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Optional


class CommandError(Exception):
    """A mistake the user can fix; the message names the argument or file and what was expected."""


def parse_device(text: Optional[str], flag: str = "--device"):
    """A usable torch.device from `cpu`, `cuda` or `cuda:N` (None: cuda when available, else cpu).

    Args:
        text: the user's value, or None for the default.
        flag: the option name used in messages.

    Returns:
        torch.device that exists on this machine.

    Raises:
        CommandError: unparsable, a `meta`/other non-compute device, or a GPU that is not present.
    """
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CommandError(f"{flag} {text!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise CommandError(f"{flag} {text!r}: only cpu and cuda devices can run this command")
    if not torch.cuda.is_available():
        raise CommandError(f"{flag} {text!r}: no CUDA GPU is available on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise CommandError(f"{flag} {text!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    return device


def prepare_out_dir(path: str, flag: str = "--out") -> str:
    """Create the output folder (and parents) or explain why it cannot be.

    Args:
        path: folder to create; an existing folder is fine.
        flag: the option name used in messages.

    Returns:
        The path.

    Raises:
        CommandError: the path is an existing file, or cannot be created or written.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"{flag} {path!r}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"{flag} {path!r}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK):
        raise CommandError(f"{flag} {path!r}: the folder is not writable")
    return path


def _number(kind, check, expected: str):
    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
        return value
    parse.__name__ = expected  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
finite_float = _number(float, math.isfinite, "a finite number")
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
nonnegative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def check_extension_environment() -> None:
    """Raise CommandError when ANYRES_FAST_EXT or ANYRES_FAST_ARCH is malformed (before any work)."""
    from ..ops import _extension

    try:
        _extension.check_environment()
    except ValueError as exc:
        raise CommandError(f"{exc} (see `anyres-fast doctor`)") from None


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


def check_file_format(args: argparse.Namespace, patch: Optional[int] = None) -> bool:
    """Whether --format asks for a tiled file (dzi, tiff); checks --tile-size for it.

    Args:
        args: parsed options (format, tile_size).
        patch: the any-resolution patch size p (tiles must be multiples of it), or None.

    Returns:
        True for dzi / tiff.

    Raises:
        CommandError: a tile size outside 16..4096, or not a multiple of p.
    """
    if args.format == "png":
        return False
    if not 16 <= args.tile_size <= 4096:
        raise CommandError(f"--tile-size {args.tile_size}: must be in 16..4096")
    if patch is not None and args.tile_size % patch:
        raise CommandError(f"--tile-size {args.tile_size}: must be a multiple of the patch size {patch} "
                           f"(tiles on the image's patch grid), e.g. {max(1, args.tile_size // patch) * patch}")
    return True
