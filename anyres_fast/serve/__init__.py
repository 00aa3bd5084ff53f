"""Deep-zoom serving and tiled output of the generators (`anyres-fast serve`, `generate --format`).

- `tiles`: Deep Zoom pyramid geometry and batched tile rendering (AnyresTiles, InfinityTiles).
- `worker`: the one render thread that owns the device and batches concurrent requests.
- `cache`: the on-disk tile cache.
- `app`: the aiohttp application (page, viewer files, DZI descriptor, tiles).
- `viewer`: where the OpenSeadragon files live.
- `pyramid`: streaming writers of Deep Zoom folders and tiled pyramidal BigTIFF files.

Imports models, never cli. docs/serve.md describes the protocol, the cache and the file formats.
"""
