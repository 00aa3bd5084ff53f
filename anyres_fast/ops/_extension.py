"""JIT build and load of the CUDA extension (docs/build.md).

The extension is compiled with ninja through `torch.utils.cpp_extension` in a child process whose whole
output goes to a build log, into a cache directory keyed by a hash of the sources, the torch/CUDA
versions and the target architectures. A file lock (fcntl, so it dies with its holder) serialises
concurrent builders; torch's own `lock` file left behind by a killed build is removed while we hold ours.

Environment:
  ANYRES_FAST_EXT    off | auto (default) | require
  ANYRES_FAST_ARCH   target archs, e.g. "8.0;9.0" (default: the visible GPUs, else 8.0;9.0)
  ANYRES_FAST_CACHE  cache root (default: $XDG_CACHE_HOME/anyres_fast or ~/.cache/anyres_fast)
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

log = logging.getLogger("anyres_fast")

EXT_NAME = "anyres_fast_ext"
DEFAULT_ARCHS = ("8.0", "9.0")
LOCK_TIMEOUT_S = float(os.environ.get("ANYRES_FAST_LOCK_TIMEOUT", 1800))
_SOURCE_SUFFIXES = (".cpp", ".cu", ".cuh", ".h")  # all hashed; only .cpp/.cu compiled

_state: dict = {"module": None, "error": None, "warned": False}
# per-process memo of what cannot change while the process runs (see build_key)
_cache: dict = {"sources": {}, "keys": {}}


class ExtensionUnavailable(RuntimeError):
    """The CUDA extension is disabled, failed to build, or cannot be used here."""


def mode() -> str:
    value = os.environ.get("ANYRES_FAST_EXT", "auto").strip().lower()
    if value not in ("off", "auto", "require"):
        raise ValueError(f"ANYRES_FAST_EXT must be off, auto or require, got {value!r}")
    return value


def source_dir() -> Path:
    """csrc/ as installed (package data) or in a source checkout (found once per process)."""
    found = _cache.get("source_dir")
    if found is None:
        installed = Path(__file__).resolve().parent.parent / "csrc"
        found = _cache["source_dir"] = installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "csrc"
    return found


def source_files() -> list[Path]:
    root = source_dir()
    files = sorted(p for p in root.rglob("*") if p.suffix in _SOURCE_SUFFIXES and "selftest" not in p.parts)
    if not files:
        raise ExtensionUnavailable(f"no CUDA/C++ sources found under {root}")
    return files


def _visible_archs() -> list[str]:
    """Compute capabilities of the visible GPUs, queried once per process (they cannot change while it
    runs: CUDA_VISIBLE_DEVICES is read when CUDA initialises)."""
    if "visible_archs" not in _cache:
        if torch.cuda.is_available():
            _cache["visible_archs"] = sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                                              for i in range(torch.cuda.device_count())})
        else:
            _cache["visible_archs"] = list(DEFAULT_ARCHS)
    return list(_cache["visible_archs"])


def target_archs() -> list[str]:
    """The archs to build for: ANYRES_FAST_ARCH, else the visible GPUs, else DEFAULT_ARCHS.

    Returns:
        list of "major.minor" strings.
    Raises:
        ValueError: ANYRES_FAST_ARCH is malformed.
    """
    override = os.environ.get("ANYRES_FAST_ARCH")
    if override:
        archs = [a.strip() for a in override.replace(",", ";").split(";") if a.strip()]
    else:
        archs = _visible_archs()
    for a in archs:
        major, _, minor = a.partition(".")
        if not (major.isdigit() and minor.rstrip("a").isdigit()):
            raise ValueError(f"bad CUDA arch {a!r} in ANYRES_FAST_ARCH (expected e.g. 9.0 or 8.0;9.0)")
    return archs


def _build_flags() -> dict:
    return {
        "cflags": ["-O3"],
        "cuda_cflags": ["-O3", "-lineinfo"],
    }


def _source_digest(root: Path) -> str:
    """SHA-256 over the relative paths and bytes of the sources under root, once per process and root
    (refresh_sources() forgets it; build() does so before compiling)."""
    digest = _cache["sources"].get(root)
    if digest is None:
        h = hashlib.sha256()
        for p in source_files():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
        digest = _cache["sources"][root] = h.hexdigest()
    return digest


def refresh_sources() -> None:
    """Forget the cached source digest and archs, so the next build_key() re-reads csrc/ (after editing
    the sources in a running process; build() calls it)."""
    _cache["sources"].clear()
    _cache["keys"].clear()


def build_key() -> str:
    """The build cache key (docs/build.md §2), 16 hex digits.

    The sources are hashed once per process (refresh_sources() to re-read them) and the visible GPUs
    queried once, so calls after the first cost a dict lookup: the conv autotuner's table path is on
    the per-call path of impl="auto".
    """
    root = source_dir()
    memo = (root, os.environ.get("ANYRES_FAST_ARCH"))
    key = _cache["keys"].get(memo)
    if key is None:
        h = hashlib.sha256()
        h.update(_source_digest(root).encode())
        h.update(torch.__version__.encode())
        h.update(str(torch.version.cuda).encode())
        h.update(";".join(target_archs()).encode())
        h.update(json.dumps(_build_flags(), sort_keys=True).encode())
        h.update(sys.version.encode())
        key = _cache["keys"][memo] = h.hexdigest()[:16]
    return key


def cache_root() -> Path:
    if "ANYRES_FAST_CACHE" in os.environ:
        return Path(os.environ["ANYRES_FAST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anyres_fast"


def build_dir() -> Path:
    return cache_root() / f"ext-{build_key()}"


def log_path() -> Path:
    return build_dir() / "build.log"


def _library_path(directory: Path) -> Path | None:
    found = sorted(directory.glob(f"{EXT_NAME}*.so"))
    return found[0] if found else None


@contextlib.contextmanager
def _build_lock(directory: Path, timeout: float = LOCK_TIMEOUT_S):
    """Exclusive lock on <dir>/.anyres_lock. fcntl locks vanish with the process, so a killed builder
    never leaves a lock that blocks the next one; we still time out rather than wait forever."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".anyres_lock", "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ExtensionUnavailable(
                        f"timed out after {timeout:.0f}s waiting for another build of the extension "
                        f"in {directory}; delete that folder if no other build is running")
                time.sleep(0.5)
        try:
            # torch's FileBaton lock from an interrupted build would make cpp_extension wait forever;
            # holding our lock means nobody else is building here, so it is stale.
            (directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compile_in_subprocess(directory: Path) -> None:
    archs = target_archs()
    log.warning("anyres_fast: building the CUDA extension for sm_%s (one-time, a few minutes); log: %s",
                ",sm_".join(a.replace(".", "") for a in archs), directory / "build.log")
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=";".join(archs), MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 2)))
    cuda_home = _cuda_home()
    if cuda_home:
        env["CUDA_HOME"] = cuda_home
    spec = {"dir": str(directory), "sources": [str(p) for p in source_files() if p.suffix in (".cpp", ".cu")],
            "include": str(source_dir()), **_build_flags()}
    with open(directory / "build.log", "w") as logfile:
        logfile.write(f"torch {torch.__version__} cuda {torch.version.cuda} archs {archs}\n")
        logfile.flush()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--compile", json.dumps(spec)],
                              stdout=logfile, stderr=subprocess.STDOUT, env=env, cwd=str(directory))
    if proc.returncode != 0 or _library_path(directory) is None:
        raise ExtensionUnavailable(f"building the CUDA extension failed (exit {proc.returncode}); "
                                   f"see the build log: {directory / 'build.log'}")


