"""StyleGAN2 residual discriminator (Karras et al. 2020): shapes, names, minibatch std, conditioning, aux head,
downsampling layer against an independent blur + strided conv, and the double backward R1 needs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from anyres_fast.models import Discriminator
from anyres_fast.models.discriminator import Conv2dLayer, MinibatchStd

SMALL = dict(resolution=32, channel_base=256, channel_max=16)


def test_shapes_names_and_channels():
    torch.manual_seed(0)
    D = Discriminator(**SMALL)
    assert D.block_resolutions == [32, 16, 8]
    names = set(D.state_dict())
    for n in ("b32.fromrgb.weight", "b32.conv0.weight", "b32.conv1.bias", "b32.skip.weight", "b16.conv0.weight",
              "b4.conv.weight", "b4.fc.weight", "b4.out.weight", "b32.conv1.resample_filter"):
        assert n in names, n
    assert "b16.fromrgb.weight" not in names and "b32.skip.bias" not in names
    assert D.b32.conv0.weight.shape == (8, 8, 3, 3) and D.b8.conv1.weight.shape == (16, 16, 3, 3)
    out = D(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 1) and torch.isfinite(out).all()


def test_full_size_256_channels_follow_stylegan2():
    D = Discriminator(resolution=256)
    assert D.b256.fromrgb.weight.shape[0] == 128 and D.b128.conv0.weight.shape[0] == 256
    assert D.b4.fc.weight.shape == (512, 512 * 16)
    assert [getattr(D, f"b{r}").use_fp16 for r in D.block_resolutions] == [True] * 4 + [False] * 2   # num_fp16_res = 4


def test_minibatch_std_against_explicit_groups():
    x = torch.randn(8, 6, 4, 4, dtype=torch.float64)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 7, 4, 4) and torch.equal(out[:, :6], x)
    for i in range(8):
        members = [j for j in range(8) if j % 2 == i % 2]           # groups of 4: samples i, i+2, i+4, i+6
        std = x[members].std(dim=0, unbiased=False)
        expect = (std.square() + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 6], expect.expand(4, 4))
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStd(group_size=4)(torch.randn(6, 2, 4, 4))
    assert MinibatchStd(group_size=4)(torch.randn(3, 2, 4, 4)).shape == (3, 3, 4, 4)   # group = batch


def test_downsampling_conv_against_blur_then_strided_conv():
    torch.manual_seed(1)
    layer = Conv2dLayer(5, 7, 3, activation="lrelu", down=2).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 5, 16, 16, dtype=torch.float64)
    k = torch.tensor([1.0, 3, 3, 1], dtype=torch.float64)
    blur = torch.outer(k, k) / 64
    y = F.conv2d(F.pad(x, (2, 2, 2, 2)), blur.expand(5, 1, 4, 4), groups=5)        # 17 x 17
    y = F.conv2d(y, layer.weight / math.sqrt(5 * 9), stride=2) + layer.bias.view(1, -1, 1, 1)
    y = F.leaky_relu(y, 0.2) * math.sqrt(2)
    got = layer(x)
    assert got.shape == (2, 7, 8, 8)
    torch.testing.assert_close(got, y)
    skip = Conv2dLayer(5, 7, 1, bias=False, down=2).double()
    ys = F.conv2d(F.pad(x, (1, 1, 1, 1)), blur.expand(5, 1, 4, 4), groups=5)[:, :, ::2, ::2]
    ys = F.conv2d(ys, skip.weight / math.sqrt(5)) * math.sqrt(0.5)
    torch.testing.assert_close(skip(x, gain=math.sqrt(0.5)), ys)


def test_conditioning_changes_output_and_is_required():
    torch.manual_seed(2)
    D = Discriminator(**SMALL, c_dim=4, mapping_layers=2)
    img = torch.randn(4, 3, 32, 32)
    c1, c2 = torch.eye(4), torch.eye(4).roll(1, dims=0)
    a, b = D(img, c1), D(img, c2)
    assert a.shape == (4, 1) and not torch.allclose(a, b)
    assert "mapping.embed.weight" in D.state_dict() and "mapping.fc1.weight" in D.state_dict()
    with pytest.raises(ValueError, match="conditional"):
        D(img)


def test_aux_head_and_input_checks():
    D = Discriminator(**SMALL, aux_outputs=1)
    logits, aux = D(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 1) and aux.shape == (4, 1)
    with pytest.raises(ValueError, match="img must have shape"):
        D(torch.randn(4, 3, 16, 16))
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(resolution=48)


def test_r1_double_backward():
    torch.manual_seed(3)
    D = Discriminator(**SMALL)
    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(D(img).sum(), img, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()
    assert D.b32.conv0.weight.grad is not None and D.b32.conv0.weight.grad.abs().sum() > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_close_to_cpu_fp32():
    torch.manual_seed(4)
    D = Discriminator(**SMALL)
    img = torch.randn(4, 3, 32, 32)
    ref = D(img)
    got = D.cuda()(img.cuda()).cpu()
    assert (got - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_r1_double_backward_matches_finite_differences():
    """R1 = sum |dD/dx|^2: its gradient w.r.t. the weights (double backward, what training uses) and the
    input gradient itself agree with central finite differences in float64 along random directions."""
    torch.manual_seed(5)
    D = Discriminator(resolution=16, channel_base=128, channel_max=8).double()     # blocks b16, b8 + epilogue
    g = torch.Generator().manual_seed(6)
    img = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    params = [p for p in D.parameters() if p.requires_grad]
    dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]

    def r1():
        x = img.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x, force_fp32=True).sum(), x, create_graph=True)
        return grad.square().sum(), grad

    penalty, grad_x = r1()
    grads = torch.autograd.grad(penalty, params, allow_unused=True)     # the last bias does not enter R1
    analytic = sum((gp * v).sum() for gp, v in zip(grads, dirs) if gp is not None)
    # Leaky ReLU kinks make R1 piecewise smooth: a step of 1e-6 already crossed one (measured); 1e-8 in
    # float64 stays inside one piece and keeps the rounding error near 1e-8 relative.
    eps = 1e-8
    with torch.no_grad():
        for p, v in zip(params, dirs):
            p.add_(v, alpha=eps)
    plus = r1()[0].detach()
    with torch.no_grad():
        for p, v in zip(params, dirs):
            p.add_(v, alpha=-2 * eps)
    minus = r1()[0].detach()
    with torch.no_grad():
        for p, v in zip(params, dirs):
            p.add_(v, alpha=eps)
    numeric = (plus - minus) / (2 * eps)
    assert abs(float(analytic)) > 1e-3                     # a real, non-vanishing directional derivative
    torch.testing.assert_close(analytic.detach(), numeric, rtol=1e-5, atol=1e-8)
    # The input gradient that R1 squares, against finite differences of D itself.
    u = torch.randn(img.shape, generator=g, dtype=torch.float64)
    eps = 1e-7
    with torch.no_grad():
        fd = (D(img + eps * u, force_fp32=True).sum() - D(img - eps * u, force_fp32=True).sum()) / (2 * eps)
    torch.testing.assert_close((grad_x * u).sum().detach(), fd, rtol=1e-6, atol=1e-9)
