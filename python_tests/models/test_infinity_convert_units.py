"""Error branches of the published-checkpoint converter (issue 21): each refusal names the bad tensor and
what was expected, checked with match= on the distinctive part of the message."""
from __future__ import annotations

import pytest
import torch

from anyres_fast.models import infinity_convert as conv
from helpers import filled, published_layout

pytestmark = pytest.mark.usefixtures("one_thread")


def _sd():
    return filled(published_layout(3, 8, 4, [4, 4, 2], 2, 1, 2), seed=1)


def test_a_wrong_filter_is_refused_with_its_name_and_shape():
    sd = _sd()
    name = next(n for n in sd if n.endswith("blur.kernel"))
    sd[name] = sd[name] * 1.01
    with pytest.raises(ValueError, match=r"^convert_official_state_dict: \S+blur\.kernel is not the \[1,2,1\] filter this model uses \(shape \(3, 3\)\)$"):
        conv.convert_official_state_dict(sd)


def test_mapping_entry_zero_is_refused():
    sd = _sd()
    sd["texture_synthesizer.mapping.0.weight"] = torch.zeros(8, 8)
    with pytest.raises(ValueError, match=r"^convert_official_state_dict: texture_synthesizer\.mapping\.0\.weight: mapping entry 0 is the PixelNorm and has no parameters$"):
        conv.convert_official_state_dict(sd)


@pytest.mark.parametrize("shape", [(4, 4, 3, 3), (2, 4, 4, 3, 3)])
def test_a_modulated_weight_of_the_wrong_shape_is_refused(shape):
    sd = _sd()
    sd["texture_synthesizer.convs.0.conv.weight"] = torch.zeros(shape)
    with pytest.raises(ValueError, match=r"^convert_official_state_dict: texture_synthesizer\.convs\.0\.conv\.weight should be \(1, O, I, k, k\), got "
                                         + str(shape).replace("(", r"\(").replace(")", r"\)") + "$"):
        conv.convert_official_state_dict(sd)


def test_a_noise_strength_with_two_values_is_refused():
    sd = _sd()
    sd["texture_synthesizer.convs.0.noise.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"^convert_official_state_dict: texture_synthesizer\.convs\.0\.noise\.weight should hold one value, got \(2,\)$"):
        conv.convert_official_state_dict(sd)


@pytest.mark.parametrize("n", [8, 9])
def test_unknown_names_are_listed_first_eight_then_dots(n):
    sd = _sd()
    names = [f"extra.t{i}" for i in range(n)]
    for x in names:
        sd[x] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        conv.convert_official_state_dict(sd)
    msg = str(e.value)
    assert msg.startswith(f"convert_official_state_dict: {n} tensors")
    assert f"convert_official_state_dict: {n} tensors match no published InfinityGAN generator name: " in msg
    assert str(names[:8]) in msg and ("extra.t8" not in msg)
    assert msg.endswith(" ..." if n > 8 else "]")


@pytest.mark.parametrize("drop", ["structure_synthesizer.", "texture_synthesizer.convs.", "texture_synthesizer.mapping."])
def test_config_refuses_a_state_dict_without_a_part(drop):
    sd = {k: v for k, v in _sd().items() if not k.startswith(drop)}
    with pytest.raises(ValueError, match="^config_from_official_state_dict: not a published InfinityGAN generator state dict$"):
        conv.config_from_official_state_dict(sd)


def test_config_refuses_an_odd_number_of_convs():
    sd = _sd()
    sd["texture_synthesizer.convs.9.conv.weight"] = torch.zeros(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="^config_from_official_state_dict: not a published InfinityGAN generator state dict$"):
        conv.config_from_official_state_dict(sd)


def test_config_reads_the_shapes_written_in_the_layout():
    # published_layout(depth 3, z 8, local 4, widths [4, 4, 2], 2 G_S layers, radius 1, 2 mapping layers)
    c = conv.config_from_official_state_dict(_sd())
    assert (c.z_dim, c.local_dim, c.ss_layers, c.ss_radius, c.mapping_layers, c.channel_max, c.channel_base) == \
        (8, 4, 2, 1, 2, 4, 8)
    assert c.ts_input == 11


def test_config_refuses_widths_that_do_not_halve():
    sd = _sd()
    for k in list(sd):                       # pair 1 three channels wide: no power-of-two base gives it
        if k.startswith("texture_synthesizer.convs.2.conv.weight"):
            s = list(sd[k].shape)
            s[1] = 3
            sd[k] = torch.zeros(s)
    with pytest.raises(ValueError, match=r"^config_from_official_state_dict: G_T widths \[4, 3, 2\] do not follow min\(channel_max, channel_base / 2\^pair\)$"):
        conv.config_from_official_state_dict(sd)


def test_loader_errors_name_the_file_and_the_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^load_official_checkpoint: .*nope\.pt not found$"):
        conv.load_official_checkpoint(str(tmp_path / "nope.pt"))
    p = tmp_path / "c.pt"
    torch.save({"b": torch.zeros(1), "a": torch.zeros(1)}, p)
    with pytest.raises(KeyError, match=r"^\"load_official_checkpoint: .*c\.pt has no 'g_ema' entry \(keys: \['a', 'b'\]\)\"$"):
        conv.load_official_checkpoint(str(p))
    sd = _sd()
    torch.save({"g_ema": sd, "best_fid": 1.0}, p)
    assert set(conv.load_official_checkpoint(str(p))) == set(sd)
    torch.save(sd, p)                        # a bare state dict
    assert set(conv.load_official_checkpoint(str(p))) == set(sd)


@pytest.mark.parametrize("depth,chans,base", [(2, [4, 2], 4), (3, [64, 64, 32], 128), (4, [8, 8, 4, 2], 16)])
def test_config_finds_the_smallest_power_of_two_base(depth, chans, base):
    # channel widths min(channel_max, base / 2^pair): the smallest such base, found by hand above.
    c = conv.config_from_official_state_dict(filled(published_layout(depth, 8, 4, chans, 2, 1, 2)))
    assert (c.channel_max, c.channel_base) == (max(chans), base)


def test_a_filter_within_float_rounding_of_the_expected_is_accepted():
    # A filter saved through half precision or another rounding is the same filter: 3e-6 off is
    # inside atol 1e-6 + rtol 1e-5 * 0.25 and must not be refused.
    sd = _sd()
    name = next(n for n in sd if n.endswith("blur.kernel"))
    sd[name] = sd[name] + 3e-6
    assert name in conv.convert_official_state_dict(sd, return_dropped=True)[1]