def _cuda_home() -> str | None:
    """CUDA_HOME for the build: the user's, else the toolkit folder of the nvcc on PATH (wrapper scripts
    in /usr/local/bin would otherwise make torch guess /usr/local)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    for candidate in (Path("/usr/local/cuda"),):
        if (candidate / "bin" / "nvcc").exists():
            return str(candidate)
    found = shutil.which("nvcc")
    return str(Path(found).resolve().parent.parent) if found else None


def _compile(spec: dict) -> None:
    """Runs in the child process: compile and link, no import."""
    from torch.utils import cpp_extension
    cpp_extension.load(
        name=EXT_NAME, sources=spec["sources"], build_directory=spec["dir"],
        extra_include_paths=[spec["include"]], extra_cflags=spec["cflags"],
        extra_cuda_cflags=spec["cuda_cflags"], with_cuda=True, is_python_module=True,
        is_standalone=False, verbose=True)
    print("anyres_fast: compile and link OK")


def _import_library(path: Path):
    spec = importlib.util.spec_from_file_location(EXT_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(force: bool = False):
    """Build (if needed) and import the extension; raises ExtensionUnavailable on failure.
    Works without a GPU: only running the kernels needs one."""
    refresh_sources()  # a build compiles what is on disk now
    directory = build_dir()
    with _build_lock(directory):
        lib = _library_path(directory)
        if force or lib is None:
            if lib is not None:
                lib.unlink()
            _compile_in_subprocess(directory)
            lib = _library_path(directory)
    try:
        return _import_library(lib)
    except ImportError as exc:
        raise ExtensionUnavailable(f"the built extension {lib} failed to import: {exc}") from exc


def get(required: bool = False):
    """The loaded extension module, or None when it cannot be had (auto mode warns once).

    required=True (impl="cuda" or ANYRES_FAST_EXT=require) raises ExtensionUnavailable instead."""
    m = mode()
    required = required or m == "require"
    if _state["module"] is not None:
        return _state["module"]
    if m == "off":
        if required:
            raise ExtensionUnavailable("the CUDA extension is disabled by ANYRES_FAST_EXT=off")
        return None
    if _state["error"] is None:
        try:
            _state["module"] = build()
            return _state["module"]
        except Exception as exc:  # any failure: compiler missing, nvcc error, import error, lock timeout
            _state["error"] = exc if isinstance(exc, ExtensionUnavailable) else ExtensionUnavailable(str(exc))
    if required:
        raise _state["error"]
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"anyres_fast: CUDA extension unavailable, using the PyTorch reference ops. "
                      f"{_state['error']}", RuntimeWarning, stacklevel=3)
    return None


def check_environment() -> None:
    """Raise ValueError naming the variable when ANYRES_FAST_EXT or ANYRES_FAST_ARCH is malformed."""
    mode()
    target_archs()


def status() -> dict:
    """What `anyres-fast doctor` prints; never builds and never raises.

    Returns:
        dict with mode, archs, build_dir, built, library, log, loaded, error and `problems`: one line
        per malformed environment variable (the other fields then say "unknown" where they depend on it).
    """
    problems = []
    try:
        info = {"mode": mode()}
    except ValueError as exc:
        info = {"mode": "invalid"}
        problems.append(str(exc))
    try:
        info["archs"] = target_archs()
    except ValueError as exc:
        info["archs"] = ["invalid"]
        problems.append(str(exc))
    try:
        directory = build_dir()
    except Exception as exc:  # bad archs, unreadable sources: report, the diagnostic must not crash
        directory = None
        if info["archs"] != ["invalid"]:
            problems.append(f"build folder unknown: {exc}")
    info["build_dir"] = str(directory) if directory is not None else "unknown"
    lib = _library_path(directory) if directory is not None else None
    info["built"] = lib is not None
    info["library"] = str(lib) if lib else None
    info["log"] = str(directory / "build.log") if directory is not None and (directory / "build.log").exists() else None
    info["loaded"] = _state["module"] is not None
    info["error"] = str(_state["error"]) if _state["error"] else None
    info["problems"] = problems
    return info


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compile":
        _compile(json.loads(sys.argv[2]))
    else:
        print("usage: python _extension.py --compile SPEC_JSON (internal)", file=sys.stderr)
        sys.exit(2)
