"""A damaged newest checkpoint (truncated, garbage) is skipped with one warning naming it: resume and
`generate --weights RUN` continue from the previous intact one (anyres_fast/train/checkpoint.py)."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from anyres_fast.train import Trainer, TrainOptions, checkpoint, list_checkpoints
from anyres_fast.train.anyres_recipe import AnyresRecipe
from helpers import micro_config, run_cli, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _opts(out, **kw):
    return TrainOptions(**{**dict(out=str(out), batch=4, kimg=1, workers=0, snap=1, tick=1, progress=False,
                                  seed=3, keep=5), **kw})


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_newest_checkpoint_falls_back_with_one_warning(damage, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint, "_warned_damaged", set())
    lr = write_images(str(tmp_path / "lr"), [(64, 64), (80, 64), (64, 72), (70, 70)])
    cfg = micro_config(phase="fixed", lr_data=lr, cache_dir=str(tmp_path / "cache"))
    run = tmp_path / "run"
    Trainer(AnyresRecipe(cfg), _opts(run, max_steps=2), log=lambda m: None).run()
    (s1, first), (s2, newest) = list_checkpoints(str(run))[-2:]
    assert (s1, s2) == (1, 2) and checkpoint.latest_checkpoint(str(run)) == newest
    data = open(newest, "rb").read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint at all")
    with pytest.warns(UserWarning, match=os.path.basename(newest) + " is damaged"):
        assert checkpoint.latest_checkpoint(str(run)) == first
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # said once per file, not at every call
        assert checkpoint.latest_checkpoint(str(run)) == first

    # generate --weights RUN renders from the previous checkpoint
    rc, out, err = run_cli(["generate", "--weights", str(run), "--size", "64", "--device", "cpu", "--no-progress",
                            "--out", str(tmp_path / "img")], capsys)
    assert rc == 0 and "Traceback" not in err, err

    # resume continues from step 1, exactly as a run resumed from that checkpoint would
    resumed = AnyresRecipe(cfg)
    Trainer(resumed, _opts(run, max_steps=1, resume=True), log=lambda m: None).run()
    rewritten = checkpoint.latest_checkpoint(str(run))          # the damaged step-2 file, written anew
    assert rewritten == newest and checkpoint._damage(newest) is None
    state = torch.load(newest, weights_only=True)
    assert state["step"] == 2 and state["nimg"] == 8
