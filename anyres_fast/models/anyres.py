"""Any-resolution generator: StyleGAN3 (configs T and R) with patch coordinates and a scale branch.

Design: docs/anyres_generator.md (Chai et al. 2022). The synthesis network follows StyleGAN3's layer schedule, filters, margins and parameter
names, so weights map one to one. Two additions:

- Patch coordinates enter only at the Fourier input. A per-sample 3x3 transform
  T = [[s, 0, v_x/2], [0, s, v_y/2], [0, 0, 1]] (s = p/N, v = patch centre in [-1, 1]^2 canvas units)
  maps the input grid onto the patch's footprint in one canvas frame, before the learned
  rotation/translation. Every later layer is translation-equivariant, so patches of one canvas agree.
- The scale N/p is embedded with a log-scale Fourier embedding (no RMS normalisation, so the value
  survives), mapped by a small MLP and added to every layer's style through a per-layer affine that
  starts at zero: a fresh scale branch leaves a pretrained StyleGAN3 unchanged.
- Panorama mode (`panorama=True, fov=60`, docs/panorama.md): the input's x is a viewing angle over a
  full turn, entering the Fourier features through sin and cos, so the canvas is a seamless 360-degree
  strip; `render_panorama` renders it, `panorama_slice` one viewing angle.

Only `anyres_fast.ops` is used for the heavy ops (modulated_conv2d, filtered_lrelu, bias_act).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import ops
from . import tiling as _render
from . import pretrained
from .filters import design_lowpass
from .layers import FullyConnected, normalize_2nd_moment

FORMAT = "anyres_fast.Generator/1"

# StyleGAN3's two published configs; channel widths of R are doubled and its convs are 1x1.
CONFIGS = {
    "T": dict(conv_kernel=3, use_radial_filters=False, channel_base=32768, channel_max=512),
    "R": dict(conv_kernel=1, use_radial_filters=True, channel_base=65536, channel_max=1024),
}


SCALE_BRANCH_STYLES = ("fourier", "anyres-gan")
SCALE_NORMS = ("positive", "zerocentered")


# ----------------------------------------------------------------------------------------------------
# Configuration and layer schedule

@dataclass
class GeneratorConfig:
    """Everything needed to rebuild a Generator (stored as JSON next to the weights)."""
    resolution: int = 256                   # p: patch / generator size, power of two >= 64
    config: str = "T"                       # "T" or "R"
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    img_channels: int = 3
    channel_base: Optional[int] = None      # None: the config's value
    channel_max: Optional[int] = None
    mapping_layers: int = 2
    mapping_width: Optional[int] = None     # hidden width of the mapping MLP; None: w_dim (StyleGAN3)
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    num_fp16_res: int = 4
    filter_size: int = 6
    lrelu_upsampling: int = 2
    conv_clamp: Optional[float] = 256.0
    magnitude_ema_beta: float = 0.999
    scale_branch: bool = True
    scale_dim: int = 128                    # width of the scale MLP
    scale_embed_freqs: int = 4              # Fourier bands of log2(N/p)
    scale_mapping_layers: int = 2
    # "fourier" (ours, above) or "anyres-gan": the published branch, for loading its weights one to one
    # (docs/published_models.md): the scale N/p normalised by scale_norm over [scale_mapping_min,
    # scale_mapping_max], a second StyleGAN mapping network (z_dim 1, the mapping's layers and
    # hyperparameters) and per-layer scale affines from w_dim.
    scale_branch_style: str = "fourier"
    scale_norm: str = "positive"            # "positive" or "zerocentered" (anyres-gan style only)
    scale_mapping_min: float = 1.0
    scale_mapping_max: float = 8.0
    # Panorama mode (docs/panorama.md, Chai et al. 2022 supplement §6): the input's x runs over a full
    # turn through sin/cos, so the canvas is a 360-degree strip; one p x p frame covers `fov` degrees.
    panorama: bool = False
    fov: float = 60.0

    def __post_init__(self):
        # Types first: a JSON config or keyword argument of the wrong type ("512", 64.5, true) would
        # otherwise surface as an obscure error deep in the layer construction, or silently round.
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _FIELD_KINDS[f.name]
            optional = f.default is None
            if value is None and optional:
                continue
            if kind is int:
                ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
                if ok:
                    setattr(self, f.name, int(value))
            elif kind is float:
                ok = (isinstance(value, (int, float, np.integer, np.floating))
                      and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))
                if ok:
                    setattr(self, f.name, float(value))
            else:
                ok = isinstance(value, kind)
            if not ok:
                want = {int: "an int", float: "a finite number", bool: "true or false", str: "a string"}[kind]
                raise TypeError(f"Generator: {f.name} must be {want}{' or None' if optional else ''}, "
                                f"got {value!r} ({type(value).__name__})")
        if self.config not in CONFIGS:
            raise ValueError(f"Generator: config must be one of {sorted(CONFIGS)}, got {self.config!r}")
        if self.scale_branch_style not in SCALE_BRANCH_STYLES:
            raise ValueError(f"Generator: scale_branch_style must be one of {list(SCALE_BRANCH_STYLES)}, "
                             f"got {self.scale_branch_style!r}")
        if self.scale_norm not in SCALE_NORMS:
            raise ValueError(f"Generator: scale_norm must be one of {list(SCALE_NORMS)}, got {self.scale_norm!r}")
        if not 0 < self.fov <= 360:
            raise ValueError(f"Generator: fov must be in (0, 360] degrees, got {self.fov:g}")
        if not self.scale_mapping_max > self.scale_mapping_min:
            raise ValueError(f"Generator: scale_mapping_max must be > scale_mapping_min, got "
                             f"{self.scale_mapping_max} and {self.scale_mapping_min}")
        p = self.resolution
        if p < 64 or p & (p - 1):
            raise ValueError(f"Generator: resolution must be a power of two >= 64, got {p!r}")
        for name in ("z_dim", "w_dim", "img_channels", "mapping_layers", "num_layers", "scale_dim",
                     "channel_base", "channel_max", "mapping_width", "filter_size", "lrelu_upsampling",
                     "scale_mapping_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Generator: {name} must be >= 1, got {value}")
        for name in ("c_dim", "margin_size", "num_fp16_res", "scale_embed_freqs"):
            if getattr(self, name) < 0:
                raise ValueError(f"Generator: {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.num_critical < self.num_layers:
            raise ValueError(f"Generator: num_critical must be in [0, num_layers), got {self.num_critical}")
        for name in ("mapping_lr_multiplier", "first_cutoff", "first_stopband", "last_stopband_rel"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Generator: {name} must be > 0, got {getattr(self, name)}")
        for name in ("w_avg_beta", "magnitude_ema_beta"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Generator: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            raise ValueError(f"Generator: conv_clamp must be > 0 or None, got {self.conv_clamp}")
        # Narrow widths can round a layer down to zero channels.
        channels = [l.out_channels for l in layer_schedule(self).layers[:-1]]
        if min(channels) < 1:
            raise ValueError(f"Generator: channel_base {self.resolved_channel_base} gives layers with 0 channels "
                             f"at resolution {p} (the narrowest layer has channel_base / {p} channels); "
                             f"use channel_base >= {p}")

    @property
    def conv_kernel(self) -> int:
        return CONFIGS[self.config]["conv_kernel"]

    @property
    def use_radial_filters(self) -> bool:
        return CONFIGS[self.config]["use_radial_filters"]

    @property
    def resolved_channel_base(self) -> int:
        return self.channel_base if self.channel_base is not None else CONFIGS[self.config]["channel_base"]

    @property
    def resolved_channel_max(self) -> int:
        return self.channel_max if self.channel_max is not None else CONFIGS[self.config]["channel_max"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Generator config: unknown keys {unknown}")
        return cls(**d)


# The type every GeneratorConfig field must have (Optional fields, default None, may also be None).
_FIELD_KINDS = {f.name: {"int": int, "float": float, "bool": bool, "str": str}[
    f.type.replace("Optional[", "").rstrip("]")] for f in dataclasses.fields(GeneratorConfig)}


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer of the StyleGAN3 schedule (rates and cutoffs in samples per image width)."""
    index: int
    name: str
    is_torgb: bool
    is_critical: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_rate: int
    out_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    radial_down: bool
    tmp_rate: int
    padding: tuple          # (x0, x1, y0, y1) of filtered_lrelu, in the upsampled grid


