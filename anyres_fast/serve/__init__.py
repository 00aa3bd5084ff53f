"""Deep-zoom serving and tiled output of the generators (`anyres-fast serve`, `generate --format`).

- `tiles`: Deep Zoom pyramid geometry and batched tile rendering (AnyresTiles, InfinityTiles).
- `worker`: the one render thread that owns the device and batches concurrent requests.
- `cache`: the on-disk tile cache.
- `app`: the aiohttp application (page, viewer files, DZI descriptor, tiles).
- `viewer`: where the OpenSeadragon files live.
- `export`: tile-by-tile writers of Deep Zoom pyramids and tiled pyramidal BigTIFF files (`generate --format`).

Imports models, never cli. docs/serve.md describes the protocol, the cache and the file formats.
"""
