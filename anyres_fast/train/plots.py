"""Pictures of a training run: losses and metrics against kimg, and a timeline of the sample grids.

    plot_run(RUN) -> [RUN/plots/losses.png, RUN/plots/metrics.png, RUN/plots/samples.png]

Inputs are the files a run already writes: `stats.jsonl` (one line per tick: every loss and statistic,
step, kimg, sec_per_kimg), `metrics.jsonl` (one line per `anyres-fast metrics` result) and the sample
grids `samples/step<N>.png`. Nothing here imports the metrics package (train and metrics stay
independent); metric lines are read as plain JSON.

The kimg of a metric line is its own `kimg` if it has one, else its `step`, else the step in its
`weights` path (`step00000500`, `checkpoint-00000500`, `step-500`), converted with the stats.jsonl
step -> kimg table; lines without any are plotted by their order and the axis says so.

matplotlib is used through its Agg canvas (`matplotlib.figure.Figure`, no pyplot, no global
backend change), so training can call this at every snapshot, also without a display.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Optional

import numpy as np

VALUE_KEYS = ("fid", "kid", "precision", "recall", "psnr")    # what a metrics.jsonl line can report
_STEP_IN_PATH = re.compile(r"(?:step|checkpoint)[-_]?(\d+)")
_STEP_PNG = re.compile(r"step(\d+)\.png$")


def read_jsonl(path: str) -> list:
    """The JSON objects of a .jsonl file; blank and unreadable lines (e.g. a line being written) skipped.

    Args:
        path: the file (missing: []).

    Returns:
        list of dicts.
    """
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def step_to_kimg(stats: list):
    """A function step -> kimg from stats lines (linear between and beyond known steps; None if none)."""
    pairs = sorted({(float(s["step"]), float(s["kimg"])) for s in stats if _number(s.get("step")) and _number(s.get("kimg"))})
    if not pairs:
        return None
    steps, kimgs = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    per_step = kimgs[-1] / steps[-1] if steps[-1] else 0.0

    def convert(step: float) -> float:
        if step > steps[-1] or len(steps) == 1:
            return float(step * per_step)
        return float(np.interp(step, steps, kimgs))

    return convert


def metric_kimg(line: dict, convert) -> Optional[float]:
    """kimg of one metrics.jsonl line (see the module docstring), or None."""
    if _number(line.get("kimg")):
        return float(line["kimg"])
    step = line.get("step")
    if not _number(step):
        m = _STEP_IN_PATH.findall(os.path.basename(str(line.get("weights", "")).rstrip("/")) or "")
        m = m or _STEP_IN_PATH.findall(str(line.get("weights", "")))
        step = int(m[-1]) if m else None
    if step is None or convert is None:
        return None
    return convert(float(step))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    # Written to a temporary name and renamed: a viewer refreshing the PNG never sees half a file.
    tmp = f"{path}.tmp-{os.getpid()}.png"
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _grid(n: int, ncols: int = 3) -> tuple:
    cols = min(ncols, max(n, 1))
    return int(math.ceil(n / cols)), cols


def plot_losses(stats: list, path: str, title: str = "") -> Optional[str]:
    """One panel per numeric stats.jsonl key (losses, D outputs, R1, sec_per_kimg, ...) against kimg.

    Args:
        stats: stats.jsonl lines.
        path: the PNG to write.
        title: figure title.

    Returns:
        path, or None when there is nothing to plot.
    """
    rows = [s for s in stats if _number(s.get("kimg"))]
    keys = sorted({k for s in rows for k, v in s.items() if k not in ("step", "kimg") and _number(v)},
                  key=lambda k: (not k.startswith("G/"), not k.startswith("D/"), k))
    if not keys:
        return None
    nr, nc = _grid(len(keys))
    fig = _canvas(4.2 * nc, 2.8 * nr)
    axes = fig.subplots(nr, nc, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        pts = [(s["kimg"], s[key]) for s in rows if _number(s.get(key))]
        x, y = zip(*pts)
        ax.plot(x, y, marker="." if len(pts) < 40 else None, linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("kimg", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title or "training statistics (stats.jsonl)", fontsize=11)
    return _save(fig, path)


def plot_metrics(lines: list, convert, path: str, title: str = "") -> Optional[str]:
    """One panel per (metric, value): fid, kid, precision, recall or psnr of each metric name, against kimg.

    Args:
        lines: metrics.jsonl lines.
        convert: step -> kimg (step_to_kimg), or None.
        path: the PNG to write.
        title: figure title.

    Returns:
        path, or None when no line has a value.
    """
    series = {}
    for order, line in enumerate(lines):
        name = str(line.get("metric", "?"))
        x = metric_kimg(line, convert)
        for key in VALUE_KEYS:
            if _number(line.get(key)):
                series.setdefault((name, key), []).append((x, order, float(line[key])))
    if not series:
        return None
    keys = sorted(series)
    nr, nc = _grid(len(keys))
    fig = _canvas(4.2 * nc, 2.8 * nr)
    axes = fig.subplots(nr, nc, squeeze=False).ravel()
    for ax, (name, key) in zip(axes, keys):
        pts = series[(name, key)]
        known = all(x is not None for x, _, _ in pts)
        pts = sorted(pts, key=lambda p: (p[0] if known else p[1]))
        xs = [p[0] if known else p[1] for p in pts]
        ax.plot(xs, [p[2] for p in pts], marker="o", markersize=4, linewidth=1.2)
        unit = " (dB)" if key == "psnr" else ""
        ax.set_title(f"{name}: {key}{unit}", fontsize=10)
        ax.set_xlabel("kimg" if known else "result # (no kimg known)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title or "metrics (metrics.jsonl)", fontsize=11)
    return _save(fig, path)


def plot_samples(sample_dir: str, convert, path: str, max_frames: int = 8, title: str = "") -> Optional[str]:
    """The sample grids samples/step<N>.png stacked top to bottom (oldest first), each labelled with its
    step and kimg; at most max_frames, evenly spaced, always including the first and the newest.

    Args:
        sample_dir: the run's samples folder.
        convert: step -> kimg, or None.
        path: the PNG to write.
        max_frames: most grids shown.
        title: figure title.

    Returns:
        path, or None when there is no grid.
    """
    from PIL import Image

    found = []
    for p in glob.glob(os.path.join(sample_dir, "step*.png")):
        m = _STEP_PNG.search(os.path.basename(p))
        if m:
            found.append((int(m.group(1)), p))
    if not found:
        return None
    found.sort()
    if len(found) > max_frames:
        idx = np.unique(np.linspace(0, len(found) - 1, max_frames).round().astype(int))
        found = [found[i] for i in idx]
    images = []
    for step, p in found:
        with Image.open(p) as im:
            images.append((step, np.asarray(im.convert("RGB"))))
    aspect = max(a.shape[1] / a.shape[0] for _, a in images)
    width = min(12.0, 2.2 * aspect + 1.5)
    heights = [a.shape[0] / a.shape[1] * (width - 1.5) for _, a in images]
    fig = _canvas(width, sum(heights) + 0.6 * len(images) + 0.5)
    axes = fig.subplots(len(images), 1, squeeze=False, height_ratios=heights).ravel()
    for ax, (step, arr) in zip(axes, images):
        ax.imshow(arr, interpolation="nearest")
        kimg = f", {convert(step):.3f} kimg" if convert is not None else ""
        ax.set_title(f"step {step}{kimg}", fontsize=9, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "sample grids over training (samples/step*.png)", fontsize=11)
    return _save(fig, path)


def plot_run(run: str, out: Optional[str] = None, metrics_files: Optional[list] = None, max_frames: int = 8) -> list:
    """Write the run's pictures.

    Args:
        run: the training run folder (stats.jsonl, samples/, metrics.jsonl).
        out: folder for the PNGs (default <run>/plots; created).
        metrics_files: metrics.jsonl files to read (default <run>/metrics.jsonl).
        max_frames: most sample grids in the timeline.

    Returns:
        The PNG paths written (losses.png, metrics.png, samples.png; those with data).

    Raises:
        FileNotFoundError: run is not a folder.
    """
    if not os.path.isdir(run):
        raise FileNotFoundError(f"{run}: not a folder")
    out = out or os.path.join(run, "plots")
    os.makedirs(out, exist_ok=True)
    stats = read_jsonl(os.path.join(run, "stats.jsonl"))
    convert = step_to_kimg(stats)
    name = os.path.basename(os.path.abspath(run))
    lines = []
    for p in metrics_files or [os.path.join(run, "metrics.jsonl")]:
        lines += read_jsonl(p)
    written = [plot_losses(stats, os.path.join(out, "losses.png"), f"{name}: training statistics"),
               plot_metrics(lines, convert, os.path.join(out, "metrics.png"), f"{name}: metrics"),
               plot_samples(os.path.join(run, "samples"), convert, os.path.join(out, "samples.png"), max_frames,
                            f"{name}: sample grids")]
    return [p for p in written if p]
