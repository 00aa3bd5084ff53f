"""The aiohttp application of `anyres-fast serve` (docs/serve.md).

Routes:
    GET /                                       the viewer page (OpenSeadragon and the controls)
    GET /viewer/...                             OpenSeadragon's files, from the local cache
    GET /api/info                               pyramid geometry, model family, tile format
    GET /api/stats                              render and cache counters
    GET /dzi/{settings}.dzi                     the Deep Zoom descriptor of one pyramid
    GET /dzi/{settings}_files/{level}/{col}_{row}.{png|jpg}   its tiles (the DZI convention)
    GET /tiles/{settings}/{level}/{col}_{row}.{png|jpg}       the same tiles (used by the page)
    GET /panorama                               (panorama models) the 360-degree viewer page (pannellum)
    GET /pannellum/...                          pannellum's files, from the local cache
    GET /api/panorama?height=H                  the strip's size and angles at height H
    GET /api/panorama/{seed}.{png|jpg}?height=H the whole 360-degree strip of one seed

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


class PanoramaStrips:
    """The 360-degree strips of a panorama generator for the panorama page: rendered on request, one at a
    time (a strip is a whole render), the last few kept in memory.

    Args:
        G: a Generator with config.panorama. default_height: the page's strip height (pixels).
        max_height: the largest height served. render_kwargs: passed to G.render_panorama.
    """

    def __init__(self, G, default_height: int, max_height: int = 2048, keep: int = 4, **render_kwargs):
        import threading
        self.G, self.default_height, self.max_height, self.keep = G, default_height, max_height, keep
        self.render_kwargs = render_kwargs
        self._lock = threading.Lock()
        self._done = {}

    def size(self, height: int) -> tuple:
        """(width, height) of the strip at `height`. Raises ValueError outside [p, max_height]."""
        p = self.G.img_resolution
        if not p <= height <= self.max_height:
            raise ValueError(f"height must be in [{p}, {self.max_height}], got {height}")
        return self.G.panorama_width(height), height

    def strip(self, seed: int, height: int):
        """(height, width, C) uint8 array of seed's whole strip (blocking; call from a thread)."""
        import torch
        self.size(height)
        key = (seed, height)
        with self._lock:
            if key not in self._done:
                z = torch.randn(1, self.G.z_dim, generator=torch.Generator().manual_seed(seed))
                img = self.G.render_panorama(z, height, out_dtype=torch.uint8, progress=False, **self.render_kwargs)
                self._done[key] = img[0].permute(1, 2, 0).numpy()
                while len(self._done) > self.keep:
                    self._done.pop(next(iter(self._done)))
            return self._done[key]


def make_app(source, worker, cache, *, viewer_dir: str, fmt: str = "png", panorama: Optional[PanoramaStrips] = None,
             pannellum_dir: Optional[str] = None):
    """Build the web application.

    Args:
        source: AnyresTiles or InfinityTiles. worker: RenderWorker over it. cache: TileCache.
        viewer_dir: folder with openseadragon.min.js and images/. fmt: tile format the page uses.
        panorama: for a panorama generator, its strips (adds the /panorama page, which `/` leads to).
        pannellum_dir: folder with pannellum.js and pannellum.css (with panorama).
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
        if panorama is not None:
            raise web.HTTPFound("/panorama")
        return web.FileResponse(os.path.join(STATIC_DIR, "index.html"))

    def _height(request) -> int:
        try:
            height = int(request.query.get("height", panorama.default_height))
            panorama.size(height)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"bad height: {exc}\n") from None
        return height

    async def panorama_page(request):
        return web.FileResponse(os.path.join(STATIC_DIR, "panorama.html"))

    async def pannellum_file(request):
        name = request.match_info["name"]
        if name not in ("pannellum.js", "pannellum.css"):
            raise web.HTTPNotFound()
        return web.FileResponse(os.path.join(pannellum_dir, name))

    async def panorama_info(request):
        width, height = panorama.size(_height(request))
        return web.json_response({"width": width, "height": height, "haov": 360.0, "vaov": 360.0 * height / width,
                                  "fov": panorama.G.config.fov})

    async def panorama_strip(request):
        height, kind = _height(request), request.match_info["fmt"]
        seed = int(request.match_info["seed"])
        loop = asyncio.get_running_loop()
        array = await loop.run_in_executor(pool, panorama.strip, seed, height)
        body = await loop.run_in_executor(pool, encode_tile, array, "png" if kind == "png" else "jpg", 92)
        return web.Response(body=body, content_type=_TYPES["png" if kind == "png" else "jpg"])

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
    if panorama is not None:
        app.add_routes([
            web.get("/panorama", panorama_page),
            web.get("/pannellum/{name}", pannellum_file),
            web.get("/api/panorama", panorama_info),
            web.get(r"/api/panorama/{seed:\d+}.{fmt:png|jpg}", panorama_strip),
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
