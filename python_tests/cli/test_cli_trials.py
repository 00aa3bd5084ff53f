"""Every first-contact trial of the CLI (bad arguments, files, devices, environment) run through the real
entry point `anyres_fast.cli.main`: each ends in ONE line naming the argument or file, the documented exit
code and no traceback; argument trials are rejected before any model is built.

`python python_tests/test_cli_trials.py` prints the table "trial | exit | what the user sees"."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from anyres_fast import cli
from anyres_fast.models import tiling as render
from anyres_fast.models import Generator
from anyres_fast.models import anyres, pretrained
from helpers import write_legacy_weights
from safetensors.torch import save_file

TINY_KW = dict(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8)
TINY = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"


@dataclass
class Trial:
    name: str
    argv: list                   # "{out}", "{w}" (a good saved model), "{cond}", "{bad}", "{file}" are filled in
    expect: str                  # substring of the one line
    rc: int = 2
    env: dict = field(default_factory=dict)
    before_model: bool = True    # rejected before a Generator is built
    prepare: object = None       # callable(bad_dir) that breaks a copy of the saved model
    stream: str = "err"          # where the line goes: err (errors) or out (doctor's report)
    no_gpu: bool = False         # pretend there is no GPU (torch.cuda.is_available -> False)
    legacy: bool = False         # "{bad}" is a copy of the model saved in the old weights.pt format


def _write(name, text):
    def prep(d):
        (d / name).write_text(text)
    return prep


def _weights_file(d):
    return d / ("model.safetensors" if (d / "model.safetensors").exists() else "weights.pt")


def _truncate_weights(d):
    path = _weights_file(d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_config(**changes):
    def prep(d):
        meta = json.loads((d / "config.json").read_text())
        meta["config"].update(changes)
        (d / "config.json").write_text(json.dumps(meta))
    return prep


def _edit_state(drop=None, add=None, reshape=None):
    def prep(d):
        path = _weights_file(d)
        state = pretrained.read_state(str(path), "test")
        if drop:
            del state[drop]
        if add:
            state[add] = torch.zeros(3)
        if reshape:
            state[reshape] = torch.zeros(2, 2)
        if path.suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
    return prep


GEN = ["generate", "--seeds", "0", "--device", "cpu", "--no-progress"]
G_TINY = GEN + ["--weights", TINY]

TRIALS = [
    # Build 1: user mistakes -> one line, exit 2
    Trial("--size 0 with --zoom", G_TINY + ["--size", "0", "--zoom", "0,0,64", "--out", "{out}"], "argument --size"),
    Trial("--out is an existing file", G_TINY + ["--size", "64", "--out", "{file}"], "exists and is not a folder"),
    Trial("--out cannot be created", G_TINY + ["--size", "64", "--out", "{file}/sub"], "cannot create the folder"),
    Trial("--device foo", GEN[:3] + ["--weights", TINY, "--device", "foo", "--size", "64", "--out", "{out}"],
          "expected cpu, cuda or cuda:N"),
    Trial("--device meta", GEN[:3] + ["--weights", TINY, "--device", "meta", "--size", "64", "--out", "{out}"],
          "only cpu and cuda"),
    Trial("demo --device cuda without a GPU", ["demo", "--device", "cuda", "--out", "{out}"], "no CUDA GPU",
          no_gpu=True),
    Trial("truncated model.safetensors", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "model.safetensors is not a readable safetensors file", prepare=_truncate_weights, before_model=False),
    Trial("a text file as model.safetensors", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "model.safetensors is not a readable safetensors file", prepare=_write("model.safetensors", "hello\n"),
          before_model=False),
    Trial("truncated weights.pt (old format)", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "is truncated or damaged", prepare=_truncate_weights, before_model=False, legacy=True),
    Trial("a text file as weights.pt (old format)", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "is not a file written by torch.save", prepare=_write("weights.pt", "hello\n"), before_model=False,
          legacy=True),
    Trial("config.json disagrees with the weights", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "does not fit", prepare=_edit_config(channel_max=4), before_model=False),
    Trial("config.json is a JSON list", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "must hold a JSON object", prepare=_write("config.json", "[1, 2]")),
    Trial("config.json is invalid JSON", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "is not valid JSON", prepare=_write("config.json", '{"format": ')),
    Trial("random:64,channel_base=0", GEN + ["--weights", "random:64,channel_base=0", "--size", "64", "--out", "{out}"],
          "channel_base must be >= 1"),
    Trial("random:64,channel_max=-8", GEN + ["--weights", "random:64,channel_max=-8", "--size", "64", "--out", "{out}"],
          "channel_max must be >= 1"),
    Trial("--size 100000", G_TINY + ["--size", "100000", "--out", "{out}"], "of host memory"),
    Trial("ANYRES_FAST_EXT=bogus doctor", ["doctor"], "PROBLEM     ANYRES_FAST_EXT must be off, auto or require",
          rc=1, env={"ANYRES_FAST_EXT": "bogus"}, stream="out"),
    Trial("ANYRES_FAST_ARCH=foo doctor --build", ["doctor", "--build"], "PROBLEM     bad CUDA arch 'foo'",
          rc=1, env={"ANYRES_FAST_ARCH": "foo"}, stream="out"),
    Trial("ANYRES_FAST_EXT=bogus generate", G_TINY + ["--size", "64", "--out", "{out}"],
          "ANYRES_FAST_EXT must be off, auto or require", env={"ANYRES_FAST_EXT": "bogus"}),
    Trial('config z_dim: "512"', GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "z_dim must be an int", prepare=_edit_config(z_dim="512")),
    Trial('--seeds ""', G_TINY + ["--size", "64", "--seeds", "", "--out", "{out}"], "no seeds"),
    Trial("--zoom -10,0,64 (negative value)", G_TINY + ["--size", "128", "--zoom", "-10,0,64", "--out", "{out}"],
          "--zoom -10,0,64: the window"),
    Trial("--weights missing folder", GEN + ["--weights", "{out}/nothing", "--size", "64", "--out", "{out}"],
          "no such file or folder"),
    # Build 2: nothing silently wrong
    Trial("--truncation nan", G_TINY + ["--size", "64", "--truncation", "nan", "--out", "{out}"], "not a finite number"),
    Trial("--truncation inf", G_TINY + ["--size", "64", "--truncation", "inf", "--out", "{out}"], "not a finite number"),
    Trial("--zoom window outside the canvas", G_TINY + ["--size", "128", "--zoom", "100,100,64", "--out", "{out}"],
          "must lie inside the 128x128 canvas"),
    Trial("--class on an unconditional model", G_TINY + ["--size", "64", "--class", "1", "--out", "{out}"],
          "unconditional"),
    Trial("conditional model without --class", GEN + ["--weights", "{cond}", "--size", "64", "--out", "{out}"],
          "this model is conditional"),
    Trial("--truncation-cutoff -1", G_TINY + ["--size", "64", "--truncation-cutoff", "-1", "--out", "{out}"],
          "not an integer >= 0"),
    Trial("config channel_max: 64.5", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "channel_max must be an int", prepare=_edit_config(channel_max=64.5)),
    # Build 4: a checkpoint that does not fit names the key / shape and the file
    Trial("model.safetensors lacks a key", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "1 missing key(s): mapping.fc0.bias", prepare=_edit_state(drop="mapping.fc0.bias"), before_model=False),
    Trial("weights.pt lacks a key (old format)", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "weights.pt does not fit", prepare=_edit_state(drop="mapping.fc0.bias"), before_model=False, legacy=True),
    Trial("model.safetensors has an extra key", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "1 unexpected key(s): extra.weight", prepare=_edit_state(add="extra.weight"), before_model=False),
    Trial("model.safetensors has a wrong shape", GEN + ["--weights", "{bad}", "--size", "64", "--out", "{out}"],
          "mapping.fc1.weight has shape (2, 2) in the file", prepare=_edit_state(reshape="mapping.fc1.weight"),
          before_model=False),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    Generator(**TINY_KW).save_pretrained(str(root / "w"))
    torch.manual_seed(1)
    Generator(**TINY_KW, c_dim=3).save_pretrained(str(root / "cond"))
    shutil.copytree(root / "w", root / "legacy")
    write_legacy_weights(root / "legacy")
    return root


def run_trial(trial: Trial, tmp_path, saved, monkeypatch, capsys):
    """Run through cli.main; returns (rc, the stream's lines, the other stream)."""
    bad = tmp_path / "bad"
    shutil.copytree(saved / ("legacy" if trial.legacy else "w"), bad)
    if trial.prepare is not None:
        trial.prepare(bad)
    (tmp_path / "afile").write_text("x")
    fill = {"out": str(tmp_path / "out"), "w": str(saved / "w"), "cond": str(saved / "cond"), "bad": str(bad),
            "file": str(tmp_path / "afile")}
    argv = [a.format(**fill) for a in trial.argv]
    for k, v in trial.env.items():
        monkeypatch.setenv(k, v)
    if trial.no_gpu:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # The guard compares with the available memory; cap it so the trial means the same on any machine.
    real = render.available_host_memory
    monkeypatch.setattr(render, "available_host_memory", lambda: min(real() or 2**34, 2**34))
    if trial.before_model:
        def no_model(*a, **k):
            raise AssertionError("a Generator was built before the arguments were checked")
        monkeypatch.setattr(anyres.Generator, "__init__", no_model)
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as exc:      # argparse's own errors exit through SystemExit
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.err if trial.stream == "err" else cap.out, cap


@pytest.mark.parametrize("trial", TRIALS, ids=[t.name for t in TRIALS])
def test_trial_gives_one_line_and_exit_code(trial, tmp_path, saved, monkeypatch, capsys):
    rc, text, cap = run_trial(trial, tmp_path, saved, monkeypatch, capsys)
    assert rc == trial.rc, (rc, cap.out[-2000:], cap.err[-2000:])
    assert "Traceback" not in cap.err + cap.out
    if trial.stream == "err":
        lines = [l for l in cap.err.splitlines() if l.strip()]
        assert len(lines) == 1, cap.err
        assert lines[0].startswith(f"anyres-fast {trial.argv[0]}: "), lines[0]
        assert trial.expect in lines[0], lines[0]
        assert "internal error" not in lines[0]
    else:  # doctor: a full report on stdout, with the problem on one line of it
        assert trial.expect in cap.out, cap.out
    if trial.before_model and "{out}" in " ".join(trial.argv) and trial.argv[0] == "generate":
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_console_entry_point_matches(tmp_path, capsys):
    """The installed-style entry (`python -m anyres_fast`): real stderr, real exit code, no traceback;
    --debug shows the traceback."""
    env = {**os.environ, "ANYRES_FAST_EXT": "off"}
    args = ["generate", "--weights", TINY, "--size", "128", "--zoom", "-10,0,64", "--out", str(tmp_path / "o"),
            "--device", "cpu"]
    done = subprocess.run([sys.executable, "-m", "anyres_fast", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--zoom -10,0,64: the window" in done.stderr
    assert cli.main(args + ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "CommandError" in err and err.strip().endswith(done.stderr.strip())


# ----------------------------------------------------------------------------------------------------
# Build 4: the Python API names the argument / file

API_TRIALS = []


def _api(name):
    def deco(fn):
        API_TRIALS.append((name, fn))
        return fn
    return deco


@_api("save_pretrained onto a file")
def _save_onto_file(tmp_path, G):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder") as info:
        G.save_pretrained(str(tmp_path / "f"))
    return info.value


@_api('G(z, canvas="256")')
def _canvas_str(tmp_path, G):
    with pytest.raises(TypeError, match="canvas must be a number") as info:
        G(torch.zeros(1, 8), canvas="256")
    return info.value


@_api("G(z) with NaN in z")
def _nan_z(tmp_path, G):
    z = torch.zeros(1, 8)
    z[0, 3] = float("nan")
    with pytest.raises(ValueError, match="z must be finite") as info:
        G(z)
    return info.value


@_api("G.synthesize(ws) with inf styles")
def _inf_ws(tmp_path, G):
    ws = torch.zeros(1, G.num_ws, 8)
    ws[0, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="must be finite") as info:
        G.synthesize(ws)
    return info.value


@_api("G(z, truncation_psi=nan)")
def _nan_psi(tmp_path, G):
    with pytest.raises(ValueError, match="truncation_psi must be a finite number") as info:
        G(torch.zeros(1, 8), truncation_psi=float("nan"))
    return info.value


@_api("G.render(z, 64, truncation_cutoff=-1)")
def _neg_cutoff(tmp_path, G):
    with pytest.raises(ValueError, match="truncation_cutoff") as info:
        G.render(torch.zeros(1, 8), 64, truncation_psi=0.5, truncation_cutoff=-1, progress=False)
    return info.value


@_api("G.render(z, size=1_000_000)")
def _render_huge(tmp_path, G):
    with pytest.raises(render.MemoryLimitError, match="needs an estimated .* GiB of host memory, .* is available") as info:
        G.render(torch.zeros(1, 8), 1_000_000, progress=False)   # 12 TB of float32
    return info.value


@_api("from_pretrained of a folder whose weights lack a key")
def _strict(tmp_path, G):
    G.save_pretrained(str(tmp_path / "m"))
    _edit_state(drop="synthesis.input.freqs")(tmp_path / "m")
    with pytest.raises(ValueError, match=r"model.safetensors does not fit .*config.json: 1 missing key\(s\): "
                                         r"synthesis.input.freqs") as info:
        Generator.from_pretrained(str(tmp_path / "m"))
    return info.value


@pytest.mark.parametrize("name,fn", API_TRIALS, ids=[n for n, _ in API_TRIALS])
def test_python_api_trial(name, fn, tmp_path):
    torch.manual_seed(0)
    err = fn(tmp_path, Generator(**TINY_KW).eval())
    assert "\n" not in str(err)


def test_render_accepts_numpy_int_size_and_warns_outside_canvas():
    torch.manual_seed(0)
    G = Generator(**TINY_KW, num_layers=4, num_critical=1).eval()     # 4 layers: a fast render
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    a = G.render(z, np.int64(64), progress=False)
    b = G.render(z, 64, progress=False)
    assert torch.equal(a, b)
    with pytest.warns(UserWarning, match="outside the 64x64 canvas"):
        G.render(z, 64, window=(-3, 0, 8), progress=False)
    with pytest.raises(ValueError, match="size must be a positive int"):
        G.render(z, 64.0, progress=False)


def trial_table(tmp_root) -> str:
    """Markdown table of every trial (run through cli.main, as in the test)."""
    import contextlib
    import io

    class Cap:      # minimal stand-ins for pytest's fixtures
        def __init__(self):
            self.out, self.err = io.StringIO(), io.StringIO()

        def readouterr(self):
            r = type("R", (), {"out": self.out.getvalue(), "err": self.err.getvalue()})()
            self.out.seek(0), self.out.truncate(), self.err.seek(0), self.err.truncate()
            return r

    rows = ["| trial | exit | what the user sees (one line) |", "|---|---|---|"]
    torch.manual_seed(0)
    saved_root = tmp_root / "models"
    Generator(**TINY_KW).save_pretrained(str(saved_root / "w"))
    torch.manual_seed(1)
    Generator(**TINY_KW, c_dim=3).save_pretrained(str(saved_root / "cond"))
    for i, trial in enumerate(TRIALS):
        mp = pytest.MonkeyPatch()
        cap = Cap()
        d = tmp_root / f"t{i}"
        d.mkdir()
        try:
            with contextlib.redirect_stdout(cap.out), contextlib.redirect_stderr(cap.err):
                rc, text, _ = run_trial(trial, d, saved_root, mp, cap)
        finally:
            mp.undo()
        line = next((l for l in text.splitlines() if trial.expect in l), text.strip().splitlines()[-1])
        rows.append(f"| {trial.name} | {rc} | `{line.strip()}` |")
    for name, fn in API_TRIALS:
        d = tmp_root / f"api_{len(rows)}"
        d.mkdir()
        torch.manual_seed(0)
        err = fn(d, Generator(**TINY_KW).eval())
        rows.append(f"| API: {name} | raises | `{type(err).__name__ if not isinstance(err, str) else ''}"
                    f"{': ' + str(err) if not isinstance(err, str) else err}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    import pathlib
    import tempfile

    os.environ.setdefault("ANYRES_FAST_EXT", "off")
    with tempfile.TemporaryDirectory() as tmp:
        print(trial_table(pathlib.Path(tmp)))
