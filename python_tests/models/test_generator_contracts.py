"""Contracts of the generator that realistic bugs break, each test written so that the bug fails it:
render / zoom tiles equal G(z, canvas, box=(x, y)) with x != y (an x/y swap fails), magnitude-EMA
calibration and one EMA step against their formulas (swapped lerp arguments fail), the conv clamp fires
and is folded correctly, from_pretrained is strict. Small 4-layer models, seeded latents everywhere."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from anyres_fast import ops
from anyres_fast.models import Generator

FAST = dict(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8, num_layers=4,
            num_critical=1)


def latents(n, seed):
    return torch.randn(n, FAST["z_dim"], generator=torch.Generator().manual_seed(seed))


def fast_generator(seed=0, **overrides):
    torch.manual_seed(seed)
    G = Generator(**{**FAST, **overrides}).eval()
    G.calibrate_magnitudes_(latents(8, 100 + seed))
    return G


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_render_and_zoom_tiles_equal_patches_at_asymmetric_boxes():
    G = fast_generator()
    z = latents(1, 1)
    # 160 = 2.5 tiles: tiles at x, y in {0, 64, 128}; the off-diagonal ones tell x from y.
    img = G.render(z, 160, tile_batch=4, progress=False)
    with torch.no_grad():
        for x, y in ((64, 0), (0, 128), (128, 64)):
            patch = G(z, canvas=160, box=(x, y))
            h, w = min(64, 160 - y), min(64, 160 - x)
            close(img[..., y:y + h, x:x + w], patch[..., :h, :w])
        # A window whose tiles start at (37, 50) and (101, 50).
        win = G.zoom(z, 160, (37, 50, 70, 40), tile_batch=2, progress=False)
        assert win.shape == (1, 3, 40, 70)
        close(win[..., :, :64], G(z, canvas=160, box=(37, 50))[..., :40, :])
        close(win[..., :, 64:], G(z, canvas=160, box=(101, 50))[..., :40, :6])
    # The control: the transposed box gives a different patch, so the checks above can fail.
    with torch.no_grad():
        assert (G(z, canvas=160, box=(0, 64)) - img[..., 0:64, 64:128]).abs().max() * 127.5 > 5


def _record_layer_inputs(G):
    inputs, handles = {}, []
    for name, layer in zip(G.synthesis.layer_names, G.synthesis.layers):
        handles.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs=None, name=name: inputs.__setitem__(name, args[0].detach().clone())))
    return inputs, handles


def test_calibration_sets_each_magnitude_ema_to_the_mean_square_of_its_input():
    torch.manual_seed(0)
    G = Generator(**FAST)
    z = latents(6, 2)
    G.calibrate_magnitudes_(z)
    inputs, handles = _record_layer_inputs(G)
    mapped = {}
    last_fc = getattr(G.mapping, f"fc{G.mapping.num_layers - 1}")
    handles.append(last_fc.register_forward_hook(lambda m, a, out: mapped.__setitem__("w", out.detach())))
    with torch.no_grad():
        G(z, force_fp32=True)              # an independent pass with the calibrated buffers, no updates
    for h in handles:
        h.remove()
    for name, layer in zip(G.synthesis.layer_names, G.synthesis.layers):
        want = inputs[name].double().square().mean()
        torch.testing.assert_close(layer.magnitude_ema.double(), want, rtol=1e-5, atol=0, msg=name)
    torch.testing.assert_close(G.mapping.w_avg, mapped["w"].mean(dim=0), rtol=1e-5, atol=1e-6)
    assert len({round(float(l.magnitude_ema), 4) for l in G.synthesis.layers}) > 2   # not all the same value
    assert G.synthesis.layers[0].magnitude_ema_beta == FAST.get("magnitude_ema_beta", 0.999)   # restored


def test_one_ema_step_equals_its_lerp_formula():
    torch.manual_seed(0)
    G = Generator(**FAST).train()
    beta = 0.9
    start = {}
    for i, layer in enumerate(G.synthesis.layers):
        layer.magnitude_ema_beta = beta
        layer.magnitude_ema.fill_(3.0 + i)           # far from the actual mean squares
        start[layer] = 3.0 + i
    G.mapping.w_avg_beta = beta
    w_avg0 = torch.linspace(-1, 1, FAST["w_dim"])
    G.mapping.w_avg.copy_(w_avg0)
    inputs, handles = _record_layer_inputs(G)
    mapped = {}
    last_fc = getattr(G.mapping, f"fc{G.mapping.num_layers - 1}")
    handles.append(last_fc.register_forward_hook(lambda m, a, out: mapped.__setitem__("w", out.detach())))
    with torch.no_grad():
        G(latents(4, 3), update_emas=True)
    for h in handles:
        h.remove()
    for name, layer in zip(G.synthesis.layer_names, G.synthesis.layers):
        cur = inputs[name].double().square().mean()
        want = cur + beta * (start[layer] - cur)     # ema <- beta * ema + (1 - beta) * current
        torch.testing.assert_close(layer.magnitude_ema.double(), want, rtol=1e-5, atol=0, msg=name)
        assert abs(float(cur) - start[layer]) > 0.5  # a swapped lerp would give a clearly different value
    mean_w = mapped["w"].mean(dim=0)
    torch.testing.assert_close(G.mapping.w_avg, mean_w + beta * (w_avg0 - mean_w), rtol=1e-5, atol=1e-6)


def test_conv_clamp_fires_and_is_folded_correctly(monkeypatch):
    clamp = 0.3                      # well below the activations of a calibrated model: it must fire
    G = fast_generator(seed=1, conv_clamp=clamp)
    unclamped = copy.deepcopy(G)
    for layer in unclamped.synthesis.layers:
        layer.conv_clamp = None
    z = latents(1, 4)
    fired, seen = [], []
    real = ops.filtered_lrelu

    def spy(x, fu, fd, b=None, *args, clamp=None, **kwargs):
        out = real(x, fu, fd, b, *args, clamp=clamp, **kwargs)
        if clamp is not None:
            seen.append(clamp)
            fired.append(not torch.equal(out, real(x, fu, fd, b, *args, clamp=None, **kwargs)))
        return out

    monkeypatch.setattr(ops, "filtered_lrelu", spy)
    with torch.no_grad():
        patch = G(z, canvas=160, box=(64, 0))
    assert seen == [clamp] * len(G.synthesis.layers)          # every layer got the configured clamp, unfolded
    assert any(fired), "the clamp never changed an activation: the test would prove nothing"
    with torch.no_grad():
        assert (patch - unclamped(z, canvas=160, box=(64, 0))).abs().max() > 1e-3
    # render folds the input gains into the previous layer's gain and clamp; with the clamp active the
    # folded result must still equal the unfolded patch.
    seen.clear()
    img = G.render(z, 160, window=(64, 0, 64), progress=False)
    assert len(seen) == len(G.synthesis.layers) and seen != [clamp] * len(seen)    # scaled by the folded gains
    close(img, patch)


def test_from_pretrained_is_strict(tmp_path):
    G = fast_generator(seed=2)
    G.save_pretrained(str(tmp_path / "m"))
    H = Generator.from_pretrained(str(tmp_path / "m"))
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), H.state_dict().values()))
    path = tmp_path / "m" / "model.safetensors"
    good = load_file(str(path))
    for change, message in (
            (lambda s: s.pop("synthesis.L2_84_8.magnitude_ema"), r"1 missing key\(s\): synthesis.L2_84_8.magnitude_ema"),
            (lambda s: s.__setitem__("synthesis.extra", torch.zeros(1)), r"1 unexpected key\(s\): synthesis.extra"),
            (lambda s: s.__setitem__("mapping.fc0.weight", torch.zeros(8, 7)),
             r"mapping.fc0.weight has shape \(8, 7\) in the file, \(8, 8\) in the model")):
        state = dict(good)
        change(state)
        save_file(state, str(path))
        with pytest.raises(ValueError, match=rf"{path}.*does not fit .*config.json: {message}"):
            Generator.from_pretrained(str(tmp_path / "m"))
