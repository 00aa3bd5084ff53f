"""The render worker: one thread that owns the generator (and its device) and renders tiles in batches.

Requests are queued as (TileKey, concurrent.futures.Future). The thread takes the first waiting request,
collects every request that arrives within `wait_s` (up to `max_batch` tiles), drops those whose future
was cancelled (the web handler cancels it when its client disconnects), renders the rest with one
`source.render_batch` call (identical keys rendered once) and completes the futures.
"""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from typing import Optional

log = logging.getLogger("anyres_fast.serve")


class RenderWorker:
    """Batched tile rendering on one thread (see module doc).

    Args:
        source: a tile source with render_batch(keys) -> (arrays, generator calls).
        max_batch: most tiles per batch. wait_s: how long to wait for more requests after the first.
    Attributes (statistics): batches, tiles, generator_calls, dropped, errors, largest_batch.
    """

    def __init__(self, source, *, max_batch: int = 32, wait_s: float = 0.01):
        self.source, self.max_batch, self.wait_s = source, max_batch, wait_s
        self._queue: "queue.Queue" = queue.Queue()
        self.batches = self.tiles = self.generator_calls = self.dropped = self.errors = self.largest_batch = 0
        self._thread = threading.Thread(target=self._run, name="anyres-render", daemon=True)
        self._stop = False
        self._thread.start()

    def submit(self, key) -> concurrent.futures.Future:
        """Queue one tile; the future's result is an (h, w, C) uint8 array."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((key, fut))
        return fut

    def stats(self) -> dict:
        """The counters, as a dict."""
        return {k: getattr(self, k) for k in ("batches", "tiles", "generator_calls", "dropped", "errors",
                                              "largest_batch")} | {"queued": self._queue.qsize()}

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stop the thread after the batch in progress."""
        self._stop = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _collect(self, first) -> list:
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stop = True
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while not self._stop:
            first = self._queue.get()
            if first is None:
                break
            live = []
            for key, fut in self._collect(first):
                if fut.set_running_or_notify_cancel():
                    live.append((key, fut))
                else:
                    self.dropped += 1      # the client went away before its tile was rendered
            if not live:
                continue
            unique = list(dict.fromkeys(k for k, _ in live))
            try:
                arrays, calls = self.source.render_batch(unique)
            except Exception as exc:  # one logged line per failed batch; the handlers answer 500
                self.errors += 1
                log.error("render of %d tile(s) failed: %s: %s", len(unique), type(exc).__name__, exc)
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.tiles += len(unique)
            self.generator_calls += calls
            self.largest_batch = max(self.largest_batch, len(unique))
            result = dict(zip(unique, arrays))
            for key, fut in live:
                fut.set_result(result[key])
