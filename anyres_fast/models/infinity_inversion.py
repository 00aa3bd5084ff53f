"""Inversion of real photos into an InfinityGAN canvas, for outpainting and inbetweening.

See docs/infinitygan_training.md. A canvas is the whole output image's latent grid: z_l, coordinates
and one noise map per G_T conv, all defined for the canvas and sliced per region, so the generator
(padding-free) gives every region exactly what the whole-canvas pass gives there. Known regions are
real photos placed on the canvas. Inversion optimises, with the generator frozen, one global latent
z_g, the per-layer W+ styles, the canvas z_l and every noise map against the known regions with

    pixel (10 * 0.5 * MSE, or 10 * L1)  +  10 * LPIPS  +  priors
    priors: 10 * (mean(z_g)^2 + (std(z_g) - 1)^2), 10 * the same on z_l inside the known windows,
            0.01 * mean(((w+ - mean w) / std w)^2) (a diagonal Gaussian of mapped samples),
            1000 * StyleGAN2's multi-scale noise autocorrelation

with the published schedule: Adam, lr 0.1 for the G_T side (W+, noise) and 0.01 for the G_S side
(z_g, z_l), 5% linear ramp-up and 25% cosine ramp-down, exploration noise decaying to 0 over the first
75% of the steps, noise maps renormalised after each step. Only the z_l and noise inside a region's
window (the part of the canvas its pixels depend on) matter; everything outside is redrawn per seed
when the canvas is rendered, which is what makes outpainting and inbetweening multi-modal.

A cyclic canvas (`plan_canvas(..., cyclic=True)`, docs/infinitygan.md "Cyclic canvas") keeps its
columns on a ring of L = width / 2^depth latent columns: z_l and the coordinates are stored L columns
wide and every noise map step_k * L wide, and each region (and the whole output) reads its columns
modulo the ring, so the output's last column continues into its first. One photo at the left edge then
closes the ring from both sides (the cyclic panoramas of the paper's Fig. 8: inbetweening with the same
image on both sides).

The result is an `InversionRecord` (plain tensors and settings, saved with torch.save and read with
`torch.load(weights_only=True)`), which `render` and the outpaint / inbetween commands accept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..utils.files import atomic_write
from . import infinity_canvas as _canvas
from .perceptual import build_lpips

RECORD_FORMAT = "anyres_fast.models.infinity_inversion/1"
BACKWARD_FACTOR = 1.5     # peak memory of an inversion step / what autograd saves (estimate_inversion_bytes)


# ----------------------------------------------------------------------------------------------------
# Canvas geometry

@dataclass
class Region:
    """A known photo on the canvas: pixels [top, top + h) x [left, left + w) of the output image.

    Window (z_S units): rows [a_y, a_y + n_y), cols [a_x, a_x + n_x); its G_T output covers the region
    with the region starting at pixel (off_y, off_x) of that output."""
    top: int
    left: int
    height: int
    width: int
    a_y: int = 0
    a_x: int = 0
    n_y: int = 0
    n_x: int = 0
    off_y: int = 0
    off_x: int = 0


def _zs_for(G, size: int) -> int:
    n = G.min_zs_size()
    while G.output_size(n) < size:
        n += 1
    return n


def _window(G, start: int, length: int) -> tuple:
    s = 2 ** G.depth
    a = start // s
    off = start - a * s
    return a, _zs_for(G, off + length), off


@dataclass
class Canvas:
    """Latent geometry of an output image of height x width pixels with known regions.

    zs: z_S size (rows, cols) of the whole canvas (its G_T output is at least height x width, cropped
    at the top-left); coord_top/left: canvas-frame latent position of z_l[0, 0] (the canvas is centred
    on the frame's origin, where the training coordinates are centred); ring: 0, or the latent columns L
    of a cyclic canvas (width = 2^depth L; its z_l column j is ring column (j - R) mod L)."""
    height: int
    width: int
    regions: List[Region]
    zs: tuple = (0, 0)
    coord_top: float = 0.0
    coord_left: float = 0.0
    ring: int = 0

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "zs": list(self.zs), "coord_top": self.coord_top,
                "coord_left": self.coord_left, "regions": [dict(r.__dict__) for r in self.regions],
                "ring": self.ring}

    @classmethod
    def from_dict(cls, d: dict) -> "Canvas":
        return cls(int(d["height"]), int(d["width"]), [Region(**r) for r in d["regions"]], tuple(d["zs"]),
                   float(d["coord_top"]), float(d["coord_left"]), int(d.get("ring", 0)))


def plan_canvas(G, height: int, width: int, boxes: Sequence[tuple], cyclic: bool = False) -> Canvas:
    """The canvas for an output of height x width with known regions at boxes (top, left, h, w).

    Args:
        G: an InfinityGenerator.
        height, width: output size in pixels (>= 1).
        boxes: (top, left, h, w) of each known region, inside the output.
        cyclic: wrap the columns on a ring of `width` pixels (a multiple of 2^depth, >= one patch).

    Returns:
        Canvas.

    Raises:
        ValueError: a box outside the output; a cyclic width that is not a whole number of latent
            columns or is below one patch (infinity_canvas.ring_columns).
    """
    ring = _canvas.ring_columns(width, 2 ** G.depth, G.patch_size, "width") if cyclic else 0
    regions = []
    for top, left, h, w in boxes:
        if top < 0 or left < 0 or top + h > height or left + w > width or h < 1 or w < 1:
            raise ValueError(f"region {(top, left, h, w)} is not inside the {height} x {width} output")
        a_y, n_y, off_y = _window(G, top, h)
        a_x, n_x, off_x = _window(G, left, w)
        regions.append(Region(top, left, h, w, a_y, a_x, n_y, n_x, off_y, off_x))
    zh = max([_zs_for(G, height)] + [r.a_y + r.n_y for r in regions])
    zw = max([_zs_for(G, width)] + [r.a_x + r.n_x for r in regions])
    R = G.ss_margin
    c0 = 2.0 * (2 ** G.depth - 1) / 2 ** G.depth          # latent position of canvas pixel 0 (docs/infinitygan.md)
    top = c0 - (zh + 2 * R - 1) / 2
    left = c0 - (zw + 2 * R - 1) / 2
    return Canvas(height, width, regions, (zh, zw), float(top), float(left), ring)


def canvas_inputs(G, canvas: Canvas, seed: int, device=None) -> tuple:
    """Random z_l (1, C, zh + 2R, zw + 2R) and noise maps of the whole canvas from `seed`, and its
    coordinates (1, 3, zh + 2R, zw + 2R). Cyclic canvas: L columns for z_l and the coordinates (ring
    column m is canvas latent column m), step_k * L for the noise of G_T conv k."""
    R = G.ss_margin
    zh, zw = canvas.zs
    g = torch.Generator().manual_seed(int(seed))
    if canvas.ring:
        L = canvas.ring
        z_l = torch.randn(1, G.local_dim, zh + 2 * R, L, generator=g)
        hs = G.layer_sizes(zh)[1:]
        noises = [torch.randn(1, 1, h, st * L, generator=g) for st, h in zip(_steps(G), hs)]
        coords = G.coords(zh + 2 * R, L, canvas.coord_top, 0.0, ring=L)
    else:
        z_l = torch.randn(1, G.local_dim, zh + 2 * R, zw + 2 * R, generator=g)
        noises = G.make_noises(1, (zh + 2 * R, zw + 2 * R), generator=g)
        coords = G.coords(zh + 2 * R, zw + 2 * R, canvas.coord_top, canvas.coord_left)
    return z_l.to(device), [n.to(device) for n in noises], coords.to(device)


def _steps(G) -> list:
    return [s.step for s in G.texture_synthesizer.specs]


def window_slices(G, r: Region, ring: int = 0) -> tuple:
    """(z_l / coordinate index, [noise index per conv]) of a region's window: (rows, cols) pairs of
    slices; on a cyclic canvas (ring L) the columns are int64 ring indices instead (z_l array column j
    is ring column (j - R) mod L, noise column i of conv k is i mod step_k L)."""
    R = G.ss_margin
    hs = G.layer_sizes(r.n_y)[1:]
    ws = G.layer_sizes(r.n_x)[1:]
    rows = slice(r.a_y, r.a_y + r.n_y + 2 * R)
    noise_rows = [slice(st * r.a_y, st * r.a_y + h) for st, h in zip(_steps(G), hs)]
    if not ring:
        zl = (rows, slice(r.a_x, r.a_x + r.n_x + 2 * R))
        noise = [(nr, slice(st * r.a_x, st * r.a_x + w)) for nr, st, w in zip(noise_rows, _steps(G), ws)]
        return zl, noise
    zl = (rows, _canvas.wrap(r.a_x - R + torch.arange(r.n_x + 2 * R), ring))
    noise = [(nr, _canvas.wrap(st * r.a_x + torch.arange(w), st * ring))
             for nr, st, w in zip(noise_rows, _steps(G), ws)]
    return zl, noise


def _take(t: torch.Tensor, index: tuple) -> torch.Tensor:
    rows, cols = index
    t = t[..., rows, :]
    return t[..., cols] if isinstance(cols, slice) else t.index_select(-1, cols.to(t.device))


def _put(dst: torch.Tensor, src: torch.Tensor, index: tuple) -> None:
    rows, cols = index
    if isinstance(cols, slice):
        dst[..., rows, cols] = src[..., rows, cols]
    else:
        cols = cols.to(dst.device)
        dst[:, :, rows, cols] = src[:, :, rows, cols]


def render_region(G, canvas: Canvas, r: Region, z_g, ws, z_l, noises, coords) -> torch.Tensor:
    """G's output on one region (1, 3, h, w), computed from its window only."""
    zl_ix, noise_ix = window_slices(G, r, canvas.ring)
    out = G.synthesis(z_g, _take(z_l, zl_ix), ws, _take(coords, zl_ix),
                      [_take(n, ix) for n, ix in zip(noises, noise_ix)])
    return out[..., r.off_y:r.off_y + r.height, r.off_x:r.off_x + r.width]


def whole(canvas: Canvas) -> Region:
    """The region of the whole output (its window is the whole canvas)."""
    return Region(0, 0, canvas.height, canvas.width, 0, 0, canvas.zs[0], canvas.zs[1], 0, 0)


# ----------------------------------------------------------------------------------------------------
# Inversion

@dataclass
class InversionSettings:
    """steps; pixel "l2" or "l1"; weights of each term (published values); lr_texture for W+ and noise,
    lr_structure for z_g and z_l; init_seed for the canvas z_l and noise; lpips "alex" or "random";
    w_samples for the W statistics."""
    steps: int = 500
    pixel: str = "l2"
    pixel_weight: float = 10.0
    lpips_weight: float = 10.0
    zg_prior_weight: float = 10.0
    zl_prior_weight: float = 10.0
    w_prior_weight: float = 0.01
    noise_reg_weight: float = 1000.0
    lr_texture: float = 0.1
    lr_structure: float = 0.01
    rampup: float = 0.05
    rampdown: float = 0.25
    explore_w: float = 0.05
    explore_z: float = 0.2
    explore_until: float = 0.75
    init_seed: int = 0
    lpips: str = "random"
    w_samples: int = 1000


@dataclass
class InversionRecord:
    """What inversion found, enough to render the canvas again: tensors on the CPU.

    z_g (1, z_dim); ws (1, num_ws, z_dim); z_l (1, C, zh + 2R, zw + 2R); noises [one (1, 1, h, w) per
    G_T conv]; coords (1, 3, zh + 2R, zw + 2R); canvas; settings; history {term: [per step]};
    generator: the InfinityGenerator config (dict) it was made with; psnr: per region (dB)."""
    z_g: torch.Tensor
    ws: torch.Tensor
    z_l: torch.Tensor
    noises: List[torch.Tensor]
    coords: torch.Tensor
    canvas: Canvas
    settings: dict
    history: dict
    generator: dict
    psnr: list = field(default_factory=list)
    sources: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": RECORD_FORMAT, "z_g": self.z_g, "ws": self.ws, "z_l": self.z_l, "noises": list(self.noises),
                "coords": self.coords, "canvas": self.canvas.to_dict(), "settings": dict(self.settings),
                "history": {k: [float(x) for x in v] for k, v in self.history.items()},
                "generator": dict(self.generator), "psnr": [float(p) for p in self.psnr],
                "sources": list(self.sources)}

    def save(self, path: str) -> str:
        """torch.save, atomically (utils.files.atomic_write). Returns path."""
        state = self.to_dict()
        return atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path: str) -> "InversionRecord":
        """Read a saved record (weights_only=True: plain tensors, numbers and strings only).

        Raises:
            OSError: the file cannot be read.
            ValueError: not an inversion record, or a damaged one (the message is one line).
        """
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:   # torch's zip/unpickling errors: several lines, several types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{path}: not a readable inversion record ({first})") from None
        if not isinstance(d, dict) or d.get("format") != RECORD_FORMAT:
            raise ValueError(f"{path}: not an InfinityGAN inversion record (format {RECORD_FORMAT})")
        try:
            return cls(d["z_g"], d["ws"], d["z_l"], list(d["noises"]), d["coords"], Canvas.from_dict(d["canvas"]),
                       d["settings"], d["history"], d["generator"], d.get("psnr", []), d.get("sources", []))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: a damaged inversion record ({type(exc).__name__}: {exc})") from None


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] after rounding both to 8 bits (as the saved PNGs)."""
    q = lambda t: ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    mse = (q(a) - q(b)).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def noise_regularizer(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's projector noise regulariser: squared autocorrelation at lag 1 over a pyramid."""
    loss = 0.0
    for n in noises:
        x = n
        while True:
            loss = loss + (x * torch.roll(x, 1, dims=3)).mean().square() + (x * torch.roll(x, 1, dims=2)).mean().square()
            if min(x.shape[2], x.shape[3]) <= 8 or x.shape[2] % 2 or x.shape[3] % 2:
                break
            x = F.avg_pool2d(x, 2)
    return loss


