"""anyres_fast.train.infinity_losses unit checks (issue 21), each against a formula written here:
the published angular diversity loss of InfinityGAN (Lin et al., ICLR 2022: 1 / (s_x / s_z + eps) with
s = 1 - angle / pi averaged over the pairs) by a per-pair acos loop, the L1 and angular forms' range
[0, 1/eps] in their degenerate corners, the form switch, error messages, coord_loss's dtype, style mixing
(crossover range, probability, its own generator, device) and StyleGAN2's path-length regulariser
(Karras et al., CVPR 2020: noise / sqrt(H W), J^T noise) on a non-square image by an explicit Jacobian."""
from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from anyres_fast.train import infinity_losses as L

pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _acos_similarity(a, b):
    """1 - angle / pi of two flattened samples, angle from acos of the cosine (generic, well-conditioned inputs)."""
    a, b = a.flatten().tolist(), b.flatten().tolist()
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return 1 - math.acos(max(-1.0, min(1.0, dot / (na * nb)))) / math.pi


def _published_angular(z, x, eps=1e-5):
    pairs = range(0, z.shape[0] - 1, 2)
    s_z = sum(_acos_similarity(z[i], z[i + 1]) for i in pairs) / len(pairs)
    s_x = sum(_acos_similarity(x[i], x[i + 1]) for i in pairs) / len(pairs)
    return 1 / (s_x / s_z + eps)


class _SameDevice(TorchFunctionMode):
    """Refuses any torch call that mixes tensors of different devices (0-d ones aside), as CUDA kernels do;
    lets a CPU test with meta tensors catch a tensor built on the default device. shapes_only: run calls
    on meta tensors with CPU zeros instead and move the result to meta (meta comparisons with a Python
    scalar go through decompositions that import torch._dynamo, seconds; only shapes matter here)."""

    def __init__(self, shapes_only=False):
        super().__init__()
        self.shapes_only = shapes_only

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        devices = {t.device for t in tensors if t.dim() > 0}
        if len(devices) > 1:
            raise AssertionError(f"{func} mixes devices {devices}")
        if self.shapes_only and any(t.is_meta for t in tensors) and func.__name__ != "__get__":   # not .device
            args, kwargs = tree_map(lambda t: torch.zeros(t.shape, dtype=t.dtype)
                                    if isinstance(t, torch.Tensor) and t.is_meta else t, (args, kwargs))
            return tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, func(*args, **kwargs))
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------
# angular similarity and the diversity losses

def test_published_and_stable_angular_losses_equal_a_per_pair_acos_loop():
    z, x = _rand(5, 3, 2, 2, seed=1), _rand(5, 4, 3, 3, seed=2)     # odd batch: the last sample has no partner
    want = _published_angular(z, x)
    assert L.published_angular_diversity_loss(z, x).item() == pytest.approx(want, rel=1e-10)
    assert L.angular_diversity_loss(z, x).item() == pytest.approx(want, rel=1e-10)
    # The per-sample similarity of the published form (acos) matches the loop too.
    got = L._angular_similarity(z[0:4:2], z[1:4:2])
    assert got.tolist() == pytest.approx([_acos_similarity(z[0], z[1]), _acos_similarity(z[2], z[3])], rel=1e-12)


def test_angular_similarity_normalises_vectors_of_any_norm():
    a = _rand(3, 6, seed=3) * 1e-3                                   # norms far below 1
    b = _rand(3, 6, seed=4) * 7.0
    got = L.angular_similarity(a, b)
    assert got.tolist() == pytest.approx([_acos_similarity(a[i], b[i]) for i in range(3)], rel=1e-10)
    # Equal members: 1, opposite ones: 0.
    assert L.angular_similarity(a, a).tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    assert L.angular_similarity(a, -a).tolist() == pytest.approx([0.0] * 3, abs=1e-12)


@pytest.mark.parametrize("delta", [1e-15, 3e-15, 1e-14, 1e-12, 1e-6])
def test_angular_diversity_stays_in_zero_to_one_over_eps_near_opposite_pairs(delta):
    # s_z, s_x in [0, 1], so s_z / (s_x + eps s_z + tiny) lies in [0, 1/eps]: here s_x = 0 (opposite
    # outputs) and s_z is tiny (nearly opposite latents), the corner where the tiny guard matters.
    z = torch.tensor([[1.0, 0.0], [-1.0, delta]], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]], dtype=torch.float64)
    loss = L.angular_diversity_loss(z, x).item()
    assert math.isfinite(loss) and 0.0 <= loss <= 1 / L.DIVERSITY_EPS, loss


