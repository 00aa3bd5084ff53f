"""The save format (docs/save_format.md): config.json + model.safetensors for both generator families,
one strict loader with the same checks and messages for both, and folders of the old weights.pt format
still loading."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from anyres_fast import Generator, InfinityGenerator
from anyres_fast.models.infinity import InfinityConfig
from anyres_fast.train.infinity_recipe import TINY_G
from helpers import write_legacy_weights

TINY_ANYRES = dict(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8)


def anyres_model(seed=0):
    torch.manual_seed(seed)
    return Generator(**TINY_ANYRES)


def infinity_model(seed=0):
    torch.manual_seed(seed)
    return InfinityGenerator(InfinityConfig(**TINY_G))


FAMILIES = {"anyres": (anyres_model, Generator), "infinity": (infinity_model, InfinityGenerator)}


def same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_writes_safetensors_and_config_only(tmp_path, family):
    build, cls = FAMILIES[family]
    G = build(seed=3)
    G.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format"] == f"anyres_fast.{cls.__name__}/1" and meta["config"] == G.config.to_dict()
    # The weights are plain safetensors: an 8-byte header length, a JSON header, raw tensor bytes.
    raw = (tmp_path / "m" / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"]["format"] == meta["format"]
    assert set(header) - {"__metadata__"} == set(G.state_dict())
    assert same_state(cls.from_pretrained(str(tmp_path / "m")), G)


@pytest.mark.parametrize("family", FAMILIES)
def test_old_weights_pt_folders_still_load_and_are_replaced_on_save(tmp_path, family):
    build, cls = FAMILIES[family]
    G = build(seed=4)
    G.save_pretrained(str(tmp_path / "m"))
    write_legacy_weights(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "weights.pt"]
    assert same_state(cls.from_pretrained(str(tmp_path / "m")), G)
    G.save_pretrained(str(tmp_path / "m"))           # saving again leaves one set of weights
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("family", FAMILIES)
def test_both_families_get_the_same_strict_checks(tmp_path, family):
    build, cls = FAMILIES[family]
    G = build(seed=5)
    folder = tmp_path / "m"
    G.save_pretrained(str(folder))
    path = folder / "model.safetensors"
    good = load_file(str(path))
    first = sorted(good)[0]
    where = f"{cls.__name__}.from_pretrained"
    for change, message in (
            (lambda s: s.pop(first), rf"1 missing key\(s\): {first}"),
            (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), r"1 unexpected key\(s\): extra.weight"),
            (lambda s: s.__setitem__(first, torch.zeros(2, 2)), rf"{first} has shape \(2, 2\) in the file")):
        state = dict(good)
        change(state)
        save_file(state, str(path))
        with pytest.raises(ValueError, match=rf"{where}: {path}.*does not fit .*config.json: {message}"):
            cls.from_pretrained(str(folder))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{where}: {path} is not a readable safetensors file"):
        cls.from_pretrained(str(folder))
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{where}: .*model.safetensors not found"):
        cls.from_pretrained(str(folder))
    G.save_pretrained(str(folder))
    (folder / "config.json").write_text('{"format": ')
    with pytest.raises(ValueError, match=rf"{where}: .*config.json is not valid JSON"):
        cls.from_pretrained(str(folder))
    (folder / "config.json").write_text("[1]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        cls.from_pretrained(str(folder))
    with pytest.raises(FileNotFoundError, match=rf"{where}: .* is not a folder"):
        cls.from_pretrained(str(tmp_path / "nothing"))


def test_a_folder_of_the_other_family_is_refused_by_name(tmp_path):
    anyres_model().save_pretrained(str(tmp_path / "a"))
    infinity_model().save_pretrained(str(tmp_path / "i"))
    with pytest.raises(ValueError, match=r"has format 'anyres_fast.Generator/1', expected 'anyres_fast.InfinityGenerator/1'"):
        InfinityGenerator.from_pretrained(str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"has format 'anyres_fast.InfinityGenerator/1', expected 'anyres_fast.Generator/1'"):
        Generator.from_pretrained(str(tmp_path / "i"))


def test_a_failed_write_leaves_the_previous_weights_and_no_temporary_file(tmp_path, monkeypatch):
    from anyres_fast.utils import files

    G, H = anyres_model(seed=1), anyres_model(seed=2)
    G.save_pretrained(str(tmp_path / "m"))

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*model.safetensors: No space left on device"):
        H.save_pretrained(str(tmp_path / "m"))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    assert same_state(Generator.from_pretrained(str(tmp_path / "m")), G)
