"""fid@R throughput: images/s through tiled generation + the Inception detector, and an estimate of
the published evaluation's time per image.

    python benchmarks/bench_metrics.py [--resolution 256] [--config T] [--canvas 1024] [--images 1]
                                       [--tile-batch 4] [--device cpu] [--quick] [--out FILE.md]

Random weights (timing does not depend on them). The detector is pytorch-fid's FID Inception network
with random weights: the same architecture, hence the same work, as the real one (no weights file is
needed; NVIDIA's TorchScript detector is the same network). One warm-up render of one tile first.

Published-time estimate (no GPU here): FLOPs of one p x p synthesis pass and of one discriminator pass
are counted with torch.utils.flop_counter on the meta device, the Inception pass on one real sample. StyleGAN3's published
training speed (docs/configs.md of NVlabs/stylegan3: StyleGAN3-T 256x256, 1 A100, 49.81 s/kimg) is
converted to a per-synthesis-pass time assuming time is proportional to FLOPs, with the per-image
training work of StyleGAN3 (no path-length regulariser): G forward twice (G step + D step) and its
backward once (2x forward), D forward+backward three times (fake in G step, fake and real in D step),
i.e. 4 G + 9 D forward equivalents; lazy R1 is ignored. Putting all training time into G gives an upper
bound per pass. The published fid-full{R} renders ceil(R/p)^2 tiles per image plus one Inception pass,
at batch 4 (less efficient than training's 16 per GPU, so the real time is likely higher).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyres_fast.metrics.detectors import build_pytorch_fid, from_module  # noqa: E402
from anyres_fast.models import Discriminator, Generator  # noqa: E402
from benchmarks._harness import report  # noqa: E402

SG3_T256_A100_S_PER_KIMG = 49.81
G_FWD_PER_TRAIN_IMAGE, D_FWD_PER_TRAIN_IMAGE = 4, 9


def random_pytorch_fid_state(seed: int = 0) -> dict:
    """A state dict in the layout of pytorch-fid's weights file (its FID Inception), random weights.

    The layout comes from pytorch-fid's own classes built on the meta device (no allocation, no slow
    init); values are seeded normal weights, zero biases/means and unit variances."""
    from pytorch_fid import inception as pfi

    with torch.device("meta"):
        net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        for name, cls, kw in (("Mixed_5b", pfi.FIDInceptionA, dict(in_channels=192, pool_features=32)),
                              ("Mixed_5c", pfi.FIDInceptionA, dict(in_channels=256, pool_features=64)),
                              ("Mixed_5d", pfi.FIDInceptionA, dict(in_channels=288, pool_features=64)),
                              ("Mixed_6b", pfi.FIDInceptionC, dict(in_channels=768, channels_7x7=128)),
                              ("Mixed_6c", pfi.FIDInceptionC, dict(in_channels=768, channels_7x7=160)),
                              ("Mixed_6d", pfi.FIDInceptionC, dict(in_channels=768, channels_7x7=160)),
                              ("Mixed_6e", pfi.FIDInceptionC, dict(in_channels=768, channels_7x7=192)),
                              ("Mixed_7b", pfi.FIDInceptionE_1, dict(in_channels=1280)),
                              ("Mixed_7c", pfi.FIDInceptionE_2, dict(in_channels=2048))):
            setattr(net, name, cls(**kw))
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        if not v.is_floating_point():
            state[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith(("running_var", "bn.weight")):
            state[k] = torch.ones(v.shape)
        elif k.endswith(("bias", "running_mean")):
            state[k] = torch.zeros(v.shape)
        else:
            state[k] = torch.randn(v.shape, generator=g) * (2 / max(v[0].numel(), 1)) ** 0.5
    return state


def random_fid_inception() -> torch.nn.Module:
    """pytorch-fid's FID InceptionV3 with random weights, for timing only."""
    return build_pytorch_fid(random_pytorch_fid_state())


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.to(torch.float32) / 255)[0]


