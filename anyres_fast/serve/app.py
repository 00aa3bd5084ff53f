"""The aiohttp application of `anyres-fast serve` (docs/serve.md).

Routes:
    GET /                                       the viewer page (OpenSeadragon and the controls)
    GET /viewer/...                             OpenSeadragon's files, from the local cache
    GET /api/info                               pyramid geometry, model family, tile format
    GET /api/stats                              render and cache counters
    GET /dzi/{settings}.dzi                     the Deep Zoom descriptor of one pyramid
    GET /dzi/{settings}_files/{level}/{col}_{row}.{png|jpg}   its tiles (the DZI convention)
    GET /tiles/{settings}/{level}/{col}_{row}.{png|jpg}       the same tiles (used by the page)

A tile outside the pyramid (or a malformed settings string) is 404; a render that fails is 500 with
one logged line. Tiles come from the disk cache or the render worker; PNG/JPEG encoding and cache
writes run on a small thread pool so the render thread only renders.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
from typing import Optional

from .tiles import TileKey, TileNotFound, dzi_xml

log = logging.getLogger("anyres_fast.serve")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


def encode_tile(array, fmt: str, quality: int = 90) -> bytes:
    """(h, w, C) uint8 -> PNG or JPEG bytes.

    Args:
        array: the tile; fmt: "png" or "jpg"; quality: JPEG quality.
    Returns:
        the encoded file.
    """
    from PIL import Image
    img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_app(source, worker, cache, *, viewer_dir: str, fmt: str = "png"):
    """Build the web application.

    Args:
        source: AnyresTiles or InfinityTiles. worker: RenderWorker over it. cache: TileCache.
        viewer_dir: folder with openseadragon.min.js and images/. fmt: tile format the page uses.
    Returns:
        aiohttp.web.Application.
    """
    from aiohttp import web

    counters = {"abandoned": 0}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="anyres-encode")

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never a traceback page: one line in the log, a plain 500
            log.error("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
            return web.Response(status=500, text="internal error\n")

    async def index(request):
        return web.FileResponse(os.path.join(STATIC_DIR, "index.html"))

    async def static(request):
        name = request.match_info["name"]
        if name not in ("viewer.js",):
            raise web.HTTPNotFound()
        return web.FileResponse(os.path.join(STATIC_DIR, name))

    async def viewer_file(request):
        rel = os.path.normpath(request.match_info["path"])
        path = os.path.join(viewer_dir, rel)
        if rel.startswith("..") or os.path.isabs(rel) or not os.path.isfile(path):
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def info(request):
        return web.json_response({**source.info(), "format": fmt})

    async def stats(request):
        return web.json_response({**worker.stats(), **counters, "cache_hits": cache.hits,
                                  "cache_misses": cache.misses})

    def canonical(text: str) -> str:
        try:
            return source.canonical(text)
        except TileNotFound:
            raise web.HTTPNotFound(text=f"bad settings {text!r}\n") from None

    async def dzi(request):
        canonical(request.match_info["settings"])
        return web.Response(text=dzi_xml(source.width, source.height, source.tile, fmt),
                            content_type="application/xml")

    async def tile(request):
        try:
            return await _tile(request)
        except asyncio.CancelledError:      # the client went away before its answer
            counters["abandoned"] += 1
            raise

    async def _tile(request):
        m = request.match_info
        settings, tfmt = canonical(m["settings"]), m["fmt"].replace("jpeg", "jpg")
        key = TileKey(settings, int(m["level"]), int(m["col"]), int(m["row"]))
        try:
            source.check(key)
        except TileNotFound as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(pool, cache.get, settings, key.level, key.col, key.row, tfmt)
        if data is None:
            fut = worker.submit(key)
            try:
                # Cancelling this await (the client went away) cancels fut: the worker then drops it.
                array = await asyncio.wrap_future(fut)
            except asyncio.CancelledError:
                raise
            except Exception:   # already logged by the worker, once per failed batch
                return web.Response(status=500, text="tile render failed\n")
            data = await loop.run_in_executor(pool, encode_tile, array, tfmt)
            loop.run_in_executor(pool, cache.put, settings, key.level, key.col, key.row, tfmt, data)
        return web.Response(body=data, content_type=_TYPES[tfmt])

    app = web.Application(middlewares=[errors])
    tile_path = r"{level:\d+}/{col:\d+}_{row:\d+}.{fmt:png|jpg|jpeg}"
    app.add_routes([
        web.get("/", index),
        web.get("/static/{name}", static),
        web.get("/viewer/{path:.+}", viewer_file),
        web.get("/api/info", info),
        web.get("/api/stats", stats),
        web.get(r"/dzi/{settings:[^/]+}.dzi", dzi),
        web.get(r"/dzi/{settings:[^/]+}_files/" + tile_path, tile),
        web.get(r"/tiles/{settings:[^/]+}/" + tile_path, tile),
    ])

    async def shutdown(app):
        pool.shutdown(wait=False)
    app.on_cleanup.append(shutdown)
    return app


async def serve_forever(app, sock, *, ready=None, stop: Optional[asyncio.Event] = None) -> None:
    """Serve app on an already bound, listening socket until `stop` is set (or forever).

    Args:
        app: from make_app. sock: bound socket. ready: called once listening.
        stop: an asyncio.Event that ends the server.
    """
    from aiohttp import web
    # handler_cancellation: a request whose client disconnects is cancelled, which lets the render
    # worker drop its tile before rendering it.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    if ready is not None:
        ready()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
