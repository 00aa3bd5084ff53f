"""EQ-T, EQ-T_frac and EQ-R of our Generator vs the published StyleGAN3 metric code, same weights, same draws.

    python scripts/check_equivariance_against_stylegan3.py --src /path/to/stylegan3-checkout [--num 16]

Needs a checkout of NVlabs/stylegan3 (not shipped, not fetched by CI). A small published generator
(configs T and R, 64 px, narrow) is built from --src with a fixed seed, its state dict is loaded into
ours (as scripts/check_against_stylegan3.py does), and the published
`metrics.equivariance.compute_equivariance_metrics` runs on the CPU after torch.manual_seed(seed),
while ours (`anyres_fast.metrics.equivariance.equivariance_psnr`) draws from a torch.Generator with the
same seed, so both see the same latents, translations and angles. Prints a table of PSNRs; exits
non-zero if any pair differs by more than --tol dB (default 0.1). A generator whose output ignores
the input transform is shown for scale.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
from check_against_stylegan3 import import_published  # noqa: E402  (same import shims)

from anyres_fast.metrics.equivariance import KINDS, default_synthesis, equivariance_psnr  # noqa: E402
from anyres_fast.models import Generator  # noqa: E402

FLAGS = {"eqt-int": "compute_eqt_int", "eqt-frac": "compute_eqt_frac", "eqr": "compute_eqr"}


def build_pair(src: str, config: str, seed: int = 0):
    sg3 = import_published(src, "networks_stylegan3")
    cb, cm = (512, 16) if config == "T" else (1024, 32)
    extra = {} if config == "T" else dict(conv_kernel=1, use_radial_filters=True)
    torch.manual_seed(seed)
    ref = sg3.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=64, img_channels=3, channel_base=cb,
                        channel_max=cm, mapping_kwargs=dict(num_layers=2), **extra).eval()
    ours = Generator(resolution=64, config=config, channel_base=cb, channel_max=cm, z_dim=16, w_dim=16,
                     scale_dim=16).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    if unexpected or not all(k.startswith("scale_mapping.") or ".scale_affine." in k for k in missing):
        raise SystemExit(f"state dicts do not map one to one: unexpected {unexpected}, missing {missing}")
    with torch.no_grad():
        # Magnitude EMAs as training would leave them (full-contrast images), copied to the published one.
        ours.calibrate_magnitudes_(torch.randn(16, 16, generator=torch.Generator().manual_seed(seed + 1)))
        ref.load_state_dict({k: v for k, v in ours.state_dict().items() if k in ref.state_dict()}, strict=True)
    return ref, ours


def published_psnr(src: str, G, kind: str, num: int, batch: int, seed: int) -> float:
    import_published(src, "networks_stylegan3")            # puts the checkout on sys.path, with its shims
    from metrics import equivariance as published
    from metrics import metric_utils
    opts = metric_utils.MetricOptions(G=G, device=torch.device("cpu"))
    torch.manual_seed(seed)
    return float(published.compute_equivariance_metrics(opts, num_samples=num, batch_size=batch,
                                                        **{FLAGS[kind]: True}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="path of a NVlabs/stylegan3 checkout")
    parser.add_argument("--num", type=int, default=16, help="samples per metric (default 16)")
    parser.add_argument("--batch", type=int, default=4, help="samples per draw (published: 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=0.1, help="largest allowed difference in dB")
    parser.add_argument("--configs", default="T,R")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows, worst = [], 0.0
    for config in args.configs.split(","):
        ref, ours = build_pair(args.src, config, args.seed)
        still = default_synthesis(ours)
        frozen = lambda ws, m: still(ws, torch.eye(3))       # ignores the transform: not equivariant
        for kind in args.kinds.split(","):
            t0 = time.time()
            a = published_psnr(args.src, ref, kind, args.num, args.batch, args.seed)
            t1 = time.time()
            b = equivariance_psnr(ours, [kind], num=args.num, batch=args.batch, seed=args.seed, progress=False)[kind]
            t2 = time.time()
            c = equivariance_psnr(ours, [kind], num=args.num, batch=args.batch, seed=args.seed, progress=False,
                                  synthesis=frozen)[kind]
            worst = max(worst, abs(a - b))
            rows.append((config, kind, a, b, a - b, c, t1 - t0, t2 - t1))
    print(f"{'config':6} {'metric':9} {'published dB':>12} {'ours dB':>9} {'diff dB':>9} {'frozen G dB':>11} "
          f"{'pub s':>6} {'ours s':>6}")
    for r in rows:
        print(f"{r[0]:6} {r[1]:9} {r[2]:12.4f} {r[3]:9.4f} {r[4]:9.2e} {r[5]:11.4f} {r[6]:6.1f} {r[7]:6.1f}")
    ok = worst <= args.tol
    print(f"largest |published - ours| {worst:.2e} dB: {'within' if ok else 'OVER'} {args.tol} dB "
          f"({args.num} samples, batch {args.batch}, seed {args.seed})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
