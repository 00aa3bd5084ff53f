"""`anyres-fast demo`: the default end-to-end run, on a GPU if there is one, else on the CPU.

1. environment: the `doctor` report (on a GPU: builds and imports the CUDA extension);
2. ops on a zone plate (a test image full of frequencies, where aliasing shows): Lanczos downsizing
   vs naive subsampling, and StyleGAN3's up2 / leaky ReLU / down2 filtered_lrelu; on a GPU the CUDA
   kernels are compared with the references;
3. an any-resolution generator (random weights: no pretrained weights ship with the package) renders
   a canvas of 2.5 patches tile by tile; one independently rendered patch is compared with the canvas
   where they overlap (seam check, 8-bit units).
Writes PNGs and summary.json to --out.
"""
from __future__ import annotations

import json
import math
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import ops
from .models import Generator
from .models.filters import design_lowpass


def zone_plate(size: int) -> torch.Tensor:
    """cos(k r^2) with the local frequency reaching Nyquist at the border: (1, 1, size, size) in [0, 1]."""
    r = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / size
    rr = r[None, :] ** 2 + r[:, None] ** 2
    return (0.5 + 0.5 * torch.cos(math.pi * size * rr))[None, None]


def to_png(img: torch.Tensor, path: Path, lo: float = 0.0, hi: float = 1.0) -> Path:
    """(C, H, W) or (H, W) float tensor in [lo, hi] -> 8-bit PNG."""
    a = img.detach().float().cpu()
    a = ((a - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)
    a = a.numpy()
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    Image.fromarray(a).save(path)
    return path


def _timed(fn, device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t0) * 1e3


def ops_demo(device: torch.device, out: Path) -> dict:
    report = {}
    plate = zone_plate(512).to(device=device, dtype=torch.float32)
    naive = plate[..., ::4, ::4]
    small = ops.lanczos_resample(plate, (128, 128))
    side = torch.cat([naive[0, 0], small[0, 0]], dim=1)
    report["resample_png"] = str(to_png(side, out / "resample_naive_vs_lanczos.png"))
    # Energy above the 128-px Nyquist band folds back as visible rings in the naive version.
    report["resample_rms_vs_mean_grey"] = {"naive": float((naive - 0.5).pow(2).mean().sqrt()),
                                           "lanczos": float((small - 0.5).pow(2).mean().sqrt())}

    # StyleGAN3's layer nonlinearity on one channel: 12-tap Kaiser filters, up 2, lrelu, down 2.
    taps = design_lowpass(12, cutoff=64, width=64, fs=512)
    f = torch.as_tensor(taps, dtype=torch.float32, device=device)
    x = (plate * 2 - 1)
    y = ops.filtered_lrelu(x, f, f, up=2, down=2, padding=(11, 10, 11, 10), gain=1.0, slope=0.2)
    report["filtered_lrelu_png"] = str(to_png(torch.cat([x[0, 0], y[0, 0]], dim=1), out / "filtered_lrelu.png",
                                              lo=-1, hi=1))
    report["filtered_lrelu_shapes"] = [list(x.shape), list(y.shape)]

    if device.type == "cuda":
        checks = {}
        for name, run in {
            "filtered_lrelu": lambda impl: ops.filtered_lrelu(x, f, f, up=2, down=2, padding=(11, 10, 11, 10),
                                                              gain=1.0, impl=impl),
            "lanczos_resample": lambda impl: ops.lanczos_resample(plate, (128, 128), impl=impl),
        }.items():
            try:
                cuda_out, cuda_ms = _timed(lambda: run("cuda"), device)
                ref_out, ref_ms = _timed(lambda: run("ref"), device)
                checks[name] = {"max_abs_diff": float((cuda_out - ref_out).abs().max()),
                                "cuda_ms": round(cuda_ms, 3), "ref_ms": round(ref_ms, 3)}
            except Exception as exc:  # report, don't abort the demo
                checks[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report["cuda_vs_ref"] = checks
    return report


def generator_demo(device: torch.device, out: Path, seed: int = 0) -> dict:
    torch.manual_seed(seed)  # random weights and latents: the same images every run
    # Full StyleGAN3-T width on a GPU; a narrow 64-px model on the CPU so the demo stays under a minute.
    if device.type == "cuda":
        G = Generator(resolution=256, config="T")
    else:
        G = Generator(resolution=64, config="T", z_dim=64, w_dim=64, channel_base=2048, channel_max=64,
                      scale_dim=32)
    G = G.to(device).eval()
    p = G.img_resolution
    z = torch.randn(1, G.z_dim, device=device)
    G.calibrate_magnitudes_(torch.randn(16, G.z_dim, device=device))
    size = int(2.5 * p)
    canvas, ms = _timed(lambda: G.render(z, size, tile_batch=8, progress=True), device)
    report = {"patch": p, "canvas": size, "render_ms": round(ms, 1), "device": str(device)}
    report["canvas_png"] = str(to_png(canvas[0], out / f"canvas_{size}.png", lo=-1, hi=1))

    # Seam check: a patch rendered on its own at a position straddling the tile grid.
    x0 = y0 = p // 2
    with torch.no_grad():
        patch = G(z, canvas=size, box=(x0, y0)).cpu()
    crop = canvas[..., y0:y0 + p, x0:x0 + p]
    diff = (patch - crop).abs() * 127.5
    report["overlap_diff_8bit"] = {"max": round(float(diff.max()), 3), "mean": round(float(diff.mean()), 4)}
    to_png(torch.cat([crop[0], patch[0]], dim=2), out / "seam_check_canvas_vs_patch.png", lo=-1, hi=1)
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for the demo's images (default out/demo)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")


def main(args: Namespace) -> int:
    """Run the demo.

    Args:
        args: `out` (folder for images and summary.json) and `device` (None: cuda when available).

    Returns:
        0 on success.

    Raises:
        CommandError: the device does not exist, the output folder cannot be created, or an
            ANYRES_FAST_* variable is malformed.
    """
    from . import doctor
    from .cli_args import check_extension_environment, parse_device, prepare_out_dir

    check_extension_environment()
    device = parse_device(args.device)
    out = Path(prepare_out_dir(args.out))
    print("== environment")
    doctor.main(Namespace(build=device.type == "cuda", rebuild=False))
    print("\n== ops")
    summary = {"ops": ops_demo(device, out)}
    print(json.dumps(summary["ops"], indent=2))
    print("\n== any-resolution generator (random weights)")
    summary["generator"] = generator_demo(device, out)
    print(json.dumps(summary["generator"], indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nimages and summary.json in {out}/")
    return 0
