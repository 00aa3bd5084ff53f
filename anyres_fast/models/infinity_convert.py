"""Loading the published InfinityGAN checkpoints (hubert0527/infinityGAN) into InfinityGenerator.

The published generator (`g_ema` in its checkpoints) stores modulated weights as (1, O, I, k, k), the
per-layer affine as `modulation`, the bias of the fused leaky ReLU as `activate.bias`, the noise
strength as `noise.weight` (1,) and the ToRGB bias as (1, 3, 1, 1). Its mapping is an nn.Sequential
whose entry 0 is the PixelNorm. The equalised-learning-rate scales are the same as ours, so tensors
are copied unchanged apart from those reshapes. Names the published model registers but never reads
are dropped and reported: the 4x4 `const_z` input (G_S output replaces it) and the `noises.noise_i`
buffers (noise is passed explicitly or drawn fresh). The fixed [1,2,1] filters are checked and dropped.
"""
from __future__ import annotations

import re
from typing import Dict

import torch

from .infinity import InfinityConfig, patch_size_for

UNUSED = (re.compile(r"^texture_synthesizer\.const_z\.input$"),
          re.compile(r"^texture_synthesizer\.noises\.noise_\d+$"))
FILTERS = (re.compile(r"^texture_synthesizer\.convs\.\d+\.conv\.blur\.kernel$"),
           re.compile(r"^texture_synthesizer\.to_rgbs\.\d+\.upsample\.kernel$"))

_RULES = [
    # (published pattern, our name template, kind)
    (r"structure_synthesizer\.implicit_model\.conv_stack\.(\d+)\.conv\.conv\.weight",
     "structure_synthesizer.blocks.{0}.weight", "weight5"),
    (r"structure_synthesizer\.implicit_model\.conv_stack\.(\d+)\.conv\.conv\.modulation\.(weight|bias)",
     "structure_synthesizer.blocks.{0}.affine.{1}", "copy"),
    (r"structure_synthesizer\.implicit_model\.conv_stack\.(\d+)\.conv\.activate\.bias",
     "structure_synthesizer.blocks.{0}.bias", "copy"),
    (r"texture_synthesizer\.mapping\.(\d+)\.(weight|bias)", "mapping_network.fc{0}.{1}", "mapping"),
    (r"texture_synthesizer\.convs\.(\d+)\.conv\.weight", "texture_synthesizer.convs.{0}.weight", "weight5"),
    (r"texture_synthesizer\.convs\.(\d+)\.conv\.modulation\.(weight|bias)",
     "texture_synthesizer.convs.{0}.affine.{1}", "copy"),
    (r"texture_synthesizer\.convs\.(\d+)\.noise\.weight", "texture_synthesizer.convs.{0}.noise_strength", "scalar"),
    (r"texture_synthesizer\.convs\.(\d+)\.activate\.bias", "texture_synthesizer.convs.{0}.bias", "copy"),
    (r"texture_synthesizer\.to_rgbs\.(\d+)\.conv\.weight", "texture_synthesizer.torgbs.{0}.weight", "weight5"),
    (r"texture_synthesizer\.to_rgbs\.(\d+)\.conv\.modulation\.(weight|bias)",
     "texture_synthesizer.torgbs.{0}.affine.{1}", "copy"),
    (r"texture_synthesizer\.to_rgbs\.(\d+)\.bias", "texture_synthesizer.torgbs.{0}.bias", "rgb_bias"),
]
_RULES = [(re.compile("^" + p + "$"), t, k) for p, t, k in _RULES]


