"""`anyres-fast prepare`: a one-time, lossless copy of an HR set whose JPEGs can be region-decoded
(docs/data.md, "Prepared HR sets").

Every usable JPEG of the source is transcoded by `jpegtran -copy all -restart 1B` (libjpeg-turbo):
the same DCT coefficients (so the same pixels), sequential, with a restart marker after every MCU,
and the positions of those markers are stored beside it as `<name>.mcu.npy` (segmented.py). Other
images are copied unchanged. The output folder is an ordinary image source with the same names and
sizes; the fast patch path uses the markers when it finds them.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import subprocess
import zipfile
from typing import Optional

import numpy as np
from tqdm import tqdm

from .segmented import SIDECAR, NotSegmented, SegmentedJPEG
from .sources import ImageSource, default_list_workers

JPEG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif")


def jpegtran() -> Optional[str]:
    """Path of the jpegtran executable, or None."""
    return shutil.which("jpegtran")


def sidecar_name(name: str) -> str:
    """The marker file of image `name`."""
    return name + SIDECAR


def transcode(data: bytes, tool: str = "jpegtran") -> tuple:
    """Losslessly transcode JPEG bytes to one restart marker per MCU.

    Args:
        data: the JPEG's bytes. tool: the jpegtran executable.

    Returns:
        (new bytes, marker positions (uint32 or int64)).

    Raises:
        NotSegmented: jpegtran failed or its output is not region-decodable.
    """
    run = subprocess.run([tool, "-copy", "all", "-restart", "1B"], input=data, capture_output=True)
    if run.returncode != 0 or not run.stdout:
        raise NotSegmented(f"jpegtran failed: {run.stderr.decode(errors='replace').strip()[:200]}")
    seg = SegmentedJPEG(run.stdout)
    markers = seg.markers
    return run.stdout, markers.astype(np.uint32) if markers[-1] < 2 ** 32 else markers


def _prepare_one(src_path: str, kind: str, name: str, out: str, tool: str) -> tuple:
    """Write one image of the source into `out`; returns (name, "jpeg" | "copied", bytes in, bytes out)."""
    if kind == "zip":
        with zipfile.ZipFile(src_path) as z:
            data = z.read(name)
    else:
        with open(os.path.join(src_path, name), "rb") as f:
            data = f.read()
    target = os.path.join(out, *name.split("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.splitext(name)[1].lower() in JPEG_EXTS:
        try:
            new, markers = transcode(data, tool)
        except NotSegmented:
            new, markers = None, None
        if new is not None:
            with open(target, "wb") as f:
                f.write(new)
            np.save(os.path.join(out, *sidecar_name(name).split("/")), markers, allow_pickle=False)
            return name, "jpeg", len(data), len(new) + markers.nbytes
    with open(target, "wb") as f:
        f.write(data)
    return name, "copied", len(data), len(data)


def prepare_source(source: ImageSource, out: str, workers: Optional[int] = None,
                   progress: Optional[bool] = None, tool: Optional[str] = None) -> dict:
    """Write the prepared form of every usable image of `source` into the folder `out`.

    Args:
        source: the listed HR source (bad files are left out; source.report() names them).
        out: output folder (created; must not be the source).
        workers: processes (None: every CPU this process may use).
        progress: tqdm bar (None: only on a terminal).
        tool: jpegtran executable (None: found on PATH).

    Returns:
        {"jpegs": n transcoded, "copied": n other or untranscodable, "bytes_in", "bytes_out"}.

    Raises:
        FileNotFoundError: no jpegtran. ValueError: `out` is the source or inside it.
    """
    tool = tool or jpegtran()
    if tool is None:
        raise FileNotFoundError("jpegtran not found (Debian/Ubuntu: apt-get install libjpeg-turbo-progs)")
    out = os.path.abspath(out)
    if out == source.path or out.startswith(source.path + os.sep):
        raise ValueError(f"{out}: the prepared folder must lie outside the source {source.path}")
    os.makedirs(out, exist_ok=True)
    workers = default_list_workers() if workers is None else max(1, int(workers))
    counts = {"jpegs": 0, "copied": 0, "bytes_in": 0, "bytes_out": 0}
    bar = tqdm(total=len(source.listing.names), desc="prepare", unit="file",
               disable=(None if progress is None else not progress), leave=False)
    args = [(source.path, source.kind, name, out, tool) for name in source.listing.names]

    def record(result):
        _, what, n_in, n_out = result
        counts["jpegs" if what == "jpeg" else "copied"] += 1
        counts["bytes_in"] += n_in
        counts["bytes_out"] += n_out
        bar.update(1)
    try:
        if workers == 1:
            for a in args:
                record(_prepare_one(*a))
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for result in pool.map(_prepare_one, *zip(*args), chunksize=4) if args else []:
                    record(result)
    finally:
        bar.close()
    return counts
