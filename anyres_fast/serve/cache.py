"""Disk cache of encoded tiles.

A tile's file name is the SHA-256 of (weights hash, model family, tile source geometry, canonical
settings, level, col, row, format), stored as ROOT/<2 hex>/<62 hex>.<fmt>; files are written to a
temporary name and renamed, so a reader never sees half a tile and concurrent writers do not clash.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Optional


def hash_weights(spec: str, files=()) -> str:
    """A short hash naming the weights: SHA-256 of the spec text and of each file's name and bytes.

    Args:
        spec: the --weights value.
        files: the files the weights are loaded from (cli.weights.Weights.files(); none for random
            weights, whose spec text names them).
    Returns:
        16 hex characters.
    """
    h = hashlib.sha256(b"spec\0" + spec.encode())
    for path in files:
        h.update(b"\0file\0" + os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


class TileCache:
    """Encoded tiles on disk (see module doc).

    Args:
        root: cache folder (created), or None to disable the cache (get misses, put does nothing).
        namespace: text shared by every key of this server (weights hash, family, geometry).
    """

    def __init__(self, root: Optional[str], namespace: str):
        self.root, self.namespace = root, namespace
        self.hits = self.misses = 0
        if root is not None:
            os.makedirs(root, exist_ok=True)

    def path(self, settings: str, level: int, col: int, row: int, fmt: str) -> Optional[str]:
        """File of one tile (None without a cache)."""
        if self.root is None:
            return None
        key = f"{self.namespace}|{settings}|{level}|{col}|{row}|{fmt}".encode()
        d = hashlib.sha256(key).hexdigest()
        return os.path.join(self.root, d[:2], f"{d[2:]}.{fmt}")

    def get(self, settings: str, level: int, col: int, row: int, fmt: str) -> Optional[bytes]:
        """The cached bytes, or None."""
        path = self.path(settings, level, col, row, fmt)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    data = f.read()
                self.hits += 1
                return data
            except OSError:
                pass
        self.misses += 1
        return None

    def put(self, settings: str, level: int, col: int, row: int, fmt: str, data: bytes) -> None:
        """Store bytes (atomically; errors such as a full disk are ignored: the cache is optional)."""
        path = self.path(settings, level, col, row, fmt)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            pass
