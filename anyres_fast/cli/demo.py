"""`anyres-fast demo`: train the any-resolution GAN on real photos for a few steps, then render it.

1. data: real photos and textures of mixed sizes that scikit-image ships inside its wheel (astronaut
   512x512, coffee 600x400, chelsea 451x300, rocket 640x427, hubble_deep_field 1000x872, ...),
   read with Pillow from the installed package and copied to <out>/data;
2. phase `fixed`: a small 64-px StyleGAN3-T generator trained at 64x64 on the photos (squared and
   resized), with D, lazy R1 and G_ema, for a few steps;
3. phase `patch`: from that run, with the frozen phase-1 G_ema as teacher, on 64x64 patches of the
   photos at their native scales, for a few steps (LPIPS with a random backbone: no downloads);
4. the trained G_ema renders the same latent at three canvas sizes, tile by tile.
On a 2-core CPU this takes a few minutes. The images show the pipeline working, not quality: a real
model needs GPU-days (docs/training.md). Writes PNGs, the run folders and summary.json to --out.
"""
from __future__ import annotations

import json
import shutil
import time
from argparse import Namespace
from pathlib import Path

import torch
from PIL import Image

from ..utils.files import save_image

# Photos and textures of scikit-image's data folder used by the demo (all at least 64 px).
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg",
          "motorcycle_left.png", "motorcycle_right.png", "brick.png", "grass.png", "gravel.png", "camera.png",
          "retina.jpg", "coins.png"]

# The demo's model: the --tiny configuration.
RESOLUTION = 64


def skimage_photos(dest: Path) -> list:
    """Copy the demo photos from the installed scikit-image package into dest (as RGB PNG/JPEG).

    Returns:
        [(name, width, height)] of the images written.

    Raises:
        FileNotFoundError: scikit-image is not installed or ships none of the photos.
    """
    try:
        import skimage
    except ImportError:
        raise FileNotFoundError("the demo reads its photos from scikit-image (pip install scikit-image)") from None
    folder = Path(skimage.__file__).parent / "data"
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in PHOTOS:
        src = folder / name
        if not src.is_file():
            continue
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.save(dest / (Path(name).stem + (".jpg" if name.endswith(".jpg") else ".png")), quality=95)
            out.append((name, im.size[0], im.size[1]))
    if not out:
        raise FileNotFoundError(f"no demo photos found in {folder}")
    return out


def to_png(img: torch.Tensor, path: Path) -> Path:
    """(C, H, W) float tensor in [-1, 1] -> 8-bit PNG (written atomically)."""
    save_image(str(path), img)
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for the demo's images and runs (default out/demo)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--fixed-steps", type=int, default=16, help="phase-1 training steps (default 16)")
    parser.add_argument("--patch-steps", type=int, default=8, help="phase-2 training steps (default 8)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: the tiny model's small convolutions gain little "
                             "from a second thread, and on a busy machine threads spin-wait each other)")


def main(args: Namespace) -> int:
    """Run the demo.

    Args:
        args: out (folder), device (None: cuda when available), fixed_steps, patch_steps, threads (>= 1).

    Returns:
        0 on success.

    Raises:
        CommandError: the device does not exist, a step count is < 1, the output folder cannot be
        created, scikit-image's photos are missing, or an ANYRES_FAST_* variable is malformed.
    """
    from .args import CommandError, check_extension_environment, parse_device, prepare_out_dir
    from ..train import Trainer, TrainOptions
    from ..train.anyres_recipe import AnyresTrainConfig, AnyresRecipe

    check_extension_environment()
    device = parse_device(args.device)
    for flag, v in (("--fixed-steps", args.fixed_steps), ("--patch-steps", args.patch_steps)):
        if v < 1:
            raise CommandError(f"{flag} {v}: expected an integer >= 1")
    if args.threads < 1:
        raise CommandError(f"--threads {args.threads}: expected an integer >= 1")
    out = Path(prepare_out_dir(args.out))
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        photos = skimage_photos(out / "data")
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    print(f"== data: {len(photos)} photos from scikit-image: "
          + ", ".join(f"{Path(n).stem} {w}x{h}" for n, w, h in photos), flush=True)
    for run in ("phase1", "phase2"):
        shutil.rmtree(out / run, ignore_errors=True)     # the demo always trains from scratch
    common = dict(resolution=RESOLUTION, tiny=True, lpips="random", lr_data=str(out / "data"),
                  cache_dir=str(out / "cache"), grid_seeds=3)
    opts = dict(batch=4, workers=0, tick=4, progress=True, seed=0, device=str(device), keep=1)
    summary = {"photos": [{"name": n, "size": [w, h]} for n, w, h in photos], "device": str(device)}

    print(f"\n== phase fixed: {args.fixed_steps} steps at {RESOLUTION}x{RESOLUTION}", flush=True)
    t = time.perf_counter()
    s1 = Trainer(AnyresRecipe(AnyresTrainConfig(phase="fixed", **common)),
                 TrainOptions(out=str(out / "phase1"), kimg=args.fixed_steps * 4 / 1000, snap=args.fixed_steps,
                              **opts)).run()
    summary["phase1"] = {"steps": args.fixed_steps, "seconds": round(time.perf_counter() - t, 1), "stats": s1}

    print(f"\n== phase patch: {args.patch_steps} steps, teacher = phase-1 G_ema, patches of the photos "
          f"at native scales", flush=True)
    t = time.perf_counter()
    recipe = AnyresRecipe(AnyresTrainConfig(phase="patch", hr_data=str(out / "data"), teacher=str(out / "phase1"),
                                       **common))
    s2 = Trainer(recipe, TrainOptions(out=str(out / "phase2"), kimg=args.patch_steps * 4 / 1000, snap=args.patch_steps,
                                      **opts)).run()
    summary["phase2"] = {"steps": args.patch_steps, "seconds": round(time.perf_counter() - t, 1), "stats": s2}

    print("\n== render: the trained G_ema, one latent, three canvas sizes (tiles of 64 px)", flush=True)
    G = recipe.G_ema.eval()
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    renders = {}
    for size in (RESOLUTION, int(2.5 * RESOLUTION), 4 * RESOLUTION):
        img = G.render(z, size, tile_batch=8, progress=True)
        renders[size] = str(to_png(img[0], out / f"canvas_{size}.png"))
    summary["renders"] = renders
    summary["sample_grids"] = [str(p) for p in sorted((out / "phase2" / "samples").glob("*.png"))]
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nimages: {', '.join(Path(p).name for p in renders.values())} and the training grids in "
          f"{out}/phase*/samples/; summary.json in {out}/ ({summary['seconds']} s)")
    print("This is a few CPU steps: the pipeline works end to end; image quality needs GPU-days of training.")
    return 0
