"""Load published network pickles through anyres_fast.models.published and compare images with the
published code (chail/anyres-gan and NVlabs/stylegan3) on the CPU in float32.

    python scripts/check_against_anyres_gan.py --src /path/to/anyres-gan [--sg3-src /path/to/stylegan3]

Needs checkouts of the published repositories (not shipped, not fetched by CI; that is why this is a
script and not a test; keep them outside this repository). For every case the published generator is
built at small widths with random weights (non-zero scale affines and biases, random magnitude EMAs,
a non-identity learned input transform), pickled the way its training loop writes snapshots, read back
on the published side with legacy.load_network_pkl (which executes the pickled source: only the
published side does that) and on ours with load_network_pickle (which executes nothing), and the images
are compared:
- one patch for each of 8 transforms (scales N/p from 1 to 8, several offsets), given as canvas/box
  and as the published 3x3 transform;
- whole canvases of 2p and 4p: the published generate_full_from_patches + scale_condition_wrapper
  (StyleGAN3: its `transform` buffer set per tile) against our Generator.render;
- the discriminator of the snapshot on random images;
- the global-360 panorama generator (configs T and R, fov 60 and 90; `--only panorama` runs just
  these): slices at several published crop starts against our boxes, and the full strip as the
  published notebook renders it against Generator.render_panorama (docs/panorama.md §4).
Exits non-zero if any max abs difference exceeds 1e-5.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import pickle
import sys
import types

import torch

from anyres_fast.models.published import load_network_pickle

P = 64                  # patch size of the small models
TOL = 1e-5
# (canvas N, top-left x, y): scales N/p 1 ... 8, offsets at 0, inside, at the far edge, odd pixels.
TRANSFORMS = [(64, 0, 0), (96, 32, 0), (128, 0, 64), (160, 37, 91), (256, 192, 192), (288, 101, 7),
              (384, 250, 130), (512, 448, 0)]
CANVASES = (128, 256)
INFO: list = []          # rows reported but not checked


def published_modules(src: str, names: list) -> list:
    """Import modules of a published checkout, with the runtime shims they need on today's Python/torch."""
    if not os.path.isdir(os.path.join(src, "training")):
        raise SystemExit(f"{src} does not look like a stylegan3 / anyres-gan checkout (no training/ folder)")
    sys.modules.setdefault("requests", types.ModuleType("requests"))   # only used for downloads there
    if "click" not in sys.modules:       # legacy.py's command line only: decorators that do nothing
        click = types.ModuleType("click")

        def decorator(*args, **kwargs):
            return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else (lambda f: f)
        click.__getattr__ = lambda name: decorator
        sys.modules["click"] = click
    if "pkg_resources" not in sys.modules:                              # gone from new setuptools
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    # Both checkouts ship top-level packages of the same names (training, torch_utils, dnnlib, legacy).
    for key in [k for k in sys.modules if k.split(".")[0] in ("training", "torch_utils", "dnnlib", "legacy", "util")]:
        del sys.modules[key]
    sys.path[:] = [p for p in sys.path if p not in _SRCS] + []
    sys.path.insert(0, src)
    _SRCS.add(src)
    return [importlib.import_module(n) for n in names]


_SRCS: set = set()


