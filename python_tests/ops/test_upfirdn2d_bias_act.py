"""Reference upfirdn2d, setup_filter and bias_act vs independent definitions (CPU, float64)."""
import math

import pytest
import torch

from anyres_fast.ops import OpUnsupported, bias_act, setup_filter, upfirdn2d

F64 = torch.float64


def _independent_upfirdn2d(x, f, up, down, pads, flip_filter, gain):
    """Explicit zero insertion, padding by index copy, direct tap loops, strided decimation."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pads
    n, c, h, w = x.shape
    z = torch.zeros(n, c, h * upy, w * upx, dtype=F64)
    z[:, :, ::upy, ::upx] = x
    zp = torch.zeros(n, c, h * upy + py0 + py1, w * upx + px0 + px1, dtype=F64)
    for r in range(h * upy):
        for col in range(w * upx):
            rr, cc = r + py0, col + px0
            if 0 <= rr < zp.shape[2] and 0 <= cc < zp.shape[3]:
                zp[:, :, rr, cc] = z[:, :, r, col]
    f2 = torch.ones(1, 1, dtype=F64) if f is None else (torch.outer(f, f) if f.ndim == 1 else f.to(F64))
    fh, fw = f2.shape
    oh, ow = zp.shape[2] - fh + 1, zp.shape[3] - fw + 1
    out = torch.zeros(n, c, oh, ow, dtype=F64)
    for ky in range(fh):
        for kx in range(fw):
            tap = f2[ky, kx] if flip_filter else f2[fh - 1 - ky, fw - 1 - kx]
            out += tap * zp[:, :, ky:ky + oh, kx:kx + ow]
    return out[:, :, ::downy, ::downx] * gain


@pytest.mark.parametrize("up,down,fkind,padding,flip", [
    (1, 1, "2d", 1, False),
    (2, 1, "sep", (2, 1), True),
    (1, 2, "2d", (1, 2, 0, 3), False),
    ((2, 1), (1, 2), "sep", (-1, 3, 2, -2), False),
    (4, 1, "sep", (3, 4, 2, 1), False),
    (2, 2, "2d", (-2, -1, 3, 2), True),
    (1, 1, None, 0, False),
])
def test_upfirdn2d_matches_independent_definition(up, down, fkind, padding, flip):
    gen = torch.Generator().manual_seed(1)
    f = {"2d": torch.randn(3, 4, generator=gen, dtype=F64), "sep": torch.randn(5, generator=gen, dtype=F64),
         None: None}[fkind]
    x = torch.randn(2, 3, 6, 7, generator=gen, dtype=F64)
    pads = (padding,) * 4 if isinstance(padding, int) else (
        (padding[0], padding[0], padding[1], padding[1]) if len(padding) == 2 else padding)
    u = up if isinstance(up, tuple) else (up, up)
    d = down if isinstance(down, tuple) else (down, down)
    expected = _independent_upfirdn2d(x, f, u, d, pads, flip, 1.7)
    got = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=1.7)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-10


def test_upfirdn2d_gradcheck_and_errors():
    x = torch.randn(1, 2, 5, 4, dtype=F64, requires_grad=True)
    f = torch.randn(4, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: upfirdn2d(x, f, up=2, down=2, padding=(1, 2, 2, 1)), (x,))
    with pytest.raises(ValueError, match="4 dimensions"):
        upfirdn2d(torch.randn(3, 4, 5), f)
    with pytest.raises(ValueError, match="larger than"):
        upfirdn2d(torch.randn(1, 1, 2, 2), torch.randn(5))
    with pytest.raises(OpUnsupported, match="no CUDA kernel"):
        upfirdn2d(torch.randn(1, 1, 8, 8), f.float(), impl="cuda")
    with pytest.raises(ValueError, match="gain must be finite"):
        upfirdn2d(torch.randn(1, 1, 8, 8), f.float(), gain=float("nan"))


def test_setup_filter():
    taps = [1.0, 3.0, 3.0, 1.0]
    f = setup_filter(taps)  # < 8 taps: expanded to 2-D, unit sum
    assert f.shape == (4, 4) and abs(f.sum().item() - 1) < 1e-6
    assert torch.allclose(f, torch.outer(torch.tensor(taps), torch.tensor(taps)) / 64)
    g = setup_filter(list(range(1, 13)), gain=4.0)  # >= 8 taps: separable, sqrt(gain) per pass
    assert g.shape == (12,) and abs(g.sum().item() - 2.0) < 1e-5
    h = setup_filter([1.0, 2.0, 4.0], flip_filter=True, separable=True)
    assert torch.allclose(h, torch.tensor([4.0, 2.0, 1.0]) / 7)


@pytest.mark.parametrize("act,alpha,gain,clamp,dim", [
    ("linear", None, None, None, 1),
    ("relu", None, None, 0.5, 1),
    ("lrelu", None, None, None, 1),
    ("lrelu", 0.1, 1.5, 0.8, 0),
    ("tanh", None, 2.0, None, 2),
    ("swish", None, None, None, -1),
])
def test_bias_act_matches_independent_definition(act, alpha, gain, clamp, dim):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, generator=gen, dtype=F64)
    b = torch.randn(x.shape[dim], generator=gen, dtype=F64)
    shape = [1, 1, 1]
    shape[dim] = -1
    u = x + b.reshape(shape)
    default_gain = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1.0, "swish": math.sqrt(2)}
    a = 0.2 if alpha is None else alpha
    expected = {"linear": u, "relu": torch.where(u > 0, u, 0 * u), "lrelu": torch.where(u > 0, u, a * u),
                "tanh": torch.tanh(u), "swish": u / (1 + torch.exp(-u))}[act]
    expected = expected * (default_gain[act] if gain is None else gain)
    if clamp is not None:
        expected = torch.where(expected > clamp, clamp, torch.where(expected < -clamp, -clamp, expected))
    got = bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    assert (got - expected).abs().max().item() <= 1e-12


def test_bias_act_gradcheck_and_errors():
    x = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    b = torch.randn(3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, act="lrelu", clamp=10.0), (x, b))
    with pytest.raises(ValueError, match="b has 4 elements"):
        bias_act(x, torch.randn(4, dtype=F64))
    with pytest.raises(ValueError, match="act must be one of"):
        bias_act(x, act="gelu2")
    with pytest.raises(ValueError, match="gain must be finite"):
        bias_act(x, gain=float("inf"))
    with pytest.raises(OpUnsupported, match="no CUDA kernel"):
        bias_act(x, impl="cuda")
    with pytest.raises(TypeError, match="dtype"):
        bias_act(torch.ones(3, dtype=torch.int64))
