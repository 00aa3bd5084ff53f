"""`anyres-fast train` option handling without training: the R1 weight is taken as given for both models
(an explicit --gamma 2 is not mistaken for "not given"), and resume rebuilds either model's run the same way."""
from __future__ import annotations

import argparse

import pytest

from anyres_fast.cli import train as train_cmd
from helpers import write_images


def parse(argv):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def photos(tmp_path):
    return write_images(str(tmp_path / "photos"), [(64, 64), (80, 64)])


@pytest.mark.parametrize("given,want", [(None, 10.0), ("2", 2.0), ("10", 10.0), ("0.5", 0.5)])
def test_infinity_gamma_is_taken_as_given(photos, tmp_path, given, want):
    argv = ["--model", "infinity", "--data", photos, "--out", str(tmp_path / "run"), "--tiny"]
    cfg, _ = train_cmd.infinity_options(parse(argv + (["--gamma", given] if given else [])))
    assert cfg.r1_gamma == want


@pytest.mark.parametrize("given,want", [(None, 2.0), ("2", 2.0), ("10", 10.0)])
def test_anyres_gamma_is_taken_as_given(photos, tmp_path, given, want):
    argv = ["--phase", "fixed", "--lr-data", photos, "--out", str(tmp_path / "run"), "--tiny"]
    cfg, _ = train_cmd.anyres_options(parse(argv + (["--gamma", given] if given else [])))
    assert cfg.r1_gamma == want


def test_resume_rebuilds_the_saved_config_and_options(tmp_path):
    import json
    from anyres_fast.train.anyres_recipe import AnyresTrainConfig
    from anyres_fast.train.checkpoint import save_checkpoint
    from anyres_fast.train.infinity_recipe import InfinityTrainConfig
    from anyres_fast.train.trainer import TrainOptions

    for model, cls, extra in (("anyres", AnyresTrainConfig, {}), ("infinity", InfinityTrainConfig, {"model": "infinity"})):
        run = tmp_path / model
        cfg = cls(tiny=True, r1_gamma=3.5)
        opts = TrainOptions(out=str(run), batch=4, kimg=7)
        save_checkpoint(str(run), 1, {"step": 1})
        saved = {"config": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}, **extra},
                 "options": vars(opts)}
        (run / "training_options.json").write_text(json.dumps(saved))
        args = parse(["--out", str(run), "--resume", "--kimg", "9"])
        assert train_cmd.run_model(str(run)) == model
        got_cfg, got_opts = train_cmd.resumed_options(args, cls)
        assert got_cfg == cfg and got_opts.kimg == 9 and got_opts.resume and got_opts.batch == 4


def test_tiny_runs_are_short_unless_kimg_is_given(photos, tmp_path):
    """--tiny means minutes: its default length is TINY_KIMG for both models, the full one without it."""
    lr = ["--phase", "fixed", "--lr-data", photos, "--out", str(tmp_path / "a")]
    inf = ["--model", "infinity", "--data", photos, "--out", str(tmp_path / "b")]
    assert train_cmd.anyres_options(parse(lr + ["--tiny"]))[1].kimg == train_cmd.TINY_KIMG == 1.0
    assert train_cmd.infinity_options(parse(inf + ["--tiny"]))[1].kimg == 1.0
    assert train_cmd.anyres_options(parse(lr))[1].kimg == 25000
    assert train_cmd.infinity_options(parse(inf))[1].kimg == 12800
    assert train_cmd.anyres_options(parse(lr + ["--tiny", "--kimg", "3"]))[1].kimg == 3.0
