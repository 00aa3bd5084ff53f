"""InfinityGAN inversion on a real photo (random-weight tiny generator; random-backbone LPIPS)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.models import infinity_inversion as inv
from anyres_fast.models import perceptual
from anyres_fast.models.infinity import InfinityConfig, InfinityGenerator
from anyres_fast.train.infinity_recipe import TINY_G


def photo(size):
    """scikit-image's astronaut photo (read from the installed package), resized, in [-1, 1]."""
    import skimage.data

    im = Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    return InfinityGenerator(InfinityConfig(**TINY_G)).eval()


def test_inversion_of_a_photo_losses_fall_and_record_round_trips(tmp_path, one_thread):
    G = tiny_generator()
    target = photo(32)
    canvas = inv.plan_canvas(G, 32, 32, [(0, 0, 32, 32)])
    start = inv.invert(G, canvas, [target], inv.InversionSettings(steps=0), progress=False)
    rec = inv.invert(G, canvas, [target], inv.InversionSettings(steps=30), progress=False)
    for term in ("pixel", "lpips"):
        h = np.array(rec.history[term])
        assert np.isfinite(h).all() and h[-6:].mean() < 0.6 * h[:6].mean(), (term, h[:6].mean(), h[-6:].mean())
    assert rec.psnr[0] > start.psnr[0] + 2, (start.psnr, rec.psnr)

    path = rec.save(str(tmp_path / "inversion.pt"))
    back = inv.InversionRecord.load(path)                   # weights_only=True
    assert back.canvas.to_dict() == canvas.to_dict() and back.settings["steps"] == 30
    out = inv.render(G, back, seed=5)
    assert out.shape == (1, 3, 32, 32)
    assert abs(inv.psnr(out, target) - rec.psnr[0]) < 1e-9
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an InfinityGAN inversion record"):
        inv.InversionRecord.load(str(tmp_path / "other.pt"))


def test_canvas_region_equals_its_window_and_seeds_only_change_the_new_content(one_thread):
    G = tiny_generator(1)
    canvas = inv.plan_canvas(G, 33, 90, [(1, 30, 31, 31)])
    r = canvas.regions[0]
    assert r.a_x * 4 + r.off_x == 30 and G.output_size(r.n_x) >= r.off_x + 31
    z_l, noises, coords = inv.canvas_inputs(G, canvas, seed=3)
    z_g = torch.randn(1, G.z_dim)
    ws = G.styles(z_g)
    rec = inv.InversionRecord(z_g, ws, z_l, noises, coords, canvas, {}, {}, G.config.to_dict())
    with torch.no_grad():
        region = inv.render_region(G, canvas, r, z_g, ws, z_l, noises, coords)
    a, b = inv.render(G, rec, seed=0), inv.render(G, rec, seed=1)
    assert a.shape == (1, 3, 33, 90)
    torch.testing.assert_close(a[..., 1:32, 30:61], region, atol=1e-5, rtol=0)
    torch.testing.assert_close(b[..., 1:32, 30:61], region, atol=1e-5, rtol=0)
    assert (a[..., :3] - b[..., :3]).abs().mean() > 0.01 and (a[..., -3:] - b[..., -3:]).abs().mean() > 0.01


def test_lpips_without_backbone_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(perceptual.LPIPSWeightsMissing, match="alexnet-owt-7be5be79.pth") as err:
        perceptual.build_lpips("alex")
    assert str(tmp_path) in str(err.value)
    assert isinstance(perceptual.build_lpips("random"), torch.nn.Module)
