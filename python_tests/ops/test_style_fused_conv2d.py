"""style_fused_conv2d (CPU): loop definition, reduction to modulated_conv2d, sharp style boundary,
InfinityGAN's pointwise approximation, gradients, opcheck, errors."""
import pytest
import torch
import torch.nn.functional as F

from anyres_fast.ops import modulated_conv2d, style_fused_conv2d, style_fused_conv2d_ref
from anyres_fast.ops.modulated_conv2d_op import output_size

F64 = torch.float64


def loop_definition_exact(x, weight, smap, padding, up, eps):
    """Per output pixel: Σ W·x·S and Σ (W·S)² over exactly the (input pixel, tap) pairs that reach it."""
    b, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    hout, wout = output_size(h, kh, padding, up), output_size(w, kw, padding, up)
    num = torch.zeros(b, o, hout, wout, dtype=x.dtype)
    den = torch.zeros(b, o, hout, wout, dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            for iy in range(h):
                for ix in range(w):
                    if up == 1:
                        oy, ox = iy + padding - ky, ix + padding - kx
                    else:
                        oy, ox = 2 * iy + ky - padding, 2 * ix + kx - padding
                    if 0 <= oy < hout and 0 <= ox < wout:
                        wk = weight[:, :, ky, kx]
                        num[:, :, oy, ox] += (x[:, :, iy, ix] * smap[:, :, iy, ix]) @ wk.t()
                        den[:, :, oy, ox] += smap[:, :, iy, ix].square() @ wk.square().t()
    return num * (den + eps).rsqrt()


def make(b, i, o, h, w, k, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, i, h, w, generator=g, dtype=dtype)
    weight = torch.randn(o, i, k, k, generator=g, dtype=dtype)
    smap = torch.randn(b, i, h, w, generator=g, dtype=dtype) + 1.0
    return x, weight, smap


CONFIGS = [(1, 0, 1, 4, 5), (3, 0, 1, 6, 5), (3, 1, 1, 5, 5), (7, 0, 1, 8, 9),
           (1, 0, 2, 3, 3), (3, 0, 2, 4, 3), (3, 1, 2, 3, 4), (7, 2, 2, 3, 3)]


@pytest.mark.parametrize("k,padding,up,h,w", CONFIGS)
def test_exact_equals_loop_definition(k, padding, up, h, w):
    x, weight, smap = make(2, 3, 4, h, w, k)
    want = loop_definition_exact(x, weight, smap, padding, up, 1e-8)
    got = style_fused_conv2d_ref(x, weight, smap, padding, up, "exact")
    op = torch.ops.anyres_fast.style_fused_conv2d(x, weight, smap, padding, up, "exact", 1e-8)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-10 * max(1.0, want.abs().max().item())
    assert (op - want).abs().max().item() <= 1e-10 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("k", [1, 3, 7])
def test_constant_style_equals_modulated_conv2d(k):
    x, weight, _ = make(2, 5, 6, 9, 10, k, seed=1, dtype=torch.float32)
    styles = torch.randn(2, 5) + 1.0
    smap = styles[:, :, None, None].expand_as(x)
    want = modulated_conv2d(x, weight, styles, padding=0)
    for demod in ("exact", "pointwise"):
        got = style_fused_conv2d(x, weight, smap, padding=0, demod=demod)
        assert (got - want).abs().max().item() <= 1e-6 * want.abs().max().item(), demod
    got = style_fused_conv2d(x, weight, smap, padding=0, demod="none")
    assert torch.allclose(got, modulated_conv2d(x, weight, styles, demodulate=False), rtol=1e-6, atol=1e-6)


def test_constant_style_padded_interior_equals_modulated_conv2d():
    # With zero padding the exact demodulation only counts taps that land inside the input: border pixels
    # differ from modulated_conv2d by design, interior pixels agree.
    x, weight, _ = make(2, 4, 3, 8, 8, 3, seed=2, dtype=torch.float32)
    styles = torch.randn(2, 4) + 1.0
    got = style_fused_conv2d(x, weight, styles[:, :, None, None].expand_as(x), padding=1)
    want = modulated_conv2d(x, weight, styles, padding=1)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert (got[inner] - want[inner]).abs().max().item() <= 1e-6 * want.abs().max().item()
    assert (got[:, :, 0] - want[:, :, 0]).abs().max().item() > 1e-3


@pytest.mark.parametrize("k,padding", [(3, 0), (7, 0), (3, 1), (1, 0)])
def test_sharp_vertical_boundary(k, padding):
    """Left columns carry style a, right columns style b: output pixels whose window lies entirely on
    one side (and inside the input) equal the plain op with that side's style."""
    x, weight, _ = make(2, 4, 3, 9, 18, k, seed=3)
    g = torch.Generator().manual_seed(4)
    sa, sb = torch.randn(2, 4, generator=g, dtype=F64) + 1, torch.randn(2, 4, generator=g, dtype=F64) + 1
    split = 9
    smap = torch.empty_like(x)
    smap[..., :split] = sa[:, :, None, None]
    smap[..., split:] = sb[:, :, None, None]
    y = style_fused_conv2d(x, weight, smap, padding=padding)
    ya = modulated_conv2d(x, weight, sa, padding=padding)
    yb = modulated_conv2d(x, weight, sb, padding=padding)
    rows = slice(padding, y.shape[2] - padding)          # windows fully inside vertically
    checked = {"a": 0, "b": 0, "mixed": 0}
    for ox in range(y.shape[3]):
        cols = [ox - padding + kx for kx in range(k)]
        if cols[0] < 0 or cols[-1] >= x.shape[3]:
            continue
        if cols[-1] < split:
            assert (y[:, :, rows, ox] - ya[:, :, rows, ox]).abs().max() < 1e-10
            checked["a"] += 1
        elif cols[0] >= split:
            assert (y[:, :, rows, ox] - yb[:, :, rows, ox]).abs().max() < 1e-10
            checked["b"] += 1
        else:
            assert (y[:, :, rows, ox] - ya[:, :, rows, ox]).abs().max() > 1e-6
            checked["mixed"] += 1
    assert checked["a"] > 0 and checked["b"] > 0 and checked["mixed"] == k - 1


def test_sharp_boundary_up2_against_exact_definition_of_each_side():
    # For up=2 the exact demodulation normalises each output pixel by the taps that reach it, so the
    # one-sided reference is the exact op with that side's constant style (not modulated_conv2d).
    x, weight, _ = make(1, 3, 2, 6, 10, 3, seed=5)
    sa, sb = torch.rand(1, 3, dtype=F64) + 0.5, torch.rand(1, 3, dtype=F64) + 0.5
    smap = torch.cat([sa[:, :, None, None].expand(1, 3, 6, 5), sb[:, :, None, None].expand(1, 3, 6, 5)], 3)
    y = style_fused_conv2d(x, weight, smap, up=2)
    ya = style_fused_conv2d(x, weight, sa[:, :, None, None].expand_as(x), up=2)
    yb = style_fused_conv2d(x, weight, sb[:, :, None, None].expand_as(x), up=2)
    # output column ox reads input columns (ox - kx)/2 for kx of ox's parity: all < 5 for ox <= 9,
    # columns 4 and 5 for ox = 10, all >= 5 for ox >= 11
    assert (y[..., :10] - ya[..., :10]).abs().max() < 1e-12
    assert (y[..., 11:] - yb[..., 11:]).abs().max() < 1e-12
    assert (y[..., 10] - ya[..., 10]).abs().max() > 1e-6
    assert (y[..., 10] - yb[..., 10]).abs().max() > 1e-6


def published_pointwise(x, weight, smap, up, eps):
    """InfinityGAN's published recipe for valid 3x3/7x7 convs and the up=2 3x3 transposed conv (crop 1):
    demod at input resolution from the pixel's own style, centre-cropped (up=1) or bilinearly resized
    with align_corners to the cropped size (up=2). Returns the output region they keep."""
    k = weight.shape[2]
    q = weight.square().sum((2, 3))
    d_in = torch.rsqrt(torch.einsum("bihw,oi->bohw", smap.square(), q) + eps)
    if up == 1:
        y = F.conv2d(x * smap, weight)
        r = (k - 1) // 2
        return y * d_in[:, :, r:d_in.shape[2] - r, r:d_in.shape[3] - r]
    y = F.conv_transpose2d(x * smap, weight.transpose(0, 1), stride=2)[:, :, 1:-1, 1:-1]
    return y * F.interpolate(d_in, size=y.shape[2:], mode="bilinear", align_corners=True)


@pytest.mark.parametrize("k,up", [(3, 1), (7, 1), (3, 2)])
def test_pointwise_reproduces_published_approximation(k, up):
    x, weight, smap = make(2, 3, 4, 9, 8, k, seed=6)
    want = published_pointwise(x, weight, smap, up, 1e-8)
    got = style_fused_conv2d(x, weight, smap, demod="pointwise", up=up)
    if up == 2:
        got = got[:, :, 1:-1, 1:-1]
    assert (got - want).abs().max().item() < 1e-12
    # and it is only an approximation of the exact demodulation for a varying style
    exact = style_fused_conv2d(x, weight, smap, demod="exact", up=up)
    assert (exact - style_fused_conv2d(x, weight, smap, demod="pointwise", up=up)).abs().max() > 1e-3


@pytest.mark.parametrize("demod", ["exact", "pointwise", "none"])
@pytest.mark.parametrize("up,padding", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_gradcheck(up, padding, demod):
    x, weight, smap = make(2, 2, 3, 4, 5, 3, seed=7)
    inputs = [t.clone().requires_grad_() for t in (x, weight, smap)]
    op = lambda a, b, c: torch.ops.anyres_fast.style_fused_conv2d(a, b, c, padding, up, demod, 1e-8)
    assert torch.autograd.gradcheck(op, inputs)
    ref = lambda a, b, c: style_fused_conv2d_ref(a, b, c, padding, up, demod)
    assert torch.autograd.gradcheck(ref, inputs)


def test_opcheck_cpu():
    x, weight, smap = make(2, 3, 4, 5, 5, 3, seed=8, dtype=torch.float32)
    for up, padding, demod in ((1, 1, "exact"), (2, 0, "pointwise")):
        args = (x, weight, smap.requires_grad_(), padding, up, demod, 1e-8)
        torch.library.opcheck(torch.ops.anyres_fast.style_fused_conv2d.default, args)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(style_map=torch.ones(2, 3, 5, 4)), ValueError, "style_map must have the shape"),
    (dict(style_map=torch.ones(2, 3)), ValueError, "style_map must have 4"),
    (dict(demod="approx"), ValueError, "demod must be one of"),
    (dict(up=4), ValueError, "up must be one of"),
    (dict(weight=torch.zeros(4, 2, 3, 3)), ValueError, "input channels"),
    (dict(x=torch.zeros(2, 3, 2, 2), style_map=torch.ones(2, 3, 2, 2)), ValueError, "output would be empty"),
    (dict(impl="cuda"), RuntimeError, "needs all tensors on a CUDA device"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(x=torch.zeros(2, 3, 5, 5), weight=torch.zeros(4, 3, 3, 3), style_map=torch.ones(2, 3, 5, 5))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        style_fused_conv2d(**args)


class FakeExtension:
    """The CUDA kernel's documented semantics on CPU (implicit_gemm.cuh), for the Python glue test."""

    @staticmethod
    def style_fused_conv2d_igemm(x, weight_gemm, weight_sq_gemm, smap, out, mode, padding, exact, eps, exact_fp32,
                                 stream):
        up = {0: 1, 3: 2}[mode]
        weight = weight_gemm[..., :x.shape[1]].permute(0, 3, 1, 2)  # GEMM-ready (O, kh, kw, Ip) back to W
        if exact:
            assert torch.equal(weight_sq_gemm, weight_gemm.square())
        res = style_fused_conv2d_ref(x, weight, smap, padding, up, "exact" if exact else "none", eps)
        assert res.shape == out.shape
        out.copy_(res)


def test_cuda_path_glue_with_fake_extension(monkeypatch):
    import contextlib
    from anyres_fast.ops import style_fused_conv2d_op as sf
    monkeypatch.setattr(sf._dispatch, "extension", lambda: FakeExtension)
    monkeypatch.setattr(sf._dispatch, "current_stream", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    x, weight, smap = make(2, 3, 4, 6, 5, 3, seed=10)
    for up, padding in ((1, 0), (2, 0), (1, 1)):
        for demod in ("exact", "pointwise", "none"):
            got = sf._cuda_forward(x, weight, smap, padding, up, demod, 1e-8)
            want = style_fused_conv2d_ref(x, weight, smap, padding, up, demod)
            assert (got - want).abs().max().item() < 1e-12, (up, padding, demod)
