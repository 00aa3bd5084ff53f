"""InfinityGAN losses and the discriminator's coordinate head (docs/infinitygan_training.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anyres_fast.models import Discriminator
from anyres_fast.train import infinity_losses as L
from anyres_fast.train.losses import r1_penalty


def _toy_structure_synth(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(8, 8, 3))


def test_diversity_loss_finite_for_equal_local_latents_where_angular_form_is_nan(one_thread):
    """Pairs with equal z_l: ours is 0 with finite gradients for every seed; the published angular
    form (acos of a cosine that rounds to 1) gives a NaN loss or NaN/inf gradients for most seeds."""
    broken = 0
    for seed in range(8):
        net = _toy_structure_synth(seed)
        z = torch.randn(1, 6, 11, 11).repeat(4, 1, 1, 1)                 # both members of each pair equal

        ours = L.diversity_loss(z, net(z))
        ours.backward()
        assert torch.isfinite(ours) and ours.item() == 0.0
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())

        net.zero_grad()
        published = L.published_angular_diversity_loss(z, net(z))
        published.backward()
        finite = bool(torch.isfinite(published)) and all(torch.isfinite(p.grad).all() for p in net.parameters())
        broken += not finite
    assert broken >= 4, broken


def test_diversity_loss_equals_published_l1_formula_elsewhere_and_rewards_diversity():
    net = _toy_structure_synth()
    z = torch.randn(6, 6, 11, 11, generator=torch.Generator().manual_seed(2))
    x = net(z)
    d_z = (z[0::2] - z[1::2]).abs().mean()
    d_x = (x[0::2] - x[1::2]).abs().mean()
    published_l1 = 1 / (d_x / d_z + 1e-5)
    torch.testing.assert_close(L.diversity_loss(z, x), published_l1, rtol=1e-6, atol=0)
    # A pair whose outputs differ more costs less.
    assert L.diversity_loss(z, x * 2) < L.diversity_loss(z, x)
    # An odd last sample is ignored (no partner).
    torch.testing.assert_close(L.diversity_loss(z[:5], x[:5]), L.diversity_loss(z[:4], x[:4]))
    with pytest.raises(ValueError, match="at least 2"):
        L.diversity_loss(z[:1], x[:1])


def test_paired_and_style_mixing():
    x = torch.arange(5.0).view(5, 1)
    assert L.paired(x).view(-1).tolist() == [0, 0, 2, 2, 4]
    w0, w1 = torch.zeros(3, 4), torch.ones(3, 4)
    g = torch.Generator().manual_seed(0)
    crosses = []
    for _ in range(400):
        ws, cross = L.mix_styles(w0, w1, 9, generator=g)
        assert ws.shape == (3, 9, 4)
        assert torch.equal(ws[:, :cross], torch.zeros(3, min(cross, 9), 4))
        assert torch.equal(ws[:, cross:], torch.ones(3, 9 - min(cross, 9), 4))
        crosses.append(cross)
    crosses = np.array(crosses)
    assert set(crosses[crosses < 9]) == set(range(1, 9))                   # crossover in [1, num_ws - 1]
    assert abs((crosses < 9).mean() - 0.9) < 0.06                           # mixing probability 0.9
    ws, cross = L.mix_styles(w0, w1, 9, prob=0.0, generator=g)
    assert cross == 9 and torch.equal(ws, torch.zeros(3, 9, 4))


def test_gan_r1_and_coord_terms_against_direct_formulas():
    real, fake = torch.tensor([[0.5], [-1.0]]), torch.tensor([[2.0], [0.0]])
    want_d = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2 + (math.log1p(math.exp(2.0)) + math.log(2)) / 2
    assert abs(L.d_logistic_loss(real, fake).item() - want_d) < 1e-6
    assert abs(L.g_nonsaturating_loss(fake).item() - (math.log1p(math.exp(-2.0)) + math.log(2)) / 2) < 1e-6
    # Linear "discriminator": D(x) = <w, x>, so grad = w and the penalty is |w|^2.
    w = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    img = torch.randn(2, 3, 4, 4).requires_grad_()
    per_sample = r1_penalty(img, (img * w).flatten(1).sum(1, keepdim=True))
    torch.testing.assert_close(per_sample, w.square().sum().expand(2))
    pen = per_sample.mean()
    torch.testing.assert_close(L.r1_loss(pen), pen * 5 * 16)
    assert abs(L.coord_loss(torch.tensor([[0.5, 9.0], [-0.5, 9.0]]), torch.tensor([1.0, 0.0])).item() - 0.5) < 1e-7


def test_path_length_matches_an_explicit_jacobian():
    torch.manual_seed(4)
    A = torch.randn(2 * 8, 3 * 5 * 5, dtype=torch.float64) / 4      # image = tanh(styles (flattened) @ A)
    styles = torch.randn(2, 2, 8, dtype=torch.float64, requires_grad=True)
    img = torch.tanh(styles.flatten(1) @ A).view(2, 3, 5, 5)
    g = torch.Generator().manual_seed(7)
    pen, new_mean, lengths = L.path_length_penalty(img, styles, torch.tensor(1.0, dtype=torch.float64), generator=g)
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64) / 5
    jvp = (noise.flatten(1) * (1 - img.detach().flatten(1).square())) @ A.t()      # J^T noise, (B, L*C)
    want = jvp.square().mean(1).sqrt()                               # mean over layers and channels
    torch.testing.assert_close(lengths, want)
    torch.testing.assert_close(new_mean, 1 + 0.01 * (want.mean() - 1))
    torch.testing.assert_close(pen, (want - new_mean).square().mean())
    pen.backward()
    assert styles.grad is not None


def _toy_vertical_set(n_images, full=24, patch=12, seed=0):
    """Full images whose rows encode their height (a vertical ramp) under per-image colour and
    horizontal texture, so only the vertical position predicts the label."""
    from anyres_fast.data.infinity import crop_patch

    rng = np.random.default_rng(seed)
    patches, labels = [], []
    rows = np.linspace(-1, 1, full, dtype=np.float32)[:, None]
    for _ in range(n_images):
        tex = rng.normal(0, 0.2, size=(3, 1, full)).astype(np.float32)
        base = rng.uniform(-0.05, 0.05, size=(3, 1, 1)).astype(np.float32)
        img = rows[None] + tex + base
        p, top, left, label = crop_patch(img, patch, rng)
        assert label == 2 * top / (full - patch) - 1
        patches.append(p)
        labels.append(label)
    return torch.from_numpy(np.stack(patches)), torch.tensor(labels, dtype=torch.float32)


def _train_coord_head(images, labels, held_out, steps=40, seed=0):
    torch.manual_seed(seed)
    D = Discriminator(12, channel_base=128, channel_max=16, aux_outputs=1, any_resolution=True)
    opt = torch.optim.Adam(D.parameters(), lr=3e-3, betas=(0.0, 0.99))
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (16,), generator=g)
        _, aux = D(images[idx])
        loss = L.coord_loss(aux, labels[idx]) * L.COORD_WEIGHT
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        return losses, L.coord_loss(D(held_out[0])[1], held_out[1]).item()


def test_coordinate_head_learns_vertical_position_and_needs_the_labels(one_thread):
    images, labels = _toy_vertical_set(96, seed=0)
    held_out = _toy_vertical_set(64, seed=1)
    losses, held = _train_coord_head(images, labels, held_out)
    start, end = float(np.mean(losses[:10])), float(np.mean(losses[-20:]))
    assert end < 0.5 * start, (start, end)
    assert held < 0.15, held                      # held-out images: it learned the position itself

    # Control: the same images with labels not matched to them (coordinates not wired): the head
    # cannot predict held-out positions better than a constant (L1 about 0.5 for uniform labels).
    shuffled = labels[torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(5))]
    _, bad_held = _train_coord_head(images, shuffled, held_out)
    assert bad_held > 0.35 and bad_held > 2 * held, (held, bad_held)


def test_discriminator_odd_sizes_follow_the_published_schedule(one_thread):
    D = Discriminator(101, channel_base=2048, channel_max=8, aux_outputs=1, any_resolution=True)
    assert D.block_resolutions == [128, 64, 32, 16, 8]            # 101 -> 50 -> 25 -> 12 -> 6 -> 3
    assert D.b4.fc.weight.shape == (8, 8 * 3 * 3) and D.b4.aux_fc.weight.shape == (8, 8 * 3 * 3)
    logits, aux = D(torch.randn(2, 3, 101, 101))
    assert logits.shape == (2, 1) and aux.shape == (2, 1)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(101)


def _published_angular_similarity(a, b):
    """The published formula, written out: 1 - acos(<a, b> / (|a| |b|)) / pi on flattened samples."""
    a, b = a.flatten(1), b.flatten(1)
    return 1 - torch.acos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))) / math.pi


def test_angular_diversity_equals_the_published_form_where_finite_and_is_finite_where_not():
    g = torch.Generator().manual_seed(11)
    net = _toy_structure_synth(3).double()
    z = torch.randn(6, 6, 11, 11, generator=g, dtype=torch.float64)
    x = net(z)
    s_z = _published_angular_similarity(z[0::2], z[1::2]).mean()
    s_x = _published_angular_similarity(x[0::2], x[1::2]).mean()
    published = 1 / (s_x / s_z + 1e-5)
    ours = L.angular_diversity_loss(z, x)
    torch.testing.assert_close(ours, published, rtol=1e-12, atol=0)
    gp = torch.autograd.grad(published, list(net.parameters()), retain_graph=True)
    go = torch.autograd.grad(ours, list(net.parameters()))
    for a, b in zip(go, gp):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # Opposite members (cos = -1) and near-equal ones: finite value and gradient.
    for zz in (torch.cat([z[:1], -z[:1]]), torch.cat([z[:1], z[:1] * (1 + 1e-9)])):
        xx = zz.clone().requires_grad_()
        loss = L.angular_diversity_loss(zz, xx * 2)
        (grad,) = torch.autograd.grad(loss, xx)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # Equal members, where the published form is NaN for most seeds: the limit 1 / (1 + eps), gradient 0.
    nan_seeds = 0
    for seed in range(8):
        net = _toy_structure_synth(seed)
        zz = torch.randn(1, 6, 11, 11).repeat(4, 1, 1, 1)
        ours = L.angular_diversity_loss(zz, net(zz))
        ours.backward()
        assert abs(ours.item() - 1 / (1 + 1e-5)) < 1e-6
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
        pub = L.published_angular_diversity_loss(zz, net(zz))
        nan_seeds += not bool(torch.isfinite(pub))
    assert L.diversity("l1", z, x) == L.diversity_loss(z, x)
    with pytest.raises(ValueError, match="angular"):
        L.diversity("cosine", z, x)


def test_path_length_gradient_equals_the_published_one():
    """Published g_path_regularize: mean' = m.item() + decay * (mean(lengths) - m) enters the penalty
    with its gradient (not detached); the stored mean is detached."""
    torch.manual_seed(5)
    A = torch.randn(2 * 8, 3 * 5 * 5, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(4, 2, 8, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(0.7, dtype=torch.float64)

    def image():
        return torch.tanh(styles.flatten(1) @ A).view(4, 3, 5, 5)

    img = image()
    pen, new_mean, lengths = L.path_length_penalty(img, styles, m, 0.01, generator=torch.Generator().manual_seed(9))
    ours = torch.autograd.grad(pen, [A])[0]

    img = image()
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) / 5
    (grad,) = torch.autograd.grad((img * noise).sum(), styles, create_graph=True)
    pl = grad.pow(2).mean([1, 2]).sqrt()
    path_mean = m.item() + 0.01 * (pl.mean() - m)
    published = (pl - path_mean).pow(2).mean()
    want = torch.autograd.grad(published, [A])[0]
    assert ((ours - want).abs().max() / want.abs().max()).item() <= 1e-10
    assert not new_mean.requires_grad and abs(new_mean.item() - path_mean.item()) < 1e-15
    # The detached-mean variant differs measurably (what the published code does not do).
    img = image()
    (grad,) = torch.autograd.grad((img * noise).sum(), styles, create_graph=True)
    pl = grad.pow(2).mean([1, 2]).sqrt()
    detached = torch.autograd.grad((pl - path_mean.detach()).pow(2).mean(), [A])[0]
    assert ((detached - want).abs().max() / want.abs().max()).item() > 1e-4


def test_minibatch_std_group_follows_the_published_rule(tmp_path, one_thread):
    """Published D: the smallest divisor i of the batch with 4 <= i < int(sqrt(batch)), else the batch
    (worked out by hand for these batches)."""
    from anyres_fast.train.infinity_recipe import InfinityRecipe, InfinityTrainConfig, published_mbstd_group
    from anyres_fast.train.trainer import Context, TrainOptions
    from helpers import write_images
    want = {4: 4, 8: 8, 12: 12, 16: 16, 20: 20, 24: 24, 32: 4, 36: 4, 49: 49, 64: 4, 100: 4}
    assert {b: published_mbstd_group(b) for b in want} == want
    data = write_images(str(tmp_path / "d"), [(40, 40)] * 2)
    for batch, group in ((4, 4), (16, 16)):
        rec = InfinityRecipe(InfinityTrainConfig(data=data, tiny=True, cache_dir=str(tmp_path / "c")))
        rec.build(Context(TrainOptions(out=str(tmp_path / "o"), batch=batch, batch_gpu=4), torch.device("cpu"), 0, 1))
        assert rec.D.b4.mbstd.group_size == group
