"""Image sources: a folder (recursive) or a .zip of Pillow-readable images, with optional labels.

Every file is probed once (header checks first: Pillow can identify it and its short side is >= `min_size`;
then a full decode, so truncated JPEGs are caught), in parallel processes with a progress bar, and the
result (size or the reason it is bad) is kept in a listing cache keyed by the file's path, byte size and
modification time. The cache lives in a folder the caller chooses (the run folder or a cache folder),
never beside the user's data; files added, removed or changed since the last listing are re-probed.
Bad files (unreadable, corrupt, truncated, empty, smaller than `min_size`) are skipped and reported.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import multiprocessing
import os
import zipfile
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

from tqdm import tqdm

from ..utils.files import write_json
from ..utils.images import to_rgb8, upright_size

Image.MAX_IMAGE_PIXELS = 933_120_000   # large native-resolution photos are the point of the HR set
CACHE_FORMAT = "anyres_fast.listing/2"   # 2: sizes after the EXIF orientation (utils/images.py)
LABELS_FILE = "dataset.json"


def image_extensions() -> set:
    """Lower-case file extensions Pillow can open (".jpg", ".png", ...)."""
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


SKIP_NAMES = {".DS_Store", "Thumbs.db"}


def scan_image_files(path: str) -> dict:
    """Every file with an image extension in a folder (recursive) or a zip archive; hidden files, SKIP_NAMES
    and a zip's __MACOSX/ folder are skipped.

    The one directory walk of the package (training sources and the metrics' real images use it).

    Args:
        path: a folder or a .zip file.

    Returns:
        {name: stamp}, names relative to `path` with "/" separators, sorted; the stamp is
        (byte size, mtime_ns) for a folder and [*date_time, CRC] for a zip member.

    Raises:
        FileNotFoundError: neither a folder nor a zip file.
    """
    exts = image_extensions()
    out = {}
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in files:
                if f in SKIP_NAMES or f.startswith(".") or os.path.splitext(f)[1].lower() not in exts:
                    continue
                full = os.path.join(root, f)
                st = os.stat(full)
                out[os.path.relpath(full, path).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns)
    elif os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                base = os.path.basename(info.filename)
                if (not info.is_dir() and not info.filename.startswith("__MACOSX/") and base not in SKIP_NAMES
                        and not base.startswith(".") and os.path.splitext(base)[1].lower() in exts):
                    out[info.filename] = (info.file_size, list(info.date_time) + [info.CRC])
    else:
        raise FileNotFoundError(f"{path}: not a folder or a .zip file")
    return dict(sorted(out.items()))


@dataclass
class BadFile:
    """A skipped file: its name inside the source and why it was skipped."""
    name: str
    reason: str


def probe_image(name: str, data: bytes, min_size: int):
    """Check one file: header first (identifiable, upright short side >= min_size), then a full decode.

    Args:
        name: the file's name in its source (for the BadFile). data: its bytes. min_size: smallest short side.

    Returns:
        (width, height) upright, or a BadFile.
    """
    if not data:
        return BadFile(name, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = upright_size(im)      # header only: cheap, so small files are skipped undecoded
            if min(w, h) < min_size:
                return BadFile(name, f"too small: {w}x{h}, the short side must be >= {min_size}")
            im.load()                    # full decode: catches truncated and corrupt files
    except Image.UnidentifiedImageError:
        return BadFile(name, "not an image Pillow can read (unknown or corrupt format)")
    except Exception as exc:  # any decoder error means: skip and report, never stop the run
        return BadFile(name, f"unreadable: {type(exc).__name__}: {exc}")
    return (w, h)


def _probe_chunk(path: str, kind: str, names: list, min_size: int) -> list:
    """probe_image for some files of a folder or zip (one zip handle per chunk); runs in a pool worker."""
    out = []
    z = zipfile.ZipFile(path) if kind == "zip" else None
    try:
        for name in names:
            try:
                if z is not None:
                    data = z.read(name)
                else:
                    with open(os.path.join(path, name), "rb") as f:
                        data = f.read()
            except Exception as exc:   # vanished or unreadable file
                out.append(BadFile(name, f"unreadable: {type(exc).__name__}: {exc}"))
                continue
            out.append(probe_image(name, data, min_size))
    finally:
        if z is not None:
            z.close()
    return out


def default_list_workers() -> int:
    """Processes for listing: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


PARALLEL_FROM = 32     # fewer files to probe than this: probed in this process (no pool start-up)
CHUNK = 16             # files per pool task


def probe_files(path: str, kind: str, names: list, min_size: int, workers: Optional[int] = None,
                progress: Optional[bool] = None) -> dict:
    """probe_image over many files of a source, in a process pool, with a tqdm progress bar.

    Args:
        path: the source folder or zip. kind: "dir" or "zip". names: files to probe.
        min_size: smallest accepted short side. workers: processes (None: default_list_workers()).
        progress: show the bar (None: only when stderr is a terminal).

    Returns:
        {name: (width, height) or BadFile}.
    """
    workers = default_list_workers() if workers is None else max(1, int(workers))
    results = {}
    bar = tqdm(total=len(names), desc=f"listing {os.path.basename(path)}", unit="file",
               disable=(None if progress is None else not progress), leave=False)
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    try:
        if workers == 1 or len(names) < PARALLEL_FROM:
            for chunk in chunks:
                results.update(zip(chunk, _probe_chunk(path, kind, chunk, min_size)))
                bar.update(len(chunk))
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: no re-import
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx) as pool:
                jobs = {pool.submit(_probe_chunk, path, kind, chunk, min_size): chunk for chunk in chunks}
                for job in concurrent.futures.as_completed(jobs):
                    results.update(zip(jobs[job], job.result()))
                    bar.update(len(jobs[job]))
    finally:
        bar.close()
    return results


