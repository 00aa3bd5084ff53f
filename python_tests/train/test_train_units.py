"""Small units of training, each against an independent definition: the D-input blur schedule and taps
(StyleGAN3's definition, docs/training.md), masked means by brute force, R1's error and gradient,
checkpoint layout/retention/leftovers and model_from_run's checks, and the run-folder lock, move-aside
and stats trimming (docs/training.md, "Run folders")."""

import json
import os
import pickle
import re
import stat
import warnings
import zipfile

import pytest
import torch

from anyres_fast.train import checkpoint, losses, run_folder

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- losses

def test_blur_sigma_schedule_ends_and_short_fades():
    assert losses.blur_sigma_at(0, 10.0, 0) == 0.0          # no fade: no blur, never a division by 0
    assert losses.blur_sigma_at(0, 10.0, -1) == 0.0
    # a fade shorter than 1 kimg is still a fade: 1 - nimg / (fade * 1000), times init
    assert losses.blur_sigma_at(0, 10.0, 0.5) == pytest.approx(10.0)
    assert losses.blur_sigma_at(250, 10.0, 0.5) == pytest.approx(5.0)
    assert losses.blur_sigma_at(600, 10.0, 0.5) == 0.0


def test_blur_radius_one_matches_hand_taps():
    # sigma 0.5: radius floor(1.5) = 1, taps 2^-(x/0.5)^2 = (1/16, 1, 1/16), normalised; zero padding
    img = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    img[0, 0, 2, 2] = 1.0
    t = torch.tensor([1 / 16, 1.0, 1 / 16], dtype=torch.float64)
    t = t / t.sum()
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[1:4, 1:4] = t[:, None] * t[None, :]
    out = losses.blur_images(img, 0.5)
    torch.testing.assert_close(out[0, 0], expected)
    assert losses.blur_images(img, 0.33) is img             # radius 0: unchanged


def test_blur_taps_follow_the_image_device():
    # the taps must be moved to the images' device (on a GPU, CPU taps would be refused by upfirdn2d)
    img = torch.empty(2, 3, 8, 8, device="meta")
    out = losses.blur_images(img, 1.0)
    assert out.device.type == "meta" and out.shape == img.shape


def test_masked_mean_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=g)
    mask = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    mask[0, 0, 1, 2] = 1                                    # one pixel: the mean is that pixel's channels
    mask[1] = 1
    out = losses.masked_mean(x, mask)
    assert out.dtype == torch.float32                       # x's dtype, whatever the mask's
    want = [x[0, :, 1, 2].mean(), x[1].mean(), torch.tensor(0.0)]
    torch.testing.assert_close(out, torch.stack(want))
    one = losses.masked_mean(x[:1, :1], mask[:1] > 0)       # one channel, one pixel: den 1
    torch.testing.assert_close(one, x[:1, 0, 1, 2])


def test_r1_penalty_message_and_gradient_without_warnings():
    x = torch.randn(2, 1, 3, 3)
    with pytest.raises(ValueError, match=re.escape(
            "r1_penalty: real_img must require grad (set requires_grad_() before calling D)")):
        losses.r1_penalty(x, x.sum(dim=[1, 2, 3])[:, None])
    x.requires_grad_(True)
    logits = x.square().sum(dim=[1, 2, 3])[:, None]         # grad 2x: penalty 4 sum x^2
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # torch warns on only_inputs=False
        pen = losses.r1_penalty(x, logits)
    torch.testing.assert_close(pen, 4 * x.detach().square().sum(dim=[1, 2, 3]))


def test_teacher_loss_without_lpips_gives_zeros():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 8, 8, generator=g)
    teacher = torch.randn(2, 3, 8, 8, generator=g)
    out = losses.teacher_loss(student, 8, torch.zeros(2, 2), teacher)
    assert out["lpips"].dtype == torch.float32
    torch.testing.assert_close(out["lpips"], torch.zeros(2))
    # N = p = T: the warp is the identity (docs/ops.md §3.2), so l1 is the plain mean |s - t|
    torch.testing.assert_close(out["l1"], (student - teacher).abs().mean(dim=[1, 2, 3]), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- checkpoint

class _Opaque:
    """Not a tensor or plain value: weights_only loading must refuse it."""


def test_checkpoint_layout_and_load_options(tmp_path):
    run = str(tmp_path)
    assert checkpoint.checkpoint_dir(run) == os.path.join(run, "checkpoints")
    path = checkpoint.save_checkpoint(run, 7, {"w": torch.ones(2)})
    assert path == os.path.join(run, "checkpoints", "checkpoint-00000007.pt")
    assert checkpoint.load_checkpoint(path, map_location="meta")["w"].device.type == "meta"
    bad = checkpoint.save_checkpoint(run, 8, {"w": _Opaque()})
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.load_checkpoint(bad)


def test_checkpoint_retention_and_leftovers(tmp_path):
    run = str(tmp_path)
    for step in range(5):
        checkpoint.save_checkpoint(run, step, {"s": step})
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [2, 3, 4]      # keep=3 by default
    folder = checkpoint.checkpoint_dir(run)
    leftover = os.path.join(folder, ".tmp-checkpoint-00000001.pt-99999")
    other = os.path.join(folder, ".tmp-other-1")
    for p in (leftover, other):
        with open(p, "wb") as f:
            f.write(b"half")
    checkpoint.save_checkpoint(run, 5, {"s": 5}, keep=1)
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [5]
    assert not os.path.exists(leftover) and os.path.exists(other)
    checkpoint.save_checkpoint(run, 6, {"s": 6}, keep=0)                       # keep < 1 keeps one
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [6]


def test_empty_archive_warning_names_it_at_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "_warned_damaged", set())
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with zipfile.ZipFile(folder / "checkpoint-00000003.pt", "w"):
        pass
    with pytest.warns(UserWarning, match="an empty archive") as rec:
        assert checkpoint.latest_checkpoint(str(tmp_path)) is None
    # stacklevel 2: the warning points at the caller, not at checkpoint.py (a frame a wrapper adds, as
    # mutmut's trampoline does, may sit between; the module's own file must not be named)
    assert os.path.basename(rec[0].filename) != "checkpoint.py"