@dataclass(frozen=True)
class InputSpec:
    channels: int
    size: int
    rate: int
    bandwidth: float


@dataclass(frozen=True)
class Schedule:
    input: InputSpec
    layers: tuple


def layer_schedule(cfg: GeneratorConfig) -> Schedule:
    """StyleGAN3's geometric progression of cutoffs and stopbands, and the per-layer sizes, filters and
    paddings that follow from it. Pure arithmetic: allocates no weights."""
    res, n = cfg.resolution, cfg.num_layers
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = res            # the last two layers are critically sampled and carry no margin
    channels = np.rint(np.minimum((cfg.resolved_channel_base / 2) / cutoffs, cfg.resolved_channel_max))
    channels[-1] = cfg.img_channels

    layers = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == n
        is_critical = idx >= n - cfg.num_critical
        k = 1 if is_torgb else cfg.conv_kernel
        in_rate, out_rate = int(rates[prev]), int(rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else cfg.lrelu_upsampling)
        up, down = int(round(tmp_rate / in_rate)), int(round(tmp_rate / out_rate))
        up_taps = cfg.filter_size * up if up > 1 and not is_torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not is_torgb else 1
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Padding so that the filtered_lrelu output has exactly out_size samples.
        total = (out_size - 1) * down + 1 - (in_size + k - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        hi = total - lo
        out_channels = int(channels[idx])
        layers.append(LayerSpec(
            index=idx, name=f"L{idx}_{out_size}_{out_channels}", is_torgb=is_torgb, is_critical=is_critical,
            use_fp16=bool(rates[idx] * 2 ** cfg.num_fp16_res > res),
            in_channels=int(channels[prev]), out_channels=out_channels, in_size=in_size, out_size=out_size,
            in_rate=in_rate, out_rate=out_rate, in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]), conv_kernel=k,
            up=up, down=down, up_taps=up_taps, down_taps=down_taps,
            radial_down=cfg.use_radial_filters and not is_critical, tmp_rate=tmp_rate,
            padding=(lo, hi, lo, hi)))
    inp = InputSpec(channels=int(channels[0]), size=int(sizes[0]), rate=int(rates[0]), bandwidth=float(cutoffs[0]))
    return Schedule(input=inp, layers=tuple(layers))


