"""Render timing of the any-resolution generator and of InfinityGAN: canvas size x batch x precision, peak memory.

    python benchmarks/bench_render.py [--model anyres|infinity|both] [--resolution 256] [--config T]
                                      [--sizes 1024,2048,4096] [--tile-batches 1,8,32] [--precisions fp32,fp16,bf16]
                                      [--inf-sizes 1024,2048,4096,8192] [--patch-batches 1,16,128]
                                      [--inf-precisions fp32,bf16] [--quick] [--out FILE.md]

InfinityGAN cells: the published 101-pixel model (random weights, random noise strengths), one
`G.generate` of a size x size window after a warm-up, float32 host image. Published reference (paper
Table 4, one RTX 2080 Ti, patch batch 1): 1.24 / 7.96 / 34.35 / 137.44 s for 1024^2 .. 8192^2; 8192^2
with parallel batching 76.41 s on one GPU, 19.09 s on eight. Their canvas adds 3 extra patch rows and
columns (8192^2: 88^2 = 7744 patches); ours covers exactly the window (8192^2: 86^2 = 7396 patches).

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


def time_generate(G, z, size, patch_batch, dtype, device) -> tuple:
    G.render(z, G.patch_size, G.patch_size, patch_batch=patch_batch, dtype=dtype, progress=False)   # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    G.render(z, size, size, patch_batch=patch_batch, dtype=dtype, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return seconds, peak


PUBLISHED_S = {1024: 1.24, 2048: 7.96, 4096: 34.35, 8192: 137.44}    # Table 4, patch batch 1, RTX 2080 Ti


def infinity_table(args, device) -> tuple:
    from anyres_fast.models import InfinityGenerator
    from anyres_fast.models.infinity_canvas import plan_window
    torch.manual_seed(0)
    if args.quick:
        G = InfinityGenerator(patch_size=21, ts_input=7, z_dim=8, local_dim=4, ss_layers=2, ss_radius=1,
                              mapping_layers=2, channel_base=16, channel_max=4)
        sizes, batches = [48, 96], [1, 4]
        precisions = ["fp32"] if device.type == "cpu" else args.inf_precisions.split(",")
    else:
        G = InfinityGenerator()
        sizes = [int(s) for s in args.inf_sizes.split(",")]
        batches = [int(b) for b in args.patch_batches.split(",")]
        precisions = args.inf_precisions.split(",")
    with torch.no_grad():
        for c in G.texture_synthesizer.convs:       # trained models use their noise; zero would skip it
            c.noise_strength.fill_(0.1)
    G = G.eval().to(device)
    z = torch.randn(1, G.z_dim, device=device)
    threads = torch.get_num_threads()
    if args.quick and device.type == "cpu":
        torch.set_num_threads(1)      # tiny convs: thread wake-ups would dominate on a shared CPU
    # Header without the space after "|": readers of the report (test_tooling) take "| " lines as data rows.
    lines = ["|canvas|patches|patch_batch|precision|seconds|published s (batch 1)|patches/s|Mpix/s"
             "|peak device MiB|note|", "|---|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        n = len(plan_window(0, 0, size, size, zs=G.ts_input, patch=G.patch_size, scale=2 ** G.depth).patches)
        for pb in batches:
            for prec in precisions:
                note = ""
                try:
                    sec, peak = time_generate(G, z, size, pb, DTYPES[prec], device)
                    cells = [f"{sec:.3f}", "-" if args.quick else str(PUBLISHED_S.get(size, "-")),
                             f"{n / sec:.1f}", f"{size * size / sec / 1e6:.2f}", "-" if peak is None else f"{peak:.0f}"]
                except Exception as exc:      # one failing cell (e.g. out of memory) must not hide the rest
                    cells = ["-"] * 5
                    note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                lines.append(f"| {size} | {n} | {pb} | {prec} | " + " | ".join(cells) + f" | {note} |")
                print(lines[-1], file=sys.stderr, flush=True)
    torch.set_num_threads(threads)
    intro = (f"InfinityGenerator p={G.patch_size}{' (quick: tiny model)' if args.quick else ' (published 101 model)'}, "
             f"random weights, one generate per cell after a warm-up, float32 host image.")
    return intro, "\n".join(lines)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    parser.add_argument("--model", choices=("anyres", "infinity", "both"), default="both")
    parser.add_argument("--inf-sizes", default="1024,2048,4096,8192")
    parser.add_argument("--patch-batches", default="1,16,128")
    parser.add_argument("--inf-precisions", default="fp32,bf16")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    sections = []
    if args.model in ("infinity", "both"):
        sections.append(infinity_table(args, device))
    if args.model == "infinity":
        report("bench_render", device, sections[0][0], sections[0][1], args.out)
        return 0
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
    intro = (f"Generator p={p} config {args.config}{' (quick: tiny model)' if args.quick else ''}, "
             f"random weights, one render per cell after a warm-up, uint8 host canvas.")
    table = "\n".join(lines)
    for inf_intro, inf_table in sections:
        intro, table = intro + " Second table: " + inf_intro, table + "\n\n" + inf_table
    report("bench_render", device, intro, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
