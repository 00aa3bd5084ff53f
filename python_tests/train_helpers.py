"""Shared pieces of the training tests: a micro model configuration and small image folders."""
import io
import json
import os

import numpy as np
from PIL import Image

# Smaller than --tiny: the training tests run many steps on a shared 2-core CPU.
MICRO_G = dict(z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4, scale_dim=8, mapping_width=8)
MICRO_D = dict(channel_base=256, channel_max=8, mapping_layers=1)


def micro_config(**kw):
    from anyres_fast.train.anyres_recipe import AnyresConfig
    base = dict(resolution=64, tiny=True, lpips="random", g_kwargs=dict(MICRO_G), d_kwargs=dict(MICRO_D), grid_seeds=2)
    base.update(kw)
    return AnyresConfig(**base)


def write_images(folder, sizes, seed=0, flat=None, labels=None, bad=False):
    """PNG images of the given (w, h); flat=(r, g, b) for one flat colour; labels: class per image."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i, (w, h) in enumerate(sizes):
        if flat is not None:
            a = np.empty((h, w, 3), np.uint8)
            a[...] = flat
        else:
            yy, xx = np.mgrid[0:h, 0:w]
            a = np.clip(np.stack([128 + 90 * np.sin(xx / (5.0 + c) + i) for c in range(3)], 2)
                        + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
        names.append(f"img{i}.png")
        Image.fromarray(a).save(os.path.join(folder, names[-1]))
    if labels is not None:
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump({"labels": [[n, int(c)] for n, c in zip(names, labels)]}, f)
    if bad:
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(b, format="JPEG")
        open(os.path.join(folder, "truncated.jpg"), "wb").write(b.getvalue()[: len(b.getvalue()) // 2])
        open(os.path.join(folder, "empty.jpg"), "wb").close()
        open(os.path.join(folder, "text.png"), "w").write("text, not a PNG\n")
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(os.path.join(folder, "small10.png"))
    return folder


BAD_NAMES = {"truncated.jpg", "empty.jpg", "text.png", "small10.png"}
