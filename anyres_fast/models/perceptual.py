"""LPIPS (Zhang et al. 2018, AlexNet backbone) in one place: the teacher loss of the any-resolution
patch phase, InfinityGAN inversion, outpainting and inbetweening all build it here.

Nothing is downloaded. Mode "alex" is the published metric: the `lpips` package's linear heads (shipped
inside the package) on torchvision's ImageNet AlexNet, whose weights must already be in the torch hub
cache (`<torch hub>/checkpoints/alexnet-owt-7be5be79.pth`; TORCH_HOME moves it). Mode "random" is a
seeded random backbone with the same heads, for tests and CPU demos: it measures nothing perceptual,
but it is the same function every time (seed 0) and it leaves the caller's random state untouched.
"""
from __future__ import annotations

import os

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"      # torchvision's AlexNet_Weights.IMAGENET1K_V1, what lpips loads
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
MODES = ("alex", "random")


class LPIPSWeightsMissing(FileNotFoundError):
    """The LPIPS AlexNet backbone weights are not in the torch cache (the message names file and folder)."""


def alexnet_weights_path() -> str:
    """Where torchvision (and so lpips) looks for the AlexNet weights: <torch hub>/checkpoints/<file>."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILE)


def check_weights(mode: str) -> None:
    """Raise before any work when `mode` needs weights that are not on this machine.

    Args:
        mode: "alex" or "random".

    Raises:
        ValueError: an unknown mode.
        LPIPSWeightsMissing: mode "alex" and the AlexNet weights file is absent.
    """
    if mode not in MODES:
        raise ValueError(f"lpips mode must be alex or random, got {mode!r}")
    path = alexnet_weights_path()
    if mode == "alex" and not os.path.isfile(path):
        raise LPIPSWeightsMissing(
            f"the LPIPS AlexNet backbone weights {ALEXNET_FILE} are not in the torch cache folder "
            f"{os.path.dirname(path)} (copy the file there, e.g. download {ALEXNET_URL} on a machine that is "
            f"online, or set TORCH_HOME; --lpips random uses a random backbone)")


def build_lpips(mode: str = "alex", spatial: bool = False, device=None) -> torch.nn.Module:
    """The LPIPS AlexNet distance, frozen, in eval mode.

    Args:
        mode: "alex" (ImageNet backbone from the torch cache) or "random" (seeded random backbone).
        spatial: return the (B, 1, H, W) distance map instead of its spatial mean (B, 1, 1, 1).
        device: where to put it.

    Returns:
        The module: `net(x, y)` for images in [-1, 1].

    Raises:
        ValueError: an unknown mode.
        LPIPSWeightsMissing: mode "alex" and the weights file is absent.
    """
    check_weights(mode)
    import inspect
    import warnings

    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # torchvision's notice about lpips' `pretrained=` call
        torch.manual_seed(0)
        if mode == "alex":
            net = lpips.LPIPS(net="alex", spatial=spatial, verbose=False)
        else:
            # Built on the meta device, then only the used layers are materialised: lpips builds a whole
            # torchvision AlexNet (58M classifier parameters it then drops), whose random init takes seconds.
            with torch.device("meta"):
                net = lpips.LPIPS(net="alex", spatial=spatial, pnet_rand=True, pretrained=False, verbose=False)
            net = net.to_empty(device="cpu")
            for m in net.net.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.reset_parameters()
            net.scaling_layer = lpips.ScalingLayer()
            heads = os.path.join(os.path.dirname(inspect.getfile(lpips.LPIPS)), "weights", "v0.1", "alex.pth")
            net.load_state_dict(torch.load(heads, map_location="cpu", weights_only=True), strict=False)
    return net.eval().requires_grad_(False).to(device)
