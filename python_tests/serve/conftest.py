"""Fixtures of the serve tests: `anyres-fast serve` started as a real process on a free port."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
    """A running `anyres-fast serve` process: url, get(path) -> (status, bytes), stats(), stop()."""

    def __init__(self, argv, env_extra=None, timeout=120):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1", ANYRES_FAST_EXT="off", **(env_extra or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "anyres_fast", "serve", "--port", "0", *argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"at (http://\S+/) ", line)
            if m:
                self.url = m.group(1)
                return
        self.proc.kill()
        raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def get(self, path: str, timeout: float = 60):
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stats(self) -> dict:
        return json.loads(self.get("api/stats")[1])

    def stop(self) -> str:
        """Stops the server; returns its stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def serve():
    """Factory: serve(argv...) -> Server; every server is stopped after the test."""
    started = []

    def start(*argv, **kw):
        s = Server(list(argv), **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()
