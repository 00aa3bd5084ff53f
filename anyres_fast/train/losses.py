"""GAN losses of StyleGAN2/3 and the any-resolution teacher loss (docs/training.md).

All functions return per-sample or mean losses as float32 tensors with autograd graphs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import ops


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample generator loss softplus(-D(G(z))): (B, 1) -> (B,)."""
    return F.softplus(-fake_logits).flatten()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample discriminator loss softplus(D(fake)) + softplus(-D(real)): (B, 1) x2 -> (B,)."""
    return (F.softplus(fake_logits) + F.softplus(-real_logits)).flatten()


def r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample |grad_x D(x)|^2 at the reals, for R1, graph kept for the backward (both models use it).

    Args:
        real_img: (B, C, H, W) reals with requires_grad=True, the input that gave `real_logits`.
        real_logits: (B, 1) D(real_img).

    Returns:
        (B,) tensor, differentiable w.r.t. D's parameters.

    Raises:
        ValueError: real_img does not require grad.
    """
    if not real_img.requires_grad:
        raise ValueError("r1_penalty: real_img must require grad (set requires_grad_() before calling D)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True, only_inputs=True)
    return grad.square().sum(dim=[1, 2, 3])


def blur_sigma_at(nimg: float, init_sigma: float, fade_kimg: float) -> float:
    """StyleGAN3's D-input blur schedule: sigma fades linearly from init_sigma at 0 images to 0 at
    fade_kimg thousand images (stylegan3-r: init 10, fade batch * 200 / 32 kimg); 0 without a fade.

    Args:
        nimg: real images seen before the step. init_sigma: sigma at the start (pixels).
        fade_kimg: length of the fade in thousands of images (<= 0: no blur).

    Returns:
        sigma in pixels (0: no blur).
    """
    if fade_kimg <= 0:
        return 0.0
    return max(1.0 - nimg / (fade_kimg * 1e3), 0.0) * init_sigma


def blur_images(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable blur of D's inputs: taps 2^-(x/sigma)^2 for |x| <= floor(3 sigma), normalised to sum 1,
    zero padding, same size out (StyleGAN3's definition). sigma <= 1/3 leaves the images unchanged.

    Args:
        img: (B, C, H, W) images. sigma: in pixels.

    Returns:
        (B, C, H, W) in img's dtype, differentiable (R1 differentiates through it).
    """
    radius = math.floor(sigma * 3)
    if radius <= 0:
        return img
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64).div(sigma).square().neg().exp2()
    taps = (taps / taps.sum()).to(device=img.device, dtype=img.dtype if img.dtype == torch.float64 else torch.float32)
    return ops.upfirdn2d(img, taps, padding=radius)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of x (B, C, H, W) over mask (B, 1, H, W) and channels; 0 where the mask is empty."""
    m = mask.to(x.dtype)
    num = (x * m).sum(dim=[1, 2, 3])
    den = m.sum(dim=[1, 2, 3]) * x.shape[1]
    return num / den.clamp(min=1)


def teacher_loss(student: torch.Tensor, canvas, box_xy, teacher_img: torch.Tensor, lpips_net=None) -> dict:
    """Masked L1 + masked LPIPS between the student patches warped into the teacher frame and the teacher.

    Args:
        student: (B, C, p, p) generated patches (differentiable).
        canvas: canvas size N per sample ((B,) tensor or number); box_xy: (B, 2) top-left canvas pixels.
        teacher_img: (B, C, T, T) the teacher's whole image for the same latents (no grad needed).
        lpips_net: an `lpips.LPIPS(spatial=True)` module, or None for L1 only.

    Returns:
        {"l1": (B,), "lpips": (B,), "mask_fraction": (B,)} float32; lpips is zeros without lpips_net.
    """
    warped, mask = ops.teacher_warp(student.float(), canvas, box_xy, teacher_img.shape[-1])
    t = teacher_img.float()
    l1 = masked_mean((warped - t).abs(), mask)
    if lpips_net is not None:
        dist = lpips_net(warped.clamp(-1, 1), t.clamp(-1, 1))       # (B, 1, T, T) spatial distance map
        lp = masked_mean(dist, mask)
    else:
        lp = torch.zeros_like(l1)
    return {"l1": l1, "lpips": lp, "mask_fraction": mask.float().mean(dim=[1, 2, 3])}
