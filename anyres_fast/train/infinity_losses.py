"""InfinityGAN training losses (Lin et al., ICLR 2022), see docs/infinitygan_training.md.

Every function here is pure: it takes tensors (and, where a gradient is needed, the inputs that
produced them) and returns loss tensors, so a trainer or a test can compute the same numbers.

- non-saturating logistic GAN loss for D and G;
- R1 on reals (gamma 10, applied every 16 steps, scaled by 16);
- path-length regulariser on the W+ styles (weight 2, every 4 steps, decay 0.01), reduced over both
  the layer and the channel dimension as the published InfinityGAN code does;
- L1 regression of the vertical coordinate by D's auxiliary head (weight 1);
- the mode-seeking diversity loss on G_S outputs: the published angular form (default) computed so it
  stays finite when the two members of a pair are equal (the published acos goes NaN there), or the
  ratio of L1 distances;
- style mixing of two mapped latents into W+ with one crossover layer per batch, as published.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

# Published hyperparameters (InfinityGAN configs; docs/infinitygan_training.md lists them).
R1_GAMMA = 10.0
R1_EVERY = 16
PL_WEIGHT = 2.0
PL_EVERY = 4
PL_DECAY = 0.01
PL_BATCH_SHRINK = 2
COORD_WEIGHT = 1.0
DIVERSITY_WEIGHT = 1.0
DIVERSITY_EPS = 1e-5
MIXING_PROB = 0.9


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator's non-saturating loss: mean softplus(-D(real)) + mean softplus(D(fake)).

    Args:
        real_logits, fake_logits: (B, 1) float logits.

    Returns:
        0-d tensor.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator's non-saturating loss: mean softplus(-D(fake)).

    Args:
        fake_logits: (B, 1) float logits of generated images.

    Returns:
        0-d tensor.
    """
    return F.softplus(-fake_logits).mean()


def r1_loss(penalty: torch.Tensor, gamma: float = R1_GAMMA, every: int = R1_EVERY) -> torch.Tensor:
    """Lazy R1 term added to D's loss on the steps it runs: gamma/2 * penalty * every.

    Args:
        penalty: the batch mean of `anyres_fast.train.losses.r1_penalty` (a 0-d tensor).
        gamma: R1 weight (published 10).
        every: interval of the lazy regulariser in steps (published 16); the term is scaled by it.

    Returns:
        0-d tensor.
    """
    return penalty * (gamma / 2) * every


def coord_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between D's auxiliary prediction and the vertical coordinate (only the vertical one).

    Args:
        pred: (B, K) output of D's aux head; column 0 is the vertical coordinate.
        target: (B,) or (B, 1) vertical coordinate in [-1, 1].

    Returns:
        0-d tensor (multiply by COORD_WEIGHT, published 1).

    Raises:
        ValueError: batch sizes differ.
    """
    target = target.reshape(-1).to(pred.dtype)
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"coord_loss: pred has batch {pred.shape[0]}, target {target.shape[0]}")
    return (pred[:, 0] - target).abs().mean()


def path_length_penalty(fake_img: torch.Tensor, styles: torch.Tensor, mean_path_length: torch.Tensor,
                        decay: float = PL_DECAY, generator: Optional[torch.Generator] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StyleGAN2 path-length regulariser w.r.t. the W+ styles, InfinityGAN's reduction.

    The Jacobian-vector product with image-space noise scaled by 1/sqrt(H*W) is reduced with
    sqrt(mean(g^2)) over both the layer and the channel dimension (the published InfinityGAN code;
    StyleGAN2 sums the channels instead, a factor sqrt(w_dim) apart).

    Args:
        fake_img: (B, C, H, W) images generated from `styles`.
        styles: (B, L, w_dim) W+ styles that produced fake_img (part of the graph).
        mean_path_length: 0-d tensor, running mean (start at 0).
        decay: running-mean update rate (published 0.01).
        generator: optional RNG for the projection noise.

    Returns:
        (penalty, new_mean_path_length, path_lengths): penalty is a 0-d tensor to be multiplied by
        PL_WEIGHT * PL_EVERY; the new running mean is returned detached (the state to keep), but inside
        the penalty it is not: as published, the updated mean m + decay * (mean(lengths) - m) carries
        the gradient of its decay * mean(lengths) term (about 1% of the gradient at decay 0.01);
        path_lengths is (B,).
    """
    h, w = fake_img.shape[2], fake_img.shape[3]
    noise = torch.randn(fake_img.shape, device=fake_img.device, dtype=fake_img.dtype,
                        generator=generator) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), styles, create_graph=True)
    path_lengths = grad.square().mean(dim=(1, 2)).sqrt()
    old = mean_path_length.detach()
    new_mean = old + decay * (path_lengths.mean() - old)
    penalty = (path_lengths - new_mean).square().mean()
    return penalty, new_mean.detach(), path_lengths


