"""HR patch loading: patches/s per loader worker, fast path (JPEG draft decoding of the footprint) and
the prepared form (`anyres-fast prepare`: only the region's MCUs decoded) vs the exact path, at several
patch scales and over the phase-2 scale distribution; the fast path's pixel
difference; the listing rate with 1 and N processes.

    python benchmarks/bench_data.py [--sizes 2400 5000] [--images 3] [--resolution 256] [--samples 12]
                                    [--exactness 1000] [--listing 128] [--no-prepared] [--quick] [--out FILE]

Phase-2 distribution (anyres_fast/train/anyres_recipe.py defaults scale_max 0.5, scale_min None, as
HRPatchDataset draws it): canvas n uniform in [p / 0.5, L] and rounded, s = p / n, L the short side.
Fixed scales: s = p / L (native pixels), the middle of the n range, s = 0.5 (n = 2p, the lower bound of n);
--samples keys each, the distribution 4 x --samples.
"Per worker" is one process calling the dataset sample by sample (torch threads 1), as a loader worker does;
the paths' samples are interleaved key by key, so that load changes on a shared machine hit them alike.
The JPEGs (quality 90, sinusoids + Gaussian noise) are written to a temporary folder first; the same
files and keys serve both paths. Benchmarks assert nothing; the tables go to stdout (and --out).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyres_fast.data import HRPatchDataset, ImageSource  # noqa: E402
from anyres_fast.data.prepare import jpegtran, prepare_source  # noqa: E402
from anyres_fast.data.sources import default_list_workers  # noqa: E402


def make_jpegs(folder: Path, n: int, size: int, prefix: str = "photo") -> None:
    """n JPEGs of about size x size (quality 90): smooth sinusoids + per-pixel Gaussian noise (sigma 12)."""
    rng = np.random.default_rng(size)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = size + 97 * i, size + 53 * (i % 3)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = np.stack([128 + 80 * np.sin(xx / (31 + 7 * c) + yy / (43 + c)) for c in range(3)], 2)
        a += rng.normal(0, 12, a.shape).astype(np.float32)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"{prefix}{i}.jpg", quality=90)


class FixedScale(HRPatchDataset):
    """HRPatchDataset whose canvas size is one value per image: 'native' (n = L), 'middle', 'low' (2p)."""

    def __init__(self, *args, where: str = "middle", **kw):
        super().__init__(*args, **kw)
        self.where = where

    def size_bounds(self, side: int) -> tuple:
        lo, hi = super().size_bounds(side)
        n = {"native": hi, "middle": (lo + hi) / 2, "low": lo}[self.where]
        return n, n


def rates(datasets: dict, keys: list) -> tuple:
    """({name: patches/s of one process}, {reduction: count} of the last dataset) over `keys`, the
    datasets' samples interleaved key by key so that a shared machine's load changes hit all alike."""
    for ds in datasets.values():
        ds[keys[0]]                               # warm-up: imports, first file
    spent = dict.fromkeys(datasets, 0.0)
    counts = {}
    for k in keys:
        for name, ds in datasets.items():
            t0 = time.perf_counter()
            item = ds[k]
            spent[name] += time.perf_counter() - t0
        r = int(item["reduction"])
        counts[r] = counts.get(r, 0) + 1
    return {name: len(keys) / t for name, t in spent.items()}, counts


def speed_table(src: ImageSource, prepared, p: int, samples: int, size: int) -> list:
    """Rows: exact, fast and (when `prepared` is a source) prepared-form patches/s per draw kind."""
    rows = []
    for label, where in (("s = p/L (native)", "native"), ("s middle of n range", "middle"),
                         ("s = 0.5 (n = 2p)", "low"), ("phase-2 distribution", None)):
        n_keys = samples if where is not None else 4 * samples     # a distribution needs more draws
        keys = [(i % len(src), 10_000 + i) for i in range(n_keys)]
        def make(source, **kw):
            if where is None:
                return HRPatchDataset(source, p, scale_max=0.5, seed=0, **kw)
            return FixedScale(source, p, where=where, scale_max=0.5, seed=0, **kw)
        sets = {"exact": make(src, decode="exact")}
        if prepared is not None:
            sets["prepared"] = make(prepared)
        sets["fast"] = make(src)
        got, counts = rates(sets, keys)
        exact, fast, prep = got["exact"], got["fast"], got.get("prepared")
        mix = ", ".join(f"1/{r}: {c}" for r, c in sorted(counts.items()))
        prep_cells = f"{prep:.2f} | {prep / exact:.2f}" if prep is not None else "- | -"
        rows.append(f"| {size} | {label} | {exact:.2f} | {fast:.2f} | {fast / exact:.2f} | {prep_cells} | {mix} |")
    return rows


class OneImageCache(ImageSource):
    """An ImageSource view that keeps the last decoded image (the exactness table reads each image for
    many draws in a row; the exact path's pixels are unchanged)."""

    def __init__(self, source: ImageSource):
        self.__dict__.update(source.__dict__)
        self._last = (None, None)

    def load_rgb(self, index: int):
        if self._last[0] != index:
            self._last = (index, super().load_rgb(index))
        return self._last[1]


def exactness(src: ImageSource, fast_src: ImageSource, p: int, draws: int, oversamplings=(2.0, 3.0)) -> list:
    """|fast - exact| in 8-bit levels over `draws` phase-2 draws, per oversampling and reduction.
    fast_src: the source the fast path reads (a prepared copy gives the same pixels, faster)."""
    exact = HRPatchDataset(OneImageCache(src), p, scale_max=0.5, seed=0, decode="exact")
    fasts = {o: HRPatchDataset(fast_src, p, scale_max=0.5, seed=0, oversampling=o) for o in oversamplings}
    acc = {o: {} for o in oversamplings}
    per_image = -(-draws // len(src))
    keys = [(i, 20_000 + i * per_image + k) for i in range(len(src)) for k in range(per_image)][:draws]
    for key in keys:
        ref = exact[key]["image"]
        for o, ds in fasts.items():
            item = ds[key]
            diff = ((item["image"] - ref).abs() * 127.5).numpy()
            acc[o].setdefault(int(item["reduction"]), []).append((diff.mean(), diff.max()))
    rows = []
    for o in oversamplings:
        every = [v for vs in acc[o].values() for v in vs]
        groups = [("all", every)] + [(f"1/{r}", v) for r, v in sorted(acc[o].items())]
        for name, v in groups:
            rows.append(f"| {o:g} | {name} | {len(v)} | {np.mean([m for m, _ in v]):.3f} | "
                        f"{max(x for _, x in v):.2f} |")
    return rows


def listing_rates(folder: Path, files: int) -> list:
    make_jpegs(folder, 1, 1024, prefix="seed")
    base = (folder / "seed0.jpg").read_bytes()
    for i in range(files - 1):
        (folder / f"copy{i}.jpg").write_bytes(base)      # same bytes: each file is still decoded
    rows = []
    for workers in sorted({1, default_list_workers()}):
        t0 = time.perf_counter()
        src = ImageSource(str(folder), list_workers=workers, progress=False)
        dt = time.perf_counter() - t0
        rows.append(f"| {len(src)} JPEGs of 1024x1024 | {workers} | {len(src) / dt:.1f} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2400, 5000], help="short sides of the JPEGs")
    ap.add_argument("--images", type=int, default=3, help="JPEGs per size (default 3)")
    ap.add_argument("--resolution", type=int, default=256, help="patch size p (default 256)")
    ap.add_argument("--samples", type=int, default=12, help="patches per measurement (default 12)")
    ap.add_argument("--exactness", type=int, default=1000, help="draws of the exactness table (0: skip)")
    ap.add_argument("--listing", type=int, default=128, help="files of the listing table (0: skip)")
    ap.add_argument("--no-prepared", action="store_true", help="skip the prepared form (anyres-fast prepare)")
    ap.add_argument("--quick", action="store_true", help="small run (2400 px, 2 images, 4 samples, 20 draws)")
    ap.add_argument("--out", default=None, help="also write the tables as Markdown to this file")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.images, a.samples, a.exactness, a.listing = [2400], 2, 4, 20, 32
    torch.set_num_threads(1)
    p = a.resolution
    lines = [f"# HR patch loading — {datetime.date.today().isoformat()} — CPU ({os.cpu_count()} cores), "
             f"torch threads 1", "",
             f"p = {p}; phase-2 distribution: n ~ U[{2 * p}, L] rounded (scale_max 0.5, scale_min None), s = p/n.",
             "Patches/s of one process (a loader worker); fast = JPEG draft decoding at the largest reduction r "
             "with r <= f / oversampling (default 3), only the footprint converted.", "",
             "| JPEG short side | draw | exact patches/s | fast patches/s | fast / exact | prepared patches/s | "
             "prepared / exact | fast-path reductions |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        sources, prepared_sources = {}, {}
        for size in a.sizes:
            make_jpegs(Path(tmp) / f"hr{size}", a.images, size)
            sources[size] = ImageSource(str(Path(tmp) / f"hr{size}"), min_size=p, progress=False)
            prepared = None
            if jpegtran() is not None and not a.no_prepared:
                t0 = time.perf_counter()
                info = prepare_source(sources[size], str(Path(tmp) / f"prep{size}"), progress=False)
                prep_s = time.perf_counter() - t0
                prepared = ImageSource(str(Path(tmp) / f"prep{size}"), min_size=p, progress=False)
                prepared_sources[size] = prepared
                notes.append(f"prepare {size}-px: {info['jpegs']} JPEGs in {prep_s:.1f} s "
                             f"({prep_s / max(1, info['jpegs']):.2f} s per file), bytes "
                             f"x{info['bytes_out'] / info['bytes_in']:.3f} (file + marker index)")
            lines += speed_table(sources[size], prepared, p, a.samples, size)
            print("\n".join(lines[-4:]), flush=True)
        lines += [""] + notes
        if a.exactness:
            size = max(a.sizes)
            fast_src = prepared_sources.get(size, sources[size])
            lines += ["", f"Fast vs exact over {a.exactness} phase-2 draws ({size}-px JPEGs), |difference| in "
                      "8-bit levels (mean over pixels and draws; max over all). The fast path read the "
                      f"{'prepared copy (the same pixels, tests/data/test_prepared.py)' if size in prepared_sources else 'JPEGs'}.",
                      "", "| oversampling | reduction | draws | mean | max |", "|---|---|---|---|---|"]
            lines += exactness(sources[size], fast_src, p, a.exactness)
        if a.listing:
            lines += ["", "Listing (header check + full decode of every file, no cache)", "",
                      "| files | processes | files/s |", "|---|---|---|"]
            lines += listing_rates(Path(tmp) / "listing", a.listing)
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
