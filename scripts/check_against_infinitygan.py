"""Compare InfinityGenerator with the published InfinityGAN generator (hubert0527/infinityGAN).

    python scripts/check_against_infinitygan.py --src /path/to/infinityGAN-checkout [--patch 101] [--seed 0]

The published generator is built from the checkout with random weights (CPU, float64), its state dict
goes through `convert_official_state_dict`, and both models run on the same z_g, z_l, coordinates
and noise maps; the script prints the max abs difference of the images (and of z_S). Random noise
strengths are set (they start at zero) so the noise path is compared too.

The checkout's CUDA-only pieces are replaced here, at run time, by the checkout's own CPU code paths:
its two JIT extensions are imported with the compiler call stubbed out (their functions take their
CPU branches on CPU tensors), `.cuda()` in its coordinate handler is a no-op, and the dataset module
(LMDB reader) is replaced by the one dict class the generator needs. Nothing of the checkout is
copied into this repository. The model hyperparameters are read from the checkout's
configs/model/InfinityGAN.yaml ("key: value" lines of train_params).
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyres_fast.models.infinity import InfinityGenerator  # noqa: E402
from anyres_fast.models.infinity_convert import config_from_official_state_dict, convert_official_state_dict  # noqa: E402


def read_train_params(src: Path) -> dict:
    params = {}
    text = (src / "configs" / "model" / "InfinityGAN.yaml").read_text()
    section = None
    for line in text.splitlines():
        if re.match(r"^\S", line):
            section = line.split(":")[0].strip()
            continue
        m = re.match(r"^\s+([A-Za-z_0-9]+):\s*([^#]*)", line)
        if section == "train_params" and m and m.group(2).strip():
            v = m.group(2).strip().strip('"')
            for cast in (int, float):
                try:
                    v = cast(v)
                    break
                except ValueError:
                    pass
            else:
                v = {"True": True, "False": False}.get(v, v)
            params[m.group(1)] = v
    return params


def import_published(src: Path):
    sys.path.insert(0, str(src))
    # The extensions compile at import (and ask for the GPU name); their CPU branches need neither.
    with mock.patch("torch.utils.cpp_extension.load", lambda *a, **k: None), \
            mock.patch("torch.cuda.get_device_name", lambda *a, **k: "cpu"):
        importlib.import_module("models.custom_ops")
    dataset = types.ModuleType("dataset")

    class DictTensor(dict):
        pass

    dataset.DictTensor = DictTensor
    sys.modules["dataset"] = dataset
    return importlib.import_module("models.infinitygan_generator")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="checkout of hubert0527/infinityGAN")
    ap.add_argument("--patch", type=int, default=101, choices=(101, 197, 389))
    ap.add_argument("--zl", type=int, default=None, help="z_l size (default: the training patch, 35)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src = Path(args.src).resolve()
    if not (src / "models" / "infinitygan_generator.py").is_file():
        print(f"--src {src}: not an infinityGAN checkout (models/infinitygan_generator.py missing)", file=sys.stderr)
        return 2
    mod = import_published(src)
    tp = read_train_params(src)
    tp.update(patch_size=args.patch, training_modality="patch")
    config = SimpleNamespace(train_params=SimpleNamespace(**tp), task=SimpleNamespace())
    torch.manual_seed(args.seed)
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self):
        theirs = mod.InfinityGanGenerator(config)
    theirs = theirs.double().eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith("to_rgbs.0.bias"):
                p.normal_(0, 0.3)       # start at zero in training; random here so the paths are compared
    sd = theirs.state_dict()
    ours = InfinityGenerator(config_from_official_state_dict(sd)).double().eval()   # float64 before loading
    state, dropped = convert_official_state_dict(sd, return_dropped=True)
    ours.load_state_dict(state, strict=True)
    n_theirs = sum(p.numel() for p in theirs.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    print(f"published parameters {n_theirs:,}; ours {n_ours:,}; dropped {len(dropped)} unused/fixed tensors: "
          f"{', '.join(d for d in dropped if 'kernel' not in d)} + {sum('kernel' in d for d in dropped)} fixed filters")

    g = torch.Generator().manual_seed(args.seed + 1)
    zl = args.zl or ours.config.zl_size
    # (B, 2, z) as published: G_S reads [:, 0]; without mixing G_T maps both and uses the first.
    z_g = torch.randn(2, 2, tp["global_latent_dim"], generator=g, dtype=torch.float64)
    z_l = torch.randn(2, tp["local_latent_dim"], zl, zl, generator=g, dtype=torch.float64)
    coords = ours.coords(zl, zl, top=-7.5, left=3.25, batch=2).double()
    noises = [n.double() for n in ours.make_noises(2, zl, generator=g)]
    with torch.no_grad():
        out = theirs(global_latent=z_g, local_latent=z_l, override_coords=coords, noises=noises,
                     disable_dual_latents=True)
        img_ours, zs_ours = ours(z_g, z_l, coords, noises, return_structure=True)
    img_theirs, zs_theirs = out["gen"], out["structure_latent"]
    print(f"z_S {tuple(zs_theirs.shape)}: max abs diff {(zs_theirs - zs_ours).abs().max().item():.3e}")
    print(f"image {tuple(img_theirs.shape)}: max abs diff {(img_theirs - img_ours).abs().max().item():.3e} "
          f"(image std {img_theirs.std().item():.3f}; float64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