def _pairs(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0] - (x.shape[0] % 2)          # an odd last sample has no partner
    if n == 0:
        raise ValueError("diversity loss: needs a batch of at least 2 (pairs of samples)")
    return x[0:n:2], x[1:n:2]


def _latent_and_structure_pairs(local_latent: torch.Tensor, structure: torch.Tensor) -> tuple:
    """The pairs (0, 1), (2, 3), ... of the local latents and of G_S's outputs, batches checked."""
    if local_latent.shape[0] != structure.shape[0]:
        raise ValueError(f"diversity_loss: z_l batch {local_latent.shape[0]} != z_S batch {structure.shape[0]}")
    return _pairs(local_latent), _pairs(structure)


def diversity_loss(local_latent: torch.Tensor, structure: torch.Tensor,
                   eps: float = DIVERSITY_EPS, tiny: float = 1e-8) -> torch.Tensor:
    """Mode-seeking diversity loss on G_S outputs, ratio of L1 distances, finite everywhere.

    Samples (0, 1), (2, 3), ... are pairs sharing z_g and coordinates and differing in z_l.
    With d_z = mean|z_l[a] - z_l[b]| and d_x = mean|z_S[a] - z_S[b]| (means over the whole batch of
    pairs, as published), the published L1 loss is 1 / (d_x / d_z + eps), which is 0/0 = NaN when
    the pair's local latents are equal. The same value is d_z / (d_x + eps * d_z); a `tiny` in the
    denominator makes it 0 (and its gradient finite) at d_z = d_x = 0 and changes nothing measurable
    elsewhere.

    Args:
        local_latent: (B, C, H, W) the z_l that G_S consumed, B >= 2.
        structure: (B, C', h, w) G_S's output z_S for those inputs.
        eps: the published 1e-5.
        tiny: guard for the 0/0 case.

    Returns:
        0-d tensor (multiply by DIVERSITY_WEIGHT, published 1).

    Raises:
        ValueError: fewer than 2 samples or mismatched batches.
    """
    (za, zb), (xa, xb) = _latent_and_structure_pairs(local_latent, structure)
    d_z = (za - zb).abs().mean()
    d_x = (xa - xb).abs().mean()
    return d_z / (d_x + eps * d_z + tiny)


def angular_similarity(a: torch.Tensor, b: torch.Tensor, tiny: float = 1e-30) -> torch.Tensor:
    """1 - angle(a, b) / pi per sample, finite everywhere with finite gradients.

    The published form 1 - acos(cos)/pi has an infinite acos derivative at cos = +-1 (a pair of equal or
    opposite members) and a NaN when rounding puts cos above 1. Here the angle is
    2 atan2(|u - v|, |u + v|) of the unit vectors u, v (the same angle, well conditioned near 0 and pi);
    the norm's gradient at 0 is taken as 0, so equal members give similarity 1 with a zero gradient.

    Args:
        a, b: (B, ...) tensors of the same shape (flattened per sample).
        tiny: guard against zero vectors.

    Returns:
        (B,) tensor in [0, 1].
    """
    a, b = a.flatten(1), b.flatten(1)
    u = a / a.norm(dim=1, keepdim=True).clamp_min(tiny)
    v = b / b.norm(dim=1, keepdim=True).clamp_min(tiny)
    angle = 2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1))
    return 1 - angle / math.pi


