"""anyres_fast.models.published: NVlabs persistence pickles written here (no published checkout needed)
load into the model they were made from, and nothing in a pickle is ever imported or run.

The pickles follow the persistence format of NVlabs' torch_utils (facts in docs/published_models.md):
every network object is a call to `torch_utils.persistence._reconstruct_persistent_obj` with a dict of
its module source, class name and state (__dict__: _parameters, _buffers, _modules, _init_kwargs, ...),
tensors are pickled by torch itself (_rebuild_tensor_v2 / _rebuild_parameter / storages as nested
torch.save bytes), kwargs are dnnlib EasyDicts. The stand-in modules that make pickle write those
global names exist only while dumping; the module source written into every record creates a marker
file and raises if it is ever executed.
"""
import importlib
import os
import pickle
import re
import subprocess

import numpy as np
import pytest
import torch

from anyres_fast.models import Discriminator, Generator
from anyres_fast.models.published import (PublishedModelError, is_network_pickle, load_network_pickle,
                                          read_network_pickle)

from helpers import write_images
from published_pickles import persistence_names, write_pickle, Record

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(resolution=64, z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4)

def _model(seed=0, **kw):
    torch.manual_seed(seed)
    G = Generator(**{**SMALL, **kw})
    with torch.no_grad():     # every path non-trivial: biases, scale affines, input rotation, EMAs
        for name, p in G.named_parameters():
            if name.endswith("bias") or "scale_affine" in name or "input.affine" in name:
                p.normal_()
    G.calibrate_magnitudes_(torch.randn(8, G.z_dim), torch.eye(G.c_dim)[torch.arange(8) % G.c_dim] if G.c_dim else None)
    return G.eval()


@pytest.mark.parametrize("kw,mode,kind", [
    (dict(config="T", scale_branch=False), None, "stylegan3-T"),
    (dict(config="R", scale_branch=False), "global", "anyres-gan global (R)"),
    (dict(config="T", scale_branch_style="anyres-gan", scale_norm="zerocentered"), "patch",
     "anyres-gan patch (zerocentered, T)"),
    (dict(config="T", scale_branch_style="anyres-gan", scale_norm="positive", c_dim=3), "patch",
     "anyres-gan patch (positive, T)"),
    # mountain_pano_pretrained_final.pkl's kind: the 360 input (SynthesisInput360, fov), no scale branch
    (dict(config="T", scale_branch=False, panorama=True, fov=60.0), "global-360", "anyres-gan global-360 (fov 60, T)"),
])
def test_a_persistence_pickle_loads_into_the_model_it_was_made_from(tmp_path, kw, mode, kind):
    G = _model(**kw)
    D = Discriminator(64, c_dim=G.c_dim, channel_base=256, channel_max=8, mapping_layers=1)
    path = str(tmp_path / "net.pkl")
    marker = write_pickle(path, G, D, mode=mode)
    nets = load_network_pickle(path)
    assert not os.path.exists(marker)                       # neither the source nor the reconstruct ran
    assert nets.kind == kind and nets.notes == []
    assert nets.D is not None and nets.G is not None
    ours = nets.G_ema
    for k, v in G.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.eye(G.c_dim)[:2] if G.c_dim else None
    with torch.no_grad():
        for canvas, box in ((64, (0, 0)), (128, (64, 0)), (200, (37, 91)), (512, (448, 448))):
            assert torch.equal(ours(z, c, canvas=canvas, box=box), G(z, c, canvas=canvas, box=box))
        assert torch.equal(ours.render(z, 128, c=c, progress=False), G.render(z, 128, c=c, progress=False))
        if G.config.panorama:
            assert ours.config.fov == G.config.fov
            assert torch.equal(ours.render_panorama(z, progress=False), G.render_panorama(z, progress=False))
        img = torch.randn(4, 3, 64, 64)
        cd = torch.eye(G.c_dim)[[0, 1, 2, 0]] if G.c_dim else None
        assert torch.equal(nets.D(img, cd), D.eval()(img, cd))
    assert is_network_pickle(path)
    assert torch.equal(Generator.from_pretrained(path)(z, c), G(z, c))


def test_a_protocol_2_pickle_loads_too(tmp_path):
    # Protocol 2 (older Pythons) stores bytes through _codecs.encode and sets through builtins.set.
    G = _model(config="T", scale_branch=False)
    path = str(tmp_path / "p2.pkl")
    marker = write_pickle(path, G, protocol=2)
    assert b"_codecs" in open(path, "rb").read()
    ours = load_network_pickle(path).G_ema
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(ours(z, canvas=100, box=(3, 5)), G(z, canvas=100, box=(3, 5)))
    assert not os.path.exists(marker)


