"""Every `--weights` form works for every command that takes it, for both model families, through the
real entry point (anyres_fast/cli/weights.py, docs/cli.md): random weights, a save_pretrained folder,
a real training run folder and (any-resolution family) a published-format network pickle. A command given the other family's weights stops with one line. The
README's metrics line runs on a real phase-2 run folder (a random feature network as the detector)."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch
from PIL import Image

from anyres_fast import Generator
from anyres_fast.cli import weights as weights_arg
from anyres_fast.train import Trainer, TrainOptions
from anyres_fast.train.anyres_recipe import AnyresRecipe
from anyres_fast.train.infinity_recipe import InfinityRecipe, InfinityTrainConfig
from helpers import ScriptedTiny, micro_config, run_cli as run, write_images
from published_pickles import write_pickle

pytestmark = pytest.mark.usefixtures("one_thread")

ANYRES_RANDOM = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"
INFINITY_RANDOM = "random:preset=tiny"


def _train(recipe, out, seed=1):
    opts = TrainOptions(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=seed,
                        max_steps=1)
    Trainer(recipe, opts, log=lambda msg: None).run()
    return str(out)


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """Each form of each family: random, save_pretrained folder, training run (one real step each)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("forms")
    lr = write_images(str(root / "lr"), [(80, 64), (64, 64), (70, 90), (64, 72)])
    hr = write_images(str(root / "hr"), [(200, 150), (140, 140), (130, 170), (96, 100)], seed=1)
    photos = write_images(str(root / "photos"), [(120, 90), (100, 100), (90, 110)], seed=2)
    p1 = _train(AnyresRecipe(micro_config(phase="fixed", lr_data=lr, cache_dir=str(root / "cache"))), root / "p1")
    p2 = _train(AnyresRecipe(micro_config(phase="patch", lr_data=lr, hr_data=hr, teacher=p1,
                                          cache_dir=str(root / "cache"))), root / "p2", seed=2)
    inf_run = _train(InfinityRecipe(InfinityTrainConfig(data=photos, tiny=True, cache_dir=str(root / "cache"))),
                     root / "inf")
    for text, name in ((ANYRES_RANDOM, "anyres_saved"), (INFINITY_RANDOM, "infinity_saved")):
        weights_arg.resolve_and_load(text, "cpu").save_pretrained(str(root / name))
    pickle_path = str(root / "published.pkl")
    torch.manual_seed(3)   # an anyres-gan patch-mode snapshot (its scale branch), as the published ones
    published = Generator(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8,
                          scale_branch_style="anyres-gan", scale_norm="zerocentered")
    published.calibrate_magnitudes_(torch.randn(4, 8))
    write_pickle(pickle_path, published, mode="patch")
    detector = root / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(ScriptedTiny()), str(detector))
    photo = root / "photo.png"
    Image.open(sorted(pathlib.Path(photos).glob("*.png"))[0]).crop((0, 0, 40, 40)).save(photo)
    return dict(root=root, lr=lr, hr=hr, detector=str(detector), photo=str(photo),
                anyres={"random": ANYRES_RANDOM, "pretrained": str(root / "anyres_saved"), "run": p2,
                        "pickle": pickle_path},
                infinity={"random": INFINITY_RANDOM, "pretrained": str(root / "infinity_saved"), "run": inf_run})


def command_line(command, family, weights, forms, out):
    common = ["--weights", weights, "--device", "cpu", "--no-progress"]
    if command == "generate":
        size = ["--size", "64"] if family == "anyres" else ["--height", "29", "--width", "40"]
        return ["generate", *common, *size, "--out", str(out)]
    if command == "metrics":
        metric = ["--metric", "fid@64", "--data", forms["lr"]] if family == "anyres" else \
            ["--metric", "scaleinv-fid@1", "--data", forms["lr"], "--train-size", "29"]
        return ["metrics", *common, *metric, "--num", "2", "--batch", "2", "--detector", forms["detector"],
                "--precision", "fp32", "--workers", "0", "--no-cache", "--out", str(out / "m.jsonl")]
    edit = ["--steps", "1", "--lpips", "random", "--seeds", "0", "--out", str(out)]
    if command == "outpaint":
        return ["outpaint", *common, "--image", forms["photo"], "--width", "60", *edit]
    return ["inbetween", *common, "--left", forms["photo"], "--right", forms["photo"], "--width", "90", *edit]


