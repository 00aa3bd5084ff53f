"""InfinityGAN training through the shared Trainer: tiny runs, exact resume, bad files, outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.train import Trainer, TrainOptions
from anyres_fast.train.infinity_recipe import InfinityRecipe, InfinityTrainConfig, generator_from_run


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Three real photos from scikit-image's package (different sizes) and one corrupt file."""
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(d / f"{name}.png")
    (d / "broken.png").write_bytes(b"not an image")
    return str(d)


def _run(data, out, steps, resume=False):
    recipe = InfinityRecipe(InfinityTrainConfig(data=data, tiny=True))
    opts = TrainOptions(out=out, batch=4, kimg=1, tick=2, snap=steps, workers=0, max_steps=steps, resume=resume,
                        progress=False)
    stats = Trainer(recipe, opts, log=lambda msg: None).run()
    return recipe, stats


def test_tiny_run_resumes_exactly_and_reports_bad_files(photo_dir, tmp_path, one_thread):
    straight, stats = _run(photo_dir, str(tmp_path / "a"), 6)
    assert all(np.isfinite(v) for v in stats.values())
    for key in ("D/loss", "D/coord_real", "D/coord_fake", "G/loss", "G/coord", "G/diversity"):
        assert key in stats

    _run(photo_dir, str(tmp_path / "b"), 3)
    resumed, _ = _run(photo_dir, str(tmp_path / "b"), 3, resume=True)
    for name in ("G", "D", "G_ema"):
        a, b = straight.modules()[name].state_dict(), resumed.modules()[name].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert torch.equal(straight.pl_mean, resumed.pl_mean) and straight.pl_mean.item() > 0

    run = tmp_path / "a"
    report = json.loads((run / "data_report.json").read_text())
    assert [f["name"] for f in report["real"]["skipped_files"]] == ["broken.png"]
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]
    png = Image.open(run / "samples" / "step00000006.png")
    assert png.size[1] == 3 * 29 and png.size[0] >= 4 * 29          # 3 panoramas, each 4+ patches wide
    G = generator_from_run(str(run))
    torch.testing.assert_close(G.state_dict(), straight.G_ema.state_dict())

    # `anyres-fast generate --model infinity` takes the run folder (its newest G_ema)
    from anyres_fast import cli
    out = tmp_path / "gen"
    assert cli.main(["generate", "--model", "infinity", "--weights", str(run), "--seeds", "3", "--height", "29",
                     "--width", "40", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    img = np.asarray(Image.open(out / "seed0003_40x29.png"))
    want = G.render(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), 29, 40, top=-14,
                      seed=3, progress=False)
    assert img.shape == (29, 40, 3)
    assert np.abs(img.astype(np.float64) - (want[0].permute(1, 2, 0).numpy() * 127.5 + 128).clip(0, 255)).max() <= 1


def test_patch_dataset_labels_and_crops(photo_dir):
    from anyres_fast.data import ImageSource
    from anyres_fast.data.infinity import InfinityPatchDataset

    ds = InfinityPatchDataset(ImageSource(photo_dir, min_size=29), patch=29, full=53, seed=3)
    assert len(ds) == 3
    seen = []
    for draw in range(15):
        item = ds[(draw % 3, draw)]
        left, top = item["box"].tolist()
        assert item["image"].shape == (3, 29, 29) and 0 <= top <= 24 and 0 <= left <= 24
        assert abs(item["coord_v"].item() - (2 * top / 24 - 1)) < 1e-6
        full = ds.full_image(draw % 3, bool(item["flip"]))
        want = torch.from_numpy(np.clip(full[:, top:top + 29, left:left + 29], 0, 255)) / 127.5 - 1
        torch.testing.assert_close(item["image"], want)
        seen.append(top)
    assert min(seen) < 6 and max(seen) > 18                        # offsets cover the range
    again = ds[(1, 7)]
    torch.testing.assert_close(again["image"], ds[(1, 7)]["image"])   # counter-based: same key, same sample


def test_train_command_model_infinity_and_resume(photo_dir, tmp_path, one_thread, capsys):
    from anyres_fast.cli import main
    from anyres_fast.train import list_checkpoints

    out = str(tmp_path / "run")
    base = ["train", "--model", "infinity", "--data", photo_dir, "--out", out, "--tiny", "--workers", "0",
            "--no-progress", "--snap", "2", "--tick", "1"]
    assert main(base + ["--max-steps", "1"]) == 0
    assert main(["train", "--out", out, "--resume", "--max-steps", "1", "--no-progress"]) == 0   # model from the run
    assert list_checkpoints(out)[-1][0] == 2
    capsys.readouterr()
    assert main(["train", "--model", "infinity", "--out", str(tmp_path / "x")]) == 2
    assert "--data: required" in capsys.readouterr().err
    assert main(["train", "--model", "infinity", "--data", photo_dir, "--tiny", "--patch", "197",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not with --tiny" in capsys.readouterr().err