def angular_diversity_loss(local_latent: torch.Tensor, structure: torch.Tensor,
                           eps: float = DIVERSITY_EPS, tiny: float = 1e-20) -> torch.Tensor:
    """The published InfinityGAN diversity loss (its configs set diversity_angular), NaN-safe.

    1 / (s_x / s_z + eps) with s the mean over the batch's pairs (0, 1), (2, 3), ... of
    `angular_similarity` of the local latents (s_z) and of the G_S outputs (s_x), computed as
    s_z / (s_x + eps s_z + tiny). Equal to the published value wherever that is finite; where the
    published one is NaN: equal pair members give its limit 1 / (1 + eps) with a zero gradient, and
    s_z = s_x = 0 (opposite members, 0/0 published) gives 0, both with finite gradients.

    Args:
        local_latent: (B, C, H, W) the z_l that G_S consumed, B >= 2.
        structure: (B, C', h, w) G_S's output z_S for those inputs.
        eps: the published 1e-5. tiny: guard for the 0/0 case.

    Returns:
        0-d tensor (multiply by DIVERSITY_WEIGHT, published 1).

    Raises:
        ValueError: fewer than 2 samples or mismatched batches.
    """
    (za, zb), (xa, xb) = _latent_and_structure_pairs(local_latent, structure)
    s_z = angular_similarity(za, zb).mean()
    s_x = angular_similarity(xa, xb).mean()
    return s_z / (s_x + eps * s_z + tiny)


DIVERSITY_FORMS = ("angular", "l1")


def diversity(form: str, local_latent: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
    """The diversity loss of the given form: "angular" (published) or "l1" (the L1 ratio).

    Args:
        form: "angular" or "l1". local_latent, structure: as for `diversity_loss`.

    Returns:
        0-d tensor.

    Raises:
        ValueError: an unknown form.
    """
    if form == "angular":
        return angular_diversity_loss(local_latent, structure)
    if form == "l1":
        return diversity_loss(local_latent, structure)
    raise ValueError(f"diversity form must be one of {DIVERSITY_FORMS}, got {form!r}")


def _angular_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    return 1 - torch.acos(cos) / math.pi


def published_angular_diversity_loss(local_latent: torch.Tensor, structure: torch.Tensor,
                                     eps: float = DIVERSITY_EPS) -> torch.Tensor:
    """The published angular variant written with acos, kept to show its failure (training uses
    `angular_diversity_loss`, the same value computed stably).

    1 / (s_x / s_z + eps) with s = 1 - acos(cos angle)/pi per pair, averaged. The derivative of acos
    is infinite at cos = +-1, so equal (or exactly opposite) pair members give NaN gradients; users
    reported NaN in D from this term (hubert0527/infinityGAN issue #4).

    Args:
        local_latent, structure: as for `diversity_loss`.
        eps: the published 1e-5.

    Returns:
        0-d tensor.
    """
    za, zb = _pairs(local_latent)
    xa, xb = _pairs(structure)
    s_z = _angular_similarity(za, zb).mean()
    s_x = _angular_similarity(xa, xb).mean()
    return 1 / (s_x / s_z + eps)


def paired(x: torch.Tensor) -> torch.Tensor:
    """Duplicate every even sample over its odd neighbour ([A, B, C, D] -> [A, A, C, C]).

    Used for z_g and the coordinates so the pairs of the diversity loss differ only in z_l.

    Args:
        x: (B, ...) tensor.

    Returns:
        Tensor of the same shape.
    """
    idx = torch.arange(x.shape[0], device=x.device) // 2 * 2
    return x.index_select(0, idx)


def mix_styles(w0: torch.Tensor, w1: torch.Tensor, num_ws: int, prob: float = MIXING_PROB,
               generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, int]:
    """W+ styles with style mixing as published: with probability `prob` one crossover layer
    drawn uniformly from [1, num_ws - 1] for the whole batch; layers before it use w0, the rest w1.

    Args:
        w0, w1: (B, w_dim) mapped latents of the two global latents.
        num_ws: number of W+ entries of the texture synthesizer.
        prob: mixing probability (published 0.9).
        generator: optional CPU RNG (default: torch's global RNG, which checkpoints record).

    Returns:
        (ws (B, num_ws, w_dim), crossover): crossover == num_ws means no mixing happened.
    """
    cross = num_ws
    if num_ws > 1 and torch.rand((), generator=generator).item() < prob:
        cross = int(torch.randint(1, num_ws, (), generator=generator).item())
    layer = torch.arange(num_ws, device=w0.device).view(1, -1, 1)
    ws = torch.where(layer < cross, w0.unsqueeze(1), w1.unsqueeze(1))
    return ws, cross