def randomise_(G, seed: int) -> None:
    """Weights that exercise every path: random biases, scale affines, magnitude EMAs, input affine."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias") or "scale_affine" in name or "input.affine" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith("bias") else 1.0))
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.fill_(float(torch.rand((), generator=g)) + 0.5)
            elif name.endswith("w_avg"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)


def snapshot(G, D, augment_pipe, path: str) -> None:
    """Pickle as the published training loops write network-snapshot-*.pkl."""
    data = dict(G=G, D=D, G_ema=copy.deepcopy(G), augment_pipe=augment_pipe, training_set_kwargs=dict(xflip=False))
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
    with open(path, "wb") as f:
        pickle.dump(data, f)


def stylegan3_transform(N: int, x: int, y: int) -> torch.Tensor:
    """Our documented patch transform, written out (docs/published_models.md §2)."""
    s, vx, vy = P / N, (x + P / 2) / N * 2 - 1, (y + P / 2) / N * 2 - 1
    return torch.tensor([[s, 0, vx / 2], [0, s, vy / 2], [0, 0, 1]], dtype=torch.float32)


def compare(rows: list, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    rows.append((name, float((a - b).abs().max()), float(a.abs().max())))


def check_anyres_gan(src: str, config: str, mode: str, norm: str, tmp: str) -> list:
    sg3, sg2, aug, legacy, patch_util, dnnlib = published_modules(
        src, ["training.networks_stylegan3", "training.networks_stylegan2", "training.augment", "legacy",
              "util.patch_util", "dnnlib"])
    cb, cm = (512, 16) if config == "T" else (1024, 32)
    kw = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=P, img_channels=3, channel_base=cb, channel_max=cm,
              mapping_kwargs=dnnlib.EasyDict(num_layers=2), training_mode=mode, magnitude_ema_beta=0.999)
    if config == "R":
        kw.update(conv_kernel=1, use_radial_filters=True)
    if mode == "patch":
        kw["scale_mapping_kwargs"] = dnnlib.EasyDict(scale_mapping_min=1, scale_mapping_max=8, scale_mapping_norm=norm)
    torch.manual_seed(1)
    G = sg3.Generator(**kw)
    randomise_(G, 2)
    D = sg2.Discriminator(c_dim=0, img_resolution=P, img_channels=3, channel_base=512, channel_max=16,
                          block_kwargs=dnnlib.EasyDict(freeze_layers=0), mapping_kwargs=dnnlib.EasyDict(),
                          epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4))
    with torch.no_grad():
        for n, p in D.named_parameters():
            if p.ndim == 1:
                p.normal_()
    pipe = aug.AugmentPipe(xflip=1, rotate90=1, xint=1).train().requires_grad_(False)
    path = os.path.join(tmp, f"anyres-{mode}-{norm}-{config}.pkl")
    snapshot(G, D, pipe, path)
    with open(path, "rb") as f:
        ref = legacy.load_network_pkl(f)
    G_ref, D_ref = ref["G_ema"], ref["D"]
    loaded = load_network_pickle(path)
    ours = loaded.G_ema
    label = f"anyres-gan {mode}" + (f" {norm}" if mode == "patch" else "") + f" {config}"
    rows = []
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ws = G_ref.mapping(z, None)
        for N, x, y in TRANSFORMS:
            limits = [(y / N * 2 - 1, (y + P) / N * 2 - 1), (x / N * 2 - 1, (x + P) / N * 2 - 1)]
            T = patch_util.construct_transformation_matrix(limits).unsqueeze(0).repeat(2, 1, 1)
            a = G_ref(z, None, transform=T, noise_mode="const")
            b = ours(z, canvas=N, box=(x, y))
            c = ours(z, transform=T)
            compare(rows, f"{label}: patch N={N} (scale {N / P:g}) box=({x},{y})", a, b)
            compare(rows, f"{label}: same, from the published transform", a, c)
        for N in CANVASES:
            full = torch.zeros(2, 3, N, N)
            for (y0, y1, x0, x1), T in patch_util.generate_full_from_patches(N, P):
                full[:, :, y0:y1, x0:x1] = patch_util.scale_condition_wrapper(
                    G_ref, ws, T.unsqueeze(0).repeat(2, 1, 1), noise_mode="const")
            compare(rows, f"{label}: canvas {N}x{N} (generate_full_from_patches vs render)", full,
                    ours.render(z, N, progress=False))
        # Not a multiple of p: the published assembly moves the last tiles back inside the canvas, ours
        # crops them; the overlap differs by the residual aliasing between tiles (reported, not checked).
        N = 160
        full = torch.zeros(2, 3, N, N)
        for (y0, y1, x0, x1), T in patch_util.generate_full_from_patches(N, P):
            full[:, :, y0:y1, x0:x1] = patch_util.scale_condition_wrapper(
                G_ref, ws, T.unsqueeze(0).repeat(2, 1, 1), noise_mode="const")
        INFO.append((f"{label}: canvas {N}x{N}, not a multiple of p (info only)",
                     float((full - ours.render(z, N, progress=False)).abs().max()), float(full.abs().max())))
        img = torch.randn(4, 3, P, P, generator=torch.Generator().manual_seed(4))
        if loaded.D is None:
            raise SystemExit(f"{label}: D was not loaded ({loaded.notes})")
        compare(rows, f"{label}: discriminator", D_ref(img, None), loaded.D(img, None))
    print(f"{label}: loaded as {loaded.kind}; notes: {loaded.notes}")
    return rows


def published_crop_x0(crop_start: int, rate: int) -> float:
    """Our strip pixel x0 of the published 360 input's crop start (docs/panorama.md §1): the published
    x samples sit on integers, ours on half-integers, hence the half-sample offset."""
    return (crop_start - 0.5) * P / rate


def check_panorama(src: str, config: str, fov: int, tmp: str) -> list:
    """The published global-360 generator (SynthesisInput360): slices at crop starts (as its training
    loss draws them) and the full strip (as its notebook renders it: one fixed crop, the frame moved by
    transform translations 0 .. 360/fov - 1) against our panorama_slice / box and render_panorama."""
    sg3, sg2, legacy, dnnlib = published_modules(
        src, ["training.networks_stylegan3", "training.networks_stylegan2", "legacy", "dnnlib"])
    cb, cm = (512, 16) if config == "T" else (1024, 32)
    kw = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=P, img_channels=3, channel_base=cb, channel_max=cm,
              mapping_kwargs=dnnlib.EasyDict(num_layers=2), training_mode="global-360", fov=fov,
              magnitude_ema_beta=0.999)
    if config == "R":
        kw.update(conv_kernel=1, use_radial_filters=True)
    torch.manual_seed(8)
    G = sg3.Generator(**kw)
    randomise_(G, 9)
    D = sg2.Discriminator(c_dim=0, img_resolution=P, img_channels=3, channel_base=512, channel_max=16)
    path = os.path.join(tmp, f"anyres-360-{fov}-{config}.pkl")
    snapshot(G, D, None, path)
    with open(path, "rb") as f:
        G_ref = legacy.load_network_pkl(f)["G_ema"]
    loaded = load_network_pickle(path)
    ours = loaded.G_ema
    inp = G_ref.synthesis.input
    rate, size, frame = int(inp.sampling_rate), int(inp.size[0]), int(inp.frame_size[0])
    turn = frame * 360 // fov
    label = f"anyres-gan global-360 fov {fov} {config}"
    rows = []
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        for crop in sorted({0, 1, 7, turn // 2, turn - frame, turn - 1}):
            a = G_ref(z, None, crop_fn=lambda g: g[:, :, crop:crop + size, :], noise_mode="const")
            b = ours(z, canvas=P, box=(published_crop_x0(crop, rate), 0))
            compare(rows, f"{label}: slice crop_start={crop}", a, b)
        # The cross-frame D's second slice: one frame further.
        crop = turn - 3
        a = G_ref(z, None, crop_fn=lambda g: g[:, :, crop + frame:crop + frame + size, :], noise_mode="const")
        b = ours(z, canvas=P, box=(published_crop_x0(crop, rate) + P, 0))
        compare(rows, f"{label}: slice crop_start={crop}+frame (past the end of the turn)", a, b)
        for start in (0, 5):
            frames = []
            for tx in range(int(360 / fov)):
                t = torch.eye(3)[None].repeat(2, 1, 1)
                t[:, 0, 2] = tx
                frames.append(G_ref(z, None, transform=t, truncation_psi=0.5, noise_mode="const",
                                    crop_fn=lambda g: g[:, :, start:start + size, :]))
            strip = torch.cat(frames, dim=3)
            x0 = published_crop_x0(start, rate)
            mine = ours.render_panorama(z, start=int(x0), truncation_psi=0.5, progress=False)
            compare(rows, f"{label}: full strip {strip.shape[3]}x{strip.shape[2]} from crop_start={start} "
                          f"(notebook frames vs render_panorama)", strip, mine)
    print(f"{label}: loaded as {loaded.kind}; notes: {loaded.notes}")
    return rows


def check_stylegan3(src: str, config: str, tmp: str) -> list:
    sg3, sg2, legacy, dnnlib = published_modules(
        src, ["training.networks_stylegan3", "training.networks_stylegan2", "legacy", "dnnlib"])
    cb, cm = (512, 16) if config == "T" else (1024, 32)
    kw = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=P, img_channels=3, channel_base=cb, channel_max=cm,
              mapping_kwargs=dnnlib.EasyDict(num_layers=2), magnitude_ema_beta=0.999)
    if config == "R":
        kw.update(conv_kernel=1, use_radial_filters=True)
    torch.manual_seed(5)
    G = sg3.Generator(**kw)
    randomise_(G, 6)
    D = sg2.Discriminator(c_dim=0, img_resolution=P, img_channels=3, channel_base=512, channel_max=16)
    path = os.path.join(tmp, f"stylegan3-{config}.pkl")
    snapshot(G, D, None, path)
    with open(path, "rb") as f:
        G_ref = legacy.load_network_pkl(f)["G_ema"]
    loaded = load_network_pickle(path)
    ours = loaded.G_ema
    label = f"stylegan3 {config}"
    rows = []
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(7))
    buf = G_ref.synthesis.input.transform
    with torch.no_grad():
        compare(rows, f"{label}: plain image (psi 0.7)", G_ref(z, None, truncation_psi=0.7, noise_mode="const"),
                ours(z, truncation_psi=0.7))
        ws = G_ref.mapping(z, None)
        for N, x, y in TRANSFORMS:
            buf.copy_(stylegan3_transform(N, x, y))     # SG3's user transform = our patch transform
            compare(rows, f"{label}: patch N={N} box=({x},{y}) (SG3 transform buffer)",
                    G_ref.synthesis(ws, noise_mode="const"), ours(z, canvas=N, box=(x, y)))
        for N in CANVASES:
            full = torch.zeros(2, 3, N, N)
            for y0 in range(0, N, P):
                for x0 in range(0, N, P):
                    buf.copy_(stylegan3_transform(N, x0, y0))
                    full[:, :, y0:y0 + P, x0:x0 + P] = G_ref.synthesis(ws, noise_mode="const")
            compare(rows, f"{label}: canvas {N}x{N} (tiles vs render)", full, ours.render(z, N, progress=False))
        buf.copy_(torch.eye(3))
    print(f"{label}: loaded as {loaded.kind}; notes: {loaded.notes}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="path of a chail/anyres-gan checkout")
    parser.add_argument("--sg3-src", help="path of a NVlabs/stylegan3 checkout (default: the StyleGAN3 "
                                          "checks use --src's copy of its networks)")
    parser.add_argument("--only", choices=("all", "panorama"), default="all",
                        help="panorama: only the global-360 checks (default all)")
    parser.add_argument("--tmp", default=None, help="folder for the pickles (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.tmp or tmp
        rows = []
        for config in ("T", "R") if args.only == "all" else ():
            rows += check_anyres_gan(args.src, config, "global", "-", tmp)
            for norm in ("positive", "zerocentered"):
                rows += check_anyres_gan(args.src, config, "patch", norm, tmp)
        for config in ("T", "R") if args.only == "all" else ():
            rows += check_stylegan3(args.sg3_src or args.src, config, tmp)
        for config, fov in (("T", 60), ("R", 60), ("T", 90)):
            rows += check_panorama(args.src, config, fov, tmp)
    print("\n| comparison | max abs diff | max abs output |\n|---|---|---|")
    for name, diff, mag in rows:
        print(f"| {name} | {diff:.2e} | {mag:.2f} |")
    # One line per model: the worst patch, canvas and discriminator difference.
    print(f"\n| model | patches (8 transforms x 2 inputs) | canvases {' and '.join(map(str, CANVASES))} "
          f"| discriminator | panorama slices | panorama strips |\n|---|---|---|---|---|---|")
    for model in dict.fromkeys(name.split(":")[0] for name, _, _ in rows):
        worst_of = lambda word: max((d for n, d, _ in rows if n.startswith(model + ":") and word in n), default=None)
        cells = [worst_of(w) for w in ("patch", "canvas", "discriminator", "slice", "strip")]
        print(f"| {model} | " + " | ".join("-" if c is None else f"{c:.2e}" for c in cells) + " |")
    for name, diff, mag in INFO:
        print(f"{name}: max abs diff {diff:.2e} (output max {mag:.2f})")
    worst = max(d for _, d, _ in rows)
    ok = worst <= TOL
    print(f"\n{len(rows)} comparisons, worst {worst:.2e}: " + ("all within 1e-5" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
