"""Deep Zoom tile sources: the geometry of a pyramid and batched rendering of its tiles.

A Deep Zoom image of W x H pixels has levels 0 .. L (L = ceil(log2(max(W, H)))); level l is the image
scaled by 2^(l - L) (sides rounded up) and is cut into tile x tile tiles, (col, row) from the top left,
the last ones cropped. Two sources:

- `AnyresTiles`: a square canvas of side max_size = p * 2^k. Every level whose side is >= p is a *true
  render* of the canvas at that side (G.zoom at canvas 2^l), so zooming in shows new detail; the few
  levels below p are the p-side canvas downsampled.
- `InfinityTiles`: a width x height strip of the unbounded InfinityGAN canvas at native scale (e.g.
  2^20 pixels wide). The top level is generated; the `zoom_out` levels below it are box averages of the
  native pixels (each tile 2^k levels out costs 4^k native tiles of work, so only a few are offered);
  coarser levels are not served.

`render_batch(keys)` renders many tiles, of any settings and levels, with one batched pass of the
generator per group (every p x p patch of every tile of the batch goes through one synthesis call, in
chunks of `max_patches`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

_SETTING = re.compile(r"^[a-z]+=[0-9.:;\-e+]*$")


class TileNotFound(LookupError):
    """Tile coordinates (level, col, row) or a settings key outside the pyramid (HTTP 404)."""


@dataclass(frozen=True)
class TileKey:
    """One tile of one pyramid: canonical settings string, Deep Zoom level, column and row."""
    settings: str
    level: int
    col: int
    row: int


def num_levels(width: int, height: int) -> int:
    """Deep Zoom level count: 1 + ceil(log2(max side)).

    Args:
        width, height: full image size in pixels.
    Returns:
        int >= 1.
    """
    return 1 + max(0, math.ceil(math.log2(max(width, height))))


def level_size(width: int, height: int, level: int) -> Tuple[int, int]:
    """(w, h) of a Deep Zoom level (the full size halved, rounding up, once per level below the top).

    Args:
        width, height: full size; level: 0 .. num_levels - 1.
    Returns:
        (w, h) ints >= 1.
    """
    top = num_levels(width, height) - 1
    f = 2 ** (top - level)
    return -(-width // f), -(-height // f)


def dzi_xml(width: int, height: int, tile: int, fmt: str) -> str:
    """The Deep Zoom descriptor (.dzi) of a pyramid with no tile overlap.

    Args:
        width, height: full size in pixels; tile: tile side; fmt: "png" or "jpg".
    Returns:
        XML text.
    """
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="0" '
            f'TileSize="{tile}"><Size Width="{width}" Height="{height}"/></Image>\n')


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) model output in about [-1, 1] -> (B, H, W, C) uint8 (x * 127.5 + 128, clamped)."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Average factor x factor blocks of an (H, W, C) uint8 image (edge blocks average what they hold).

    Args:
        image: (H, W, C) uint8; factor: power of two >= 1.
    Returns:
        (ceil(H / factor), ceil(W / factor), C) uint8, rounded to nearest.
    """
    if factor == 1:
        return image
    h, w, c = image.shape
    hh, ww = -(-h // factor), -(-w // factor)
    pad = np.zeros((hh * factor, ww * factor, c), dtype=np.float64)
    cnt = np.zeros((hh * factor, ww * factor, 1), dtype=np.float64)
    pad[:h, :w] = image
    cnt[:h, :w] = 1
    s = pad.reshape(hh, factor, ww, factor, c).sum(axis=(1, 3))
    n = cnt.reshape(hh, factor, ww, factor, 1).sum(axis=(1, 3))
    return np.floor(s / n + 0.5).astype(np.uint8)


def _float_text(v: float) -> str:
    return f"{v:.6g}"


def _parse_pairs(settings: str) -> dict:
    out = {}
    for part in settings.split(","):
        if not _SETTING.match(part):
            raise TileNotFound(f"bad settings {settings!r}")
        k, _, v = part.partition("=")
        if k in out:
            raise TileNotFound(f"bad settings {settings!r}")
        out[k] = v
    return out


class TileSource:
    """Common part of the tile sources: pyramid geometry and coordinate checks.

    Attributes: width, height (full image), tile (side), levels (count), min_level (coarsest served),
    family ("anyres" or "infinity")."""
    family = ""
    width = height = tile = 0
    min_level = 0

    @property
    def levels(self) -> int:
        return num_levels(self.width, self.height)

    def check(self, key: TileKey) -> None:
        """Raises TileNotFound for a level or tile outside the pyramid (or not served)."""
        if not self.min_level <= key.level < self.levels:
            raise TileNotFound(f"level {key.level} outside {self.min_level}..{self.levels - 1}")
        w, h = level_size(self.width, self.height, key.level)
        if not (0 <= key.col < -(-w // self.tile) and 0 <= key.row < -(-h // self.tile)):
            raise TileNotFound(f"tile {key.col}_{key.row} outside level {key.level} ({w}x{h})")

    def tile_shape(self, key: TileKey) -> Tuple[int, int]:
        """(h, w) of a tile (edge tiles are cropped)."""
        w, h = level_size(self.width, self.height, key.level)
        return min(self.tile, h - key.row * self.tile), min(self.tile, w - key.col * self.tile)

    def info(self) -> dict:
        """JSON-able description for the page: geometry and the default settings."""
        return {"model": self.family, "width": self.width, "height": self.height, "tile": self.tile,
                "levels": self.levels, "min_level": self.min_level}


# ----------------------------------------------------------------------------------------------------
# Any-resolution generator

@dataclass(frozen=True)
class AnyresSettings:
    """Latent seed and truncation of one anyres pyramid."""
    seed: int = 0
    psi: float = 1.0

    def key(self) -> str:
        return f"seed={self.seed},psi={_float_text(self.psi)}"


class AnyresTiles(TileSource):
    """Tiles of the canvas pyramid of an any-resolution Generator (see module doc).

    Args:
        G: Generator in eval mode on its device.
        max_size: canvas side of the top level, p * 2^k.
        tile: tile side (>= 1; a multiple of p keeps every patch whole).
        max_patches: p x p patches per synthesis call.
        force_fp32, half_dtype: as Generator.forward.
    Raises:
        ValueError: max_size not p * 2^k, tile < 1.
    """
    family = "anyres"

    def __init__(self, G, max_size: int, tile: int = 256, *, max_patches: int = 64, force_fp32: bool = False,
                 half_dtype: torch.dtype = torch.float16):
        p = G.img_resolution
        if max_size < p or max_size % p or (max_size // p) & (max_size // p - 1):
            raise ValueError(f"max_size must be the patch size {p} times a power of two, got {max_size}")
        if tile < 1:
            raise ValueError(f"tile must be >= 1, got {tile}")
        self.G, self.p, self.width = G, p, max_size
        self.height, self.tile, self.max_patches = max_size, tile, max_patches
        self.force_fp32, self.half_dtype = force_fp32, half_dtype
        self.device = next(G.parameters()).device
        self.gains = G.synthesis.input_gains()
        self._ws = {}

    def parse_settings(self, text: str) -> AnyresSettings:
        """'seed=S,psi=X' (either may be missing) -> AnyresSettings; TileNotFound if malformed."""
        d = _parse_pairs(text)
        if set(d) - {"seed", "psi"}:
            raise TileNotFound(f"bad settings {text!r}")
        try:
            s = AnyresSettings(int(d.get("seed", 0)), float(d.get("psi", 1.0)))
        except ValueError:
            raise TileNotFound(f"bad settings {text!r}") from None
        if not 0 <= s.seed < 2 ** 63 or not math.isfinite(s.psi):
            raise TileNotFound(f"bad settings {text!r}")
        return s

    def canonical(self, text: str) -> str:
        """The canonical form of a settings string (the cache key part)."""
        return self.parse_settings(text).key()

    def canvas_of(self, level: int) -> int:
        """Canvas side rendered for a level: its side, but at least p (smaller levels are downsampled)."""
        return max(level_size(self.width, self.height, level)[0], self.p)

    def latent(self, seed: int) -> torch.Tensor:
        """z of a seed, as `anyres-fast generate` draws it: (1, z_dim) from torch.Generator(seed)."""
        return torch.randn(1, self.G.z_dim, generator=torch.Generator().manual_seed(seed))

    def _styles(self, s: AnyresSettings) -> torch.Tensor:
        ws = self._ws.get(s)
        if ws is None:
            ws = self.G.mapping(self.latent(s.seed).to(self.device), None, truncation_psi=s.psi)
            if len(self._ws) > 64:
                self._ws.clear()
            self._ws[s] = ws
        return ws

    @torch.no_grad()
    def render_batch(self, keys: Sequence[TileKey]) -> Tuple[List[np.ndarray], int]:
        """Render tiles (any settings and levels) with batched synthesis calls.

        Args:
            keys: checked TileKeys.
        Returns:
            ([(h, w, C) uint8 per key], number of synthesis calls).
        """
        from ..models.anyres import patch_transform
        p = self.p
        unique, where = {}, []
        styles, style_index = [], {}
        out = []
        for n, k in enumerate(keys):
            s = self.parse_settings(k.settings)
            if s not in style_index:
                style_index[s] = len(styles)
                styles.append(self._styles(s))
            side = level_size(self.width, self.height, k.level)[0]
            canvas = self.canvas_of(k.level)
            th, tw = self.tile_shape(k)
            if side >= p:
                x0, y0, rh, rw = k.col * self.tile, k.row * self.tile, th, tw
            else:
                x0, y0, rh, rw = 0, 0, p, p
            out.append(np.zeros((rh, rw, self.G.img_channels), dtype=np.uint8))
            # Patches sit on the canvas's p-grid (as in G.render of the whole canvas), so tiles smaller
            # than p and the levels below p share patches: each is rendered once per batch.
            for gy in range(y0 // p * p, y0 + rh, p):
                for gx in range(x0 // p * p, x0 + rw, p):
                    patch = (style_index[s], canvas, gx, gy)
                    if patch not in unique:
                        unique[patch] = len(unique)
                        where.append([])
                    where[unique[patch]].append((n, gy - y0, gx - x0))
        ws_all = torch.cat(styles)
        patches = list(unique)
        calls = 0
        half = None if self.force_fp32 else self.half_dtype
        for start in range(0, len(patches), self.max_patches):
            chunk = patches[start:start + self.max_patches]
            cv = torch.tensor([c[1] for c in chunk], dtype=torch.float64, device=self.device)
            bx = torch.tensor([c[2:] for c in chunk], dtype=torch.float64, device=self.device)
            t, scale = patch_transform(p, cv, box=bx, batch=len(chunk), device=self.device, check=False)
            sf = self.G.scale_features(scale)
            idx = torch.tensor([c[0] for c in chunk], dtype=torch.int64, device=self.device)
            img = to_uint8(self.G.synthesis(ws_all[idx], t, sf, half_dtype=half, input_gains=self.gains))
            calls += 1
            for i in range(len(chunk)):
                for n, py, px in where[start + i]:       # patch origin relative to the tile (may be < 0)
                    H, W = out[n].shape[:2]
                    ya, yb, xa, xb = max(py, 0), min(py + p, H), max(px, 0), min(px + p, W)
                    out[n][ya:yb, xa:xb] = img[i, ya - py:yb - py, xa - px:xb - px]
        for n, k in enumerate(keys):
            side = level_size(self.width, self.height, k.level)[0]
            if side < p:
                out[n] = box_downsample(out[n], p // side)
        return out, calls

    def info(self) -> dict:
        d = super().info()
        d.update(patch=self.p, base_level=int(math.log2(self.p)), settings=AnyresSettings().key(),
                 controls=["seed", "psi"])
        return d


# ----------------------------------------------------------------------------------------------------
# InfinityGAN

@dataclass(frozen=True)
class InfinitySettings:
    """Canvas seed and optional spatial style fusion (seeds of the fused z_g and their (x, y) centres in
    image pixels)."""
    seed: int = 0
    fuse: Tuple[int, ...] = ()
    centres: Tuple[Tuple[float, float], ...] = ()

    def key(self) -> str:
        k = f"seed={self.seed}"
        if self.fuse:
            k += ",fuse=" + ":".join(map(str, self.fuse))
            k += ",centres=" + ";".join(f"{_float_text(x)}:{_float_text(y)}" for x, y in self.centres)
        return k


class InfinityTiles(TileSource):
    """Tiles of a width x height strip of the InfinityGAN canvas (see module doc).

    Args:
        G: InfinityGenerator (eval) on its device.
        width, height: strip size in pixels (image x = canvas column x; image y = canvas row y + top).
        tile: tile side. zoom_out: levels below the top that are served (box averages).
        top: canvas row of the image's first row (default -height // 2: the horizon in the middle).
        max_patches: patches per forward pass. fusion_kernel: as InfinityGenerator.generate.
        dtype: activation dtype.
    """
    family = "infinity"

    def __init__(self, G, width: int = 2 ** 20, height: Optional[int] = None, tile: int = 256, *, zoom_out: int = 3,
                 top: Optional[int] = None, max_patches: int = 16, fusion_kernel: int = 127,
                 dtype: torch.dtype = torch.float32):
        self.G = G
        self.height = int(height if height is not None else 4 * G.patch_size)
        self.width, self.tile, self.max_patches = int(width), int(tile), max_patches
        if self.width < 1 or self.height < 1 or self.tile < 1 or zoom_out < 0:
            raise ValueError("width, height and tile must be >= 1 and zoom_out >= 0")
        self.top = -(self.height // 2) if top is None else top
        self.zoom_out = min(zoom_out, self.levels - 1)
        self.min_level = self.levels - 1 - self.zoom_out
        self.fusion_kernel, self.dtype = fusion_kernel, dtype
        self.device = next(G.parameters()).device
        self.skip = [bool(c.noise_strength.detach().cpu() == 0) for c in G.texture_synthesizer.convs]

    def parse_settings(self, text: str) -> InfinitySettings:
        """'seed=S[,fuse=A:B,centres=x:y;x:y]' -> InfinitySettings; TileNotFound if malformed."""
        d = _parse_pairs(text)
        if set(d) - {"seed", "fuse", "centres"} or ("fuse" in d) != ("centres" in d):
            raise TileNotFound(f"bad settings {text!r}")
        try:
            seed = int(d.get("seed", 0))
            fuse = tuple(int(v) for v in d["fuse"].split(":")) if "fuse" in d else ()
            centres = tuple(tuple(float(c) for c in xy.split(":")) for xy in d["centres"].split(";")) \
                if "centres" in d else ()
        except ValueError:
            raise TileNotFound(f"bad settings {text!r}") from None
        if not 0 <= seed < 2 ** 63 or len(fuse) != len(centres) or any(len(c) != 2 for c in centres) \
                or any(not 0 <= s < 2 ** 63 for s in fuse) or len(fuse) == 1 \
                or any(not (math.isfinite(x) and math.isfinite(y)) for x, y in centres):
            raise TileNotFound(f"bad settings {text!r}")
        return InfinitySettings(seed, fuse, centres)

    def canonical(self, text: str) -> str:
        """The canonical form of a settings string (the cache key part)."""
        return self.parse_settings(text).key()

    def latents(self, s: InfinitySettings) -> torch.Tensor:
        """z_g as `anyres-fast generate --model infinity` draws it: one row from the seed, or one per fused seed."""
        seeds = s.fuse or (s.seed,)
        return torch.cat([torch.randn(1, self.G.z_dim, generator=torch.Generator().manual_seed(v)) for v in seeds])

    def native_window(self, key: TileKey) -> Tuple[int, int, int, int]:
        """(top, left, height, width) canvas pixels a tile covers at native scale."""
        f = 2 ** (self.levels - 1 - key.level)
        th, tw = self.tile_shape(key)
        y0, x0 = key.row * self.tile * f, key.col * self.tile * f
        return self.top + y0, x0, min(th * f, self.height - y0), min(tw * f, self.width - x0)

    @torch.no_grad()
    def render_batch(self, keys: Sequence[TileKey]) -> Tuple[List[np.ndarray], int]:
        """Render tiles; tiles of equal settings share forward passes (every patch once per batch).

        Args:
            keys: checked TileKeys.
        Returns:
            ([(h, w, C) uint8 per key], number of forward passes).
        """
        from ..models import infinity_canvas as _canvas
        G = self.G
        zs, scale, P = G.ts_input, 2 ** G.depth, G.patch_size
        groups = {}
        for n, k in enumerate(keys):
            groups.setdefault(self.parse_settings(k.settings), []).append(n)
        out: List[Optional[np.ndarray]] = [None] * len(keys)
        calls = 0
        for s, members in groups.items():
            z_g = self.latents(s).to(self.device)
            ws = G.styles(z_g)
            centres = None
            if s.fuse:
                centres = torch.tensor([(x, y + self.top) for x, y in s.centres], dtype=torch.float64)
            windows = {n: self.native_window(keys[n]) for n in members}
            canv = {n: np.zeros((w[2], w[3], G.img_channels), dtype=np.uint8) for n, w in windows.items()}
            patches = {}
            for n, (top, left, h, w) in windows.items():
                for pt in _canvas.plan_window(top, left, h, w, zs=zs, patch=P, scale=scale).patches:
                    patches.setdefault(pt, []).append(n)
            order = list(patches)
            for start in range(0, len(order), self.max_patches):
                chunk = order[start:start + self.max_patches]
                st = torch.tensor(chunk, dtype=torch.int64)
                z_l, coords, noises = G.canvas_inputs(s.seed, st[:, 0], st[:, 1], zs, zs, device=self.device,
                                                      dtype=self.dtype, skip_noise=self.skip)
                if centres is None:
                    b = z_l.shape[0]
                    img = G.texture_synthesizer(G.structure_synthesizer(z_g.expand(b, -1), z_l, coords),
                                                ws.expand(b, -1, -1), noises)
                else:
                    per = [_canvas.fusion_weights(centres, self.fusion_kernel, G.fusion_grids(py, px, zs, zs),
                                                  self.device) for py, px in chunk]
                    maps = [torch.stack(m, dim=0) for m in zip(*per)]
                    img = G.fused_patch(z_g, ws, maps, z_l, coords, noises)
                calls += 1
                img = to_uint8(img)
                for i, (py, px) in enumerate(chunk):
                    y0, x0 = scale * py, scale * px
                    for n in patches[(py, px)]:
                        top, left, h, w = windows[n]
                        ya, yb = max(y0, top), min(y0 + P, top + h)
                        xa, xb = max(x0, left), min(x0 + P, left + w)
                        if ya < yb and xa < xb:
                            canv[n][ya - top:yb - top, xa - left:xb - left] = img[i, ya - y0:yb - y0, xa - x0:xb - x0]
            for n in members:
                out[n] = box_downsample(canv[n], 2 ** (self.levels - 1 - keys[n].level))
        return out, calls

    def info(self) -> dict:
        d = super().info()
        d.update(patch=self.G.patch_size, top=self.top, zoom_out=self.zoom_out,
                 settings=InfinitySettings().key(), controls=["seed", "fuse", "centres"])
        return d