@pytest.mark.parametrize("dz", [1e-9, 1e-6, 1e-3, 1.0])
def test_l1_diversity_stays_in_zero_to_one_over_eps_when_outputs_collapse(dz):
    # d_x = 0 (both members of the pair give the same G_S output): d_z / (eps d_z + tiny) in [0, 1/eps].
    z = torch.zeros(2, 3, dtype=torch.float64)
    z[1] += dz
    x = torch.ones(2, 4, dtype=torch.float64)
    loss = L.diversity_loss(z, x).item()
    assert math.isfinite(loss) and 0.0 <= loss <= 1 / L.DIVERSITY_EPS, loss
    # The published 1 / (d_x / d_z + eps) = 1 / eps, up to the guard's relative tiny / (eps d_z).
    if dz == 1.0:
        assert loss == pytest.approx(1 / L.DIVERSITY_EPS, rel=2e-3)


def test_diversity_form_switch_uses_the_named_loss():
    z, x = _rand(4, 3, 2, 2, seed=5), _rand(4, 2, 3, 3, seed=6)
    ang, l1 = L.diversity("angular", z, x), L.diversity("l1", z, x)
    assert ang.item() == pytest.approx(_published_angular(z, x), rel=1e-10)
    d_z = (z[0::2] - z[1::2]).abs().mean().item()
    d_x = (x[0::2] - x[1::2]).abs().mean().item()
    assert l1.item() == pytest.approx(1 / (d_x / d_z + 1e-5), rel=1e-8)
    assert abs(ang.item() - l1.item()) > 1e-3                        # the two forms are distinguishable here
    with pytest.raises(ValueError, match=r"^diversity form must be one of \('angular', 'l1'\), got 'cos'$"):
        L.diversity("cos", z, x)


def test_diversity_errors_name_both_batches_and_the_pair_rule():
    z, x = torch.zeros(4, 3, 2, 2), torch.zeros(6, 5, 2, 2)
    for fn in (L.diversity_loss, L.angular_diversity_loss):
        with pytest.raises(ValueError, match=r"^diversity_loss: z_l batch 4 != z_S batch 6$"):
            fn(z, x)
        with pytest.raises(ValueError, match=r"^diversity loss: needs a batch of at least 2 \(pairs of samples\)$"):
            fn(z[:1], x[:1])


# ----------------------------------------------------------------------------------------------------
# coord_loss

def test_coord_loss_follows_pred_dtype_and_names_both_batches():
    pred = torch.tensor([[0.5, 9.0], [-0.25, 9.0], [1.0, 9.0]], dtype=torch.float32)
    target = torch.tensor([0.0, 0.5, -1.0], dtype=torch.float64)
    got = L.coord_loss(pred, target)
    assert got.dtype == torch.float32                                # the loss lives in D's dtype
    assert got.item() == pytest.approx((0.5 + 0.75 + 2.0) / 3, rel=1e-7)   # only column 0 counts
    assert L.coord_loss(pred, target.view(3, 1)).item() == pytest.approx(got.item())
    with pytest.raises(ValueError, match=r"^coord_loss: pred has batch 3, target 5$"):
        L.coord_loss(pred, torch.zeros(5))


# ----------------------------------------------------------------------------------------------------
# style mixing and paired

def test_mix_styles_with_a_generator_leaves_the_global_rng_alone():
    w0, w1 = _rand(3, 4, seed=7), _rand(3, 4, seed=8)
    results = []
    for global_seed in (0, 1, 2, 3):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        crosses = [L.mix_styles(w0, w1, 9, generator=g)[1] for g in [torch.Generator().manual_seed(11)] for _ in range(12)]
        assert torch.equal(torch.get_rng_state(), state)              # the global stream is not consumed
        results.append(crosses)
    assert all(r == results[0] for r in results)                       # a function of the generator only


