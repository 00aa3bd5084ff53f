"""Ctrl-C during training (anyres_fast/train/trainer.py): the first SIGINT lets the step in progress
finish, writes a checkpoint of it and stops (exit 130 from the command); --resume continues from that
step exactly; a second SIGINT stops at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from anyres_fast.train import list_checkpoints, load_checkpoint
from helpers import write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.usefixtures("one_thread")


def _train_cmd(lr, out):
    # snap 1000: no regular checkpoint in this short run, so any checkpoint comes from the interrupt
    return [sys.executable, "-m", "anyres_fast", "train", "--tiny", "--phase", "fixed", "--lr-data", lr,
            "--out", out, "--resolution", "64", "--kimg", "1", "--snap", "1000", "--tick", "1", "--workers", "0",
            "--no-progress", "--device", "cpu"]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _wait_for_steps(out, proc, n, timeout=120):
    stats, t0 = os.path.join(out, "stats.jsonl"), time.time()
    while not (os.path.exists(stats) and len(open(stats).read().splitlines()) >= n):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def test_first_sigint_checkpoints_the_finished_step_and_resume_continues(tmp_path):
    lr = write_images(str(tmp_path / "lr"), [(64, 64), (80, 64), (64, 72), (70, 70)])
    out = str(tmp_path / "run")
    proc = subprocess.Popen(_train_cmd(lr, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_steps(out, proc, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    found = list_checkpoints(out)
    assert len(found) == 1, found
    step = found[0][0]
    lines = open(os.path.join(out, "stats.jsonl")).read().splitlines()
    assert step >= 2 and len(lines) == step                  # the checkpoint is of the last finished step
    state = load_checkpoint(found[0][1])
    assert state["step"] == step and state["nimg"] == 4 * step
    # --resume continues from it, to step + 1
    done = subprocess.run([sys.executable, "-m", "anyres_fast", "train", "--out", out, "--resume", "--max-steps", "1",
                           "--no-progress"], env=_env(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert [s for s, _ in list_checkpoints(out)][-1] == step + 1
    assert len(open(os.path.join(out, "stats.jsonl")).read().splitlines()) == step + 1


def test_second_sigint_stops_at_once(tmp_path):
    lr = write_images(str(tmp_path / "lr"), [(64, 64), (80, 64), (64, 72), (70, 70)])
    out = str(tmp_path / "run")
    script = (
        "import sys, time, torch\n"
        "from anyres_fast.train import trainer\n"
        "real = trainer.Trainer.save\n"
        "def slow_save(self):\n"
        "    open(sys.argv[2], 'w').close(); time.sleep(60); return real(self)\n"
        "trainer.Trainer.save = slow_save\n"
        "from anyres_fast.cli import main\n"
        "sys.exit(main(sys.argv[3:]))\n")
    flag = str(tmp_path / "saving")
    proc = subprocess.Popen([sys.executable, "-c", script, "x", flag] + _train_cmd(lr, out)[3:], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_steps(out, proc, 1)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    while not os.path.exists(flag):                   # the first one reached the checkpoint write
        assert proc.poll() is None and time.time() - t0 < 60
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.time() - t0 < 30
    assert list_checkpoints(out) == []                 # stopped inside the (slowed) save, before writing


def test_ctrl_c_under_torchrun_checkpoints_one_step_for_every_rank(tmp_path):
    """A terminal's Ctrl-C reaches torchrun's agent and both workers (the agent then sends each worker its
    own SIGINT): the ranks agree on one step, write its checkpoint with both ranks' RNG states, and stop."""
    import json

    lr = write_images(str(tmp_path / "lr"), [(64, 64), (80, 64), (70, 90)])
    out = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(29700 + os.getpid() % 200), "-m", "anyres_fast"] + _train_cmd(lr, out)[3:]
    proc = subprocess.Popen(cmd, env=dict(_env(), ANYRES_FAST_EXT="off"), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_steps(out, proc, 2, timeout=240)
        os.killpg(proc.pid, signal.SIGINT)          # the whole process group, as a terminal does
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = err.decode()
    assert "interrupted: checkpoint of step" in err, err[-3000:]
    (step, path), = list_checkpoints(out)
    state = load_checkpoint(path)
    assert state["step"] == step >= 2 and len(state["rng"]) == 2
    assert state["rng"][0]["python"] != state["rng"][1]["python"]      # each rank's own (seeded per rank)
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "stats.jsonl"))]
    assert steps == list(range(1, step + 1))