def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def model_flops(resolution: int, config: str, quick: bool) -> tuple:
    """FLOPs of one synthesis pass (one p x p tile) and one discriminator pass, counted on the meta
    device (shapes only, instant). The reference ops compute FIR filters on zero-inserted grids and
    discard strided outputs, so G's count is above what StyleGAN3's polyphase CUDA kernels do."""
    kw = dict(channel_base=256, channel_max=8, z_dim=8, w_dim=8) if quick else {}
    G = Generator(resolution=resolution, config=config, **kw).eval().to("meta")
    D = Discriminator(resolution, **({} if not quick else dict(channel_base=256, channel_max=8))).eval().to("meta")
    ws = torch.zeros(1, G.num_ws, G.w_dim, device="meta")
    t = torch.eye(3, device="meta").unsqueeze(0)
    g = flops(lambda: G.synthesis(ws, t, G.scale_features(torch.ones(1, device="meta")), half_dtype=None))
    d = flops(lambda: D(torch.zeros(1, 3, resolution, resolution, device="meta")))
    return g, d


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--config", default="T")
    ap.add_argument("--canvas", type=int, default=1024)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--tile-batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny generator and canvas (smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    kwargs = {}
    if args.quick:
        args.resolution, args.canvas, kwargs = 64, 128, dict(channel_base=256, channel_max=8, z_dim=8, w_dim=8)
    torch.manual_seed(0)
    G = Generator(resolution=args.resolution, config=args.config, **kwargs).eval().to(device)
    det = from_module(_Wrap(random_fid_inception()), name="pytorch-fid architecture, random weights").to(device)
    p, n = args.resolution, args.images
    tiles = math.ceil(args.canvas / p) ** 2
    z = torch.randn(n, G.z_dim)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    G.render(z[:1], p, tile_batch=1, progress=False, out_dtype=torch.uint8)        # warm-up, one tile
    sync()
    t0 = time.perf_counter()
    imgs = G.render(z, args.canvas, tile_batch=args.tile_batch, progress=False, out_dtype=torch.uint8)
    sync()
    t_gen = time.perf_counter() - t0
    det(imgs[:1])                                                                  # warm-up
    sync()
    t0 = time.perf_counter()
    det(imgs)
    sync()
    t_det = time.perf_counter() - t0

    g_flops, d_flops = model_flops(p, args.config, args.quick)
    inc_flops = flops(lambda: det(imgs[:1]))
    # StyleGAN3-T 256 on one A100: seconds per synthesis pass, if time is proportional to FLOPs.
    train_image_s = SG3_T256_A100_S_PER_KIMG / 1000
    per_g_pass = train_image_s * g_flops / (G_FWD_PER_TRAIN_IMAGE * g_flops + D_FWD_PER_TRAIN_IMAGE * d_flops)
    per_inc = per_g_pass * inc_flops / g_flops
    pub_per_image = tiles * per_g_pass + per_inc
    bound = train_image_s / G_FWD_PER_TRAIN_IMAGE        # if D cost nothing: an upper bound per pass

    rows = [
        "| what | value |", "|---|---|",
        f"| generator | config {args.config}, p = {p}{' (tiny, --quick)' if args.quick else ''}, random weights, "
        f"{sum(q.numel() for q in G.parameters()):,} parameters |",
        f"| fid@{args.canvas}: tiles per image | {tiles} |",
        f"| images timed | {n} (tile batch {args.tile_batch}, {G.synthesis.layers[0].weight.dtype} on {device.type}) |",
        f"| generation (tiled render, uint8 to host) | {t_gen:.2f} s = {t_gen / n:.2f} s/image |",
        f"| detector (FID Inception, {args.canvas}² uint8 in, resize to 299 inside) | {t_det:.2f} s = {t_det / n:.3f} s/image |",
        f"| **generation + detector** | **{n / (t_gen + t_det):.4f} images/s** ({(t_gen + t_det) / n:.2f} s/image) |",
        f"| FLOPs: one {p}² synthesis pass / one D pass / one Inception pass | {g_flops / 1e9:.1f} / {d_flops / 1e9:.1f} / {inc_flops / 1e9:.1f} GFLOP |",
        f"| published fid-full{args.canvas}, estimated per image on one A100 | {pub_per_image * 1e3:.0f} ms "
        f"({tiles} x {per_g_pass * 1e3:.1f} ms synthesis + {per_inc * 1e3:.2f} ms Inception; 50k images ≈ "
        f"{pub_per_image * 50_000 / 3600:.1f} h) |",
        f"| same, upper bound (all training time in G) | {tiles * bound * 1e3 + per_inc * 1e3:.0f} ms per image "
        f"(50k ≈ {(tiles * bound + per_inc) * 50_000 / 3600:.1f} h) |",
    ]
    intro = ("fid@R generation + detector throughput; the published time is an estimate from StyleGAN3's "
             "published training speed and FLOP counts (see the script's docstring).")
    return report("bench_metrics", device, intro, "\n".join(rows), args.out)


if __name__ == "__main__":
    main()