def _strip(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop DataParallel's `module.` prefix."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _expected_filter() -> torch.Tensor:
    f = torch.tensor([1.0, 2.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum() * 4


def convert_official_state_dict(sd: Dict[str, torch.Tensor], return_dropped: bool = False):
    """Map a published generator state dict (its `g_ema`) to InfinityGenerator's names and shapes.

    Args:
        sd: name -> tensor (optionally with a `module.` prefix).
        return_dropped: also return the names that were dropped on purpose.
    Returns:
        our state dict, or (state dict, dropped names) with return_dropped.
    Raises:
        ValueError: a name no rule covers (listed), a tensor of an unexpected rank, or a fixed filter
            that differs from [1,2,1] x [1,2,1] / 16 * 4.
    """
    sd = _strip(sd)
    out, dropped, unknown = {}, [], []
    for name, t in sd.items():
        if any(p.match(name) for p in UNUSED):
            dropped.append(name)
            continue
        if any(p.match(name) for p in FILTERS):
            if t.shape != (3, 3) or not torch.allclose(t.float().cpu(), _expected_filter(), atol=1e-6):
                raise ValueError(f"convert_official_state_dict: {name} is not the [1,2,1] filter this model "
                                 f"uses (shape {tuple(t.shape)})")
            dropped.append(name)
            continue
        for pattern, template, kind in _RULES:
            m = pattern.match(name)
            if m is None:
                continue
            groups = list(m.groups())
            if kind == "mapping":
                if int(groups[0]) < 1:
                    raise ValueError(f"convert_official_state_dict: {name}: mapping entry 0 is the PixelNorm "
                                     f"and has no parameters")
                groups[0] = str(int(groups[0]) - 1)
            new = template.format(*groups)
            if kind == "weight5":
                if t.ndim != 5 or t.shape[0] != 1:
                    raise ValueError(f"convert_official_state_dict: {name} should be (1, O, I, k, k), "
                                     f"got {tuple(t.shape)}")
                t = t[0]
            elif kind == "scalar":
                if t.numel() != 1:
                    raise ValueError(f"convert_official_state_dict: {name} should hold one value, got {tuple(t.shape)}")
                t = t.reshape([])
            elif kind == "rgb_bias":
                t = t.reshape(-1)
            out[new] = t.detach().clone()
            break
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"convert_official_state_dict: {len(unknown)} tensors match no published InfinityGAN "
                         f"generator name: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return (out, sorted(dropped)) if return_dropped else out


def config_from_official_state_dict(sd: Dict[str, torch.Tensor], ts_input: int = 11) -> InfinityConfig:
    """The InfinityConfig whose shapes match a published generator state dict.

    Raises:
        ValueError: the channel widths do not follow min(channel_max, channel_base / 2^pair)."""
    sd = _strip(sd)
    blocks = sorted({int(m.group(1)) for k in sd
                     for m in [re.match(r"^structure_synthesizer\.implicit_model\.conv_stack\.(\d+)\.", k)] if m})
    convs = sorted({int(m.group(1)) for k in sd for m in [re.match(r"^texture_synthesizer\.convs\.(\d+)\.", k)] if m})
    maps = sorted({int(m.group(1)) for k in sd for m in [re.match(r"^texture_synthesizer\.mapping\.(\d+)\.", k)] if m})
    if not blocks or not convs or not maps or len(convs) % 2:
        raise ValueError("config_from_official_state_dict: not a published InfinityGAN generator state dict")
    w0 = sd[f"structure_synthesizer.implicit_model.conv_stack.{blocks[0]}.conv.conv.weight"]
    local_dim, k = w0.shape[1], w0.shape[3]
    z_dim = sd[f"structure_synthesizer.implicit_model.conv_stack.{blocks[0]}.conv.conv.modulation.weight"].shape[1]
    depth = len(convs) // 2
    chans = [sd[f"texture_synthesizer.convs.{2 * p}.conv.weight"].shape[1 + 0] for p in range(depth)]
    channel_max = max(chans)
    # channel_base: the smallest power-of-two multiple that reproduces the narrowing pairs.
    base = channel_max
    while any(min(channel_max, base // 2 ** p) != c for p, c in enumerate(chans)) and base < 2 ** 20:
        base *= 2
    if any(min(channel_max, base // 2 ** p) != c for p, c in enumerate(chans)):
        raise ValueError(f"config_from_official_state_dict: G_T widths {chans} do not follow "
                         f"min(channel_max, channel_base / 2^pair)")
    return InfinityConfig(patch_size=patch_size_for(depth, ts_input), ts_input=ts_input, z_dim=int(z_dim),
                          local_dim=int(local_dim), ss_layers=len(blocks), ss_radius=int(k // 2),
                          mapping_layers=len(maps), channel_base=int(base), channel_max=int(channel_max))


def load_official_checkpoint(path: str, key: str = "g_ema") -> Dict[str, torch.Tensor]:
    """The generator state dict of a published checkpoint (`best_fid.pth.tar`, `inter_*.pth.tar`).

    Reading never runs code from the file: torch.load(weights_only=True), which admits tensors and plain
    containers; the numpy scalars the training script stores (e.g. best_fid) are admitted by name.

    Raises:
        FileNotFoundError: no such file. KeyError: `key` is not in the checkpoint (lists its keys).
        pickle.UnpicklingError: the file holds other objects (refused, not executed).
    """
    import os
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_official_checkpoint: {path} not found")
    safe = []
    try:
        import numpy as np
        safe = [np.dtype, np.ndarray]
        try:
            from numpy.core.multiarray import scalar, _reconstruct
        except ImportError:                                                  # numpy >= 2
            from numpy._core.multiarray import scalar, _reconstruct
        safe += [scalar, _reconstruct]
        safe += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
    except ImportError:
        pass
    with torch.serialization.safe_globals(safe):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and key in ckpt:
        return ckpt[key]
    if isinstance(ckpt, dict) and any(k.startswith(("structure_synthesizer.", "texture_synthesizer.",
                                                    "module.")) for k in ckpt):
        return ckpt                                                          # already a bare state dict
    keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise KeyError(f"load_official_checkpoint: {path} has no {key!r} entry (keys: {keys})")


def from_official(source, ts_input: int = 11):
    """An InfinityGenerator with the weights of a published checkpoint (path) or state dict.

    Returns:
        (model, dropped names)."""
    from .infinity import InfinityGenerator
    sd = load_official_checkpoint(source) if isinstance(source, str) else source
    model = InfinityGenerator(config_from_official_state_dict(sd, ts_input))
    state, dropped = convert_official_state_dict(sd, return_dropped=True)
    model.load_state_dict(state, strict=True)
    return model, dropped
