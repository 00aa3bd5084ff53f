"""Atomic checkpoints of a run folder: `<run>/checkpoints/checkpoint-<step>.pt`, the last K kept.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed
over its final name (and the folder fsync'ed), so a process killed at any moment leaves either the
complete new file or none; earlier checkpoints are untouched. Files hold only tensors and plain
Python values and are read back with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import os
import re
import warnings
import zipfile
from typing import Optional

import torch

from ..utils.files import atomic_write, temporary_name

SUBDIR = "checkpoints"
_NAME = re.compile(r"^checkpoint-(\d{8,})\.pt$")


def checkpoint_dir(run_dir: str) -> str:
    """The folder holding a run's checkpoints."""
    return os.path.join(run_dir, SUBDIR)


def list_checkpoints(run_dir: str) -> list:
    """Complete checkpoints of a run, oldest first, as (step, path)."""
    folder = checkpoint_dir(run_dir)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """Path of the newest intact checkpoint, or None.

    A checkpoint whose zip directory cannot be read (truncated by a copy or a full disk outside our
    atomic writes, or otherwise damaged) is skipped with one warning naming it, so resume and
    `generate --weights RUN` fall back to the previous one. Only the archive's directory is read, not
    the tensors.
    """
    found = list_checkpoints(run_dir)
    for _, path in reversed(found):
        problem = _damage(path)
        if problem is None:
            return path
        if path not in _warned_damaged:    # callers ask several times per command; say it once
            _warned_damaged.add(path)
            warnings.warn(f"{path} is damaged ({problem}); using the previous checkpoint", stacklevel=2)
    return None


_warned_damaged: set = set()


def _damage(path: str) -> Optional[str]:
    """Why a checkpoint file cannot be a complete torch.save archive, or None when its directory reads."""
    try:
        with zipfile.ZipFile(path) as z:
            if not z.namelist():
                return "an empty archive"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def save_checkpoint(run_dir: str, step: int, state: dict, keep: int = 3) -> str:
    """Write `state` atomically as the checkpoint of `step`; delete all but the newest `keep`.

    Args:
        run_dir: the run folder. step: training step (names the file). state: tensors and plain values.
        keep: how many checkpoints to keep (>= 1).

    Returns:
        The checkpoint's path.
    """
    folder = checkpoint_dir(run_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"checkpoint-{step:08d}.pt")
    atomic_write(path, lambda f: torch.save(state, f))
    for _, old in list_checkpoints(run_dir)[:-max(1, keep)]:
        os.remove(old)
    for name in os.listdir(folder):   # leftovers of writers that were killed mid-write
        if name.startswith(".tmp-checkpoint-") and name != temporary_name(path):
            os.remove(os.path.join(folder, name))
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a checkpoint with `torch.load(weights_only=True)` (no arbitrary code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def model_from_run(run_dir: str, config_key: str, build, which: str = "G_ema", map_location="cpu",
                   what: str = "a training"):
    """Module `which` (G_ema by default) of a run folder's newest checkpoint, in eval mode and frozen.

    Args:
        run_dir: the run folder.
        config_key: where the checkpoint's "config" holds the module's configuration ("generator").
        build: config dict -> a freshly built module.
        which: the name under the checkpoint's "modules".
        map_location: device.
        what: the kind of run, for messages ("an any-resolution training").

    Raises:
        FileNotFoundError: no checkpoint. ValueError: the checkpoint holds no such config or module.
    """
    path = latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {checkpoint_dir(run_dir)}")
    state = load_checkpoint(path, map_location=map_location)
    cfg = state.get("config", {}).get(config_key)
    if cfg is None or which not in state.get("modules", {}):
        raise ValueError(f"{path}: not {what} checkpoint (no {config_key} / {which})")
    model = build(cfg)
    model.load_state_dict(state["modules"][which])
    return model.eval().requires_grad_(False).to(map_location)
