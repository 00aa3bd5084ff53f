"""Run folders are safe: a run is the folder it is in (copied and renamed runs resume in place, the
original untouched, bitwise as an uninterrupted run), one training per folder (a lock that dies with its
process), a new training never overwrites a run (--force-new moves it aside), options given with
--resume either may change or must agree, stats.jsonl has no replayed steps, the progress bar is right."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from anyres_fast.train import Trainer, TrainOptions, latest_checkpoint, load_checkpoint
from anyres_fast.train.anyres_recipe import AnyresRecipe
from anyres_fast.train.run_folder import RunFolderError, RunFolderLock, move_aside, relative_to_run, trim_stats

from helpers import micro_config, run_cli, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.usefixtures("one_thread")


def _opts(out, **kw):
    base = dict(out=str(out), batch=4, kimg=1, workers=0, snap=1, tick=1, progress=False, seed=3)
    base.update(kw)
    return TrainOptions(**base)


@pytest.fixture(scope="module")
def lr(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("data") / "lr"), [(64, 64), (80, 64), (70, 90)])


def _cfg(lr):
    return micro_config(phase="fixed", lr_data=lr, cache_dir="cache")   # the cache inside the run


def _files(folder):
    """{relative path: (bytes, mtime_ns)} of every file under folder."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def _weights(run):
    state = load_checkpoint(latest_checkpoint(run))
    return state["step"], {f"{m}.{k}": v for m, sd in state["modules"].items() for k, v in sd.items()}


def _resume_cli(run, capsys, *extra):
    return run_cli(["train", "--out", str(run), "--resume", "--no-progress", *extra], capsys)


def test_copied_and_renamed_runs_resume_in_place_exactly_and_leave_the_original_untouched(lr, tmp_path, capsys):
    Trainer(AnyresRecipe(_cfg(lr)), _opts(tmp_path / "straight", max_steps=3)).run()
    original = tmp_path / "original"
    Trainer(AnyresRecipe(_cfg(lr)), _opts(original, max_steps=2)).run()
    saved = json.loads((original / "training_options.json").read_text())
    assert saved["options"]["out"] == "." and saved["config"]["cache_dir"] == "cache"
    assert str(tmp_path) not in (original / "training_options.json").read_text()   # no absolute path of the run
    before = _files(original)
    time.sleep(0.01)

    copy = shutil.copytree(original, tmp_path / "copy")
    rc, _, err = _resume_cli(copy, capsys, "--max-steps", "1")
    assert rc == 0, err
    assert _files(original) == before                       # bytes and mtimes of the original unchanged
    step, got = _weights(copy)
    want_step, want = _weights(tmp_path / "straight")
    assert step == want_step == 3 and got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)   # bitwise as the uninterrupted run
    assert os.listdir(copy / "cache")                        # the copy's own listing cache is used

    renamed = tmp_path / "renamed"
    os.rename(original, renamed)
    rc, _, err = _resume_cli(renamed, capsys, "--max-steps", "1")
    assert rc == 0, err
    assert not original.exists()                             # no stray folder at the old place
    step, got = _weights(renamed)
    assert step == 3 and all(torch.equal(got[k], want[k]) for k in want)


