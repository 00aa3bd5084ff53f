"""Writing files so that a reader never sees half of one: atomic writes, JSON, PNG.

Every file the package writes for a user (weights, checkpoints, statistics caches, images, reports)
goes through `atomic_write`: the bytes go to a temporary file in the same folder, are flushed and
fsync'ed, and only then renamed over the destination (rename within one file system is atomic). A
crash, a full disk or a kill leaves either the old file or the new one, never a truncated one, and the
temporary file is removed. The folder is fsync'ed after the rename so the new name survives a power cut.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Union

import numpy as np


def atomic_write(path: str, data: Union[bytes, Callable]) -> str:
    """Write `path` atomically.

    Args:
        path: destination file; its folder must exist.
        data: the bytes, or a callable that writes into the binary file object it is given.

    Returns:
        The path.

    Raises:
        OSError: the folder is missing or not writable, or the disk is full; the message names `path`.
            The previous file at `path`, if any, is unchanged.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, temporary_name(path))
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_folder(folder)
    return path


def temporary_name(path: str, pid: int = None) -> str:
    """The name of the temporary file `atomic_write` uses for `path` (`.tmp-<name>-<pid>`), so that a
    caller can recognise leftovers of writers that were killed mid-write."""
    return f".tmp-{os.path.basename(path)}-{os.getpid() if pid is None else pid}"


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:     # some file systems do not support fsync on folders
        pass
    finally:
        os.close(fd)


def write_json(path: str, obj, indent: int = 2, sort_keys: bool = True) -> str:
    """Write `obj` as UTF-8 JSON, atomically.

    Args:
        path: destination file.
        obj: anything json.dumps accepts.
        indent, sort_keys: as json.dumps.

    Returns:
        The path.
    """
    return atomic_write(path, (json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n").encode("utf-8"))


def to_uint8(images):
    """Float images in [-1, 1] (any shape, a torch tensor) -> uint8 in [0, 255], rounded, on the CPU."""
    import torch

    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_png(path: str, image) -> str:
    """Write an 8-bit image as PNG, atomically.

    Args:
        path: destination file.
        image: uint8 array or tensor, (H, W, C) or (H, W) — or a (C, H, W) torch tensor (C in 1, 3, 4).

    Returns:
        The path.
    """
    from PIL import Image

    if hasattr(image, "detach"):              # a torch tensor: channels first
        image = image.detach().cpu()
        if image.ndim == 3:
            image = image.permute(1, 2, 0)
        image = image.contiguous().numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"save_png: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    picture = Image.fromarray(array)
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))


def save_image(path: str, image) -> str:
    """Write a float image in [-1, 1] ((C, H, W) or (1, C, H, W) torch tensor) as an 8-bit PNG, atomically.

    Args:
        path: destination file.
        image: the image (rounded to the nearest of 256 levels).

    Returns:
        The path.
    """
    return save_png(path, to_uint8(image.reshape(-1, *image.shape[-2:])))
