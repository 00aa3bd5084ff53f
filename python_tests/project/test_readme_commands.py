"""Every README command that is sized for a CPU runs as written, read from the README itself.

A command line counts as CPU-sized when it uses random weights or says CPU in its comment. Placeholders
a reader replaces (PHOTOS/) become small generated folders, `out/...` folders go to a temporary folder,
training lines run 2 steps (`--max-steps 2`; the README says minutes for the full --tiny length, which
test_train_options checks), and `serve` is started on a free port, asked for its page and a tile, then
stopped. Commands that need a GPU, a download or a trained run are checked elsewhere (the demo test, the
--weights forms test, the published-model tests); lines whose comment says GPU are left out. A new CPU line in the README is run here without
further work; one this test cannot run fails it."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_cpu_commands() -> list:
    """The `anyres-fast ...` lines of the README's bash blocks that are CPU-sized, continuation lines joined."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.strip()
            if not line.startswith("anyres-fast "):
                continue
            command, _, comment = line.partition("#")
            if ("random" in command or "CPU" in comment) and "GPU" not in comment:
                lines.append(command.strip())
    return lines


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                ANYRES_FAST_EXT="off")


def _adapt(command: str, tmp_path) -> list:
    argv = shlex.split(command)[1:]
    photos = None
    for i, a in enumerate(argv):
        if a in ("PHOTOS/", "LR/"):
            photos = photos or write_images(str(tmp_path / "photos"), [(64, 64), (80, 72), (72, 90)])
            argv[i] = photos
        elif a.startswith("out/") or a.startswith("runs/"):
            argv[i] = str(tmp_path / a)
    if argv[0] == "train":
        argv += ["--max-steps", "2", "--no-progress", "--workers", "0"]
    return argv


def test_the_readme_has_cpu_commands_of_each_kind():
    kinds = {shlex.split(c)[1] for c in readme_cpu_commands()}
    assert {"generate", "train", "serve"} <= kinds, kinds


@pytest.mark.parametrize("command", readme_cpu_commands())
def test_readme_cpu_command_runs_as_written(command, tmp_path):
    argv = _adapt(command, tmp_path)
    if argv[0] == "serve":
        _serve(argv, tmp_path)
        return
    run = subprocess.run([sys.executable, "-m", "anyres_fast", *argv], capture_output=True, text=True,
                         timeout=600, env=_env(), cwd=tmp_path)
    assert run.returncode == 0, f"{command}\n{run.stderr[-3000:]}"
    out = [argv[i + 1] for i, a in enumerate(argv) if a == "--out"]
    assert out and os.path.isdir(out[0]) and os.listdir(out[0]), command     # it wrote something


def _serve(argv, tmp_path):
    argv = argv + ["--port", "0", "--cache", str(tmp_path / "tiles")]
    proc = subprocess.Popen([sys.executable, "-m", "anyres_fast", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    try:
        t0 = time.time()
        line = proc.stdout.readline()
        assert "serving" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = re.search(r"http://\S+/", line).group(0)
        page = urllib.request.urlopen(url, timeout=60).read().decode()
        assert "openseadragon" in page.lower()
        dzi = urllib.request.urlopen(url + "dzi/seed=0.dzi", timeout=60).read().decode()
        assert 'Width="4096"' in dzi, dzi
        tile = urllib.request.urlopen(f"{url}dzi/seed=0_files/12/3_5.png", timeout=120).read()
        assert tile[:8] == b"\x89PNG\r\n\x1a\n" and time.time() - t0 < 300
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