@dataclass
class SourceListing:
    """The usable images of a source (sorted names, their (width, height)) and the skipped files."""
    names: list
    sizes: list
    bad: list = field(default_factory=list)


class ImageSource:
    """Images of a folder (recursive) or a zip archive, probed and cached.

    Args:
        path: folder or `.zip` file.
        cache_dir: folder for the listing cache (None: no cache; probe every time).
        min_size: smallest accepted short side in pixels; smaller images are reported as bad.
        use_labels: read `dataset.json` ({"labels": [[name, label], ...]}, StyleGAN's format).
        list_workers: processes probing new files (None: every CPU this process may use).
        progress: listing progress bar (None: only when stderr is a terminal).

    Raises:
        FileNotFoundError: path is neither a folder nor a zip file.
        ValueError: the labels file is malformed, or lists no label for a usable image.
    """

    def __init__(self, path: str, cache_dir: Optional[str] = None, min_size: int = 1, use_labels: bool = False,
                 list_workers: Optional[int] = None, progress: Optional[bool] = None):
        self.path = os.path.abspath(path)
        self.min_size = int(min_size)
        if os.path.isdir(self.path):
            self.kind = "dir"
        elif os.path.isfile(self.path) and zipfile.is_zipfile(self.path):
            self.kind = "zip"
        else:
            raise FileNotFoundError(f"{path}: not a folder or a .zip file")
        self._zip = None
        self.list_workers, self.progress = list_workers, progress
        self.listing = self._list(cache_dir)
        self.labels = self._load_labels() if use_labels else None

    # -- listing ------------------------------------------------------------------------------------
    def _cache_path(self, cache_dir: str) -> str:
        key = hashlib.sha1(f"{self.path}|{self.min_size}".encode()).hexdigest()[:16]
        return os.path.join(cache_dir, f"listing-{key}.json")

    def _list(self, cache_dir: Optional[str]) -> SourceListing:
        entries = scan_image_files(self.path)
        cached = {}
        cache_path = None
        if cache_dir is not None:
            cache_path = self._cache_path(cache_dir)
            try:
                with open(cache_path) as f:
                    blob = json.load(f)
                if blob.get("format") == CACHE_FORMAT and blob.get("source") == self.path:
                    cached = blob["files"]
            except (OSError, ValueError, KeyError):
                cached = {}
        files, todo = {}, []
        for name, stamp in sorted(entries.items()):
            stamp = list(stamp) if isinstance(stamp, tuple) else stamp
            hit = cached.get(name)
            if hit is not None and hit["stamp"] == json.loads(json.dumps(stamp)):
                files[name] = hit
            else:
                files[name] = {"stamp": stamp}
                todo.append(name)
        probed = probe_files(self.path, self.kind, todo, self.min_size, self.list_workers, self.progress)
        for name in todo:
            result = probed[name]
            files[name].update({"size": list(result)} if isinstance(result, tuple) else {"bad": result.reason})
        changed = bool(todo)
        if set(cached) != set(files):
            changed = True
        if cache_path is not None and changed:
            os.makedirs(cache_dir, exist_ok=True)
            write_json(cache_path, {"format": CACHE_FORMAT, "source": self.path, "files": files}, indent=None)
        self.cache_path = cache_path
        names, sizes, bad = [], [], []
        for name, rec in files.items():
            if "bad" in rec:
                bad.append(BadFile(name, rec["bad"]))
            else:
                names.append(name)
                sizes.append(tuple(rec["size"]))
        return SourceListing(names, sizes, bad)

    def _load_labels(self) -> Optional[np.ndarray]:
        try:
            raw = self.read_bytes(LABELS_FILE)
        except (FileNotFoundError, KeyError):
            return None
        try:
            table = json.loads(raw)["labels"]
            labels = dict(table) if table is not None else None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}/{LABELS_FILE}: expected {{\"labels\": [[name, label], ...]}} ({exc})") from None
        if labels is None:
            return None
        missing = [n for n in self.listing.names if n not in labels]
        if missing:
            raise ValueError(f"{self.path}/{LABELS_FILE}: no label for {missing[:3]} ({len(missing)} images)")
        arr = np.array([labels[n] for n in self.listing.names])
        if arr.ndim == 1:      # class indices -> one-hot
            arr = np.eye(int(arr.max()) + 1, dtype=np.float32)[arr.astype(np.int64)]
        return arr.astype(np.float32)

    # -- access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.listing.names)

    @property
    def c_dim(self) -> int:
        """Label width (0 without labels)."""
        return 0 if self.labels is None else int(self.labels.shape[1])

    def read_bytes(self, name: str) -> bytes:
        """The raw bytes of one file of the source."""
        if self.kind == "dir":
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        return self._zip_handle().read(name)

    def _zip_handle(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():   # one handle per loader process
            self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def read_sidecar(self, name: str, suffix: str):
        """The .npy array stored beside file `name` as name + suffix (prepared sets), or None."""
        side = name + suffix
        try:
            if self.kind == "dir":
                path = os.path.join(self.path, side)
                if not os.path.isfile(path):
                    return None
                return np.load(path, allow_pickle=False)
            z = self._zip_handle()
            if side not in z.NameToInfo:
                return None
            return np.load(io.BytesIO(z.read(side)), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def open_image(self, index: int) -> Image.Image:
        """Image `index` opened by Pillow, not decoded (stored frame: EXIF orientation not applied)."""
        return Image.open(io.BytesIO(self.read_bytes(self.listing.names[index])))

    def load_rgb(self, index: int) -> Image.Image:
        """Image `index` as a decoded RGB Pillow image."""
        with Image.open(io.BytesIO(self.read_bytes(self.listing.names[index]))) as im:
            return to_rgb8(im)

    def label(self, index: int) -> np.ndarray:
        """Label vector (c_dim,) float32 (empty without labels)."""
        if self.labels is None:
            return np.zeros(0, dtype=np.float32)
        return self.labels[index]

    def report(self) -> dict:
        """JSON-able summary: source, usable count, skipped files with reasons."""
        return {"source": self.path, "images": len(self), "skipped": len(self.listing.bad),
                "skipped_files": [{"name": b.name, "reason": b.reason} for b in self.listing.bad]}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_zip"] = None        # zip handles do not pickle into loader workers
        return state
