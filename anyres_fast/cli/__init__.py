"""The `anyres-fast` command line.

    anyres-fast doctor [--build] [--gpu]  versions, GPU, extension status, build log; kernel self-checks
    anyres-fast demo [--out DIR]     the default end-to-end run (see README)
    anyres-fast generate ...         render images from a generator (anyres-fast generate -h)
    anyres-fast train ...            train the any-resolution GAN (anyres-fast train -h)
    anyres-fast prepare SRC OUT      an HR set whose JPEGs the patch loader decodes region by region
    anyres-fast metrics ...          fid@R, pfid, scaleinv-fid@k, kid, pr@R, ppr, eqt-int, ... (metrics -h)
    anyres-fast plot RUN             losses, metrics and sample grids of a run as PNGs
    anyres-fast outpaint ...         extend a photo to any width (InfinityGAN)
    anyres-fast inbetween ...        join two photos by generating what lies between them
    anyres-fast convert FILE.pkl --out DIR   a published network pickle to our save format
    anyres-fast serve ...            a deep-zoom web viewer, tiles rendered on demand (docs/serve.md)

Every command lives in its own module with `add_arguments(parser)` and `main(args) -> int`, listed in
COMMANDS. User mistakes raise `anyres_fast.cli.args.CommandError` and end here as one line on stderr
with exit code 2; `--debug` (before or after the command name) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import traceback

from .args import CommandError

# name -> (module, one-line help). Modules are imported when the parser is built.
COMMANDS = {
    "doctor": ("anyres_fast.cli.doctor", "environment, GPU and CUDA extension status"),
    "demo": ("anyres_fast.cli.demo", "train both phases on real photos for a few steps, then render (CPU: minutes)"),
    "generate": ("anyres_fast.cli.generate", "render images from a generator at any resolution"),
    "train": ("anyres_fast.cli.train", "train the any-resolution GAN (phases fixed and patch; torchrun for several GPUs)"),
    "prepare": ("anyres_fast.cli.prepare", "a lossless copy of an HR set that the patch loader decodes region by region "
                                           "(needs jpegtran)"),
    "metrics": ("anyres_fast.cli.metrics", "FID at any resolution, patch-FID, ScaleInv-FID, KID, precision/recall, "
                                           "equivariance"),
    "plot": ("anyres_fast.cli.plot", "losses, metrics and sample grids of a training run as PNGs"),
    "outpaint": ("anyres_fast.cli.outpaint", "extend a real photo to any width with InfinityGAN (inversion included)"),
    "inbetween": ("anyres_fast.cli.inbetween", "join two real photos by generating the space between them (InfinityGAN)"),
    "convert": ("anyres_fast.cli.convert", "a StyleGAN3 / anyres-gan network pickle to our save format (runs nothing from it)"),
    "serve": ("anyres_fast.cli.serve", "a deep-zoom web viewer that renders tiles when they are first looked at"),
}

# An option value that starts with '-' but is a number or a list of numbers (`--zoom -10,0,64`):
# argparse would take it for an option, so it is joined to its option as `--zoom=-10,0,64`.
_NEGATIVE_VALUE = re.compile(r"^-\d[\d.,;:eE+\-]*$")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`anyres-fast generate: argument --size: ...`), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    parser = _Parser(prog="anyres-fast", description=__doc__.split("\n\nEvery")[0],
                                     parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, parents=[common], description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


def _join_negative_values(parser: argparse.ArgumentParser, argv: list) -> list:
    takes_value = set()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.nargs is None and not isinstance(
                    action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                takes_value.update(action.option_strings)
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok in takes_value and i + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[i + 1]):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


# Write failures the user fixes on their side (space, quota, permissions), not bugs of ours.
_USER_FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv=None) -> int:
    """Run one `anyres-fast` command.

    Args:
        argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
        The process exit code: 0 on success, 2 for a user mistake (one line on stderr), 1 for an
        internal error, 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(parser, argv))
    debug = getattr(args, "debug", False)
    prog = f"anyres-fast {args.command}"
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: one line, the traceback on request
        if debug:
            traceback.print_exc()
        if isinstance(exc, OSError) and exc.errno in _USER_FIXABLE_ERRNOS:
            # a full disk, a quota, a read-only or forbidden folder: our writers name the path
            print(f"{prog}: {exc.strerror if exc.strerror and os.sep in exc.strerror else exc}", file=sys.stderr)
            return 2
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
