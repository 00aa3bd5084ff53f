"""`anyres-fast serve`: a deep-zoom web viewer whose tiles are rendered when first looked at.

    anyres-fast serve --weights DIR --max-size 65536                       # http://127.0.0.1:8000/
    anyres-fast serve --weights random:64,channel_base=256,channel_max=8 --max-size 4096 --port 8080
    anyres-fast serve --model infinity --weights random:preset=tiny --width 1048576 --height 384

--model anyres: a square canvas of side --max-size (the patch size times a power of two); every
Deep Zoom level at or above the patch size is a true render of the canvas at that level's size.
--model infinity: a --width x --height strip of the unbounded canvas at native scale with --zoom-out
levels of box-averaged tiles below it. Tiles are cached on disk (--cache), rendered in batches on one
thread that owns the device. The page needs OpenSeadragon, installed by scripts/setup_env.sh.
Protocol and cache: docs/serve.md.
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .args import nonnegative_int, positive_int

    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    from . import weights as weights_arg

    parser.add_argument("--weights", required=True, help=weights_arg.FORMS)
    parser.add_argument("--model", choices=weights_arg.FAMILIES, default=None,
                        help="generator family (default: the one --weights names)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=nonnegative_int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-size", type=positive_int, default=65536,
                        help="anyres: canvas side of the deepest level, patch size x 2^k (default 65536)")
    parser.add_argument("--width", type=positive_int, default=2 ** 20,
                        help="infinity: strip width in pixels (default 2^20)")
    parser.add_argument("--height", type=positive_int, default=None,
                        help="infinity: strip height in pixels (default 4 patches); a panorama model: the "
                             "panorama page's strip height (default 2 patches)")
    parser.add_argument("--zoom-out", type=nonnegative_int, default=3,
                        help="infinity: zoomed-out levels below native scale (default 3: down to 1/8)")
    parser.add_argument("--tile-size", type=positive_int, default=256, help="Deep Zoom tile side (default 256)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="tile format of the page (default png)")
    parser.add_argument("--cache", default=None,
                        help="tile cache folder (default ~/.cache/anyres_fast/tiles); --no-cache disables it")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the tile cache")
    parser.add_argument("--max-batch", type=positive_int, default=32, help="most tiles per render batch (default 32)")
    parser.add_argument("--max-patches", type=positive_int, default=None,
                        help="patches per generator call (default anyres 64, infinity 16)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default="fp16",
                        help="half-precision layers on CUDA (default fp16)")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port.

    Args:
        host: address (IPv4 or IPv6 literal, or a name); port: 0 for any free port.
    Returns:
        the bound, listening socket.
    Raises:
        CommandError: the port is in use, the address is not this machine's, or permission is denied.
    """
    from .args import CommandError
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CommandError(f"--host {host!r}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"--port {port}: {host}:{port} is already in use (another server?); "
                               f"choose another --port") from None
        raise CommandError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.setblocking(False)
    return sock


def _cache_root(args) -> str:
    if args.cache is not None:
        return args.cache
    root = os.environ.get("ANYRES_FAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "anyres_fast")
    return os.path.join(root, "tiles")


def check_tile_size(tile: int) -> None:
    """Tiles of 16 .. 4096 pixels. Raises CommandError otherwise."""
    from .args import CommandError
    if not 16 <= tile <= 4096:
        raise CommandError(f"--tile-size {tile}: must be in 16..4096")


def main(args: argparse.Namespace) -> int:
    """Check everything, load the generator, then serve until interrupted.

    Args:
        args: the parsed options.
    Returns:
        0 after Ctrl-C.
    Raises:
        CommandError: bad options, missing weights or viewer files, a busy port (all before serving).
    """
    import asyncio
    import logging

    from ..serve.app import PanoramaStrips, make_app, serve_forever
    from ..serve.cache import TileCache, hash_weights
    from ..serve.tiles import AnyresTiles, InfinityTiles
    from ..serve.viewer import find_pannellum, find_viewer
    from ..serve.worker import RenderWorker
    from . import weights as weights_arg
    from .args import CommandError, check_extension_environment, parse_device

    check_tile_size(args.tile_size)
    weights = weights_arg.resolve(args.weights, args.model, needed_by=f"--model {args.model}")
    if weights.family == "anyres":
        p = weights.config.resolution
        k = args.max_size // p
        if args.max_size % p or k & (k - 1):
            raise CommandError(f"--max-size {args.max_size}: must be the patch size {p} times a power of two "
                               f"(e.g. {p * 2 ** max(0, (max(k, 1)).bit_length() - 1)})")
    panorama_model = weights.family == "anyres" and getattr(weights.config, "panorama", False)
    try:
        viewer = find_viewer()
        pannellum = find_pannellum() if panorama_model else None
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    check_extension_environment()
    device = parse_device(args.device)
    sock = bind_socket(args.host, args.port)
    try:
        half = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
        G = weights_arg.load(weights, device)
        if weights.family == "anyres":
            source = AnyresTiles(G, args.max_size, args.tile_size, max_patches=args.max_patches or 64,
                                 force_fp32=half is None or device.type != "cuda", half_dtype=half or torch.float16)
        else:
            dtype = (half or torch.float32) if device.type == "cuda" else torch.float32
            try:
                source = InfinityTiles(G, args.width, args.height, args.tile_size, zoom_out=args.zoom_out,
                                       max_patches=args.max_patches or 16, dtype=dtype)
            except ValueError as exc:
                raise CommandError(f"--width/--height/--zoom-out: {exc}") from None
        namespace = "|".join(map(str, (hash_weights(args.weights, weights.files()), source.family, source.width, source.height,
                                       source.tile, getattr(source, "top", ""), args.precision, device.type, "v1")))
        cache = TileCache(None if args.no_cache else _cache_root(args), namespace)
        worker = RenderWorker(source, max_batch=args.max_batch)
        strips = None
        if panorama_model:
            strips = PanoramaStrips(G, args.height or 2 * G.img_resolution, device=device,
                                    force_fp32=half is None or device.type != "cuda", half_dtype=half or torch.float16)
            try:
                strips.size(strips.default_height)
            except ValueError as exc:
                raise CommandError(f"--height {strips.default_height}: {exc}") from None
        app = make_app(source, worker, cache, viewer_dir=viewer, fmt=args.format, panorama=strips,
                       pannellum_dir=pannellum)
        logging.basicConfig(level=logging.INFO, format="anyres-fast serve: %(message)s", stream=sys.stderr)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host

        def ready():
            what = (f"panorama strips (360 degrees, height {strips.default_height})" if strips is not None else
                    f"{source.family} {source.width}x{source.height} ({source.levels} levels, tiles {source.tile})")
            print(f"serving {what} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
        try:
            asyncio.run(serve_forever(app, sock, ready=ready))
        except KeyboardInterrupt:
            print("anyres-fast serve: stopped", file=sys.stderr)
        finally:
            worker.close()
    finally:
        sock.close()
    return 0
