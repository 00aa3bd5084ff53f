"""HR patch loading throughput: patches/s from native-resolution JPEGs with 1 and 2 loader workers,
and the time split of one sample (decode, crop, Lanczos resize, to tensor).

    python benchmarks/bench_data.py [--size 2400] [--images 6] [--resolution 256] [--samples 48] [--quick]

The JPEGs (>= 2000 px, quality 90, smooth content + noise) are written to a temporary folder first.
Each worker count reads the same keys through a DataLoader (batch 8) after one warm-up batch.
Benchmarks assert nothing; the table goes to stdout (and --out as Markdown).
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler, lanczos_float, sample_rng  # noqa: E402
from anyres_fast.data.datasets import to_model_range  # noqa: E402


def make_jpegs(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = size + 97 * i, size + 53 * (i % 3)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = np.stack([128 + 80 * np.sin(xx / (31 + 7 * c) + yy / (43 + c)) for c in range(3)], 2)
        a += rng.normal(0, 12, a.shape).astype(np.float32)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"photo{i}.jpg", quality=90)


def split_times(ds: HRPatchDataset, keys: list) -> dict:
    """Seconds per sample of each step of HRPatchDataset.__getitem__, re-done step by step."""
    t = {"decode": 0.0, "crop": 0.0, "resize": 0.0, "to_tensor": 0.0}
    p = ds.resolution
    for index, draw in keys:
        t0 = time.perf_counter()
        data = ds.source.read_bytes(ds.source.listing.names[index])
        with Image.open(io.BytesIO(data)) as im:
            img = im.convert("RGB")
        t1 = time.perf_counter()
        flip, (left, top, side), n, x, y = ds.draw(sample_rng(ds.seed, draw), *img.size)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        f = side / n
        m = int(np.ceil(3 * max(f, 1.0))) + 2
        fx0, fy0, fx1, fy1 = x * f, y * f, (x + p) * f, (y + p) * f
        rx0, ry0 = max(0, int(np.floor(fx0)) - m), max(0, int(np.floor(fy0)) - m)
        rx1, ry1 = min(side, int(np.ceil(fx1)) + m), min(side, int(np.ceil(fy1)) + m)
        region = img.crop((left + rx0, top + ry0, left + rx1, top + ry1))
        region.load()
        t2 = time.perf_counter()
        arr = lanczos_float(region, p, box=(fx0 - rx0, fy0 - ry0, fx1 - rx0, fy1 - ry0))
        t3 = time.perf_counter()
        to_model_range(arr)
        t4 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += dt / len(keys)
    return t


def loader_rate(ds: HRPatchDataset, workers: int, batches: int, batch: int = 8) -> float:
    sampler = KeySampler(len(ds), 0, batch)
    keys = [sampler.next_keys() for _ in range(batches + 1)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=keys, num_workers=workers)
    it = iter(loader)
    next(it)                                   # warm-up: worker start, first decode
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += b["image"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2400, help="short side of the JPEGs (default 2400)")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--resolution", type=int, default=256, help="patch size p (default 256)")
    ap.add_argument("--samples", type=int, default=48, help="patches per measurement (default 48)")
    ap.add_argument("--quick", action="store_true", help="small run (2 images, 16 samples)")
    ap.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    a = ap.parse_args()
    if a.quick:
        a.images, a.samples = 2, 16
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hr"
        folder.mkdir()
        make_jpegs(folder, a.images, a.size)
        src = ImageSource(str(folder), min_size=a.resolution)
        ds = HRPatchDataset(src, a.resolution, scale_max=0.5, seed=0)
        keys = [(i % len(ds), i) for i in range(a.samples // 2)]
        split = split_times(ds, keys)
        rates = {w: loader_rate(ds, w, max(1, a.samples // 8)) for w in (1, 2)}
    total = sum(split.values())
    lines = [f"HR patches p={a.resolution} from {a.images} JPEGs of {a.size}+ px (scale_max 0.5, canvas sizes "
             f"512..native), torch threads 1",
             "", "| loader workers | patches/s |", "|---|---|"]
    lines += [f"| {w} | {r:.1f} |" for w, r in rates.items()]
    lines += ["", "| step of one sample | ms | share |", "|---|---|---|"]
    lines += [f"| {k} | {v * 1e3:.1f} | {v / total:.0%} |" for k, v in split.items()]
    lines += [f"| total (one process) | {total * 1e3:.1f} | dominant: {max(split, key=split.get)} |"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
