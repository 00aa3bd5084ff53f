"""Atomic checkpoints of a run folder: `<run>/checkpoints/checkpoint-<step>.pt`, the last K kept.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed
over its final name (and the folder fsync'ed), so a process killed at any moment leaves either the
complete new file or none; earlier checkpoints are untouched. Files hold only tensors and plain
Python values and are read back with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import os
import re
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
    """Path of the newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


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