def test_mix_styles_crossover_range_probability_and_layers():
    w0, w1 = _rand(2, 3, seed=9), _rand(2, 3, seed=10)
    g = torch.Generator().manual_seed(0)
    counts = {}
    for _ in range(400):
        ws, cross = L.mix_styles(w0, w1, 5, prob=0.9, generator=g)
        counts[cross] = counts.get(cross, 0) + 1
        for layer in range(5):                                         # layers before the crossover use w0
            assert torch.equal(ws[:, layer], w0 if layer < cross else w1)
    assert set(counts) == {1, 2, 3, 4, 5}                              # crossover uniform in [1, num_ws - 1]; 5: none
    assert 15 <= counts[5] <= 70                                       # no mixing with probability 0.1
    # num_ws = 2, always mixing: the only crossover is layer 1.
    ws, cross = L.mix_styles(w0, w1, 2, prob=1.0, generator=g)
    assert cross == 1 and torch.equal(ws[:, 0], w0) and torch.equal(ws[:, 1], w1)
    # num_ws = 1: nothing to mix even at probability 1.
    ws, cross = L.mix_styles(w0, w1, 1, prob=1.0, generator=g)
    assert cross == 1 and ws.shape == (2, 1, 3) and torch.equal(ws[:, 0], w0)
    # probability 0: never.
    assert all(L.mix_styles(w0, w1, 6, prob=0.0, generator=g)[1] == 6 for _ in range(50))


def test_mix_styles_and_paired_stay_on_the_inputs_device():
    w = torch.empty(3, 4, device="meta")
    with _SameDevice(shapes_only=True):
        ws, _ = L.mix_styles(w, w, 6, prob=1.0, generator=torch.Generator().manual_seed(0))
        p = L.paired(torch.empty(5, 2, device="meta"))
    assert ws.device.type == "meta" and ws.shape == (3, 6, 4)
    assert p.device.type == "meta" and p.shape == (5, 2)


# ----------------------------------------------------------------------------------------------------
# path-length regulariser

def test_path_length_on_a_non_square_image_equals_the_explicit_jacobian():
    b, n_ws, w_dim, c, h, w = 2, 3, 4, 2, 3, 5
    styles = _rand(b, n_ws, w_dim, seed=12).requires_grad_(True)
    basis = _rand(n_ws, w_dim, c, h, w, seed=13)
    img = torch.einsum("bld,ldchw->bchw", styles, basis)               # linear: d img / d styles = basis
    mean0, decay = torch.tensor(0.7, dtype=torch.float64), 0.3
    pen, new_mean, lengths = L.path_length_penalty(img, styles, mean0, decay=decay,
                                                   generator=torch.Generator().manual_seed(14))
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(14), dtype=torch.float64) / math.sqrt(h * w)
    want = []
    for i in range(b):
        sq = 0.0
        for l in range(n_ws):
            for d in range(w_dim):
                sq += float((noise[i] * basis[l, d]).sum()) ** 2
        want.append(math.sqrt(sq / (n_ws * w_dim)))                    # mean over layers and channels
    assert lengths.tolist() == pytest.approx(want, rel=1e-10)
    m = 0.7 + decay * (sum(want) / b - 0.7)
    assert new_mean.item() == pytest.approx(m, rel=1e-10) and not new_mean.requires_grad
    assert pen.item() == pytest.approx(sum((x - m) ** 2 for x in want) / b, rel=1e-10)


def test_path_length_noise_follows_the_image_not_the_default_device():
    # A caller whose default device differs from the images' (torch.set_default_device("cuda") with CPU
    # tensors, or the reverse) must get the same numbers: the noise is drawn on the image's device.
    styles = _rand(2, 3, 4, seed=15).requires_grad_(True)
    img = torch.einsum("bld,ldchw->bchw", styles, _rand(3, 4, 1, 2, 3, seed=16))
    mean0 = torch.zeros((), dtype=torch.float64)
    want = L.path_length_penalty(img, styles, mean0, generator=torch.Generator().manual_seed(3))
    with torch.device("meta"), _SameDevice():
        got = L.path_length_penalty(img, styles, mean0, generator=torch.Generator().manual_seed(3))
    for g, w in zip(got, want):
        assert g.device.type == "cpu" and torch.equal(g.detach(), w.detach())