def test_a_new_training_never_overwrites_a_run_and_force_new_moves_it_aside(lr, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(AnyresRecipe(_cfg(lr)), _opts(run, max_steps=1)).run()
    before = _files(run)
    with pytest.raises(RunFolderError, match="already holds a training run"):
        Trainer(AnyresRecipe(_cfg(lr)), _opts(run, max_steps=1)).run()
    rc, _, err = run_cli(["train", "--phase", "fixed", "--lr-data", lr, "--out", str(run), "--tiny",
                          "--max-steps", "1", "--no-progress", "--workers", "0"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--resume" in err and "--force-new" in err
    assert _files(run) == before

    Trainer(AnyresRecipe(_cfg(lr)), _opts(run, max_steps=1, seed=5, force_new=True)).run()
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and _files(moved[0]) == before    # the old run, whole, beside the new one
    assert load_checkpoint(latest_checkpoint(run))["options"]["seed"] == 5

    # a folder a start left before its first step (options, cache) is not a run
    fresh = tmp_path / "fresh"
    (fresh / "cache").mkdir(parents=True)
    (fresh / "training_options.json").write_text("{}")
    Trainer(AnyresRecipe(_cfg(lr)), _opts(fresh, max_steps=1)).run()
    assert latest_checkpoint(fresh)


LOCK_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from anyres_fast.train.run_folder import RunFolderLock
lock = RunFolderLock({out!r})
lock.mark()
print("locked", flush=True)
time.sleep(120)
"""


def test_one_writer_per_folder_and_a_killed_holder_does_not_block(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER.format(root=ROOT, out=out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"process {proc.pid} on"):
            RunFolderLock(out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = RunFolderLock(out)          # the kernel dropped the dead process's lock
    lock.mark()
    with pytest.raises(RunFolderError, match=f"process {os.getpid()} on"):
        RunFolderLock(out)             # a second open file description conflicts, even in one process
    lock.release()
    RunFolderLock(out).release()


def test_two_trainings_started_together_into_one_folder_exactly_one_runs(lr, tmp_path):
    out = str(tmp_path / "run")
    argv = [sys.executable, "-m", "anyres_fast", "train", "--phase", "fixed", "--lr-data", lr, "--out", out,
            "--tiny", "--max-steps", "3", "--no-progress", "--workers", "0", "--snap", "0", "--tick", "1"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        results.append((p.returncode, err))
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert len(refused.strip().splitlines()) == 1
    assert "another training is writing" in refused or "already holds a training run" in refused
    steps = [json.loads(l)["step"] for l in open(os.path.join(out, "stats.jsonl"))]
    assert steps == list(range(1, 4))       # one run's lines, not two interleaved


def test_options_given_with_resume_change_or_must_agree(lr, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(AnyresRecipe(_cfg(lr)), _opts(run, max_steps=1)).run()
    for extra, named in ((["--phase", "patch"], "--phase patch"), (["--config", "R"], "--config R"),
                         (["--lr-data", str(tmp_path)], "--lr-data"), (["--model", "infinity"], "--model infinity"),
                         (["--batch", "8"], "--batch 8"), (["--force-new"], "--force-new")):
        rc, _, err = _resume_cli(run, capsys, "--max-steps", "1", *extra)
        assert rc == 2 and named in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert load_checkpoint(latest_checkpoint(run))["step"] == 1          # nothing trained
    rc, _, err = _resume_cli(run, capsys, "--max-steps", "1", "--phase", "fixed", "--lr-data", lr, "--snap", "7",
                             "--keep", "2")
    assert rc == 0, err                                                   # equal values agree
    saved = json.loads((run / "training_options.json").read_text())["options"]
    assert saved["snap"] == 7 and saved["keep"] == 2                      # changeable ones applied


def test_a_damaged_training_options_file_is_one_line(lr, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(AnyresRecipe(_cfg(lr)), _opts(run, max_steps=1)).run()
    for text in ("{not json", '{"config": 3}', '["a"]'):
        (run / "training_options.json").write_text(text)
        rc, _, err = _resume_cli(run, capsys)
        assert rc == 2 and "training_options.json" in err and len(err.strip().splitlines()) == 1, err


def test_resume_drops_the_stats_of_replayed_steps_and_the_bar_stays_in_range(lr, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(AnyresRecipe(_cfg(lr)), _opts(run, max_steps=2, snap=2, kimg=0.016)).run()
    with open(run / "stats.jsonl", "a") as f:        # a kill after step 4's stats, before its checkpoint
        f.write(json.dumps({"step": 3}) + "\n" + json.dumps({"step": 4}) + "\n" + '{"step": 5, "G/lo')
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # tqdm's "clamping frac" warning fails the test
        Trainer(AnyresRecipe(_cfg(lr)), _opts(run, resume=True, progress=True, kimg=0.016)).run()
    assert [json.loads(l)["step"] for l in open(run / "stats.jsonl")] == [1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "3 stats line(s) of later steps dropped" in err and "4.000/0.016" not in err
    assert "0.016/0.016" in err and "-00:" not in err
    assert Trainer(AnyresRecipe(_cfg(lr)), _opts(run, resume=True, kimg=0.008)).run() == {}   # nothing left


def test_paths_inside_a_run_are_stored_relative(tmp_path):
    run = str(tmp_path / "run")
    assert relative_to_run(run, os.path.join(run, "cache")) == "cache"
    assert relative_to_run(run, str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    assert relative_to_run(run, str(tmp_path / "run2")) == str(tmp_path / "run2")     # a prefix is not inside
    os.makedirs(run)
    moved = move_aside(run)
    assert not os.path.exists(run) and os.path.isdir(moved) and moved.startswith(run + ".old-")
    assert trim_stats(str(tmp_path), 1) == 0                                            # no stats file