def _lr_factor(t: float, rampup: float, rampdown: float) -> float:
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    return (0.5 - 0.5 * math.cos(math.pi * down)) * up


def _lpips_input(x: torch.Tensor) -> torch.Tensor:
    # AlexNet needs about 32 px; small crops are upsampled for the perceptual term only.
    if min(x.shape[-2:]) < 32:
        scale = 32 / min(x.shape[-2:])
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return x


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while `fn()` runs."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def estimate_inversion_bytes(G, canvas: Canvas, device=None, lpips_net: Optional[torch.nn.Module] = None) -> int:
    """Estimated memory of one inversion step, to refuse a photo too large before optimising.

    What autograd keeps for the backward pass of a region's render (and of LPIPS) is measured on two
    small regions (one patch, and two by two patches) and extrapolated linearly in the region's area at
    the finest layer, where the largest activations are (the constant part holds what does not grow:
    weights referenced by the graph); the canvas inputs add their values, gradients and Adam's moments.

    Args:
        G: InfinityGenerator. canvas: from `plan_canvas`. device: where inversion runs (default G's).
        lpips_net: the LPIPS module inversion will use, or None without the perceptual term.

    Returns:
        Bytes (saved tensors x BACKWARD_FACTOR, plus the canvas inputs' optimiser state).
    """
    device = device or next(G.parameters()).device
    p = G.patch_size

    def finest_area(r):
        return G.layer_sizes(r.n_y)[-1] * G.layer_sizes(r.n_x)[-1]

    state = [G.training, [q.requires_grad for q in G.parameters()]]
    G.eval().requires_grad_(False)
    points = []
    try:
        for side in (p, 2 * p):
            ref = plan_canvas(G, side, side, [(0, 0, side, side)])
            r = ref.regions[0]
            z_l, noises, coords = canvas_inputs(G, ref, 0, device)
            z_g = torch.zeros(1, G.z_dim, device=device, requires_grad=True)
            ws = torch.zeros(1, G.num_ws, G.z_dim, device=device, requires_grad=True)
            noises = [n.requires_grad_(True) for n in noises]
            z_l.requires_grad_(True)
            g = _saved_bytes(lambda: render_region(G, ref, r, z_g, ws, z_l, noises, coords))
            lp = 0
            if lpips_net is not None:
                x = torch.zeros(1, 3, side, side, device=device, requires_grad=True)
                lp = _saved_bytes(lambda: lpips_net(_lpips_input(x), _lpips_input(x.detach())))
            points.append((finest_area(r), g, side * side, lp))
    finally:
        G.train(state[0])
        for q, flag in zip(G.parameters(), state[1]):
            q.requires_grad_(flag)

    def linear(a0, b0, a1, b1, a):
        slope = max(0.0, (b1 - b0) / (a1 - a0))
        return max(b0, b0 + slope * (a - a0))

    (fa0, g0, pa0, l0), (fa1, g1, pa1, l1) = points
    total = sum(linear(fa0, g0, fa1, g1, finest_area(r)) + linear(pa0, l0, pa1, l1, r.height * r.width)
                for r in canvas.regions)
    # the optimised canvas inputs: value, gradient and Adam's two moments, float32
    z_l_c, noises_c, _ = canvas_inputs(G, canvas, 0)
    cells = z_l_c.numel() + sum(n.numel() for n in noises_c)
    # The backward pass adds gradient buffers on top of the saved tensors: a whole step's peak was
    # 1.24-1.48 x the saved bytes on CPU (200x300 to 800x1200 photos, tiny model).
    return int(BACKWARD_FACTOR * total + 4 * 4 * cells)