CASES = [(c, f, k) for c in ("generate", "metrics") for f in ("anyres", "infinity") for k in ("random", "pretrained", "run")]
CASES += [(c, "anyres", "pickle") for c in ("generate", "metrics")]
CASES += [(c, "infinity", k) for c in ("outpaint", "inbetween") for k in ("random", "pretrained", "run")]


@pytest.mark.parametrize("command,family,kind", CASES, ids=["-".join(c) for c in CASES])
def test_every_form_works_for_every_command(command, family, kind, forms, tmp_path, capsys):
    argv = command_line(command, family, forms[family][kind], forms, tmp_path)
    if command == "metrics":
        argv += ["--no-progress"] if "--no-progress" not in argv else []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path / "no_torch_home"))
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the test detector is not the published file
            rc, out, err = run(argv, capsys)
    assert rc == 0, err[-2000:]
    if command == "metrics":
        line = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
        assert line["weights_kind"] == kind and line["fid"] == line["fid"]      # a finite number, recorded
    else:
        assert list(tmp_path.glob("*.png")), out
    if kind == "pickle":
        assert not list(forms["root"].glob("*.executed")), "something from the pickle ran"


@pytest.mark.parametrize("command", ["outpaint", "inbetween"])
@pytest.mark.parametrize("kind", ["random", "pretrained", "run", "pickle"])
def test_the_other_family_is_one_line(command, kind, forms, tmp_path, capsys):
    argv = command_line(command, "infinity", forms["anyres"][kind], forms, tmp_path)
    rc, out, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "an any-resolution generator, but this command needs an InfinityGAN generator" in lines[0]


def test_generate_infers_the_family_and_refuses_a_contradicting_model(forms, tmp_path, capsys):
    rc, _, err = run(["generate", "--model", "anyres", "--weights", forms["infinity"]["run"], "--size", "64",
                      "--out", str(tmp_path)], capsys)
    assert rc == 2 and "an InfinityGAN generator, but --model anyres needs an any-resolution generator" in err
    rc, _, err = run(["generate", "--weights", forms["infinity"]["run"], "--height", "29", "--width", "29",
                      "--device", "cpu", "--no-progress", "--out", str(tmp_path)], capsys)
    assert rc == 0, err


def test_a_run_folder_is_read_from_its_options_not_its_checkpoint(forms, monkeypatch):
    """Checking --weights RUN reads training_options.json only: the checkpoint is loaded once, by load."""
    import anyres_fast.train.checkpoint as ckpt

    loads = []
    real = ckpt.load_checkpoint
    monkeypatch.setattr(ckpt, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    import anyres_fast.train.anyres_recipe as recipe_module
    monkeypatch.setattr(recipe_module, "load_checkpoint", ckpt.load_checkpoint)
    w = weights_arg.resolve(forms["anyres"]["run"])
    assert (w.kind, w.family) == ("run", "anyres") and loads == []
    G = weights_arg.load(w, "cpu")
    assert len(loads) == 1 and G.config == w.config


def test_readme_metrics_line_runs_on_a_real_phase2_run_folder(forms, tmp_path, capsys):
    """README: `anyres-fast metrics --weights runs/p2 --metric fid@1024,pfid,kid --data LR/ --hr-data HR/
    --num 50000`, at CPU size (fid@128, 2 images) with a random feature network as the detector."""
    run_folder = forms["anyres"]["run"]
    argv = ["metrics", "--weights", run_folder, "--metric", "fid@128,pfid,kid", "--data", forms["lr"],
            "--hr-data", forms["hr"], "--num", "2", "--num-real", "3", "--batch", "2", "--detector",
            forms["detector"], "--kid-subsets", "2", "--kid-subset-size", "2", "--device", "cpu",
            "--precision", "fp32", "--workers", "0", "--cache-dir", str(tmp_path / "stats"), "--no-progress"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, out, err = run(argv, capsys)
    assert rc == 0, err
    lines = [json.loads(l) for l in open(f"{run_folder}/metrics.jsonl").read().splitlines()]
    assert [l["metric"] for l in lines[-2:]] == ["fid@128", "pfid"]
    assert all(l["weights"] == run_folder and l["weights_kind"] == "run" and "kid" in l for l in lines[-2:])