def format_schedule(schedule: Schedule, params: Optional[dict] = None) -> str:
    """A table of the schedule; `params` maps layer name -> parameter count (plus "input")."""
    i = schedule.input
    lines = [f"input: {i.channels} ch, {i.size}x{i.size}, rate {i.rate}, bandwidth {i.bandwidth:g}"
             + (f", {params['input']:,} params" if params else ""),
             f"{'layer':<14} {'rate':>5} {'size':>5} {'cutoff':>8} {'half_w':>8} {'ch in->out':>11} "
             f"{'up':>3} {'down':>4} {'taps u/d':>8} {'pad':>16} {'fp16':>5}" + (f" {'params':>11}" if params else "")]
    for s in schedule.layers:
        taps = f"{s.up_taps}/{s.down_taps}{'r' if s.radial_down else ''}"
        lines.append(
            f"{s.name:<14} {s.out_rate:>5} {s.out_size:>5} {s.out_cutoff:>8.2f} {s.out_half_width:>8.2f} "
            f"{s.in_channels:>5}->{s.out_channels:<5} {s.up:>3} {s.down:>4} {taps:>8} {str(s.padding):>16} "
            f"{str(s.use_fp16):>5}" + (f" {params[s.name]:>11,}" if params else ""))
    if params:
        lines.append(f"total parameters (synthesis incl. scale affines, mapping, scale mapping): "
                     f"{sum(params.values()):,}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Building blocks

class MappingNetwork(torch.nn.Module):
    """z (+ optional class c) -> w, broadcast to num_ws; keeps the running mean w_avg for truncation."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 width: Optional[int] = None, lr_multiplier: float = 0.01, w_avg_beta: float = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        width = w_dim if width is None else width
        if c_dim > 0:
            self.embed = FullyConnected(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [width] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnected(features[idx], features[idx + 1], activation="lrelu",
                                                     lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                check_inputs: bool = True) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"Generator: z must have shape (B, {self.z_dim}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        _check_truncation(truncation_psi, truncation_cutoff)
        if check_inputs and not torch.isfinite(z).all():
            raise ValueError("Generator: z must be finite (it contains NaN or inf)")
        full = _full_dtype(self.w_avg)
        x = normalize_2nd_moment(z.to(full))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"Generator: this model is conditional; c must have shape "
                                 f"({z.shape[0]}, {self.c_dim}), got {None if c is None else tuple(c.shape)}")
            y = normalize_2nd_moment(self.embed(c.to(full)))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


def _check_truncation(psi, cutoff) -> None:
    """psi: a finite real number (NaN would give all-NaN ws, i.e. a black image); cutoff: None or int >= 0."""
    if isinstance(psi, torch.Tensor) and psi.numel() == 1:
        psi = psi.item()
    if isinstance(psi, bool) or not isinstance(psi, (int, float, np.integer, np.floating)) or not math.isfinite(psi):
        raise ValueError(f"Generator: truncation_psi must be a finite number, got {psi!r}")
    if cutoff is not None and (isinstance(cutoff, bool) or not hasattr(cutoff, "__index__") or cutoff.__index__() < 0):
        raise ValueError(f"Generator: truncation_cutoff must be None or an int >= 0, got {cutoff!r}")


def scale_embedding(scale: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """[log2 s, sin(pi log2 s / 2^k), cos(pi log2 s / 2^k)] for k < num_freqs: (B,) -> (B, 1 + 2K).
    Log scale makes doubling the canvas one fixed step; no RMS normalisation, so the value survives."""
    e = torch.log2(scale.to(torch.float32)).unsqueeze(1)
    bands = torch.pi / 2.0 ** torch.arange(num_freqs, dtype=torch.float32, device=e.device)
    return torch.cat([e, torch.sin(e * bands), torch.cos(e * bands)], dim=1)


class ScaleMapping(torch.nn.Module):
    """Scale N/p -> feature vector that every synthesis layer turns into a style offset."""

    def __init__(self, num_freqs: int, dim: int, num_layers: int):
        super().__init__()
        self.num_freqs, self.num_layers = num_freqs, num_layers
        features = [1 + 2 * num_freqs] + [dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnected(features[idx], features[idx + 1], activation="lrelu"))

    def forward(self, scale: torch.Tensor) -> torch.Tensor:
        x = scale_embedding(scale, self.num_freqs)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


class SynthesisInput(torch.nn.Module):
    """Fourier features sampled on a grid, moved by the patch transform T and the learned rotation and
    translation (StyleGAN3's input layer; the buffer `transform` is kept for weight compatibility)."""

    def __init__(self, w_dim: int, spec: InputSpec, panorama: bool = False, fov: float = 60.0):
        super().__init__()
        self.w_dim, self.channels, self.size = w_dim, spec.channels, spec.size
        self.sampling_rate, self.bandwidth = spec.rate, spec.bandwidth
        self.panorama, self.fov = panorama, fov
        # One frame is `rate` input samples (the input size less its margins); a full turn is
        # floor(rate * 360 / fov) of them, as the published 360 input counts it (docs/panorama.md §1).
        self.turn_samples = panorama_turn_samples(spec.rate, fov)
        freqs = torch.randn(self.channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= self.bandwidth
        phases = torch.rand(self.channels) - 0.5
        self.weight = torch.nn.Parameter(torch.randn(self.channels, self.channels))
        self.affine = FullyConnected(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def grid(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Sample positions (size,) along one axis in image units: spacing 1/rate, centred on 0."""
        i = torch.arange(self.size, dtype=dtype, device=device)
        return (i + 0.5 - self.size / 2) / self.sampling_rate

    def frame(self, w: torch.Tensor, transform: Optional[torch.Tensor] = None) -> torch.Tensor:
        """M = R(w) @ T(w) @ buffer @ T_patch: (B,3,3); grid point g goes to M g (applied right to left)."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        b = w.shape[0]
        m_r = torch.eye(3, device=w.device, dtype=w.dtype).repeat(b, 1, 1)
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = torch.eye(3, device=w.device, dtype=w.dtype).repeat(b, 1, 1)
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = m_r @ m_t @ self.transform.unsqueeze(0)
        if transform is not None:
            m = m @ transform.to(device=w.device, dtype=w.dtype)
        return m

    def forward(self, w: torch.Tensor, transform: Optional[torch.Tensor] = None,
                output_gain: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
        if self.panorama:
            return self.panorama_features(w, transform, output_gain)
        m = self.frame(w, transform)
        # sin(2 pi (f^T (A g + b) + phi)) = sin(2 pi ((f^T A) g + (phi + f^T b))).
        freqs = self.freqs.unsqueeze(0) @ m[:, :2, :2]                       # (B, C, 2)
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ m[:, :2, 2:]).squeeze(2)
        # Fade out frequencies that the transform pushed beyond the band (zooming out).
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        g = self.grid(w.device, w.dtype)
        # Grid x runs along the width (last axis), y along the height.
        arg = (freqs[:, :, 0, None, None] * g.view(1, 1, 1, -1)
               + freqs[:, :, 1, None, None] * g.view(1, 1, -1, 1)
               + phases[:, :, None, None])                                   # (B, C, H, W)
        x = torch.sin(arg * (2 * math.pi)) * amplitudes[:, :, None, None]
        weight = self.weight * (output_gain / math.sqrt(self.channels))
        return torch.einsum("oc,bchw->bohw", weight, x)


    def angles(self, ux: torch.Tensor) -> torch.Tensor:
        """Viewing angle (radians) of canvas x in image units: the strip's left edge (x = -1/2) is -pi and
        one turn is turn_samples / rate image units (docs/panorama.md §1)."""
        return (ux + 0.5) * (2 * math.pi * self.sampling_rate / self.turn_samples) - math.pi

    def panorama_features(self, w: torch.Tensor, transform: Optional[torch.Tensor] = None,
                          output_gain: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
        """The panorama input: grid point g goes to u = buffer @ T g (no learned rotation/translation, as
        published); x becomes the angle theta, and the first half of the channels sees (sin theta, u_y),
        the second half (cos theta, u_y), so x wraps around after one turn exactly."""
        b = w.shape[0]
        m = self.transform.to(w.dtype).unsqueeze(0).expand(b, 3, 3)
        if transform is not None:
            m = m @ transform.to(device=w.device, dtype=w.dtype)
        g = self.grid(w.device, w.dtype)
        gx, gy = g.view(1, 1, -1), g.view(1, -1, 1)
        ux = m[:, 0, 0, None, None] * gx + m[:, 0, 1, None, None] * gy + m[:, 0, 2, None, None]    # (B, H, W)
        uy = m[:, 1, 0, None, None] * gx + m[:, 1, 1, None, None] * gy + m[:, 1, 2, None, None]
        theta = self.angles(ux)
        half = self.channels // 2
        f, ph = self.freqs.to(w.dtype), self.phases.to(w.dtype)
        # The published layer fades by the untransformed frequencies (all inside the band: gain 1).
        amp = (1 - (f.norm(dim=1) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        parts = []
        for sl, circle in ((slice(0, half), torch.sin(theta)), (slice(half, self.channels), torch.cos(theta))):
            arg = (f[sl, 0, None, None, None] * circle.unsqueeze(0) + f[sl, 1, None, None, None] * uy.unsqueeze(0)
                   + ph[sl, None, None, None])                                # (C', B, H, W)
            parts.append(torch.sin(arg * (2 * math.pi)) * amp[sl, None, None, None])
        x = torch.cat(parts, dim=0)
        weight = self.weight.to(w.dtype) * (output_gain / math.sqrt(self.channels))
        return torch.einsum("oc,cbhw->bohw", weight, x)


def panorama_turn_samples(rate: int, fov: float) -> int:
    """Input samples in one full turn: floor(rate * 360 / fov) (the published grid width less margins).

    Args:
        rate: the input layer's sampling rate (= samples per frame). fov: degrees per frame, (0, 360].

    Returns:
        int >= rate.
    """
    return int(math.floor(rate * 360 / fov + 1e-9))


class SynthesisLayer(torch.nn.Module):
    """Modulated conv (padding k-1) followed by filtered_lrelu (upsample, lrelu, filter, downsample)."""

    def __init__(self, spec: LayerSpec, w_dim: int, conv_clamp: Optional[float], magnitude_ema_beta: float,
                 scale_dim: Optional[int], scale_affine_init: float = 0.0):
        super().__init__()
        self.spec = spec
        self.is_torgb, self.use_fp16 = spec.is_torgb, spec.use_fp16
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        self.conv_kernel, self.conv_clamp = spec.conv_kernel, conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1)
        # Zero-initialised (our branch) so that adding the scale branch changes nothing until it is
        # trained; the anyres-gan branch starts from a random weight as the published code does.
        self.scale_affine = (FullyConnected(scale_dim, spec.in_channels, weight_init=scale_affine_init, bias_init=0)
                             if scale_dim is not None else None)
        k = spec.conv_kernel
        self.weight = torch.nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = torch.nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", design_lowpass(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2,
                                                         spec.tmp_rate))
        self.register_buffer("down_filter", design_lowpass(spec.down_taps, spec.out_cutoff,
                                                           spec.out_half_width * 2, spec.tmp_rate,
                                                           radial=spec.radial_down))
        self.gain = 1.0 if spec.is_torgb else math.sqrt(2)
        self.slope = 1.0 if spec.is_torgb else 0.2
        self.torgb_weight_gain = 1 / math.sqrt(spec.in_channels * k * k)

    def styles(self, w: torch.Tensor, scale_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-sample modulation (B, in_channels): affine(w) [+ scale_affine(scale features)]."""
        s = self.affine(w)
        if self.scale_affine is not None and scale_features is not None:
            s = s + self.scale_affine(scale_features)
        if self.is_torgb:
            s = s * self.torgb_weight_gain
        return s

    def forward(self, x: torch.Tensor, w: torch.Tensor, scale_features: Optional[torch.Tensor] = None, *,
                dtype: torch.dtype = torch.float32, update_emas: bool = False,
                input_gain_applied: bool = False, output_gain: float = 1.0) -> torch.Tensor:
        """input_gain_applied: the caller already multiplied x by this layer's magnitude_ema^-1/2
        (folded into the previous layer). output_gain: a positive factor folded into gain and clamp."""
        if update_emas:
            if input_gain_applied:
                raise ValueError("SynthesisLayer: update_emas needs the unscaled input (input_gain_applied=False)")
            cur = x.detach().to(self.magnitude_ema.dtype).square().mean()
            self.magnitude_ema.copy_(cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.styles(w, scale_features)
        if not input_gain_applied:
            x = x * self.magnitude_ema.rsqrt().to(x.dtype)
        x = x.to(dtype)
        weight = self.weight
        demodulate = not self.is_torgb
        if demodulate:
            # Scale-free rescaling before the fp16 conv (cancels in the demodulation; keeps values in range).
            weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        x = ops.modulated_conv2d(x, weight.to(dtype), styles, demodulate=demodulate, padding=self.conv_kernel - 1)
        clamp = None if self.conv_clamp is None else self.conv_clamp * output_gain
        return ops.filtered_lrelu(x, self.up_filter, self.down_filter, b=self.bias.to(dtype), up=self.spec.up,
                                  down=self.spec.down, padding=self.spec.padding, gain=self.gain * output_gain,
                                  slope=self.slope, clamp=clamp)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}->{s.out_channels}, size {s.in_size}->{s.out_size}, rate {s.in_rate}->"
                f"{s.out_rate}, up {s.up}, down {s.down}, fp16={s.use_fp16}")


def _full_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 when t is float64 (a model converted with .double() runs in float64 throughout, for
    gradient and side-by-side checks); float32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.schedule = layer_schedule(cfg)
        self.w_dim, self.img_resolution, self.output_scale = cfg.w_dim, cfg.resolution, cfg.output_scale
        self.num_ws = cfg.num_layers + 2
        self.input = SynthesisInput(cfg.w_dim, self.schedule.input, panorama=cfg.panorama, fov=cfg.fov)
        self.layer_names = []
        published = cfg.scale_branch_style == "anyres-gan"
        scale_dim = (cfg.w_dim if published else cfg.scale_dim) if cfg.scale_branch else None
        for spec in self.schedule.layers:
            layer = SynthesisLayer(spec, cfg.w_dim, cfg.conv_clamp, cfg.magnitude_ema_beta, scale_dim,
                                   scale_affine_init=1.0 if published else 0.0)
            setattr(self, spec.name, layer)
            self.layer_names.append(spec.name)

    @property
    def layers(self) -> list:
        return [getattr(self, n) for n in self.layer_names]

    def input_gains(self) -> list:
        """magnitude_ema^-1/2 of every layer as Python floats (one device sync), for folding."""
        return torch.stack([l.magnitude_ema for l in self.layers]).rsqrt().tolist()

    def forward(self, ws: torch.Tensor, transform: Optional[torch.Tensor] = None,
                scale_features: Optional[torch.Tensor] = None, *, half_dtype: Optional[torch.dtype] = torch.float16,
                update_emas: bool = False, input_gains: Optional[Sequence[float]] = None) -> torch.Tensor:
        """ws (B, num_ws, w_dim). half_dtype: dtype of the fp16 layers on CUDA (None: all float32).
        input_gains (from input_gains()): fold each layer's input gain and the output scale into the
        previous layer's filtered_lrelu gain/clamp, which saves one elementwise pass per layer."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"Generator: ws must have shape (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if input_gains is not None and update_emas:
            raise ValueError("Generator: input_gains folding cannot be combined with update_emas")
        full = _full_dtype(ws)
        ws = ws.to(full).unbind(dim=1)
        layers = self.layers
        folded = input_gains is not None
        x = self.input(ws[0], transform, output_gain=input_gains[0] if folded else 1.0)
        use_half = half_dtype is not None and x.device.type == "cuda"
        for i, (layer, w) in enumerate(zip(layers, ws[1:])):
            dtype = half_dtype if (use_half and layer.use_fp16) else full
            if folded:
                out_gain = input_gains[i + 1] if i + 1 < len(layers) else self.output_scale
                x = layer(x, w, scale_features, dtype=dtype, input_gain_applied=True, output_gain=out_gain)
            else:
                x = layer(x, w, scale_features, dtype=dtype, update_emas=update_emas)
        x = x.to(full)
        if not folded and self.output_scale != 1:
            x = x * self.output_scale
        return x


# ----------------------------------------------------------------------------------------------------
# Patch coordinates

def _per_sample(name: str, value, batch: int, width: int, device, check: bool = True) -> torch.Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and width == 1:
        t = torch.full((batch,), float(value), dtype=torch.float64, device=device)   # no host-to-device copy
    else:
        if isinstance(value, (str, bytes, bool)) or not isinstance(value, (torch.Tensor, np.ndarray, int, float,
                                                                          np.number, list, tuple)):
            raise TypeError(f"Generator: {name} must be a number, a sequence of numbers or a tensor, "
                            f"got {value!r} ({type(value).__name__})")
        try:
            t = torch.as_tensor(value, dtype=torch.float64, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"Generator: {name} must be numbers, got {value!r} ({exc})") from None
    if t.ndim == 0 and width == 1:
        t = t.expand(batch)
    elif t.ndim == 1 and width > 1 and t.shape[0] == width:
        t = t.unsqueeze(0).expand(batch, width)
    if (width == 1 and t.shape != (batch,)) or (width > 1 and t.shape != (batch, width)):
        want = "a number or (B,)" if width == 1 else f"({width},) or (B, {width})"
        raise ValueError(f"Generator: {name} must be {want} with B = {batch}, got shape {tuple(t.shape)}")
    if check and not torch.isfinite(t).all():
        raise ValueError(f"Generator: {name} must be finite")
    return t


def patch_transform(resolution: int, canvas, box=None, center=None, batch: int = 1,
                    device=None, check: bool = True) -> tuple:
    """Transform T and scale N/p of a p x p patch on an N x N canvas (docs/anyres_generator.md §3).

    T = [[s, 0, v_x/2], [0, s, v_y/2], [0, 0, 1]] with s = p / N and v the patch centre.

    Args:
        resolution: p, the patch size.
        canvas: N, a number or (B,) tensor, > 0.
        box: (x0, y0) top-left pixel of the patch on the canvas, (2,) or (B, 2) (any real numbers,
            also outside the canvas).
        center: the patch centre v in [-1, 1]^2 canvas units, (2,) or (B, 2). Neither: the canvas
            centre.
        batch: B.
        device: device of the results.
        check: bool; False skips the value checks, which read device tensors back (a sync per call).

    Returns:
        (T, scale): float32 (B, 3, 3) and float32 (B,) = N / p.

    Raises:
        ValueError: both box and center, shapes that do not match the batch, non-finite values or
            canvas <= 0.
    """
    if box is not None and center is not None:
        raise ValueError("Generator: give box or center, not both")
    n = _per_sample("canvas", canvas, batch, 1, device, check)
    if check and (n <= 0).any():
        raise ValueError(f"Generator: canvas must be > 0, got {canvas}")
    if box is not None:
        b = _per_sample("box", box, batch, 2, device, check)
        v = (b + resolution / 2) / n.unsqueeze(1) * 2 - 1
    elif center is not None:
        v = _per_sample("center", center, batch, 2, device, check)
    else:
        v = torch.zeros(batch, 2, dtype=torch.float64, device=device)
    s = resolution / n
    t = torch.zeros(batch, 3, 3, dtype=torch.float64, device=device)
    t[:, 0, 0], t[:, 1, 1], t[:, 2, 2] = s, s, 1
    t[:, 0, 2], t[:, 1, 2] = v[:, 0] / 2, v[:, 1] / 2
    return t.to(torch.float32), (n / resolution).to(torch.float32)


def estimate_tile_bytes(schedule: Schedule, half: bool = False) -> int:
    """Peak activation bytes of one p x p tile in the synthesis network (see Generator.tile_bytes)."""
    peak = schedule.input.channels * schedule.input.size ** 2 * 4
    for s in schedule.layers:
        el = 2 if (half and s.use_fp16) else 4
        conv_out = s.out_channels * (s.in_size + s.conv_kernel - 1) ** 2
        upsampled = s.out_channels * ((s.in_size + s.conv_kernel - 1) * s.up + s.up_taps) ** 2
        peak = max(peak, el * (s.in_channels * s.in_size ** 2 + conv_out + 2 * upsampled
                               + s.out_channels * s.out_size ** 2))
    return int(peak)


# ----------------------------------------------------------------------------------------------------
# Generator

class Generator(pretrained.Pretrained, torch.nn.Module):
    """Any-resolution StyleGAN3 generator (Chai et al. 2022); design in docs/anyres_generator.md.

    G(z, c, canvas=N, box=(x0, y0)) renders one p x p patch of an N x N canvas; G.render(z, size=N) a
    whole canvas tile by tile; G.zoom(z, canvas=N, window=(x0, y0, w)) any window of a virtual canvas.
    Attributes: config (GeneratorConfig), z_dim, c_dim, w_dim, num_ws, img_resolution (p),
    img_channels; submodules mapping, synthesis, scale_mapping (None without the scale branch)."""

    FORMAT = FORMAT             # save format (docs/save_format.md)
    CONFIG_CLASS = GeneratorConfig

    # Finiteness checks of z and ws read one value back from the device per call; a training loop that
    # cannot afford the sync sets G.check_inputs = False.
    check_inputs = True

    def __init__(self, cfg: Optional[GeneratorConfig] = None, **kwargs):
        """Builds a randomly initialised generator.

        Args:
            cfg: a GeneratorConfig, or None to build one from kwargs.
            **kwargs: GeneratorConfig fields, e.g. resolution=256 (p, a power of two >= 64),
                config="T" or "R", z_dim, w_dim, c_dim, channel_base, channel_max, scale_branch.

        Raises:
            TypeError: both cfg and kwargs given, cfg not a GeneratorConfig, unknown kwargs, or a
                config value of the wrong type (e.g. z_dim="512", channel_max=64.5).
            ValueError: a config value out of range (e.g. channel_base=0).
        """
        super().__init__()
        if cfg is None:
            cfg = GeneratorConfig(**kwargs)
        elif kwargs:
            raise TypeError("Generator: pass either a GeneratorConfig or keyword arguments, not both")
        elif not isinstance(cfg, GeneratorConfig):
            raise TypeError(f"Generator: cfg must be a GeneratorConfig, got {type(cfg).__name__}")
        self.config = config = cfg
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.img_resolution, self.img_channels = config.resolution, config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, self.num_ws,
                                      num_layers=config.mapping_layers, width=config.mapping_width,
                                      lr_multiplier=config.mapping_lr_multiplier, w_avg_beta=config.w_avg_beta)
        if not config.scale_branch:
            self.scale_mapping = None
        elif config.scale_branch_style == "anyres-gan":
            # The published second mapping network: the normalised scale as a 1-D "z" (and the label).
            self.scale_mapping = MappingNetwork(1, config.c_dim, config.w_dim, self.num_ws,
                                                num_layers=config.mapping_layers, width=config.mapping_width,
                                                lr_multiplier=config.mapping_lr_multiplier,
                                                w_avg_beta=config.w_avg_beta)
        else:
            self.scale_mapping = ScaleMapping(config.scale_embed_freqs, config.scale_dim, config.scale_mapping_layers)

    # -- schedule ---------------------------------------------------------------------------------
    def layer_params(self) -> dict:
        counts = {"input": sum(p.numel() for p in self.synthesis.input.parameters())}
        for name, layer in zip(self.synthesis.layer_names, self.synthesis.layers):
            counts[name] = sum(p.numel() for p in layer.parameters())
        counts["mapping"] = sum(p.numel() for p in self.mapping.parameters())
        if self.scale_mapping is not None:
            counts["scale_mapping"] = sum(p.numel() for p in self.scale_mapping.parameters())
        return counts

    def schedule_table(self) -> str:
        """The layer schedule as a printable table.

        Returns:
            str: one line per synthesis layer (sampling rate, size, cutoff, transition half-width,
            channels, up/down, filter taps, filtered_lrelu padding, fp16, parameters), the input layer
            and the parameter totals of the mapping and scale mapping networks.
        """
        counts = self.layer_params()
        table = format_schedule(self.synthesis.schedule, counts)
        extra = f"mapping: {counts['mapping']:,} params"
        if "scale_mapping" in counts:
            extra += f"; scale mapping: {counts['scale_mapping']:,} params"
        return table + "\n" + extra

    # -- forward ----------------------------------------------------------------------------------
    def frame(self, batch: int, *, canvas=None, box=None, center=None, transform=None, scale=None,
              device=None) -> tuple:
        """(T, scale) for a batch: explicit transform (scale defaults to 1/T[0,0]) or canvas/box/center."""
        if transform is not None:
            if canvas is not None or box is not None or center is not None:
                raise ValueError("Generator: give transform or canvas/box/center, not both")
            if not isinstance(transform, torch.Tensor) or transform.shape != (batch, 3, 3):
                raise ValueError(f"Generator: transform must be a (B, 3, 3) tensor with B = {batch}")
            t = transform.to(device=device, dtype=torch.float32)
            s = 1 / t[:, 0, 0]
        else:
            t, s = patch_transform(self.img_resolution, self.img_resolution if canvas is None else canvas,
                                   box=box, center=center, batch=batch, device=device)
        if scale is not None:
            s = _per_sample("scale", scale, batch, 1, device).to(torch.float32)
        return t, s

    def scale_features(self, scale: torch.Tensor, c: Optional[torch.Tensor] = None,
                       update_emas: bool = False) -> Optional[torch.Tensor]:
        """The scale branch's per-sample features, which every layer's scale_affine turns into a style offset.

        Args:
            scale: (B,) the scale N/p (1 / T[0, 0]).
            c: (B, c_dim) labels; used by the anyres-gan branch of a conditional model.
            update_emas: bool; update the anyres-gan scale mapping's w_avg (training).

        Returns:
            (B, D) float32 features, or None without a scale branch.
        """
        if self.scale_mapping is None:
            return None
        if self.config.scale_branch_style != "anyres-gan":
            return self.scale_mapping(scale)
        cfg = self.config
        x = (scale.to(torch.float32) - cfg.scale_mapping_min) / (cfg.scale_mapping_max - cfg.scale_mapping_min)
        x = 2 * x - 1 if cfg.scale_norm == "zerocentered" else x + 0.1
        # Every layer gets the same broadcast row (no truncation is applied to the scale mapping).
        return self.scale_mapping(x.unsqueeze(1), c, update_emas=update_emas, check_inputs=False)[:, 0]

    def synthesize(self, ws: torch.Tensor, *, canvas=None, box=None, center=None, transform=None, scale=None,
                   force_fp32: bool = False, half_dtype: torch.dtype = torch.float16, update_emas: bool = False,
                   input_gains: Optional[Sequence[float]] = None, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(ws, torch.Tensor):
            raise TypeError(f"Generator: ws must be a tensor (B, num_ws, w_dim), got {type(ws).__name__}")
        if self.check_inputs and not torch.isfinite(ws).all():
            raise ValueError("Generator: ws (the styles) must be finite (they contain NaN or inf)")
        t, s = self.frame(ws.shape[0], canvas=canvas, box=box, center=center, transform=transform, scale=scale,
                          device=ws.device)
        return self.synthesis(ws, t, self.scale_features(s, c, update_emas), half_dtype=None if force_fp32 else half_dtype,
                              update_emas=update_emas, input_gains=input_gains)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, *, canvas=None, box=None, center=None,
                transform=None, scale=None, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                force_fp32: bool = False, half_dtype: torch.dtype = torch.float16,
                update_emas: bool = False) -> torch.Tensor:
        """Renders one p x p patch per sample (G(z, ...) calls this).

        Args:
            z: (B, z_dim) float latents.
            c: (B, c_dim) class labels for a conditional model, else None.
            canvas: N, the canvas side in pixels (number or (B,) tensor); None: N = p.
            box: the patch's top-left canvas pixel (x0, y0): (2,) or (B, 2), any real numbers.
            center: the patch centre in [-1, 1]^2 canvas units, (2,) or (B, 2) (instead of box).
            transform: an explicit (B, 3, 3) patch transform T (instead of canvas/box/center).
            scale: the scale N/p fed to the scale branch, number or (B,); default from canvas/T.
            truncation_psi: float; 1 disables truncation towards w_avg.
            truncation_cutoff: None (all ws) or the number of leading ws to truncate.
            force_fp32: bool; run every layer in float32 (the fp16 layers are half only on CUDA).
            half_dtype: torch.float16 or torch.bfloat16 for the fp16 layers.
            update_emas: bool; update w_avg and the magnitude EMAs (training).

        Returns:
            (B, img_channels, p, p) float32 tensor in about [-1, 1] on the model's device. Without
            canvas/box/center/transform this is the plain fixed-resolution StyleGAN3 image.

        Raises:
            ValueError: z or c of the wrong shape, c missing for a conditional model, both box and
                center (or transform and canvas/box/center) given, non-finite or non-positive canvas,
                per-sample values that do not match the batch.
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas, check_inputs=self.check_inputs)
        return self.synthesize(ws, canvas=canvas, box=box, center=center, transform=transform, scale=scale,
                               force_fp32=force_fp32, half_dtype=half_dtype, update_emas=update_emas, c=c)

    @torch.no_grad()
    def calibrate_magnitudes_(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> "Generator":
        """Sets every magnitude EMA to the mean square of that layer's input for this batch, and w_avg to
        its mean w: what training statistics provide. Makes untrained models produce full-contrast
        images (demos, tests); trained weights already carry these buffers.

        Args:
            z: (B, z_dim) latents (a batch of, say, 16 or more gives stable statistics).
            c: (B, c_dim) labels for a conditional model, else None.

        Returns:
            self (modified in place; the EMA betas are restored afterwards).

        Raises:
            ValueError: z or c of the wrong shape.
        """
        layers = self.synthesis.layers
        # The anyres-gan scale branch is a second mapping network with its own w_avg.
        mappings = [m for m in (self.mapping, self.scale_mapping) if isinstance(m, MappingNetwork)]
        betas = [l.magnitude_ema_beta for l in layers], [m.w_avg_beta for m in mappings]
        try:
            for l in layers:
                l.magnitude_ema_beta = 0.0
            for m in mappings:
                m.w_avg_beta = 0.0
            self(z, c, update_emas=True, force_fp32=True)
        finally:
            for l, b in zip(layers, betas[0]):
                l.magnitude_ema_beta = b
            for m, b in zip(mappings, betas[1]):
                m.w_avg_beta = b
        return self

    # -- rendering --------------------------------------------------------------------------------
    @torch.no_grad()
    def render(self, z: torch.Tensor, size: int, *, c: Optional[torch.Tensor] = None, window=None,
               tile_batch: int = 8, device=None, truncation_psi: float = 1.0,
               truncation_cutoff: Optional[int] = None, force_fp32: bool = False,
               half_dtype: torch.dtype = torch.float16, progress: bool = True,
               out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Renders the canvas of side N = size tile by tile into a host tensor.

        Tiles sit on a p-stride grid from the window origin, so every tile samples the same grid at
        every layer; tiles sticking out of the window are cropped. Device memory depends on tile_batch,
        not on N (docs/anyres_generator.md §5).

        Args:
            z: (B, z_dim) latents (moved to the model's device).
            size: N, the canvas side in pixels, int >= 1 (>= p when window is None).
            c: (B, c_dim) labels for a conditional model, else None.
            window: (x0, y0, w) or (x0, y0, w, h) ints in canvas pixels: the part of the virtual
                canvas to render (any position, also beyond [0, N)); default the whole canvas.
            tile_batch: int >= 1, tiles per forward pass.
            device: must be the model's device (None: the model's); move the model with G.to().
            truncation_psi, truncation_cutoff: as forward.
            force_fp32, half_dtype: as forward.
            progress: bool; show a tqdm progress bar.
            out_dtype: torch.float32 (or another float dtype; values as the model outputs) or
                torch.uint8 (x·127.5 + 128 clamped to [0, 255], converted on the device).

        Returns:
            CPU tensor (B, img_channels, h, w) of out_dtype (h = w = N without a window).

        Raises:
            ValueError: size not a positive int or < p without a window, a malformed window,
                tile_batch < 1, device differs from the model's, z/c of the wrong shape.
            TypeError: window values that are not ints.
        """
        if isinstance(size, (bool, np.bool_)) or not hasattr(size, "__index__") or size.__index__() < 1:
            raise ValueError(f"Generator.render: size must be a positive int, got {size!r}")
        size = size.__index__()     # numpy and torch integers work like ints
        if window is None:
            if size < self.img_resolution:
                raise ValueError(f"Generator.render: size must be >= the patch size {self.img_resolution}, "
                                 f"got {size} (use G(z, canvas=N) to see a zoomed-out patch)")
            window = (0, 0, size, size)
        x0, y0, width, height = _render.parse_window(window)
        if x0 < 0 or y0 < 0 or x0 + width > size or y0 + height > size:
            # Extrapolation is well defined (the Fourier input extends beyond the canvas) but is not
            # what the model was trained on: allowed, and said.
            warnings.warn(f"Generator.render: window {(x0, y0, width, height)} reaches outside the "
                          f"{size}x{size} canvas; pixels there are extrapolated", stacklevel=2)
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"Generator.render: z must be a tensor (B, {self.z_dim}), got {type(z).__name__}")
        _check_truncation(truncation_psi, truncation_cutoff)
        model_device = next(self.parameters()).device
        device = model_device if device is None else torch.device(device)
        if not _same_device(device, model_device):
            raise ValueError(f"Generator.render: the model is on {model_device} but device is {device}; "
                             f"move the model with G.to(device)")
        device = model_device
        z = z.to(device)
        c = None if c is None else c.to(device)
        ws = self.mapping(z, c, truncation_psi=truncation_psi,
                          truncation_cutoff=truncation_cutoff, check_inputs=self.check_inputs)
        p = self.img_resolution
        scale_feat = self.scale_features(torch.full((ws.shape[0],), size / p, device=device), c)
        gains = self.synthesis.input_gains()
        half = None if force_fp32 else half_dtype

        def render_tiles(sample: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
            # Everything stays on the device: no per-tile host-to-device copies that would stall the stream.
            k = sample.shape[0]
            boxes = torch.stack([tx.to(torch.float64) + x0, ty.to(torch.float64) + y0], dim=1)
            t, _ = patch_transform(p, size, box=boxes, batch=k, device=device, check=False)
            sf = None if scale_feat is None else scale_feat[sample]
            return self.synthesis(ws[sample], t, sf, half_dtype=half, input_gains=gains)

        return _render.render_canvas(render_tiles, num_images=ws.shape[0], width=width, height=height, tile=p,
                                     channels=self.img_channels, tile_batch=tile_batch, device=device,
                                     progress=progress, out_dtype=out_dtype,
                                     device_bytes_per_tile=self.tile_bytes(half is not None and device.type == "cuda"))

    def tile_bytes(self, half: bool = False) -> int:
        """Estimated device memory of one tile in flight during render (largest layer: its input, the
        upsampled intermediate of filtered_lrelu and its output), in bytes. An estimate for the memory
        guard, not an exact figure."""
        return estimate_tile_bytes(self.synthesis.schedule, half)

    def zoom(self, z: torch.Tensor, canvas: int, window, **kwargs) -> torch.Tensor:
        """Renders a window of a virtual canvas: render(z, canvas, window=window, **kwargs).

        Args:
            z: (B, z_dim) latents.
            canvas: N, the virtual canvas side in pixels (int >= 1).
            window: (x0, y0, w) or (x0, y0, w, h) ints in canvas pixels, anywhere.
            **kwargs: the other arguments of render (tile_batch, truncation_psi, out_dtype, ...).

        Returns:
            CPU tensor (B, img_channels, h, w).

        Raises:
            ValueError, TypeError: as render.
        """
        return self.render(z, canvas, window=window, **kwargs)

    # -- panoramas (docs/panorama.md) --------------------------------------------------------------
    def _require_panorama(self, what: str) -> None:
        if not self.config.panorama:
            raise ValueError(f"Generator.{what}: this is not a panorama model (built without panorama=True)")

    def panorama_width(self, height: Optional[int] = None) -> int:
        """Pixels in one full turn of the strip rendered at `height` (default p).

        Args:
            height: strip height H in pixels (the canvas side N); default the patch size p.

        Returns:
            int W = turn_samples * H / rate (6H for fov 60).

        Raises:
            ValueError: not a panorama model, or a height whose turn is not a whole number of pixels.
        """
        self._require_panorama("panorama_width")
        inp = self.synthesis.input
        h = self.img_resolution if height is None else height
        if isinstance(h, (bool, np.bool_)) or not hasattr(h, "__index__") or h.__index__() < 1:
            raise ValueError(f"Generator: panorama height must be a positive int, got {height!r}")
        h = h.__index__()
        width, rest = divmod(inp.turn_samples * h, inp.sampling_rate)
        if rest:
            step = inp.sampling_rate // math.gcd(inp.turn_samples, inp.sampling_rate)
            raise ValueError(f"Generator: panorama height {h} does not give a whole number of pixels per turn "
                             f"at fov {self.config.fov:g}; use a multiple of {step}")
        return width

    def panorama_box(self, angle: float, height: Optional[int] = None) -> float:
        """Left pixel x0 of the p-wide frame centred on the viewing angle `angle` (degrees; -180 is the
        strip's left edge, 0 its middle) on a strip of the given height (default p); pass it as
        box=(x0, y0) with canvas=height."""
        width = self.panorama_width(height)
        return ((float(angle) + 180.0) / 360.0) * width - self.img_resolution / 2

    def panorama_slice(self, z: torch.Tensor, angle, *, height: Optional[int] = None, y0: float = 0.0,
                       **kwargs) -> torch.Tensor:
        """One p x p frame of the panorama centred on a viewing angle.

        Args:
            z: (B, z_dim) latents.
            angle: degrees, a number or (B,) (any real: the strip repeats every 360).
            height: strip height H (default p: the frame is the whole strip height).
            y0: top pixel of the frame on the strip (0 .. H - p).
            **kwargs: forward's other arguments (c, truncation_psi, force_fp32, ...).

        Returns:
            (B, img_channels, p, p) tensor.

        Raises:
            ValueError: not a panorama model, a bad height, angles that do not match the batch.
        """
        h = self.img_resolution if height is None else height
        width = self.panorama_width(h)
        a = _per_sample("angle", angle, z.shape[0], 1, z.device)
        x0 = (a + 180.0) / 360.0 * width - self.img_resolution / 2
        box = torch.stack([x0, torch.full_like(x0, float(y0))], dim=1)
        return self(z, canvas=h, box=box, **kwargs)

    @torch.no_grad()
    def render_panorama(self, z: torch.Tensor, height: Optional[int] = None, *, c: Optional[torch.Tensor] = None,
                        start: int = 0, w_interp: Optional[float] = None, tile_batch: int = 8, device=None,
                        truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                        force_fp32: bool = False, half_dtype: torch.dtype = torch.float16, progress: bool = True,
                        out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Renders the full 360-degree strip tile by tile (constant device memory, like render).

        Column X of the result shows the viewing angle -180 + 360 (start + X + 1/2) / W degrees, so
        column W-1 continues into column 0. With w_interp, z holds K anchor latents per image placed
        around the ring every W / K pixels; each tile's w is interpolated linearly between its two
        neighbouring anchors at the tile centre, and tiles on a p/2 stride are cross-faded with
        triangular weights (summing to one), so the strip stays seamless while w moves along x.

        Args:
            z: (B, z_dim) latents, or (B, K, z_dim) anchor latents with w_interp (K >= 2).
            height: strip height H in pixels (default p); the width is panorama_width(H).
            c: (B, c_dim) labels for a conditional model.
            start: int, the strip's first column in pixels (rotates the strip).
            w_interp: None, or the nominal anchor spacing in pixels (only used to check K; the spacing
                is W / K so the anchors close the ring).
            tile_batch, device, truncation_psi, truncation_cutoff, force_fp32, half_dtype, progress,
            out_dtype: as render.

        Returns:
            CPU tensor (B, img_channels, H, W) of out_dtype.

        Raises:
            ValueError: not a panorama model, a bad height or start, z of the wrong shape, w_interp <= 0.
        """
        self._require_panorama("render_panorama")
        p = self.img_resolution
        h = p if height is None else height
        width = self.panorama_width(h)
        if h < p:
            raise ValueError(f"Generator.render_panorama: height must be >= the patch size {p}, got {h}")
        if isinstance(start, (bool, np.bool_)) or not hasattr(start, "__index__"):
            raise ValueError(f"Generator.render_panorama: start must be an int (pixels), got {start!r}")
        start = start.__index__()
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"Generator.render_panorama: z must be a tensor, got {type(z).__name__}")
        if w_interp is not None:
            if not (isinstance(w_interp, (int, float)) and math.isfinite(w_interp) and w_interp > 0):
                raise ValueError(f"Generator.render_panorama: w_interp must be a spacing > 0 in pixels, got {w_interp!r}")
            if z.ndim != 3 or z.shape[1] < 2:
                raise ValueError(f"Generator.render_panorama: with w_interp z must be (B, K, {self.z_dim}) anchor "
                                 f"latents with K >= 2, got {tuple(z.shape)}")
        _check_truncation(truncation_psi, truncation_cutoff)
        model_device = next(self.parameters()).device
        if device is not None and not _same_device(torch.device(device), model_device):
            raise ValueError(f"Generator.render_panorama: the model is on {model_device} but device is {device}; "
                             f"move the model with G.to(device)")
        device = model_device
        z = z.to(device)
        c = None if c is None else c.to(device)
        if w_interp is None:
            ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                              check_inputs=self.check_inputs)
            anchors = ws.unsqueeze(1)                                          # (B, 1, num_ws, w_dim)
        else:
            b, k = z.shape[:2]
            cc = None if c is None else c.repeat_interleave(k, dim=0)
            anchors = self.mapping(z.reshape(b * k, -1), cc, truncation_psi=truncation_psi,
                                   truncation_cutoff=truncation_cutoff,
                                   check_inputs=self.check_inputs).reshape(b, k, self.num_ws, self.w_dim)
        num_images, k = anchors.shape[:2]
        scale_feat = self.scale_features(torch.full((num_images,), h / p, device=device), c)
        gains = self.synthesis.input_gains()
        half = None if force_fp32 else half_dtype
        hat = None
        if w_interp is not None:
            j = torch.arange(p, device=device, dtype=torch.float32)
            hat = 1 - (j + 0.5 - p / 2).abs() / (p / 2)                       # triangle, sums to 1 at p/2 stride

        def pass_at(x0: int, span: int, blend: bool) -> torch.Tensor:
            def render_tiles(sample, tx, ty):
                n = sample.shape[0]
                boxes = torch.stack([tx.to(torch.float64) + x0, ty.to(torch.float64)], dim=1)
                t, _ = patch_transform(p, h, box=boxes, batch=n, device=device, check=False)
                if k == 1:
                    w = anchors[sample, 0]
                else:       # the anchors sit at ring positions i W / K; lerp at the tile centre
                    q = torch.remainder(tx.to(torch.float64) + x0 + p / 2, width) / width * k
                    i0 = q.floor().long() % k
                    frac = (q - q.floor()).to(anchors.dtype)[:, None, None]
                    w = torch.lerp(anchors[sample, i0], anchors[sample, (i0 + 1) % k], frac)
                sf = None if scale_feat is None else scale_feat[sample]
                img = self.synthesis(w, t, sf, half_dtype=half, input_gains=gains)
                return img * hat if blend else img

            return _render.render_canvas(render_tiles, num_images=num_images, width=span, height=h, tile=p,
                                         channels=self.img_channels, tile_batch=tile_batch, device=device,
                                         progress=progress, out_dtype=torch.float32 if blend else out_dtype,
                                         device_bytes_per_tile=self.tile_bytes(half is not None and device.type == "cuda"))

        if hat is None:
            return pass_at(start, width, False)
        # Two p-stride passes offset by p/2: every column is covered once by each, with weights summing to 1.
        a = pass_at(start, width, True)
        a += pass_at(start - p // 2, width + p, True)[..., p // 2:p // 2 + width]
        return _render.to_output(a, out_dtype)



def read_pretrained_config(directory: str) -> GeneratorConfig:
    """The GeneratorConfig of a save_pretrained folder, checked, without reading the weights.

    Args:
        directory: folder with config.json and model.safetensors (or a legacy weights.pt).

    Returns:
        GeneratorConfig.

    Raises:
        FileNotFoundError, ValueError, TypeError: as Generator.from_pretrained, for the config file.
    """
    return pretrained.read_config(directory, FORMAT, GeneratorConfig.from_dict, "Generator.from_pretrained")


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)