def test_the_published_scale_branch_follows_its_formula():
    # The scale (1/T[0,0]) normalised, then a StyleGAN mapping whose input RMS normalisation leaves
    # the sign: zerocentered maps scales below (min+max)/2 to -1, above to +1, the midpoint to 0.
    G = _model(scale_branch_style="anyres-gan", scale_norm="zerocentered", scale_mapping_min=1.0,
               scale_mapping_max=8.0)
    m = G.scale_mapping
    for scale, sign in ((1.0, -1.0), (3.0, -1.0), (4.5, 0.0), (6.0, 1.0), (8.0, 1.0)):
        x = torch.tensor([[sign]])
        for i in range(m.num_layers):
            fc = getattr(m, f"fc{i}")
            x = torch.nn.functional.leaky_relu(x @ (fc.weight * fc.weight_gain).t() + fc.bias * fc.bias_gain, 0.2) * 2 ** 0.5
        torch.testing.assert_close(G.scale_features(torch.tensor([scale])), x, rtol=1e-5, atol=1e-6)


class Runs:
    """reduce -> a call (the attacker's payload)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class NotAllowed:
    pass


def _payloads(marker):
    touch = f"open({marker!r}, 'w').write('ran')"
    return {
        "os.system": (Runs(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "builtins.exec": (Runs(exec, touch), "builtins.exec"),
        "builtins.eval": (Runs(eval, touch), "builtins.eval"),
        "subprocess.call": (Runs(subprocess.call, ["touch", marker]), "subprocess.call"),
        "subprocess.Popen": (Runs(subprocess.Popen, ["touch", marker]), "subprocess.Popen"),
        "importlib.import_module": (Runs(importlib.import_module, "antigravity"), "importlib.import_module"),
        "unknown class": (NotAllowed(), f"{__name__}.NotAllowed"),
        # Inside a tensor storage's nested torch.load: the same restriction applies.
        "nested storage": (Runs(torch.storage._load_from_bytes, pickle.dumps(Runs(os.system, f"touch {marker}"))),
                           f"{os.system.__module__}.system"),
    }


@pytest.mark.parametrize("name", list(_payloads("x")))
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, name, capsys):
    from anyres_fast import cli
    marker = str(tmp_path / "ran")
    payload, glob = _payloads(marker)[name]
    G = _model(scale_branch=False)
    path = str(tmp_path / "evil.pkl")
    write_pickle(path, G, marker=marker, extra={"training_set_kwargs": {"hook": payload}})
    with pytest.raises(PublishedModelError, match=f"refused the global {glob}"):
        load_network_pickle(path)
    rc = cli.main(["convert", path, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and glob in err
    assert not os.path.exists(marker) and not os.path.exists(tmp_path / "out" / "config.json")


def _sg2_like(path, marker):
    """A StyleGAN2-ADA style generator record (SynthesisBlock layers): an architecture we do not build."""
    src = "raise RuntimeError('executed')\n"
    with persistence_names(marker) as (reconstruct, EasyDict):
        def rec(name, children=None, kwargs=None):
            return Record(reconstruct, dict(type="class", version=6, module_src=src, class_name=name,
                                            state={"_parameters": {}, "_buffers": {}, "_modules": children or {},
                                                   "_init_kwargs": kwargs or {}}))
        syn = rec("SynthesisNetwork", {"b4": rec("SynthesisBlock"), "b8": rec("SynthesisBlock")})
        g = rec("Generator", {"synthesis": syn, "mapping": rec("MappingNetwork")},
                dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=8, img_channels=3, mapping_kwargs=EasyDict()))
        with open(path, "wb") as f:
            pickle.dump(dict(G=g, G_ema=g, D=None), f)


def _pano(path, marker):
    src = "raise RuntimeError('executed')\n"
    with persistence_names(marker) as (reconstruct, EasyDict):
        def rec(name, children=None, kwargs=None):
            return Record(reconstruct, dict(type="class", version=6, module_src=src, class_name=name,
                                            state={"_parameters": {}, "_buffers": {}, "_modules": children or {},
                                                   "_init_kwargs": kwargs or {}}))
        syn = rec("SynthesisNetwork", {"input": rec("SynthesisInput360")})
        g = rec("Generator", {"synthesis": syn}, dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256,
                                                      img_channels=3, training_mode="global-360", fov=0))
        with open(path, "wb") as f:
            pickle.dump(dict(G_ema=g), f)


def test_bad_files_give_one_clear_line(tmp_path, capsys):
    from anyres_fast import cli
    G = _model(scale_branch=False)
    good = str(tmp_path / "good.pkl")
    write_pickle(good, G)
    cases = {}
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(open(good, "rb").read()[:5000])
    cases[str(truncated)] = "truncated or damaged pickle"
    zipped = tmp_path / "zip.pkl"
    torch.save(G.state_dict(), zipped)
    cases[str(zipped)] = "torch.save zip archive"
    _sg2_like(str(tmp_path / "sg2.pkl"), str(tmp_path / "ran"))
    cases[str(tmp_path / "sg2.pkl")] = "StyleGAN2 / StyleGAN2-ADA generator (SynthesisBlock layers) is not supported"
    _pano(str(tmp_path / "pano.pkl"), str(tmp_path / "ran"))
    cases[str(tmp_path / "pano.pkl")] = "a global-360 generator needs fov in (0, 360], got 0"
    text = tmp_path / "text.pkl"
    text.write_text("not a pickle")
    cases[str(text)] = "not a pickle file"
    for path, words in cases.items():
        with pytest.raises(PublishedModelError, match="^" + re.escape(path) + ": .*" + re.escape(words)):
            load_network_pickle(path)
        for argv in (["convert", path, "--out", str(tmp_path / "out")],
                     ["generate", "--weights", path, "--size", "64", "--seeds", "0", "--out", str(tmp_path / "img"),
                      "--device", "cpu", "--no-progress"]):
            rc = cli.main(argv)
            err = capsys.readouterr().err
            assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err, (argv, err)
    assert not os.path.exists(tmp_path / "ran")
    assert read_network_pickle(good)["G_ema"].class_name == "Generator"


def test_convert_and_generate_from_a_pickle(tmp_path, capsys):
    from anyres_fast import cli
    from PIL import Image
    G = _model(scale_branch_style="anyres-gan", scale_norm="positive")
    path = str(tmp_path / "mountain.pkl")
    write_pickle(path, G, mode="patch")
    assert cli.main(["convert", path, "--out", str(tmp_path / "conv")]) == 0
    assert "anyres-gan patch (positive, T)" in capsys.readouterr().out
    z = torch.randn(1, G.z_dim)
    with torch.no_grad():
        assert torch.equal(Generator.from_pretrained(str(tmp_path / "conv"))(z, canvas=300, box=(10, 20)),
                           G(z, canvas=300, box=(10, 20)))
    for weights in (path, str(tmp_path / "conv")):
        out = tmp_path / ("img_" + os.path.basename(weights))
        assert cli.main(["generate", "--weights", weights, "--size", "100", "--seeds", "3", "--out", str(out),
                         "--device", "cpu", "--no-progress"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / n / "seed0003_100.png")) for n in ("img_mountain.pkl", "img_conv"))
    assert a.shape == (100, 100, 3) and np.array_equal(a, b)


def test_phase_patch_trains_with_a_pickle_as_teacher(tmp_path, capsys):
    from anyres_fast import cli
    from anyres_fast.train import latest_checkpoint, load_checkpoint
    G = _model(scale_branch=False)
    D = Discriminator(64, channel_base=256, channel_max=8, mapping_layers=1)
    teacher = str(tmp_path / "sg3.pkl")
    marker = write_pickle(teacher, G, D)
    lr = write_images(str(tmp_path / "lr"), [(64, 64)] * 4)
    hr = write_images(str(tmp_path / "hr"), [(160, 150), (140, 140), (130, 170), (200, 200)], seed=1)
    rc = cli.main(["train", "--phase", "patch", "--lr-data", lr, "--hr-data", hr, "--teacher", teacher,
                   "--out", str(tmp_path / "run"), "--tiny", "--max-steps", "2", "--batch", "4", "--workers", "0",
                   "--snap", "0", "--tick", "1", "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert not os.path.exists(marker)
    # Resuming needs no pickle: the generator and discriminator settings are in the run's files.
    os.remove(teacher)
    rc = cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    state = load_checkpoint(latest_checkpoint(str(tmp_path / "run")))
    gen = state["config"]["generator"]
    assert gen["scale_branch"] and gen["scale_branch_style"] == "fourier" and gen["channel_base"] == 256
    assert state["config"]["d_kwargs"]["channel_base"] == 256           # the pickle's D, rebuilt on resume
    for k, v in G.state_dict().items():     # the frozen teacher is the pickle's G_ema
        assert torch.equal(state["modules"]["teacher"][k], v), k
