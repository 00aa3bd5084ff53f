"""Stand-ins for the metric tests: image folders, a small random feature network for the detector, and
generator stand-ins that replay images or record the (canvas, box) they are called with."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anyres_fast.data import HRPatchDataset, ImageSource, KeySampler
from anyres_fast.metrics.real_images import FullImages


def write_images(folder, sizes, seed=0):
    """A folder (pathlib.Path) of smooth random PNGs img000.png, ... of the given (w, h) sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(0, 1, 3)
        freq = rng.uniform(0.02, 0.2, 2)
        img = 127 + 100 * np.sin(xx[..., None] * freq[0] + yy[..., None] * freq[1] + base * 6)
        img = img + rng.normal(0, 10, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


class TinyFeatures(torch.nn.Module):
    """A small random conv net: uint8 (B, 3, H, W) -> 12 features (resizes to 32 like Inception to 299)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 6, 3, stride=2)
        self.c2 = torch.nn.Conv2d(6, 12, 3, stride=2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        x = F.interpolate(x.float() / 127.5 - 1, size=(32, 32), mode="bilinear", align_corners=False)
        return torch.relu(self.c2(torch.relu(self.c1(x)))).mean(dim=(2, 3))


def real_images_at(listing, size):
    return torch.stack([FullImages(listing, size)[i][0] for i in range(len(listing))])


class ReplayRender:
    """Stand-in for G.render: returns given uint8 images in order (optionally brightened)."""

    def __init__(self, images, shift=0, resolution=32):
        self.images, self.shift, self.pos = images, shift, 0
        self.img_resolution, self.z_dim, self.c_dim = resolution, 4, 0

    def render(self, z, size, **kwargs):
        out = self.images[self.pos:self.pos + z.shape[0]]
        self.pos += z.shape[0]
        assert out.shape[-1] == size and kwargs["out_dtype"] == torch.uint8
        return (out.int() + self.shift).clamp(0, 255).to(torch.uint8)

    def zoom(self, *args, **kwargs):  # marks the any-resolution family for the metrics' family check
        raise AssertionError("fid@R renders whole canvases; it never zooms")


class Recording(torch.nn.Module):
    """Generator stand-in: records every (canvas, box) it is called with, returns a cheap patch.
    (The real Generator goes through the same call in test_metrics_cli.)"""

    def __init__(self, p=64, z_dim=8):
        super().__init__()
        self.calls = []
        self.z_dim, self.c_dim, self.img_resolution = z_dim, 0, p

    def forward(self, z, c=None, *, canvas, box, **kw):
        self.calls += [(float(n), (float(b[0]), float(b[1]))) for n, b in zip(canvas, box)]
        p = self.img_resolution
        ramp = torch.linspace(-1, 1, p).view(1, 1, 1, p)
        return torch.tanh(z[:, :3, None, None] + ramp * (canvas.view(-1, 1, 1, 1).float() / 200))

    def zoom(self, *args, **kwargs):  # marks the any-resolution family for the metrics' family check
        raise AssertionError("pfid calls the generator directly with (canvas, box)")


def expected_pfid_calls(folder, p, num, **kw):
    """(canvas, (x, y)) of training-sampler samples 0..num-1, straight from anyres_fast.data."""
    source = ImageSource(str(folder), min_size=p)
    ds = HRPatchDataset(source, p, **kw)
    keys = KeySampler(len(source), kw["seed"], global_batch=1)
    out = []
    for k in range(num):
        item = ds[keys.key(k)]
        out.append((float(item["canvas"]), (float(item["box"][0]), float(item["box"][1]))))
    return out
