"""Render timing of the any-resolution generator: canvas size x tile batch x precision, with peak memory.

    python benchmarks/bench_render.py [--resolution 256] [--config T] [--sizes 1024,2048,4096]
                                      [--tile-batches 1,8,32] [--precisions fp32,fp16,bf16] [--quick] [--out FILE.md]

Random weights (timing does not depend on them). Each cell is one full `G.render` to a uint8 host
canvas after one warm-up render at the same tile batch: mapping, all tiles, device-to-host copies and
assembly. Peak device memory (torch.cuda.max_memory_allocated) should not depend on the canvas size;
on the CPU the column is empty. Goal (docs/README.md, performance targets): 4096^2 with p=256 config T in <= 2 s on one H100.
Without a GPU use --quick (tiny model) for a smoke run; CPU numbers say nothing about the goal.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyres_fast.models import Generator  # noqa: E402
from benchmarks._harness import report  # noqa: E402

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def time_render(G, z, size, tile_batch, half, device) -> tuple:
    kwargs = dict(tile_batch=tile_batch, device=device, progress=False, out_dtype=torch.uint8,
                  force_fp32=half is None, half_dtype=half or torch.float16)
    G.render(z, G.img_resolution, **kwargs)                     # warm-up: kernels, allocator, extension
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    G.render(z, size, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return seconds, peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--config", default="T", choices=("T", "R"))
    parser.add_argument("--sizes", default="1024,2048,4096")
    parser.add_argument("--tile-batches", default="1,8,32")
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, small canvases (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.quick:
        G = Generator(resolution=64, config=args.config, channel_base=512, channel_max=16, z_dim=16, w_dim=16)
        sizes, batches = [128, 256], [1, 8]
        precisions = ["fp32"] if device.type == "cpu" else args.precisions.split(",")
    else:
        G = Generator(resolution=args.resolution, config=args.config)
        sizes = [int(s) for s in args.sizes.split(",")]
        batches = [int(b) for b in args.tile_batches.split(",")]
        precisions = args.precisions.split(",")
    G = G.eval().to(device)
    z = torch.randn(1, G.z_dim, device=device)
    p = G.img_resolution

    lines = ["| canvas | tiles | tile_batch | precision | seconds | tiles/s | Mpix/s | peak device MiB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        tiles = ((size + p - 1) // p) ** 2
        for tb in batches:
            for prec in precisions:
                note = ""
                try:
                    sec, peak = time_render(G, z, size, tb, PRECISIONS[prec], device)
                    cells = [f"{sec:.3f}", f"{tiles / sec:.1f}", f"{size * size / sec / 1e6:.1f}",
                             "-" if peak is None else f"{peak:.0f}"]
                except Exception as exc:      # one failing cell (e.g. out of memory) must not hide the rest
                    cells = ["-"] * 4
                    note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                lines.append(f"| {size} | {tiles} | {tb} | {prec} | " + " | ".join(cells) + f" | {note} |")
                print(lines[-1], file=sys.stderr, flush=True)
    report("bench_render", device,
           f"Generator p={p} config {args.config}{' (quick: tiny model)' if args.quick else ''}, "
           f"random weights, one render per cell after a warm-up, uint8 host canvas.", "\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
