"""Collect the markdown tables of a gpu_check run into one JSON file and draw its plots.

    python benchmarks/plot_results.py OUT_DIR

Reads every `OUT_DIR/*.md` report written by the benchmark scripts, writes `OUT_DIR/results.json`
({file: [{"header": [...], "rows": [[...], ...]}, ...]}) and, when matplotlib is installed, the PNGs
`render_time.png` and `render_memory.png` (seconds and peak device memory against canvas side, one
line per model / batch / precision) and `op_speedup.png` (forward+backward speed-up of each CUDA op
against its case's baseline). Plots are drawn only from rows that were measured ("-" cells are gaps).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def parse_tables(text: str) -> list:
    """Markdown tables in `text` as [{"header": [str], "rows": [[str]]}]."""
    tables, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if current is None:
            current = {"header": cells, "rows": []}
            tables.append(current)
        elif not all(set(c) <= set("-: ") for c in cells):
            current["rows"].append(cells)
    return tables


def _num(cell: str):
    try:
        return float(cell)
    except ValueError:
        return None


def _series(table: dict, x: str, y: str, keys: list) -> dict:
    col = {name: i for i, name in enumerate(table["header"])}
    if x not in col or y not in col or not all(k in col for k in keys):
        return {}
    out = {}
    for row in table["rows"]:
        xv, yv = _num(row[col[x]]), _num(row[col[y]])
        if xv is not None and yv is not None:
            out.setdefault(" ".join(f"{k}={row[col[k]]}" for k in keys), []).append((xv, yv))
    return out


def plot(results: dict, out: Path) -> list:
    """Draw the PNGs; returns their paths (none without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_results: matplotlib is not installed; results.json only")
        return []
    written = []
    render = results.get("bench_render.md", [])
    for y, name, label in (("seconds", "render_time.png", "seconds"),
                           ("peak device MiB", "render_memory.png", "peak device memory (MiB)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for table, model, batch in ((t, m, b) for t in render for m, b in
                                    (("anyres", "tile_batch"), ("infinity", "patch_batch"))):
            for key, pts in _series(table, "canvas", y, [batch, "precision"]).items():
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{model} {key}")
        if ax.lines:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("canvas side (pixels)")
            ax.set_ylabel(label)
            ax.legend(fontsize=6)
            fig.tight_layout()
            fig.savefig(out / name, dpi=120)
            written.append(out / name)
        plt.close(fig)
    ops = results.get("bench_ops.md", [])
    bars = []
    for table in ops:
        col = {n: i for i, n in enumerate(table["header"])}
        if {"op", "shape", "impl", "fwd+bwd ratio"} <= set(col):
            for row in table["rows"]:
                ratio = _num(row[col["fwd+bwd ratio"]])
                if row[col["impl"]] == "cuda" and ratio is not None:
                    bars.append((f"{row[col['op']]} {row[col['shape']]} {row[col.get('dtype', 0)]}", ratio))
    if bars:
        fig, ax = plt.subplots(figsize=(8, 0.25 * len(bars) + 1.5))
        ax.barh([b[0] for b in bars], [b[1] for b in bars])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("forward+backward speed-up vs the case's baseline (x)")
        ax.tick_params(axis="y", labelsize=6)
        fig.tight_layout()
        fig.savefig(out / "op_speedup.png", dpi=120)
        written.append(out / "op_speedup.png")
        plt.close(fig)
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python benchmarks/plot_results.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    results = {p.name: parse_tables(p.read_text()) for p in sorted(out.glob("*.md"))}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    for path in plot(results, out):
        print(f"wrote {path}")
    print(f"wrote {out / 'results.json'} ({sum(len(t) for t in results.values())} tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