def w_statistics(G, samples: int, device=None, seed: int = 12345) -> tuple:
    """(mean (z_dim,), std (z_dim,)) of the mapped W of `samples` N(0, 1) latents."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(samples, G.z_dim, generator=g).to(device))
    return w.mean(0), w.std(0).clamp_min(1e-8)


def invert(G, canvas: Canvas, targets: Sequence[torch.Tensor], settings: Optional[InversionSettings] = None, *,
           device=None, progress: bool = True, lpips_net: Optional[torch.nn.Module] = None,
           callback=None) -> InversionRecord:
    """Optimise z_g, W+, z_l and noise so G reproduces each target in its canvas region.

    Args:
        G: InfinityGenerator (frozen here; eval mode).
        canvas: from `plan_canvas`, one region per target.
        targets: (1, 3, h, w) float images in [-1, 1], sizes matching the regions.
        settings: InversionSettings (defaults: the published weights, 500 steps, random LPIPS).
        device: where to optimise (default: G's device).
        progress: show a tqdm bar.
        lpips_net: a prepared LPIPS module (default: build_lpips(settings.lpips)).
        callback: optional f(step, losses dict) called every step.

    Returns:
        InversionRecord (CPU tensors) with the per-step loss history and the PSNR of each region.

    Raises:
        ValueError: targets and regions do not match. LPIPSWeightsMissing: see build_lpips.
    """
    from tqdm import tqdm

    st = settings or InversionSettings()
    if st.pixel not in ("l2", "l1"):
        raise ValueError(f"pixel loss must be l2 or l1, got {st.pixel!r}")
    if len(targets) != len(canvas.regions):
        raise ValueError(f"{len(targets)} targets for {len(canvas.regions)} regions")
    for t, r in zip(targets, canvas.regions):
        if tuple(t.shape) != (1, 3, r.height, r.width):
            raise ValueError(f"target of shape {tuple(t.shape)} for a region of {r.height} x {r.width}")
    device = device or next(G.parameters()).device
    G = G.eval().requires_grad_(False)
    targets = [t.to(device).float() for t in targets]
    lp = lpips_net if lpips_net is not None else (build_lpips(st.lpips, device) if st.lpips_weight > 0 else None)

    w_mean, w_std = w_statistics(G, st.w_samples, device)
    z_l0, noises0, coords = canvas_inputs(G, canvas, st.init_seed, device)
    g = torch.Generator().manual_seed(int(st.init_seed) + 1)
    z_g = torch.randn(1, G.z_dim, generator=g).to(device).requires_grad_(True)
    ws = w_mean[None, None].repeat(1, G.num_ws, 1).clone().requires_grad_(True)
    z_l = z_l0.clone().requires_grad_(True)
    noises = [n.clone().requires_grad_(True) for n in noises0]
    opt_t = torch.optim.Adam([ws] + noises, lr=st.lr_texture)
    opt_s = torch.optim.Adam([z_g, z_l], lr=st.lr_structure)
    # z_l positions some region depends on (the prior applies there; the rest is redrawn at render time).
    used = torch.zeros(z_l.shape[2:], dtype=torch.bool, device=device)
    for r in canvas.regions:
        rows, cols = window_slices(G, r, canvas.ring)[0]
        used[rows, cols if isinstance(cols, slice) else cols.to(device)] = True
    history = {k: [] for k in ("total", "pixel", "lpips", "zg_prior", "zl_prior", "w_prior", "noise_reg")}
    bar = tqdm(range(st.steps), desc="inversion", unit="step", disable=not progress, leave=False)
    for step in bar:
        t = step / max(1, st.steps)
        f = _lr_factor(t, st.rampup, st.rampdown)
        for o, base in ((opt_t, st.lr_texture), (opt_s, st.lr_structure)):
            for group in o.param_groups:
                group["lr"] = base * f
        explore = max(0.0, 1.0 - t / st.explore_until) ** 2 if st.explore_until > 0 else 0.0
        gx = torch.Generator().manual_seed(int(st.init_seed) * 100003 + step)
        n_w = torch.randn(ws.shape, generator=gx).to(device) * (st.explore_w * w_std * explore)
        n_zg = torch.randn(z_g.shape, generator=gx).to(device) * (st.explore_z * explore)
        n_zl = torch.randn(z_l.shape, generator=gx).to(device) * (st.explore_z * explore)
        ws_in, zg_in, zl_in = ws + n_w, z_g + n_zg, z_l + n_zl

        pix = torch.zeros((), device=device)
        perc = torch.zeros((), device=device)
        for r, target in zip(canvas.regions, targets):
            out = render_region(G, canvas, r, zg_in, ws_in, zl_in, noises, coords)
            pix = pix + (0.5 * F.mse_loss(out, target) if st.pixel == "l2" else F.l1_loss(out, target))
            if lp is not None:
                perc = perc + lp(_lpips_input(out), _lpips_input(target)).mean()
        zl_used = z_l[:, :, used]
        zg_prior = z_g.mean().square() + (z_g.std() - 1).square()
        zl_prior = zl_used.mean().square() + (zl_used.std() - 1).square()
        w_prior = ((ws - w_mean) / w_std).square().mean()
        noise_reg = noise_regularizer(noises)
        total = (st.pixel_weight * pix + st.lpips_weight * perc + st.zg_prior_weight * zg_prior
                 + st.zl_prior_weight * zl_prior + st.w_prior_weight * w_prior + st.noise_reg_weight * noise_reg)
        opt_t.zero_grad(set_to_none=True)
        opt_s.zero_grad(set_to_none=True)
        total.backward()
        opt_t.step()
        opt_s.step()
        with torch.no_grad():
            for n in noises:                       # published: zero mean, unit std after each step
                n.sub_(n.mean()).div_(n.std().clamp_min(1e-8))
        vals = {"total": total.item(), "pixel": pix.item(), "lpips": perc.item(), "zg_prior": zg_prior.item(),
                "zl_prior": zl_prior.item(), "w_prior": w_prior.item(), "noise_reg": noise_reg.item()}
        for k, v in vals.items():
            history[k].append(v)
        if progress:
            bar.set_postfix(pixel=f"{vals['pixel']:.4f}", lpips=f"{vals['lpips']:.4f}", refresh=False)
        if callback is not None:
            callback(step, vals)
    bar.close()
    with torch.no_grad():
        outs = [render_region(G, canvas, r, z_g, ws, z_l, noises, coords) for r in canvas.regions]
    return InversionRecord(z_g.detach().cpu(), ws.detach().cpu(), z_l.detach().cpu(),
                           [n.detach().cpu() for n in noises], coords.detach().cpu(), canvas, dict(st.__dict__),
                           history, G.config.to_dict(), [psnr(o, t) for o, t in zip(outs, targets)])


# ----------------------------------------------------------------------------------------------------
# Rendering a canvas

def mixed_inputs(G, record: InversionRecord, seed: int) -> tuple:
    """Canvas z_l and noise for one output seed: the record's values inside every region's window,
    fresh ones from `seed` elsewhere (the new content)."""
    z_l, noises, _ = canvas_inputs(G, record.canvas, seed)
    z_l = z_l.clone()
    noises = [n.clone() for n in noises]
    for r in record.canvas.regions:
        zl_ix, noise_ix = window_slices(G, r, record.canvas.ring)
        _put(z_l, record.z_l, zl_ix)
        for n, src, ix in zip(noises, record.noises, noise_ix):
            _put(n, src, ix)
    return z_l, noises


@torch.no_grad()
def render(G, record: InversionRecord, seed: int, device=None) -> torch.Tensor:
    """The whole output (1, 3, height, width) on the CPU for one seed, in one padding-free pass.

    Known regions come out as inverted (their windows are the record's); the rest is new content.

    Raises:
        ValueError: the record was made with another generator configuration.
    """
    if record.generator != G.config.to_dict():
        raise ValueError("this inversion record was made with another generator configuration")
    device = device or next(G.parameters()).device
    z_l, noises = mixed_inputs(G, record, seed)
    out = render_region(G, record.canvas, whole(record.canvas), record.z_g.to(device), record.ws.to(device),
                        z_l.to(device), [n.to(device) for n in noises], record.coords.to(device))
    return out.float().cpu()


def seam_stats(image: torch.Tensor, seam_col: int, inside_cols: Sequence[int]) -> dict:
    """Mean absolute difference (8-bit units) between adjacent columns: across the seam (columns
    seam_col - 1 | seam_col) and across columns inside the photo (c - 1 | c for each c in inside_cols).

    Returns:
        {"seam": float, "inside_mean": float, "inside": {col: float}}.
    """
    q = ((image.float().clamp(-1, 1) + 1) * 127.5).round()
    diff = lambda c: (q[..., c] - q[..., c - 1]).abs().mean().item()
    inside = {int(c): diff(c) for c in inside_cols}
    return {"seam": diff(seam_col), "inside_mean": sum(inside.values()) / max(1, len(inside)), "inside": inside}
