"""A training run folder: identified by where it is, written by one training at a time.

- Where it is: nothing inside a run records the run's own absolute path. `training_options.json` stores
  `out` as "." and folders inside the run (the listing cache) relative to it, so a copied or renamed
  run resumes from its new place and never writes to the old one (docs/training.md, "Run folders").
- One writer: a training holds an exclusive `flock` on `<run>/.lock` for as long as it runs. The
  kernel drops the lock when the process dies, however it dies, so a lock left by a killed training
  never blocks the next one; the file itself only names the last holder for the error message.
- A new training never overwrites a run: a folder that already holds one is refused unless the
  training resumes it, or is asked to start over (`force_new`), which moves the old run aside to a
  sibling folder `<run>.old-<time>` and deletes nothing.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Optional

try:
    import fcntl
except ImportError:  # not POSIX: no locking (documented); everything else works
    fcntl = None

LOCK_NAME = ".lock"
# What a start writes before its first step; a folder holding only these (and the listing cache) was
# never trained in, so a new training may start there.
_START_FILES = {LOCK_NAME, "cache", "training_options.json", "data_report.json", "tensorboard"}


class RunFolderError(Exception):
    """The run folder cannot be used as asked (in use, already holds a run); the message is one line."""


class RunFolderLock:
    """The exclusive lock of one run folder; `release()` (or process exit) frees it."""

    def __init__(self, out: str):
        """Take the lock of `out` (its lock file is created if missing).

        Raises:
            RunFolderError: another process holds it; the message names that process.
        """
        self.path = os.path.join(out, LOCK_NAME)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(self._fd)
                os.close(self._fd)
                self._fd = None
                raise RunFolderError(f"{out}: another training is writing into this run folder ({holder}); "
                                     f"wait for it to end or choose another --out") from None

    def mark(self) -> None:
        """Name this process in the lock file (for the message a second training gets); called once the
        training is sure to use the folder, so a refused start changes nothing in it."""
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, info, 0)

    def release(self) -> None:
        """Free the lock (idempotent). The file stays: removing it could race with the next holder."""
        if self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def run_contents(out: str) -> list:
    """The entries of `out` that show a training ran there (or that are not ours); [] when a new
    training may start in it."""
    if not os.path.isdir(out):
        return []
    return sorted(e for e in os.listdir(out) if e not in _START_FILES and not e.startswith(".tmp-"))


def move_aside(out: str) -> str:
    """Rename the folder `out` to a new sibling `<out>.old-<YYYYmmdd-HHMMSS>[-N]`; nothing is deleted.

    Returns:
        The new path of the old run.
    """
    base = f"{os.path.abspath(out).rstrip(os.sep)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = base, 1
    while os.path.exists(target):
        n += 1
        target = f"{base}-{n}"
    os.rename(out, target)
    return target


def resolve_in_run(out: str, path: Optional[str]) -> Optional[str]:
    """A path stored in a run's configuration: relative ones are inside the run folder `out`."""
    if path is None or os.path.isabs(path):
        return path
    return os.path.join(out, path)


def relative_to_run(out: str, path: Optional[str]) -> Optional[str]:
    """How a path is stored in a run's configuration: relative when inside the run folder `out`."""
    if path is None:
        return None
    out_abs, path_abs = os.path.abspath(out), os.path.abspath(path)
    if path_abs == out_abs or path_abs.startswith(out_abs.rstrip(os.sep) + os.sep):
        return os.path.relpath(path_abs, out_abs)
    return path_abs


def trim_stats(out: str, step: int) -> int:
    """Drop the `stats.jsonl` lines of steps after `step` (written before a kill, replayed by the resume).

    Returns:
        The number of lines dropped.
    """
    from ..utils.files import atomic_write

    path = os.path.join(out, "stats.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            continue      # a line cut by a kill mid-write
    if len(kept) != len(lines):
        atomic_write(path, "".join(kept).encode())
    return len(lines) - len(kept)
