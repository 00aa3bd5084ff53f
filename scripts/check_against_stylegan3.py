"""Compare our Generator (configs T and R) and Discriminator with the published NVlabs/stylegan3 code.

    python scripts/check_against_stylegan3.py --src /path/to/stylegan3-checkout

Needs a checkout of NVlabs/stylegan3 (not shipped, not fetched by CI; that is why this is a script and
not a test). The published modules are imported from --src, their randomly initialised state dicts are
loaded into ours (strict, apart from our scale branch, which starts at zero), and the outputs are compared
on the CPU in float32. Exits non-zero if any difference exceeds 1e-5 relative to the output magnitude.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import types

import torch

from anyres_fast.models import Discriminator, Generator


def import_published(src: str, module: str):
    if not os.path.isdir(os.path.join(src, "training")):
        raise SystemExit(f"{src} does not look like a stylegan3 checkout (no training/ folder)")
    sys.modules.setdefault("requests", types.ModuleType("requests"))   # only used for downloads there
    if "pkg_resources" not in sys.modules:                              # gone from new setuptools
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    if src not in sys.path:
        sys.path.insert(0, src)
    return importlib.import_module(f"training.{module}")


def compare_generator(src: str, config: str) -> float:
    sg3 = import_published(src, "networks_stylegan3")
    cb, cm = (512, 16) if config == "T" else (1024, 32)
    extra = {} if config == "T" else dict(conv_kernel=1, use_radial_filters=True)
    torch.manual_seed(0)
    ref = sg3.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=64, img_channels=3, channel_base=cb,
                        channel_max=cm, mapping_kwargs=dict(num_layers=2), **extra).eval()
    ours = Generator(resolution=64, config=config, channel_base=cb, channel_max=cm, z_dim=16, w_dim=16,
                     scale_dim=16).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    if unexpected or not all(k.startswith("scale_mapping.") or ".scale_affine." in k for k in missing):
        raise SystemExit(f"state dicts do not map one to one: unexpected {unexpected}, missing {missing}")
    with torch.no_grad():
        for name in ref.synthesis.layer_names:           # non-trivial gains and input rotation/translation
            v = float(torch.rand(())) + 0.5
            getattr(ref.synthesis, name).magnitude_ema.fill_(v)
            getattr(ours.synthesis, name).magnitude_ema.fill_(v)
        ref.synthesis.input.affine.weight.normal_()
        ours.synthesis.input.affine.weight.copy_(ref.synthesis.input.affine.weight)
        z = torch.randn(3, 16)
        a = ref(z, None, noise_mode="const")
        b = ours(z)
        c = ours.synthesize(ours.mapping(z), input_gains=ours.synthesis.input_gains())
    scale = max(1.0, float(a.abs().max()))
    err = max(float((a - b).abs().max()), float((a - c).abs().max())) / scale
    print(f"generator {config}: max |published - ours| {float((a - b).abs().max()):.2e}, "
          f"with folded render gains {float((a - c).abs().max()):.2e} (output max {float(a.abs().max()):.2f})")
    return err


def compare_discriminator(src: str, c_dim: int) -> float:
    sg2 = import_published(src, "networks_stylegan2")
    torch.manual_seed(0)
    ref = sg2.Discriminator(c_dim=c_dim, img_resolution=32, img_channels=3, channel_base=256, channel_max=16,
                            conv_clamp=256).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.normal_()                              # non-zero biases
    ours = Discriminator(resolution=32, c_dim=c_dim, channel_base=256, channel_max=16)
    ours.load_state_dict(ref.state_dict(), strict=True)
    img = torch.randn(8, 3, 32, 32)
    c = torch.randn(8, c_dim) if c_dim else None
    with torch.no_grad():
        a, b = ref(img, c), ours(img, c)
    print(f"discriminator c_dim={c_dim}: max |published - ours| {float((a - b).abs().max()):.2e}")
    return float((a - b).abs().max()) / max(1.0, float(a.abs().max()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="path of a NVlabs/stylegan3 checkout")
    args = parser.parse_args()
    errors = [compare_generator(args.src, "T"), compare_generator(args.src, "R"),
              compare_discriminator(args.src, 0), compare_discriminator(args.src, 5)]
    ok = all(e < 1e-5 for e in errors)
    print("all match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