def _build(cfg):
    return torch.nn.Linear(cfg["n"], 1)


def test_model_from_run_defaults_and_checks(tmp_path):
    run = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{run}: no checkpoint in {os.path.join(run, 'checkpoints')}")):
        checkpoint.model_from_run(run, "generator", _build)
    src = _build({"n": 3})
    checkpoint.save_checkpoint(run, 1, {"config": {"generator": {"n": 3}}, "modules": {"G_ema": src.state_dict()}})
    model = checkpoint.model_from_run(run, "generator", _build)                # which="G_ema", cpu
    torch.testing.assert_close(model.weight, src.weight.detach())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for step, state in ((2, {"modules": {"G_ema": src.state_dict()}}),         # no config at all
                        (3, {"config": {"other": {}}, "modules": {"G_ema": src.state_dict()}}),
                        (4, {"config": {"generator": {"n": 3}}})):              # no modules at all
        checkpoint.save_checkpoint(run, step, state)
        with pytest.raises(ValueError, match=r"checkpoint-0000000\d\.pt: not a training checkpoint "
                                             r"\(no generator / G_ema\)"):
            checkpoint.model_from_run(run, "generator", _build)


# ---------------------------------------------------------------- run folder

def test_lock_file_mode_holder_message_and_release_twice(tmp_path):
    old = os.umask(0o022)
    try:
        lock = run_folder.RunFolderLock(str(tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o644
    lock.mark()
    with pytest.raises(run_folder.RunFolderError,
                       match=rf"process {os.getpid()} on .+ since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\)"):
        run_folder.RunFolderLock(str(tmp_path))
    with open(lock.path, "w") as f:
        f.write("not json")
    with pytest.raises(run_folder.RunFolderError, match=r"\(another process\)"):
        run_folder.RunFolderLock(str(tmp_path))
    lock.release()
    lock.release()                                          # idempotent
    run_folder.RunFolderLock(str(tmp_path)).release()


def test_run_contents_ignores_temporaries(tmp_path):
    (tmp_path / ".tmp-stats.jsonl-12").write_text("x")
    (tmp_path / "training_options.json").write_text("{}")
    assert run_folder.run_contents(str(tmp_path)) == []
    (tmp_path / "stats.jsonl").write_text("")
    assert run_folder.run_contents(str(tmp_path)) == ["stats.jsonl"]


def test_move_aside_name_and_collisions(tmp_path, monkeypatch):
    out = tmp_path / "run "                                 # a trailing space is part of the name
    out.mkdir()
    target = run_folder.move_aside(str(out))
    assert re.fullmatch(re.escape(str(out)) + r"\.old-\d{8}-\d{6}", target) and os.path.isdir(target)
    monkeypatch.setattr(run_folder.time, "strftime", lambda fmt: "20260101-000000")
    base = str(tmp_path / "r") + ".old-20260101-000000"
    os.mkdir(base)
    for want in (base + "-2", base + "-3"):
        os.mkdir(tmp_path / "r")
        assert run_folder.move_aside(str(tmp_path / "r")) == want


def test_relative_to_run_with_trailing_space(tmp_path):
    out = str(tmp_path / "run ")
    assert run_folder.relative_to_run(out, os.path.join(out, "cache")) == "cache"


def test_trim_stats_keeps_lines_after_a_cut_one(tmp_path):
    lines = [json.dumps({"step": 1}) + "\n", '{"step": 2, "lo', json.dumps({"step": 3}) + "\n",
             json.dumps({"step": 9}) + "\n", json.dumps({"step": 4})]
    (tmp_path / "stats.jsonl").write_text("\n".join(l.rstrip("\n") for l in lines) + "", encoding="utf-8")
    assert run_folder.trim_stats(str(tmp_path), 5) == 2     # the cut line and step 9
    assert (tmp_path / "stats.jsonl").read_text(encoding="utf-8") == "".join(
        json.dumps({"step": s}) + "\n" for s in (1, 3, 4))


def test_release_frees_the_lock_while_a_forked_child_holds_the_fd(tmp_path):
    # a forked child (a DataLoader worker) shares the lock's open file; closing our fd alone would
    # leave the flock held until the child exits, so release() must unlock explicitly (flock(2))
    lock = run_folder.RunFolderLock(str(tmp_path))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                            # child: wait until the parent is done
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    try:
        os.close(r)
        lock.release()
        run_folder.RunFolderLock(str(tmp_path)).release()
    finally:
        os.close(w)
        os.waitpid(pid, 0)
