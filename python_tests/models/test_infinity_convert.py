"""convert_official_state_dict and the checkpoint loader, on state dicts laid out like the published
InfinityGAN generator (names and shapes written out here from the published layout)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from anyres_fast import InfinityGenerator
from anyres_fast.models import convert_official_state_dict, from_official, load_official_checkpoint
from helpers import filled, published_layout


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: tiny ops run faster on one thread


def test_published_101_layout_lands_completely():
    layout = published_layout(4, 512, 256, [512] * 4, 4, 3, 8)
    sd = filled(layout, empty=True)
    state, dropped = convert_official_state_dict(sd, return_dropped=True)
    G = InfinityGenerator()
    ours = G.state_dict()
    assert set(state) == set(ours)                                  # every tensor lands, none is left over
    for name, t in state.items():
        assert t.shape == ours[name].shape, name
    unused = {n for n, (_, k) in layout.items() if k in ("noise", "const")}
    filters = {n for n, (_, k) in layout.items() if k == "filter"}
    assert set(dropped) == unused | filters and len(unused) == 9 and len(filters) == 8
    published_params = sum(int(np.prod(s)) for n, (s, k) in layout.items() if k in ("param", "const"))
    assert published_params == 36_358_944                          # 36.36M, as published
    const = int(np.prod(layout["texture_synthesizer.const_z.input"][0]))
    assert sum(t.numel() for t in G.parameters()) == published_params - const
    G.load_state_dict(state, strict=True)
    # DataParallel prefixes are accepted.
    assert set(convert_official_state_dict({"module." + k: v for k, v in sd.items()})) == set(ours)


def test_every_published_tensor_changes_the_output():
    layout = published_layout(3, 8, 4, [4, 4, 2], 2, 1, 2)
    sd = filled(layout, seed=1)
    G, dropped = from_official(sd, ts_input=7)
    G.eval()
    assert G.patch_size == 21 and G.config.channel_base == 8
    g = torch.Generator().manual_seed(2)
    z_g, z_l = torch.randn(1, 8, generator=g), torch.randn(1, 4, 11, 11, generator=g)
    coords = G.coords(11, 11, -4, 1)
    noises = G.make_noises(1, 11, generator=g)
    with torch.no_grad():
        base = G(z_g, z_l, coords, noises)
    checked = 0
    for name, (shape, kind) in layout.items():
        if kind != "param":
            continue
        sd2 = dict(sd)
        sd2[name] = sd[name] + torch.randn(shape, generator=g) * 0.5 + 0.25
        G.load_state_dict(convert_official_state_dict(sd2), strict=True)
        with torch.no_grad():
            out = G(z_g, z_l, coords, noises)
        assert (out - base).abs().max() > 1e-6, f"{name} does not reach the output"
        checked += 1
    assert checked == sum(k == "param" for _, k in layout.values())
    # A state dict with a name outside the published layout is refused with the name.
    with pytest.raises(ValueError, match="texture_synthesizer.extra"):
        convert_official_state_dict({**sd, "texture_synthesizer.extra": torch.zeros(1)})
    bad = dict(sd)
    bad["texture_synthesizer.convs.0.conv.blur.kernel"] = torch.ones(3, 3)
    with pytest.raises(ValueError, match="blur.kernel"):
        convert_official_state_dict(bad)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_loader_reads_tensors_and_never_runs_code(tmp_path):
    sd = filled(published_layout(3, 8, 4, [4, 4, 2], 2, 1, 2), seed=3)
    path = tmp_path / "best_fid.pth.tar"
    torch.save({"iter": 3000, "best_fid": np.float64(12.5), "g_ema": sd, "g": sd, "d": {}}, path)
    got = load_official_checkpoint(str(path))
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"g_ema": sd, "x": _Evil(str(marker))}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_official_checkpoint(str(evil))
    assert not marker.exists()
    with pytest.raises(KeyError, match="g_ema"):
        torch.save({"iter": 1}, tmp_path / "other.pt")
        load_official_checkpoint(str(tmp_path / "other.pt"))
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(str(tmp_path / "missing.pt"))
