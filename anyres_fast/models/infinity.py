"""InfinityGAN generator (Lin et al., ICLR 2022): structure synthesizer G_S + padding-free texture synthesizer G_T.

See docs/infinitygan.md for the geometry, the canvas frame and the published facts this follows.

- G_S: ``ss_layers`` unpadded 7x7 modulated convs (demodulated, no noise, bias + lrelu), each over
  [features, coordinates] (the coordinates are centre-cropped to the current size and concatenated before
  every block); styled directly by the raw global latent z_g (no mapping). Input: the local latent z_l
  (B, local_dim, n + 2R, m + 2R) with R = ss_layers * ss_radius; output z_S (B, local_dim, n, m).
- Coordinates: [tanh(v), cos(a), sin(a)]; v moves ``vstep = 2 cut / (ts_input + V - 1)`` per latent row
  (0.3 for the published model), a moves ``2 pi / (T - 1)`` per latent column with
  T = round((ts_input + 2R) / occupancy) (140).
- G_T: StyleGAN2 without any zero padding. ``depth`` pairs of (up-conv, conv): the up-conv is a stride-2
  transposed modulated 3x3 conv (2H+1), cropped by one pixel per side (2H-1), then a valid [1,2,1] blur
  (2H-3); the conv is a valid 3x3 (-2). Noise and bias + lrelu after each; a ToRGB (1x1, no demod) after
  every pair, the previous RGB upsampled by a padding-free [1,2,1] transposed filter (cropped) and
  centre-cropped. Patch size = 2^depth * ts_input - 5 (2^depth - 1): 101 (depth 4), 197 (5), 389 (6).

Heavy ops come from `anyres_fast.ops` only (modulated_conv2d, style_fused_conv2d, upfirdn2d, bias_act).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .. import ops
from . import tiling as _render
from . import infinity_canvas as _canvas
from . import pretrained
from .layers import FullyConnected, normalize_2nd_moment

CONFIG_FILE = pretrained.CONFIG_FILE
FORMAT = "anyres_fast.InfinityGenerator/1"
DEMODS = ("exact", "pointwise")


# ----------------------------------------------------------------------------------------------------
# Configuration and schedule

def patch_size_for(depth: int, ts_input: int = 11) -> int:
    """Output size of G_T for a z_S of size ts_input: 2^depth * ts_input - 5 (2^depth - 1).

    Args:
        depth: number of (up-conv, conv) pairs, >= 1.
        ts_input: z_S size (latent pixels), >= 3.
    Returns:
        int patch size in pixels (101 for depth 4, ts_input 11).
    """
    return (2 ** depth) * ts_input - 5 * (2 ** depth - 1)


def depth_for(patch_size: int, ts_input: int = 11) -> int:
    """Inverse of `patch_size_for`. Raises ValueError if no depth gives exactly patch_size."""
    for depth in range(1, 16):
        if patch_size_for(depth, ts_input) == patch_size:
            return depth
    valid = [patch_size_for(d, ts_input) for d in range(1, 8)]
    raise ValueError(f"InfinityGenerator: patch_size {patch_size} is not 2^d*{ts_input} - 5(2^d - 1) for any "
                     f"depth d (valid: {valid} ...)")


@dataclass
class InfinityConfig:
    """Everything needed to rebuild an InfinityGenerator (stored as JSON next to the weights).

    Defaults are the published 101-pixel model (InfinityGAN.yaml: z_g 512, z_l 256, 8-layer mapping,
    channel multiplier 2, 4 G_S layers of radius 3, TS input 11, V = 10, occupancy 0.25, cut 3)."""
    patch_size: int = 101
    ts_input: int = 11
    z_dim: int = 512                 # global latent z_g (and w)
    local_dim: int = 256             # local latent z_l channels = G_S width
    ss_layers: int = 4
    ss_radius: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 4096         # pair p has min(channel_max, channel_base / 2^p) channels
    channel_max: int = 512
    img_channels: int = 3
    coord_cut: float = 3.0
    coord_vert_samples: int = 10     # V
    coord_hori_occupancy: float = 0.25

    def __post_init__(self):
        for name in ("ts_input", "z_dim", "local_dim", "ss_layers", "ss_radius", "mapping_layers",
                     "channel_base", "channel_max", "img_channels", "coord_vert_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"InfinityGenerator: {name} must be an int >= 1, got {v!r}")
        if self.ts_input < 3:
            raise ValueError(f"InfinityGenerator: ts_input must be >= 3, got {self.ts_input}")
        depth = depth_for(self.patch_size, self.ts_input)   # validates
        if self.channel_base // 2 ** (depth - 1) < 1:
            raise ValueError(f"InfinityGenerator: channel_base {self.channel_base} leaves no channels in the last of "
                             f"{depth} layer pairs (widths are min(channel_max, channel_base / 2^pair)); use "
                             f">= {2 ** (depth - 1)}")
        for name in ("coord_cut", "coord_hori_occupancy", "mapping_lr_multiplier"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"InfinityGenerator: {name} must be a finite number > 0, got {v!r}")

    @property
    def depth(self) -> int:
        return depth_for(self.patch_size, self.ts_input)

    @property
    def ss_margin(self) -> int:
        """R: latent pixels G_S removes per side."""
        return self.ss_layers * self.ss_radius

    @property
    def zl_size(self) -> int:
        """z_l size of one training patch (35 for the published model)."""
        return self.ts_input + 2 * self.ss_margin

    @property
    def vert_step(self) -> float:
        """Change of the pre-tanh vertical coordinate per latent row (0.3)."""
        return 2.0 * self.coord_cut / (self.ts_input + self.coord_vert_samples - 1)

    @property
    def hori_period(self) -> int:
        """T: columns of the horizontal coordinate grid (140); the angle moves 2 pi / (T - 1) per column."""
        return int(round(self.zl_size / self.coord_hori_occupancy))

    def pair_channels(self, p: int) -> int:
        return int(min(self.channel_max, self.channel_base // (2 ** p)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InfinityConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"InfinityGenerator config: unknown keys {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class TextureLayer:
    """One G_T conv. Offsets/spacings place its input and output grids in z_S units relative to the first
    z_S sample of the patch (see docs/infinitygan.md, canvas frame)."""
    index: int
    up: bool
    in_channels: int
    out_channels: int
    step: int                # output samples per latent pixel (2, 2, 4, 4, ...)
    in_offset: float
    in_spacing: float
    out_offset: float
    out_spacing: float


def out_size_up(n: int) -> int:
    """Up-conv: transposed 2n+1, crop 1 per side (2n-1), valid 3-tap blur (2n-3)."""
    return 2 * n - 3


def out_size_conv(n: int) -> int:
    return n - 2


def texture_layers(cfg: InfinityConfig) -> Tuple[TextureLayer, ...]:
    layers = []
    off, sp, in_ch, step = 0.0, 1.0, cfg.local_dim, 1
    for p in range(cfg.depth):
        ch = cfg.pair_channels(p)
        for up in (True, False):
            if up:
                # out index t <-> in index (t + 1) / 2: crop 1 of the 2n+1 output, then the blur's centre tap.
                n_off, n_sp, step = off + sp / 2, sp / 2, step * 2
            else:
                n_off, n_sp = off + sp, sp
            layers.append(TextureLayer(len(layers), up, in_ch, ch, step, off, sp, n_off, n_sp))
            off, sp, in_ch = n_off, n_sp, ch
    return tuple(layers)


def torgb_style_indices(depth: int) -> List[int]:
    """W+ index of each ToRGB (published layout): 3, 5, ..., then n_convs for the last one."""
    n_convs = 2 * depth
    return [2 * p + 3 if p < depth - 1 else n_convs for p in range(depth)]


# ----------------------------------------------------------------------------------------------------
# Coordinates

def coordinate_grid(cfg: InfinityConfig, rows: torch.Tensor, cols: torch.Tensor,
                    ring: Optional[int] = None) -> torch.Tensor:
    """[tanh(v), cos(a), sin(a)] on the outer product of latent rows x cols (canvas frame).

    Args:
        rows: (H,) or (B, H) latent row positions (z_l canvas index, may be fractional).
        cols: (W,) or (B, W) latent column positions.
        ring: None, or the latent columns L of a cyclic canvas: the angle then makes exactly one turn
            every L columns (2 pi / L per column instead of 2 pi / (T - 1)), computed from cols mod L so
            that columns L apart get bit-identical coordinates (docs/infinitygan.md, "Cyclic canvas").
    Returns:
        (B, 3, H, W) float32 (B = 1 for 1-D inputs).
    """
    if rows.ndim == 1:
        rows = rows[None]
    if cols.ndim == 1:
        cols = cols[None]
    c0 = _pixel_offset(cfg.depth)
    v = cfg.vert_step * (rows.double() - c0)                          # 0 at canvas pixel row 0
    a = horizontal_angle(cfg, cols, ring)
    b, h, w = max(rows.shape[0], cols.shape[0]), rows.shape[1], cols.shape[1]
    vt = torch.tanh(v).float()[:, :, None].expand(b, h, w)
    ca = torch.cos(a).float()[:, None, :].expand(b, h, w)
    sa = torch.sin(a).float()[:, None, :].expand(b, h, w)
    return torch.stack([vt, ca, sa], dim=1).contiguous()


def horizontal_angle(cfg: InfinityConfig, cols: torch.Tensor, ring: Optional[int] = None) -> torch.Tensor:
    """The angle a (float64) of latent columns: -pi at canvas pixel column 0 (column c0 of z_l).

    Ordinary canvas: 2 pi / (T - 1) per column (the training frequency; period T - 1 = 139 columns).
    Cyclic canvas of L columns: 2 pi / L per column, periodic in L; for L = T - 1 both agree modulo 2 pi.
    """
    c0 = _pixel_offset(cfg.depth)
    if ring is None:
        return math.pi * (2.0 * (cols.double() - c0) / (cfg.hori_period - 1) - 1.0)
    return math.pi * (2.0 * (torch.remainder(cols.double(), ring) - c0) / ring - 1.0)


def _pixel_offset(depth: int) -> float:
    """z_S coordinate z of canvas pixel p is (p + 2 (2^depth - 1)) / 2^depth; this is that offset / 2^depth."""
    return 2.0 * (2 ** depth - 1) / 2 ** depth


# ----------------------------------------------------------------------------------------------------
# Building blocks

class _Modulated(torch.nn.Module):
    """Weight (O,I,k,k) ~ N(0,1) used with the fan-in gain 1/sqrt(I k^2); affine w -> styles (bias 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, style_dim: int):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.affine = FullyConnected(style_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def scaled_weight(self, dtype) -> torch.Tensor:
        return (self.weight * self.weight_gain).to(dtype)

    def style_map(self, mix: torch.Tensor, centre_latents: torch.Tensor) -> torch.Tensor:
        """Per-pixel styles: mix (B,K,H,W) convex weights, centre_latents (K, style_dim) -> (B, I, H, W).
        The affine is linear, so mixing styles equals styling the mixed latent (sum of weights = 1)."""
        s = self.affine(centre_latents.to(self.affine.weight.dtype))                  # (K, I)
        return torch.einsum("bkhw,ki->bihw", mix.to(s.dtype), s)


class StructureBlock(_Modulated):
    """One G_S layer: valid 7x7 modulated conv over [x, coords] + bias + lrelu (no noise)."""

    def __init__(self, local_dim: int, coord_dim: int, radius: int, z_dim: int):
        super().__init__(local_dim + coord_dim, local_dim, 2 * radius + 1, z_dim)
        self.bias = torch.nn.Parameter(torch.zeros(local_dim))

    def forward(self, x: torch.Tensor, coords: torch.Tensor, z: Optional[torch.Tensor] = None,
                style_map: Optional[torch.Tensor] = None, demod: str = "exact") -> torch.Tensor:
        x = torch.cat([x, _centre_crop(coords, x.shape[2], x.shape[3]).to(x.dtype)], dim=1)
        w = self.scaled_weight(x.dtype)
        if style_map is None:
            y = ops.modulated_conv2d(x, w, self.affine(z.to(self.affine.weight.dtype)), demodulate=True, padding=0)
        else:
            y = ops.style_fused_conv2d(x, w, _centre_crop(style_map, x.shape[2], x.shape[3]).to(x.dtype),
                                       padding=0, demod=demod)
        return ops.bias_act(y, self.bias.to(y.dtype), act="lrelu")


class TextureConv(_Modulated):
    """One G_T layer: padding-free modulated 3x3 (up: transposed, crop 1, [1,2,1] blur), noise, bias, lrelu."""

    def __init__(self, spec: TextureLayer, w_dim: int):
        super().__init__(spec.in_channels, spec.out_channels, 3, w_dim)
        self.spec, self.up = spec, spec.up
        self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("blur_filter", _filter121(), persistent=False)

    def forward(self, x: torch.Tensor, style: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
                style_map: Optional[torch.Tensor] = None, demod: str = "exact") -> torch.Tensor:
        w = self.scaled_weight(x.dtype)
        if style_map is None:
            y = ops.modulated_conv2d(x, w, self.affine(style.to(self.affine.weight.dtype)), demodulate=True, padding=0,
                                     up=2 if self.up else 1)
            if self.up:
                y = y[:, :, 1:-1, 1:-1]
        elif not self.up:
            y = ops.style_fused_conv2d(x, w, style_map.to(x.dtype), padding=0, demod=demod)
        elif demod == "pointwise":
            # The op's pointwise demodulation for up=2 samples D at t/2 of the cropped output: the
            # published bilinear (align_corners) resize of the input-resolution map.
            y = ops.style_fused_conv2d(x, w, style_map.to(x.dtype), padding=0, up=2, demod="pointwise")
            y = y[:, :, 1:-1, 1:-1]
        else:
            y = _fused_up_exact(x, w, style_map.to(x.dtype))
        if self.up:
            y = ops.upfirdn2d(y, self.blur_filter, padding=0, gain=4)
        if noise is None:
            noise = torch.randn(y.shape[0], 1, y.shape[2], y.shape[3], device=y.device, dtype=y.dtype)
        y = y + noise.to(y.dtype) * self.noise_strength.to(y.dtype)
        return ops.bias_act(y, self.bias.to(y.dtype), act="lrelu")


def _fused_up_exact(x: torch.Tensor, w: torch.Tensor, style_map: torch.Tensor) -> torch.Tensor:
    """Spatially styled stride-2 transposed conv, cropped by 1, with exact demodulation over all 9 taps.

    The cropped transposed conv equals a stride-1 valid conv of the zero-inserted input (padded by 1)
    with the flipped kernel. The style is linearly interpolated onto that fine grid (edge-replicated),
    so every output pixel's demodulation sums (W s)^2 over the full kernel at the positions the taps
    read; with a constant style this is exactly StyleGAN2's demodulation (docs/infinitygan.md)."""
    b, c, h, wd = x.shape
    xz = x.new_zeros(b, c, 2 * h - 1, 2 * wd - 1)
    xz[:, :, ::2, ::2] = x
    xz = torch.nn.functional.pad(xz, (1, 1, 1, 1))
    s = _lerp_up(style_map)
    s = torch.nn.functional.pad(s, (1, 1, 1, 1), mode="replicate")
    return ops.style_fused_conv2d(xz, w.flip(2, 3).contiguous(), s, padding=0, up=1, demod="exact")


def _lerp_up(s: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,2H-1,2W-1): originals at even positions, midpoints at odd ones."""
    b, c, h, w = s.shape
    r = s.new_empty(b, c, 2 * h - 1, w)
    r[:, :, ::2] = s
    r[:, :, 1::2] = 0.5 * (s[:, :, :-1] + s[:, :, 1:])
    out = s.new_empty(b, c, 2 * h - 1, 2 * w - 1)
    out[:, :, :, ::2] = r
    out[:, :, :, 1::2] = 0.5 * (r[:, :, :, :-1] + r[:, :, :, 1:])
    return out


class ToRGB(_Modulated):
    """1x1 modulated conv without demodulation + bias; adds the upsampled, centre-cropped previous RGB."""

    def __init__(self, in_channels: int, w_dim: int, img_channels: int):
        super().__init__(in_channels, img_channels, 1, w_dim)
        self.bias = torch.nn.Parameter(torch.zeros(img_channels))
        self.register_buffer("up_filter", _filter121(), persistent=False)

    def forward(self, x: torch.Tensor, style: Optional[torch.Tensor], skip: Optional[torch.Tensor],
                style_map: Optional[torch.Tensor] = None) -> torch.Tensor:
        w = self.scaled_weight(x.dtype)
        if style_map is None:
            y = ops.modulated_conv2d(x, w, self.affine(style.to(self.affine.weight.dtype)), demodulate=False, padding=0)
        else:
            y = ops.style_fused_conv2d(x, w, style_map.to(x.dtype), padding=0, demod="none")
        y = y + self.bias.to(y.dtype)[None, :, None, None]
        if skip is not None:
            # Transposed [1,2,1] x 4 filter, stride 2, first and last sample cropped: 2H - 1.
            skip = ops.upfirdn2d(skip, self.up_filter, up=2, padding=(1, 0, 1, 0), gain=4)
            y = y + _centre_crop(skip, y.shape[2], y.shape[3]).to(y.dtype)
        return y


def _filter121() -> torch.Tensor:
    """[1,2,1] outer [1,2,1] / 16 (what ops.setup_filter([1, 2, 1]) gives), built on the default device."""
    f = torch.tensor([1.0, 2.0, 1.0])
    return torch.outer(f, f) / 16


def _centre_crop(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dh, dw = t.shape[2] - h, t.shape[3] - w
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"InfinityGenerator: cannot centre-crop {tuple(t.shape[2:])} to {(h, w)}")
    if dh == 0 and dw == 0:
        return t
    return t[:, :, dh // 2: dh // 2 + h, dw // 2: dw // 2 + w]


class Mapping(torch.nn.Module):
    """PixelNorm + `layers` equalised linear layers with lrelu (lr multiplier 0.01): z_g -> w."""

    def __init__(self, z_dim: int, layers: int, lr_multiplier: float):
        super().__init__()
        self.z_dim, self.layers = z_dim, layers
        for i in range(layers):
            setattr(self, f"fc{i}", FullyConnected(z_dim, z_dim, activation="lrelu", lr_multiplier=lr_multiplier))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(z.to(self.fc0.weight.dtype))     # float32 (float64 when the model is)
        for i in range(self.layers):
            x = getattr(self, f"fc{i}")(x)
        return x


class StructureSynthesizer(torch.nn.Module):
    """G_S: z_l (B, local_dim, H, W) + coords (B, 3, H, W), styled by raw z_g -> z_S (B, local_dim, H-2R, W-2R)."""

    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.blocks = torch.nn.ModuleList(StructureBlock(cfg.local_dim, 3, cfg.ss_radius, cfg.z_dim)
                                          for _ in range(cfg.ss_layers))

    def forward(self, z_g: torch.Tensor, z_l: torch.Tensor, coords: torch.Tensor,
                style_maps: Optional[Sequence[torch.Tensor]] = None, demod: str = "exact") -> torch.Tensor:
        h = z_l
        if coords.shape[0] != h.shape[0]:        # one coordinate map for the whole batch (checked by the caller)
            coords = coords.expand(h.shape[0], -1, -1, -1)
        for i, block in enumerate(self.blocks):
            h = block(h, coords, z=z_g, style_map=None if style_maps is None else style_maps[i], demod=demod)
        return h


class TextureSynthesizer(torch.nn.Module):
    """G_T: z_S + W+ styles + per-layer noise -> image."""

    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.specs = texture_layers(cfg)
        self.convs = torch.nn.ModuleList(TextureConv(s, cfg.z_dim) for s in self.specs)
        self.torgbs = torch.nn.ModuleList(ToRGB(cfg.pair_channels(p), cfg.z_dim, cfg.img_channels)
                                          for p in range(cfg.depth))
        self.rgb_index = torgb_style_indices(cfg.depth)
        self.num_ws = 2 * cfg.depth + 1

    def forward(self, z_s: torch.Tensor, ws: Optional[torch.Tensor], noises: Optional[Sequence] = None,
                conv_maps: Optional[Sequence[torch.Tensor]] = None, rgb_maps: Optional[Sequence[torch.Tensor]] = None,
                demod: str = "exact") -> torch.Tensor:
        x, img = z_s, None
        for i, conv in enumerate(self.convs):
            noise = None if noises is None else noises[i]
            x = conv(x, None if ws is None else ws[:, i], noise,
                     style_map=None if conv_maps is None else conv_maps[i], demod=demod)
            if not conv.up:
                p = i // 2
                img = self.torgbs[p](x, None if ws is None else ws[:, self.rgb_index[p]], img,
                                     style_map=None if rgb_maps is None else rgb_maps[p])
        return img


# ----------------------------------------------------------------------------------------------------
# Generator

class InfinityGenerator(pretrained.Pretrained, torch.nn.Module):
    """InfinityGAN generator; `InfinityGenerator()` is the published 101-pixel model.

    Tensor layouts (published): z_g (B, z_dim) or (B, 2, z_dim) (mixing pair; G_S uses [:, 0]);
    z_l (B, local_dim, n + 2R, m + 2R); coords (B, 3, same size) after tanh/cos/sin; noises: one
    (B, 1, h_i, w_i) per G_T conv (`noise_shapes`); ws (B, num_ws, z_dim) W+ styles.
    """

    FORMAT = FORMAT             # save format (docs/save_format.md)
    CONFIG_CLASS = InfinityConfig

    def __init__(self, cfg: Optional[InfinityConfig] = None, **kwargs):
        """InfinityGenerator(InfinityConfig(...)) or InfinityGenerator(patch_size=197, ...).

        Raises:
            ValueError: invalid configuration (e.g. a patch size no depth produces).
            TypeError: both a config and keyword arguments.
        """
        super().__init__()
        if cfg is None:
            cfg = InfinityConfig(**kwargs)
        elif kwargs:
            raise TypeError("InfinityGenerator: pass either an InfinityConfig or keyword arguments, not both")
        elif not isinstance(cfg, InfinityConfig):
            raise TypeError(f"InfinityGenerator: cfg must be an InfinityConfig, got {type(cfg).__name__}")
        self.config = cfg
        self.z_dim, self.local_dim, self.img_channels = cfg.z_dim, cfg.local_dim, cfg.img_channels
        self.patch_size, self.depth, self.ts_input = cfg.patch_size, cfg.depth, cfg.ts_input
        self.ss_margin = cfg.ss_margin
        self.structure_synthesizer = StructureSynthesizer(cfg)
        self.mapping_network = Mapping(cfg.z_dim, cfg.mapping_layers, cfg.mapping_lr_multiplier)
        self.texture_synthesizer = TextureSynthesizer(cfg)
        self.num_ws = self.texture_synthesizer.num_ws

    # -- sizes -------------------------------------------------------------------------------------
    def output_size(self, zs_size: int) -> int:
        """Image size for a z_S of `zs_size` latent pixels (any size >= the minimum, not only ts_input)."""
        n = zs_size
        for s in self.texture_synthesizer.specs:
            n = out_size_up(n) if s.up else out_size_conv(n)
        return n

    def min_zs_size(self) -> int:
        """Smallest z_S that gives an image of at least 1 pixel."""
        n = 3
        while self.output_size(n) < 1:
            n += 1
        return n

    def layer_sizes(self, zs_size: Optional[int] = None) -> List[int]:
        """[z_S, conv0 out, conv1 out, ...]: 11, 19, 17, 31, 29, 55, 53, 103, 101 for the default model."""
        n = self.ts_input if zs_size is None else zs_size
        sizes = [n]
        for s in self.texture_synthesizer.specs:
            n = out_size_up(n) if s.up else out_size_conv(n)
            sizes.append(n)
        return sizes

    def noise_shapes(self, zl_hw) -> List[Tuple[int, int]]:
        """(h, w) of each G_T conv's noise map for a z_l of size zl_hw = (H, W) (or an int)."""
        h, w = (zl_hw, zl_hw) if isinstance(zl_hw, int) else tuple(zl_hw)
        hs = self.layer_sizes(h - 2 * self.ss_margin)[1:]
        ws = self.layer_sizes(w - 2 * self.ss_margin)[1:]
        return list(zip(hs, ws))

    def make_noises(self, batch: int, zl_hw, *, generator: Optional[torch.Generator] = None,
                    device=None) -> List[torch.Tensor]:
        """Fresh N(0, 1) noise maps, one (batch, 1, h, w) per G_T conv (`noise_shapes`)."""
        return [torch.randn(batch, 1, h, w, generator=generator, device=device) for h, w in self.noise_shapes(zl_hw)]

    # -- coordinates -------------------------------------------------------------------------------
    def coords(self, height: int, width: int, top=0, left=0, *, batch: int = 1, device=None,
               ring: Optional[int] = None) -> torch.Tensor:
        """Coordinates of a z_l patch whose first sample sits at latent (row, col) = (top, left) of the
        canvas frame (values may be fractional or per-sample (B,) tensors: training offsets); ring: the
        latent columns of a cyclic canvas (`coordinate_grid`), None for the ordinary canvas.

        Returns:
            (batch, 3, height, width) float32 [tanh(v), cos(a), sin(a)].
        """
        top = torch.as_tensor(top, dtype=torch.float64, device=device).reshape(-1, 1)
        left = torch.as_tensor(left, dtype=torch.float64, device=device).reshape(-1, 1)
        rows = top + torch.arange(height, dtype=torch.float64, device=device)[None]
        cols = left + torch.arange(width, dtype=torch.float64, device=device)[None]
        c = coordinate_grid(self.config, rows, cols, ring)
        return c.expand(batch, -1, -1, -1).contiguous() if c.shape[0] == 1 else c

    def training_coords(self, batch: int, *, generator: Optional[torch.Generator] = None,
                        device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The published training sampling: a zl_size window at vertical offset x in [0, V) and any
        horizontal offset (the angle wraps), plus a uniform jitter of half a step on each axis.

        Returns:
            coords (batch, 3, zl, zl) and the vertical label x / (V - 1) * 2 - 1 in [-1, 1] (batch,),
            which the discriminator's coordinate head regresses.
        """
        cfg = self.config
        v = cfg.coord_vert_samples
        xs = torch.randint(0, v, (batch,), generator=generator)
        ys = torch.randint(0, cfg.hori_period, (batch,), generator=generator)
        jit = torch.rand(batch, 2, generator=generator, dtype=torch.float64) - 0.5       # +- half a step
        # Offsets are relative to a window centred on the horizon (the published grid of 35 + V rows).
        top = xs.double() - (cfg.zl_size + v - 1) / 2 + _pixel_offset(self.depth) + jit[:, 0]
        left = ys.double() + _pixel_offset(self.depth) + jit[:, 1]
        c = self.coords(cfg.zl_size, cfg.zl_size, top, left, device=device)
        label = (xs.double() / max(v - 1, 1) * 2 - 1).float()
        return c.to(device), label.to(device)

    # -- forward -----------------------------------------------------------------------------------
    def mapping(self, z_g: torch.Tensor) -> torch.Tensor:
        """w = mapping(z_g): (B, z_dim) -> (B, z_dim)."""
        _check_latent("z_g", z_g, (None, self.z_dim))
        return self.mapping_network(z_g)

    def styles(self, z_g: torch.Tensor, inject_index: Optional[int] = None) -> torch.Tensor:
        """W+ styles (B, num_ws, z_dim). z_g (B, z_dim), or (B, 2, z_dim) with a mixing `inject_index`
        (layers >= inject_index use the second latent; None: only the first, as at test time)."""
        if z_g.ndim == 3:
            if z_g.shape[1] != 2:
                raise ValueError(f"InfinityGenerator: a 3-D z_g must be (B, 2, {self.z_dim}), got {tuple(z_g.shape)}")
            w0 = self.mapping(z_g[:, 0])
            ws = w0[:, None].repeat(1, self.num_ws, 1)
            if inject_index is not None and inject_index < self.num_ws:
                ws[:, inject_index:] = self.mapping(z_g[:, 1])[:, None]
            return ws
        return self.mapping(z_g)[:, None].repeat(1, self.num_ws, 1)

    def structure(self, z_g: torch.Tensor, z_l: torch.Tensor, coords: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G_S output z_S (B, local_dim, H - 2R, W - 2R) (what the diversity loss compares).
        coords None: the canvas coordinates of a patch centred on the frame origin."""
        z_g = z_g[:, 0] if z_g.ndim == 3 else z_g
        self._check_inputs(z_g, z_l, coords)
        if coords is None:
            coords = self.centred_coords(z_l.shape[0], z_l.shape[2], z_l.shape[3], z_l.device)
        return self.structure_synthesizer(z_g, z_l, coords.to(z_l.device))

    def texture(self, z_s: torch.Tensor, ws: torch.Tensor, noises: Optional[Sequence] = None) -> torch.Tensor:
        """G_T: z_S (B, local_dim, n, m) + W+ ws (B, num_ws, z_dim) or w (B, z_dim) + noises -> image."""
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.z_dim) or ws.shape[0] != z_s.shape[0]:
            raise ValueError(f"InfinityGenerator: ws must be (B, {self.num_ws}, {self.z_dim}) or (B, {self.z_dim}) "
                             f"with B = {z_s.shape[0]}, got {tuple(ws.shape)}")
        if noises is not None:
            want = self.layer_sizes(z_s.shape[2])[1:], self.layer_sizes(z_s.shape[3])[1:]
            if len(noises) != len(want[0]):
                raise ValueError(f"InfinityGenerator: noises must be a list of {len(want[0])} maps, got {len(noises)}")
            for i, (n, h, w) in enumerate(zip(noises, *want)):
                if n is not None and (n.ndim != 4 or n.shape[1] != 1 or tuple(n.shape[2:]) != (h, w)
                                      or n.shape[0] not in (1, z_s.shape[0])):
                    raise ValueError(f"InfinityGenerator: noises[{i}] must be (B, 1, {h}, {w}), got {tuple(n.shape)}")
        return self.texture_synthesizer(z_s, ws, noises)

    def synthesis(self, z_g: torch.Tensor, z_l: torch.Tensor, ws: torch.Tensor, coords: Optional[torch.Tensor] = None,
                  noises: Optional[Sequence] = None, return_structure: bool = False):
        """Image from explicit inputs: G_S(z_g, z_l, coords) then G_T(z_S, ws, noises) (inversion, training).

        Returns:
            image (B, img_channels, P, P') float32, or (image, z_S) with return_structure."""
        z_s = self.structure(z_g, z_l, coords)
        img = self.texture(z_s, ws, noises)
        return (img, z_s) if return_structure else img

    def forward(self, z_g: torch.Tensor, z_l: torch.Tensor, coords: Optional[torch.Tensor] = None,
                noises: Optional[Sequence] = None, *, inject_index: Optional[int] = None,
                return_structure: bool = False):
        """One patch per sample (what `generate` calls per patch).

        Args:
            z_g: (B, z_dim) or (B, 2, z_dim) global latents (N(0,1)).
            z_l: (B, local_dim, n + 2R, m + 2R) local latents; (35, 35) -> a 101 x 101 patch.
            coords: (B, 3, n + 2R, m + 2R) or None (canvas coordinates centred on the frame origin).
            noises: per-conv maps (see `noise_shapes`) or None (fresh N(0,1), the training behaviour).
            inject_index: style-mixing layer for a (B, 2, z_dim) z_g.
        Returns:
            image (B, img_channels, H, W) float32 in about [-1, 1]; with return_structure (image, z_S).
        Raises:
            ValueError: wrong shapes.
        """
        ws = self.styles(z_g, inject_index)
        return self.synthesis(z_g, z_l, ws, coords, noises, return_structure=return_structure)

    def centred_coords(self, batch: int, h: int, w: int, device=None) -> torch.Tensor:
        """Coordinates of an h x w z_l centred on the canvas frame origin (pixel (0, 0))."""
        c0 = _pixel_offset(self.depth)
        return self.coords(h, w, c0 - (h - 1) / 2, c0 - (w - 1) / 2, batch=batch, device=device)

    def _check_inputs(self, z_g, z_l, coords):
        _check_latent("z_g", z_g, (None, self.z_dim))
        _check_latent("z_l", z_l, (z_g.shape[0], self.local_dim, None, None))
        min_zl = self.min_zs_size() + 2 * self.ss_margin
        if z_l.shape[2] < min_zl or z_l.shape[3] < min_zl:
            raise ValueError(f"InfinityGenerator: z_l must be at least {min_zl}x{min_zl} "
                             f"(z_S >= {self.min_zs_size()}), got {tuple(z_l.shape[2:])}")
        if coords is not None and (coords.ndim != 4 or coords.shape[1] != 3 or coords.shape[2:] != z_l.shape[2:]
                                   or coords.shape[0] not in (1, z_l.shape[0])):
            raise ValueError(f"InfinityGenerator: coords must be (B, 3, {z_l.shape[2]}, {z_l.shape[3]}), "
                             f"got {tuple(coords.shape)}")

    # -- report ------------------------------------------------------------------------------------
    def module_params(self) -> dict:
        """Parameter counts: {"G_S": ..., "mapping": ..., "G_T convs": ..., "G_T torgbs": ..., "G_T": ...}."""
        count = lambda m: sum(p.numel() for p in m.parameters())
        ts = self.texture_synthesizer
        d = {"G_S": count(self.structure_synthesizer), "mapping": count(self.mapping_network),
             "G_T convs": count(ts.convs), "G_T torgbs": count(ts.torgbs)}
        d["G_T"] = d["mapping"] + d["G_T convs"] + d["G_T torgbs"]
        d["total"] = d["G_S"] + d["G_T"]
        return d

    def schedule_table(self) -> str:
        """The layer schedule (sizes of one training patch, channels, parameters) as a text table."""
        cfg = self.config
        count = lambda m: sum(p.numel() for p in m.parameters())
        lines = [f"InfinityGenerator: patch {self.patch_size} = 2^{self.depth} * {self.ts_input} - "
                 f"5 * (2^{self.depth} - 1); z_g {self.z_dim}, z_l {self.local_dim} x {cfg.zl_size}^2; "
                 f"W+ {self.num_ws}",
                 f"{'layer':<14} {'kind':<22} {'in':>5} {'out':>5} {'ch in->out':>12} {'params':>12}"]
        n = cfg.zl_size
        for i, b in enumerate(self.structure_synthesizer.blocks):
            lines.append(f"{'G_S.' + str(i):<14} {'valid 7x7 +coords':<22} {n:>5} {n - 2 * cfg.ss_radius:>5} "
                         f"{b.in_channels:>5}->{b.out_channels:<6} {count(b):>12,}")
            n -= 2 * cfg.ss_radius
        for s, c in zip(self.texture_synthesizer.specs, self.texture_synthesizer.convs):
            out = out_size_up(n) if s.up else out_size_conv(n)
            kind = "up 3x3 crop+blur" if s.up else "valid 3x3"
            lines.append(f"{'G_T.conv' + str(s.index):<14} {kind:<22} {n:>5} {out:>5} "
                         f"{s.in_channels:>5}->{s.out_channels:<6} {count(c):>12,}")
            n = out
        sizes = self.layer_sizes()
        for p, t in enumerate(self.texture_synthesizer.torgbs):
            size = sizes[2 * p + 2]
            lines.append(f"{'G_T.torgb' + str(p):<14} {'1x1, W+ ' + str(self.texture_synthesizer.rgb_index[p]):<22} "
                         f"{size:>5} {size:>5} {t.in_channels:>5}->{t.out_channels:<6} {count(t):>12,}")
        m = self.module_params()
        lines.append(f"mapping: {cfg.mapping_layers} x fc {self.z_dim}, {m['mapping']:,} params")
        lines.append(f"G_S {m['G_S']:,} ({m['G_S'] / 1e6:.2f}M); G_T incl. mapping {m['G_T']:,} "
                     f"({m['G_T'] / 1e6:.2f}M); total {m['total']:,} ({m['total'] / 1e6:.2f}M)")
        return "\n".join(lines)

    # -- the canvas -------------------------------------------------------------------------------
    def canvas_inputs(self, seed: int, zs_top, zs_left, zs_h: int, zs_w: int, *, device=None,
                      dtype: torch.dtype = torch.float32, skip_noise: Optional[Sequence[bool]] = None,
                      ring: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """The slice of the canvas of `seed` that drives z_S rows zs_top + [0, zs_h) x cols zs_left + [0, zs_w).

        Args:
            seed: canvas seed in [0, 2^63). zs_top, zs_left: int or (B,) int tensors (one per patch).
            zs_h, zs_w: z_S size of every patch.
            ring: None, or L: a cyclic canvas whose columns wrap every L latent columns (z_l, coordinates)
                and every step_k * L samples (noise of G_T conv k), i.e. every 2^depth * L pixels.
        Returns:
            z_l (B, local_dim, zs_h + 2R, zs_w + 2R), coords (B, 3, same), noises [(B, 1, h_i, w_i)], the inputs
            of `forward` for pixels 2^depth * zs_top + [0, output_size(zs_h)) (and likewise for columns).
            skip_noise[i] True: a (1, 1, 1, 1) zero map instead (for convs whose noise strength is 0).
        """
        R = self.ss_margin
        top = torch.as_tensor(zs_top, dtype=torch.int64, device=device).reshape(-1)
        left = torch.as_tensor(zs_left, dtype=torch.int64, device=device).reshape(-1)
        ar = lambda n: torch.arange(n, dtype=torch.int64, device=device)[None]
        rows, cols = top[:, None] - R + ar(zs_h + 2 * R), left[:, None] - R + ar(zs_w + 2 * R)
        z_l = _canvas.canvas_normal(seed, _canvas.STREAM_ZL, self.local_dim, rows, _canvas.wrap(cols, ring), dtype)
        coords = coordinate_grid(self.config, rows, cols, ring).to(dtype)
        noises = []
        hs, ws = self.layer_sizes(zs_h)[1:], self.layer_sizes(zs_w)[1:]
        for spec, h, w in zip(self.texture_synthesizer.specs, hs, ws):
            if skip_noise is not None and skip_noise[spec.index]:
                noises.append(torch.zeros(1, 1, 1, 1, device=device, dtype=dtype))
                continue
            # Output sample i of conv k sits at canvas index step_k * zs_top + i (docs/infinitygan.md).
            r, c = spec.step * top[:, None] + ar(h), spec.step * left[:, None] + ar(w)
            c = _canvas.wrap(c, None if ring is None else spec.step * ring)
            noises.append(_canvas.canvas_normal(seed, 1 + spec.index, 1, r, c, dtype))
        return z_l, coords, noises

    def fusion_grids(self, zs_top: int, zs_left: int, zs_h: int, zs_w: int) -> List[tuple]:
        """Canvas pixel positions (ys, xs) of the style-consuming grids of one patch: [z_l (G_S inputs;
        each block centre-crops it), G_T conv i inputs..., ToRGB p inputs...]."""
        scale, c0 = 2 ** self.depth, 2 * (2 ** self.depth - 1)
        R = self.ss_margin

        def grid(start, offset, spacing, n):
            z = start + offset + spacing * torch.arange(n, dtype=torch.float64)
            return torch.round(scale * z - c0).to(torch.int64)

        zl_h, zl_w = zs_h + 2 * R, zs_w + 2 * R
        out = [(grid(zs_top, -R, 1.0, zl_h), grid(zs_left, -R, 1.0, zl_w))]
        hs, ws = self.layer_sizes(zs_h), self.layer_sizes(zs_w)
        specs = self.texture_synthesizer.specs
        for s in specs:
            out.append((grid(zs_top, s.in_offset, s.in_spacing, hs[s.index]),
                        grid(zs_left, s.in_offset, s.in_spacing, ws[s.index])))
        for p in range(self.depth):
            s = specs[2 * p + 1]
            out.append((grid(zs_top, s.out_offset, s.out_spacing, hs[s.index + 1]),
                        grid(zs_left, s.out_offset, s.out_spacing, ws[s.index + 1])))
        return out

    def fused_patch(self, z_g: torch.Tensor, ws: torch.Tensor, maps: Sequence[torch.Tensor], z_l: torch.Tensor,
                    coords: torch.Tensor, noises: Sequence[torch.Tensor], demod: str = "exact") -> torch.Tensor:
        """Patch forward with spatially varying styles (spatial style fusion).

        Args:
            z_g: (K, z_dim) raw global latents of the centres (G_S styles); ws: (K, num_ws, z_dim) their W+.
            maps: per `fusion_grids` entry a (B, K, H, W) convex weight map.
            z_l, coords, noises: as for forward (batch B).
            demod: "exact" or "pointwise" (the published approximation).
        Returns:
            (B, img_channels, H, W) image.
        """
        if demod not in DEMODS:
            raise ValueError(f"InfinityGenerator: demod must be one of {DEMODS}, got {demod!r}")
        ss = self.structure_synthesizer
        ts = self.texture_synthesizer
        ss_maps = [b.style_map(maps[0], z_g) for b in ss.blocks]
        conv_maps = [c.style_map(maps[1 + i], ws[:, i]) for i, c in enumerate(ts.convs)]
        n = len(ts.convs)
        rgb_maps = [t.style_map(maps[1 + n + p], ws[:, ts.rgb_index[p]]) for p, t in enumerate(ts.torgbs)]
        z_s = ss(None, z_l, coords, style_maps=ss_maps, demod=demod)
        return ts(z_s, None, noises, conv_maps=conv_maps, rgb_maps=rgb_maps, demod=demod)

    @torch.no_grad()
    def render(self, z_g: torch.Tensor, height: int, width: int, *, top: int = 0, left: int = 0,
                 patch_batch: int = 1, seed: int = 0, style_centres=None, fusion_kernel: int = 127,
                 fusion_demod: str = "exact", device=None, dtype: torch.dtype = torch.float32,
                 progress: bool = True, cyclic_width: Optional[int] = None) -> Optional[torch.Tensor]:
        """The window [top, top + height) x [left, left + width) of the unbounded canvas of `seed`.

        Patches of ts_input latents (the training patch) at a stride of ts_input - 5 latents are generated
        from their slices of the canvas inputs (`canvas_inputs`), `patch_batch` at a time, and streamed
        into a host image; device memory does not depend on the window. Under torchrun, inside
        `anyres_fast.models.tiling.sharding()`, patches are dealt out to the ranks and rank 0 assembles.

        Args:
            z_g: (1, z_dim), or (K, z_dim) with style_centres for spatial style fusion.
            height, width: window size in pixels (any ints >= 1). top, left: window origin (any ints).
            patch_batch: patches per forward pass. seed: canvas seed in [0, 2^63).
            style_centres: (K, 2) (x, y) canvas pixels, inside the window, one per z_g row.
            fusion_kernel: odd mean-filter size of the nearest-centre map. fusion_demod: "exact"/"pointwise".
            device: where to run (default: the model's device; must be it). dtype: float32 or bfloat16/float16
                for the activations (float64 for a float64 model, tests). progress: tqdm bar.
            cyclic_width: None, or the width in pixels of a cyclic canvas (a multiple of 2^depth, at least
                one patch): columns wrap every cyclic_width pixels, so column cyclic_width - 1 continues
                into column 0 and the window may start anywhere and be any width (docs/infinitygan.md).
        Returns:
            (1, img_channels, height, width) float32 CPU tensor (float64 for dtype float64); None on ranks
            other than 0 when sharded.
        Raises:
            ValueError / TypeError: bad sizes, latents (shape, NaN), centres, kernel, device.
        """
        return _generate(self, z_g, height, width, top=top, left=left, patch_batch=patch_batch, seed=seed,
                         style_centres=style_centres, fusion_kernel=fusion_kernel, fusion_demod=fusion_demod,
                         device=device, dtype=dtype, progress=progress, cyclic_width=cyclic_width)

    generate = render       # the earlier name; Generator.render is the same operation for the other family

    def zl_field(self, p: int) -> Tuple[int, int]:
        """Inclusive range (lo, hi) of z_l canvas indices, along one axis, that canvas pixel p depends on
        (the same range for z_l and the coordinates; exact, see docs/infinitygan.md)."""
        # Walk back from the output sample: valid 3x3 conv [a, b] -> [a, b + 2]; up-conv: blur [a, b + 2],
        # uncropped transposed [a + 1, b + 3], input i reaches 2i .. 2i + 2.
        scale = 2 ** self.depth
        s0 = (p // scale)                       # any patch containing p; take the one starting at s0
        a = b = p - scale * s0
        for spec in reversed(self.texture_synthesizer.specs):
            if spec.up:
                a, b = -((-(a + 1 - 2)) // 2), (b + 3) // 2
            else:
                b = b + 2
        # [a, b] in z_S indices of that patch -> z_l canvas indices (G_S: +-R).
        return s0 + a - self.ss_margin, s0 + b + self.ss_margin


def _check_latent(name: str, t, shape, finite: bool = False) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"InfinityGenerator: {name} must be a tensor, got {type(t).__name__}")
    if t.ndim != len(shape) or any(s is not None and t.shape[i] != s for i, s in enumerate(shape)):
        want = "(" + ", ".join("B" if s is None and i == 0 else ("*" if s is None else str(s))
                               for i, s in enumerate(shape)) + ")"
        raise ValueError(f"InfinityGenerator: {name} must have shape {want}, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"InfinityGenerator: {name} must be a float tensor, got {t.dtype}")
    # The finiteness check reads the tensor back (a device sync): only for user-facing entry points.
    if finite and not torch.isfinite(t).all():
        raise ValueError(f"InfinityGenerator: {name} contains NaN or Inf")


def _generate(G: InfinityGenerator, z_g, height, width, *, top, left, patch_batch, seed, style_centres,
              fusion_kernel, fusion_demod, device, dtype, progress, cyclic_width=None):
    def positive(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"InfinityGenerator.generate: {name} must be an int >= 1, got {v!r}")
    positive("height", height)
    positive("width", width)
    positive("patch_batch", patch_batch)
    for name, v in (("top", top), ("left", left)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"InfinityGenerator.generate: {name} must be an int (pixels), got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"InfinityGenerator.generate: seed must be an int in [0, 2^63), got {seed!r}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16) and not (
            dtype == torch.float64 and next(G.parameters()).dtype == torch.float64):
        raise ValueError(f"InfinityGenerator.generate: dtype must be float32, bfloat16 or float16 (float64 for a "
                         f"float64 model), got {dtype}")
    ring = None
    if cyclic_width is not None:
        ring = _canvas.ring_columns(cyclic_width, 2 ** G.depth, G.patch_size, "InfinityGenerator.generate: cyclic_width")
        if style_centres is not None:
            # The nearest-centre map lives on the unbounded plane; it would cut the ring at its seam.
            raise ValueError("InfinityGenerator.generate: style fusion (style_centres) is not available on a cyclic canvas")
    _check_latent("z_g", z_g, (None, G.z_dim), finite=True)
    k = z_g.shape[0]
    if style_centres is None and k != 1:
        raise ValueError(f"InfinityGenerator.generate: z_g has {k} rows; give style_centres (K, 2) for style "
                         f"fusion or pass a single (1, {G.z_dim}) latent")
    centres = None
    if style_centres is not None:
        centres = _canvas.check_centres(style_centres, k, top, left, height, width)
        if isinstance(fusion_kernel, bool) or not isinstance(fusion_kernel, int) or fusion_kernel < 1 \
                or fusion_kernel % 2 == 0:
            raise ValueError(f"InfinityGenerator.generate: fusion_kernel must be an odd int >= 1, got {fusion_kernel!r}")
        if fusion_demod not in DEMODS:
            raise ValueError(f"InfinityGenerator.generate: fusion_demod must be one of {DEMODS}, got {fusion_demod!r}")
    model_device = next(G.parameters()).device
    device = model_device if device is None else torch.device(device)
    if device.type != model_device.type or (device.index is not None and model_device.index is not None
                                            and device.index != model_device.index):
        raise ValueError(f"InfinityGenerator.generate: the model is on {model_device} but device is {device}; "
                         f"move the model with G.to(device)")
    device = model_device

    zs, scale = G.ts_input, 2 ** G.depth
    plan = _canvas.plan_window(top, left, height, width, zs=zs, patch=G.patch_size, scale=scale)
    patches = plan.patches
    z_g = z_g.to(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    ws = G.styles(z_g)                                                    # (K, num_ws, z_dim)
    rank, _ = _render.shard_world()
    host_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if rank == 0:   # the host image: stop before allocating it when it cannot fit
        _render.check_render_memory(num_images=1, width=width, height=height, tile=G.patch_size,
                                    channels=G.img_channels, tile_batch=patch_batch, device=device,
                                    out_dtype=host_dtype)
    out = torch.empty(1, G.img_channels, height, width, dtype=host_dtype) if rank == 0 else None

    # Noise that a zero strength multiplies away is not drawn (one read of the strengths per call).
    skip = [bool(c.noise_strength.detach().cpu() == 0) for c in G.texture_synthesizer.convs]

    def compute(r):
        starts = torch.tensor([patches[i] for i in r], dtype=torch.int64)
        z_l, coords, noises = G.canvas_inputs(seed, starts[:, 0], starts[:, 1], zs, zs, device=device, dtype=dtype,
                                              skip_noise=skip, ring=ring)
        if centres is None:
            b = z_l.shape[0]
            z_s = G.structure_synthesizer(z_g.expand(b, -1), z_l, coords)
            img = G.texture_synthesizer(z_s, ws.expand(b, -1, -1), noises)
        else:
            per_patch = [_canvas.fusion_weights(centres, fusion_kernel, G.fusion_grids(py, px, zs, zs), device)
                         for py, px in starts.tolist()]
            maps = [torch.stack(m, dim=0) for m in zip(*per_patch)]
            img = G.fused_patch(z_g, ws, maps, z_l, coords, noises, demod=fusion_demod)
        return img.to(host_dtype)

    def place(r, host):
        for i, n in enumerate(r):
            py, px = patches[n]
            y0, x0 = scale * py, scale * px                    # canvas pixel of the patch's (0, 0)
            ya, yb = max(y0, top), min(y0 + G.patch_size, top + height)
            xa, xb = max(x0, left), min(x0 + G.patch_size, left + width)
            if ya < yb and xa < xb:
                out[0, :, ya - top:yb - top, xa - left:xb - left] = host[i, :, ya - y0:yb - y0, xa - x0:xb - x0]

    _render.stream_chunks(len(patches), patch_batch, compute, place, device=device, progress=progress,
                          desc=f"generate {width}x{height}")
    return out
