"""Tiled rendering of canvases of any size in constant device memory (shared by the model families).

A model supplies `render_tiles(sample, tx, ty) -> (k, C, tile, tile)` for a batch of k tiles (image
index and tile offsets inside the window, int64 tensors on the render device); `render_canvas` plans the
tiles, batches
them, overlaps device work with the copy to host, crops the tiles that stick out of the window and
assembles the result in a host (CPU) tensor. Only `tile_batch` tiles live on the device at a time.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Optional, Sequence

import torch

from ..ops import _dispatch

RenderTiles = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def parse_window(window) -> tuple:
    """Normalises a render window.

    Args:
        window: (x0, y0, w) or (x0, y0, w, h), ints (anything with __index__) in canvas pixels.
    Returns:
        (x0, y0, w, h) ints; x0, y0 may be negative; w = h for the 3-value form.
    Raises:
        TypeError: not a sequence, or values that are not ints.
        ValueError: not 3 or 4 values, or w, h < 1.
    """
    try:
        vals = [v for v in window]
    except TypeError:
        raise TypeError(f"render: window must be (x0, y0, w) or (x0, y0, w, h), got {window!r}") from None
    if len(vals) not in (3, 4):
        raise ValueError(f"render: window must be (x0, y0, w) or (x0, y0, w, h), got {window!r}")
    if len(vals) == 3:
        vals.append(vals[2])
    out = []
    for name, v in zip(("x0", "y0", "w", "h"), vals):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"render: window {name} must be an int (pixels), got {v!r}")
        out.append(v.__index__())
    if out[2] < 1 or out[3] < 1:
        raise ValueError(f"render: window width and height must be >= 1, got {out[2]}x{out[3]}")
    return tuple(out)


def tile_offsets(extent: int, tile: int) -> list:
    """Tile starts along one axis.

    Args:
        extent: length to cover (pixels); tile: tile size.
    Returns:
        list [0, tile, 2·tile, ...] covering [0, extent); the last tile may stick out (it is cropped).
    """
    return list(range(0, extent, tile))


def to_output(tiles: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Converts model output (about [-1, 1]) to the render's output dtype, on its device.

    Args:
        tiles: float tensor of any shape.
        out_dtype: torch.uint8 (x·127.5 + 128, clamped to [0, 255]) or a float dtype (values kept).
    Returns:
        Tensor like tiles in out_dtype.
    Raises:
        ValueError: any other out_dtype.
    """
    if out_dtype == torch.uint8:
        return (tiles * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if out_dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        return tiles.to(out_dtype)
    raise ValueError(f"render: out_dtype must be uint8 or a float dtype, got {out_dtype}")


class MemoryLimitError(MemoryError):
    """A render would need more host or device memory than is available (checked before allocating)."""


def available_host_memory() -> Optional[int]:
    """Bytes the kernel reports as available to new allocations (MemAvailable), or None if unknown."""
    return _dispatch.available_memory(torch.device("cpu"))


def available_device_memory(device: torch.device) -> Optional[int]:
    """Free bytes on a CUDA device (torch.cuda.mem_get_info), None for other devices."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0]


def format_bytes(n: float) -> str:
    """`1.5 GiB` or `12.0 MiB`, for messages about memory."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_render_memory(*, num_images: int, width: int, height: int, tile: int, channels: int,
                        tile_batch: int, device, out_dtype: torch.dtype = torch.float32,
                        device_bytes_per_tile: int = 0, extra_host_bytes: int = 0) -> dict:
    """Estimate the memory of a render and stop before allocating when it does not fit.

    Args:
        num_images, width, height, tile, channels, tile_batch, out_dtype: as in render_canvas.
        device: the render device (on the CPU, tile activations come out of host memory too).
        device_bytes_per_tile: activation bytes of one tile in flight (model specific estimate).
        extra_host_bytes: further host memory the caller needs (e.g. a copy for the image encoder).

    Returns:
        {"host": bytes, "device": bytes} estimated.

    Raises:
        MemoryLimitError: an estimate exceeds the available host or device memory; the message gives
            the estimate and the limit.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    elsize = torch.empty((), dtype=out_dtype).element_size()
    canvas = num_images * channels * width * height * elsize
    in_flight = tile_batch * device_bytes_per_tile
    staging = 2 * tile_batch * channels * tile * tile * elsize
    host = canvas + extra_host_bytes + staging + (in_flight if device.type != "cuda" else 0)
    what = f"a {width}x{height} canvas ({num_images} image(s), {channels} channels, {str(out_dtype).replace('torch.', '')})"
    limit = available_host_memory()
    if limit is not None and host > limit:
        raise MemoryLimitError(f"{what} needs an estimated {format_bytes(host)} of host memory, {format_bytes(limit)} is available; "
                               f"render a smaller size or a window of the canvas")
    dev = in_flight if device.type == "cuda" else 0
    limit = available_device_memory(device)
    if limit is not None and dev > limit:
        raise MemoryLimitError(f"{what}: {tile_batch} tile(s) in flight need an estimated {format_bytes(dev)} on {device}, "
                               f"{format_bytes(limit)} is free; use a smaller tile_batch")
    return {"host": host, "device": dev}


def fitting_tile_batch(*, tile_batch: int, **memory) -> int:
    """The largest tile batch <= `tile_batch` whose render fits the available memory: on a busy machine
    a render goes on with fewer tiles in flight instead of stopping (halving down to 1).

    Args:
        tile_batch: the requested tiles per pass.
        memory: the other arguments of `check_render_memory`.

    Returns:
        The tile batch to use.

    Raises:
        MemoryLimitError: even one tile in flight does not fit (the canvas itself is too large, or one
            tile's activations exceed the device); the message is that of `check_render_memory`.
    """
    batch = tile_batch
    while True:
        try:
            check_render_memory(tile_batch=batch, **memory)
            return batch
        except MemoryLimitError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)


def render_canvas(render_tiles: RenderTiles, *, num_images: int, width: int, height: int, tile: int,
                  channels: int, tile_batch: int = 8, device=None, progress: bool = True,
                  out_dtype: torch.dtype = torch.float32, device_bytes_per_tile: int = 0) -> torch.Tensor:
    """Assemble (num_images, channels, height, width) on the host from tile x tile tiles (see module doc).

    Args:
        render_tiles: (sample, tx, ty) int64 tensors of length k -> (k, channels, tile, tile) tensor.
        num_images, width, height: output size; tile: tile side; channels: image channels.
        tile_batch: tiles per render_tiles call (device memory grows with it, not with the canvas).
        device: where render_tiles computes (indices are placed there); progress: tqdm bar.
        out_dtype: uint8 (x * 127.5 + 128, clamped) or a float dtype.
        device_bytes_per_tile: estimated activation bytes of one tile, for the memory check.

    Returns:
        CPU tensor (num_images, channels, height, width) of out_dtype.

    Raises:
        ValueError: bad tile_batch or out_dtype. MemoryLimitError: the estimate exceeds available memory
            even with one tile per pass (a smaller tile batch is used, with a warning, when that fits).
        RuntimeError: render_tiles returned the wrong shape.
    """
    if isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1:
        raise ValueError(f"render: tile_batch must be a positive int, got {tile_batch!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    to_output(torch.zeros(1), out_dtype)        # reject a bad out_dtype before allocating
    fitted = fitting_tile_batch(num_images=num_images, width=width, height=height, tile=tile, channels=channels,
                                tile_batch=tile_batch, device=device, out_dtype=out_dtype,
                                device_bytes_per_tile=device_bytes_per_tile)
    if fitted < tile_batch:
        warnings.warn(f"render: {fitted} tile(s) per pass instead of {tile_batch}, to fit the available memory",
                      stacklevel=2)
        tile_batch = fitted
    items = [(b, tx, ty) for b in range(num_images) for ty in tile_offsets(height, tile)
             for tx in tile_offsets(width, tile)]
    if shard_world()[1] > 1:
        return _render_canvas_sharded(render_tiles, items, num_images=num_images, width=width, height=height,
                                      tile=tile, channels=channels, tile_batch=tile_batch, device=device,
                                      progress=progress, out_dtype=out_dtype)
    out = torch.empty(num_images, channels, height, width, dtype=out_dtype)
    use_pinned = device.type == "cuda"
    staging = []            # two reusable pinned host buffers: copy one while the device fills the other

    def place(chunk, host, event):
        if event is not None:
            event.synchronize()
        for i, (b, tx, ty) in enumerate(chunk):
            h, w = min(tile, height - ty), min(tile, width - tx)
            out[b, :, ty:ty + h, tx:tx + w] = host[i, :, :h, :w]

    # All tile indices go to the device once: per-chunk host-to-device copies would stall the stream.
    index = torch.tensor(items, dtype=torch.int64).reshape(-1, 3).to(device)

    from tqdm.auto import tqdm
    pending = None
    with tqdm(total=len(items), unit="tile", disable=not progress, desc=f"render {width}x{height}") as bar:
        for n, start in enumerate(range(0, len(items), tile_batch)):
            chunk = items[start:start + tile_batch]
            idx = index[start:start + len(chunk)]
            tiles = render_tiles(idx[:, 0], idx[:, 1], idx[:, 2])
            if tiles.shape != (len(chunk), channels, tile, tile):
                raise RuntimeError(f"render: render_tiles returned shape {tuple(tiles.shape)}, expected "
                                   f"{(len(chunk), channels, tile, tile)}")
            tiles = to_output(tiles, out_dtype)
            if use_pinned:
                if len(staging) < 2:
                    staging.append(torch.empty((tile_batch, channels, tile, tile), dtype=out_dtype,
                                               pin_memory=True))
                host = staging[n % 2][:len(chunk)]
                host.copy_(tiles, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            else:
                host, event = tiles.cpu(), None
            if pending is not None:
                place(*pending)
                bar.update(len(pending[0]))
            pending = (chunk, host, event)
        if pending is not None:
            place(*pending)
            bar.update(len(pending[0]))
    return out


# ----------------------------------------------------------------------------------------------------
# Several processes (torchrun): tiles are dealt out to the ranks, rank 0 assembles the image.

_SHARDING = {"enabled": False}


@contextlib.contextmanager
def sharding(enabled: bool = True):
    """Shard `render_canvas` / `stream_chunks` (so Generator.render and InfinityGenerator.generate) across
    the ranks of torch.distributed inside the block; rank 0 assembles and returns the image, the other
    ranks get None.

    Off by default: sharding is a collective, every rank must make the same call, and a render that
    only one rank runs (a preview during DDP training) would wait forever for the others. Under
    torchrun wrap the calls every rank makes in `with sharding():` (`anyres-fast generate --model
    infinity` does)."""
    saved = _SHARDING["enabled"]
    _SHARDING["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _SHARDING["enabled"] = saved


def shard_world() -> tuple:
    """(rank, world size) when rendering is sharded (inside `sharding()`, torch.distributed initialised,
    > 1 rank), else (0, 1)."""
    import torch.distributed as dist
    if not _SHARDING["enabled"] or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def stream_chunks(num_items: int, chunk: int, compute: Callable[[range], torch.Tensor],
                  place: Callable[[range, torch.Tensor], None], *, device, progress: bool = True,
                  desc: str = "render", unit: str = "patch") -> bool:
    """Compute items in chunks on `device` and hand each chunk's result, on the host, to `place`.

    Args:
        num_items: number of items; chunk: items per compute call (>= 1).
        compute(r): device tensor (len(r), ...) for the item indices in range r; every item must have the
            same shape (...).
        place(r, host): receives the host (CPU) tensor of chunk r; called on rank 0 only when sharded.
        device: where compute runs (results are copied to the host; on CUDA through pinned memory).
    Returns:
        True on the rank that received every chunk (always in one process; rank 0 when sharded).
    Raises:
        ValueError: chunk < 1.

    Sharded (see `shard_world`): chunk j is computed by rank j % world; in each round rank 0 gathers
    one chunk from every rank (padded to `chunk` items; NCCL on CUDA, gloo on CPU), so device and
    host memory per rank stay constant."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"render: chunk must be a positive int, got {chunk!r}")
    device = torch.device(device)
    ranges = [range(s, min(s + chunk, num_items)) for s in range(0, num_items, chunk)]
    rank, world = shard_world()
    from tqdm.auto import tqdm
    if world == 1:
        staging, pending = [], None     # CUDA: two pinned buffers, one copied while the device fills the other
        with tqdm(total=num_items, unit=unit, disable=not progress, desc=desc) as bar:
            for n, r in enumerate(ranges):
                t = compute(r)
                if device.type == "cuda":
                    if len(staging) < 2:
                        staging.append(torch.empty((chunk,) + tuple(t.shape[1:]), dtype=t.dtype, pin_memory=True))
                    host = staging[n % 2][:t.shape[0]]
                    host.copy_(t, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                else:
                    host, event = t.cpu(), None
                if pending is not None:
                    _finish(place, bar, *pending)
                pending = (r, host, event)
            if pending is not None:
                _finish(place, bar, *pending)
        return True
    import torch.distributed as dist
    rounds = -(-len(ranges) // world)
    like = None
    with tqdm(total=num_items, unit=unit, disable=not progress or rank != 0, desc=desc) as bar:
        for k in range(rounds):
            j = k * world + rank
            mine = compute(ranges[j]) if j < len(ranges) else None
            if like is None:
                # Every rank needs the item shape: rank 0 always has a chunk in round 0.
                shape = torch.tensor(list(mine.shape[1:]) if mine is not None else [], dtype=torch.int64)
                meta = [shape.numel()] + shape.tolist() + [0] * (8 - shape.numel())
                meta_t = torch.tensor(meta, dtype=torch.int64, device=_comm_device(device))
                dist.broadcast(meta_t, src=0)
                meta = meta_t.tolist()
                like = (tuple(meta[1:1 + meta[0]]), torch.float32 if mine is None else mine.dtype)
            buf = torch.zeros((chunk,) + like[0], dtype=like[1], device=_comm_device(device))
            if mine is not None:
                buf[:mine.shape[0]] = mine
            gathered = [torch.empty_like(buf) for _ in range(world)] if rank == 0 else None
            dist.gather(buf, gathered, dst=0)
            if rank == 0:
                for q in range(world):
                    jj = k * world + q
                    if jj < len(ranges):
                        r = ranges[jj]
                        place(r, gathered[q][:len(r)].cpu())
                        bar.update(len(r))
    return rank == 0


def _finish(place, bar, r, host, event):
    if event is not None:
        event.synchronize()
    place(r, host)
    bar.update(len(r))


def _comm_device(device: torch.device) -> torch.device:
    """NCCL moves device tensors; gloo host tensors."""
    import torch.distributed as dist
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def _render_canvas_sharded(render_tiles: RenderTiles, items: Sequence, *, num_images: int, width: int,
                           height: int, tile: int, channels: int, tile_batch: int, device, progress: bool,
                           out_dtype: torch.dtype) -> Optional[torch.Tensor]:
    """render_canvas over several ranks: rank 0 returns the image, the other ranks None."""
    rank, _ = shard_world()
    out = torch.empty(num_images, channels, height, width, dtype=out_dtype) if rank == 0 else None
    index = torch.tensor(items, dtype=torch.int64).reshape(-1, 3).to(device)

    def compute(r):
        idx = index[r.start:r.stop]
        tiles = render_tiles(idx[:, 0], idx[:, 1], idx[:, 2])
        if tiles.shape != (len(r), channels, tile, tile):
            raise RuntimeError(f"render: render_tiles returned shape {tuple(tiles.shape)}, expected "
                               f"{(len(r), channels, tile, tile)}")
        return to_output(tiles, out_dtype)

    def place(r, host):
        for i, n in enumerate(r):
            b, tx, ty = items[n]
            h, w = min(tile, height - ty), min(tile, width - tx)
            out[b, :, ty:ty + h, tx:tx + w] = host[i, :, :h, :w]

    stream_chunks(len(items), tile_batch, compute, place, device=device, progress=progress,
                  desc=f"render {width}x{height}", unit="tile")
    return out
