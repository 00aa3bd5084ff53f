"""modulated_conv2d (CPU): references vs an explicit loop definition, both forms, custom op, errors."""
import pytest
import torch

from anyres_fast.ops import modulated_conv2d, modulated_conv2d_ref
from anyres_fast.ops.modulated_conv2d_op import output_size

F64 = torch.float64


def loop_definition(x, weight, styles, demodulate, padding, up, eps):
    """Direct definition: every input pixel and tap, placed where the geometry says (scatter form)."""
    b, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    hout, wout = output_size(h, kh, padding, up), output_size(w, kw, padding, up)
    y = torch.zeros(b, o, hout, wout, dtype=x.dtype)
    xs = x * styles[:, :, None, None]
    for ky in range(kh):
        for kx in range(kw):
            for iy in range(h):
                for ix in range(w):
                    if up == 1:   # y[Y] uses x[Y - p + ky]  <=>  x[iy] feeds Y = iy + p - ky
                        oy, ox = iy + padding - ky, ix + padding - kx
                    else:         # x[iy] feeds Y = 2 iy + ky - p
                        oy, ox = 2 * iy + ky - padding, 2 * ix + kx - padding
                    if 0 <= oy < hout and 0 <= ox < wout:
                        y[:, :, oy, ox] += xs[:, :, iy, ix] @ weight[:, :, ky, kx].t()
    if demodulate:
        d = torch.zeros(b, o, dtype=x.dtype)
        for bb in range(b):
            for oo in range(o):
                d[bb, oo] = ((weight[oo] * styles[bb][:, None, None]) ** 2).sum()
        y = y * (d + eps).rsqrt()[:, :, None, None]
    return y


def make(b, i, o, h, w, k, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, i, h, w, generator=g, dtype=dtype)
    weight = torch.randn(o, i, k, k, generator=g, dtype=dtype)
    styles = torch.randn(b, i, generator=g, dtype=dtype) + 1.0
    return x, weight, styles


CONFIGS = [  # (k, padding, up, h, w)
    (1, 0, 1, 5, 4), (3, 0, 1, 6, 5), (3, 1, 1, 5, 6), (7, 0, 1, 9, 8), (7, 3, 1, 4, 5),
    (1, 0, 2, 3, 4), (3, 0, 2, 4, 3), (3, 1, 2, 3, 5), (7, 0, 2, 3, 2), (7, 3, 2, 4, 4),
]


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("k,padding,up,h,w", CONFIGS)
@pytest.mark.parametrize("form", ["three_pass", "grouped"])
def test_reference_equals_loop_definition(form, k, padding, up, h, w, demodulate):
    x, weight, styles = make(2, 3, 4, h, w, k)
    want = loop_definition(x, weight, styles, demodulate, padding, up, 1e-8)
    got = modulated_conv2d_ref(x, weight, styles, demodulate, padding, up, form=form)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-10 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("up,padding", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_forms_agree_and_custom_op_matches(up, padding):
    x, weight, styles = make(3, 4, 5, 6, 7, 3, seed=1)
    a = modulated_conv2d_ref(x, weight, styles, True, padding, up, form="three_pass")
    b = modulated_conv2d_ref(x, weight, styles, True, padding, up, form="grouped")
    c = torch.ops.anyres_fast.modulated_conv2d(x, weight, styles, True, padding, up, 1e-8)
    assert (a - b).abs().max().item() < 1e-12
    assert (a - c).abs().max().item() < 1e-12


def test_output_sizes_documented():
    # up=2, padding 0, k=3: InfinityGAN's full transposed output 2H+1 (cropped to 2H-1 by the caller).
    x, weight, styles = make(1, 2, 2, 11, 11, 3)
    assert modulated_conv2d(x, weight, styles, up=2).shape[2:] == (23, 23)
    assert modulated_conv2d(x, weight, styles, padding=0).shape[2:] == (9, 9)
    assert modulated_conv2d(x, weight, styles, padding=1).shape[2:] == (11, 11)


def test_demodulation_normalises_output_channels():
    # With unit-variance iid input, demodulated outputs have ~unit second moment; without, they scale with s.
    x = torch.randn(64, 8, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(3))
    weight = torch.randn(4, 8, 3, 3, dtype=F64)
    styles = torch.full((64, 8), 10.0, dtype=F64)
    y = modulated_conv2d(x, weight, styles)
    assert 0.8 < y.square().mean().item() < 1.2
    assert modulated_conv2d(x, weight, styles, demodulate=False).square().mean().item() > 100


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up,padding", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_gradcheck_custom_op_and_reference(up, padding, demodulate):
    x, weight, styles = make(2, 3, 2, 4, 5, 3, seed=2)
    inputs = [t.clone().requires_grad_() for t in (x, weight, styles)]
    op = lambda a, b, c: torch.ops.anyres_fast.modulated_conv2d(a, b, c, demodulate, padding, up, 1e-8)
    ref = lambda a, b, c: modulated_conv2d_ref(a, b, c, demodulate, padding, up)
    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradcheck(ref, inputs)


def test_custom_op_gradients_match_autograd_of_reference():
    x, weight, styles = make(2, 3, 4, 6, 6, 3, seed=4)
    g = torch.randn(2, 4, 13, 13, dtype=F64)
    grads = []
    for fn in (lambda a, b, c: torch.ops.anyres_fast.modulated_conv2d(a, b, c, True, 0, 2, 1e-8),
               lambda a, b, c: modulated_conv2d_ref(a, b, c, True, 0, 2, form="grouped")):
        inputs = [t.clone().requires_grad_() for t in (x, weight, styles)]
        grads.append(torch.autograd.grad(fn(*inputs), inputs, g))
    for a, b in zip(*grads):
        assert (a - b).abs().max().item() < 1e-10


def test_opcheck_cpu():
    x, weight, styles = make(2, 3, 4, 5, 5, 3, seed=5, dtype=torch.float32)
    for up, padding in ((1, 1), (2, 0)):
        args = (x, weight, styles.requires_grad_(), True, padding, up, 1e-8)
        torch.library.opcheck(torch.ops.anyres_fast.modulated_conv2d.default, args)


def test_opcheck_backward_op_with_non_contiguous_input():
    # The fake kernels must promise the real outputs' (contiguous) strides, whatever the input strides.
    x, weight, styles = make(2, 3, 4, 6, 5, 3, seed=5, dtype=torch.float32)
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)
    for up, padding in ((1, 1), (2, 0)):
        y = torch.ops.anyres_fast.modulated_conv2d(x_t, weight, styles, True, padding, up, 1e-8)
        grad = torch.randn_like(y)
        torch.library.opcheck(torch.ops.anyres_fast.modulated_conv2d_backward.default,
                              (grad, x_t, weight, styles, y, True, padding, up, 1e-8))


def test_float32_and_styles_dtype():
    x, weight, styles = make(2, 3, 4, 5, 5, 3, seed=6, dtype=torch.float32)
    y = modulated_conv2d(x, weight, styles.double())
    assert y.dtype == torch.float32
    want = modulated_conv2d_ref(x.double(), weight.double(), styles.double())
    assert (y.double() - want).abs().max().item() < 1e-5


def test_noncontiguous_inputs():
    x, weight, styles = make(2, 3, 4, 6, 6, 3, seed=7)
    xt = x.transpose(2, 3)
    want = modulated_conv2d_ref(xt.contiguous(), weight, styles)
    assert torch.equal(modulated_conv2d(xt, weight, styles), want)
    got = torch.ops.anyres_fast.modulated_conv2d(xt, weight, styles, True, 0, 1, 1e-8)
    assert (got - want).abs().max().item() < 1e-12


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.zeros(2, 3, 5)), ValueError, "x must have 4"),
    (dict(weight=torch.zeros(4, 2, 3, 3)), ValueError, "input channels"),
    (dict(styles=torch.zeros(2, 4)), ValueError, "styles must have shape"),
    (dict(styles=torch.zeros(3, 3)), ValueError, "styles must have shape"),
    (dict(weight=torch.zeros(4, 3, 3, 3, dtype=F64)), TypeError, "weight dtype"),
    (dict(x=torch.zeros(2, 3, 5, 5, dtype=torch.int32)), TypeError, "x has dtype"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding=1.5), TypeError, "padding must be an int"),
    (dict(up=3), ValueError, "up must be one of"),
    (dict(eps=0.0), ValueError, "eps must be > 0"),
    (dict(x=torch.zeros(2, 3, 2, 2)), ValueError, "output would be empty"),
    (dict(padding=3), ValueError, "padding 3 must be smaller"),
    (dict(demodulate=1), TypeError, "demodulate must be a bool"),
    (dict(impl="fast"), ValueError, "impl must be one of"),
    (dict(impl="cuda"), RuntimeError, "needs all tensors on a CUDA device"),
    (dict(x="x"), TypeError, "x must be a torch.Tensor"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(x=torch.zeros(2, 3, 5, 5), weight=torch.zeros(4, 3, 3, 3), styles=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        modulated_conv2d(**args)


class FakeExtension:
    """Stands in for the CUDA extension on CPU with the kernels' documented semantics (implicit_gemm.cuh),
    so the Python side of the CUDA path (argument order, scales, backward composition) is tested here."""

    @staticmethod
    def modulated_conv2d_demod(weight, styles, d, eps, stream):
        d.copy_(torch.rsqrt(styles.square() @ weight.float().square().sum((2, 3)).t() + eps))

    @staticmethod
    def modulated_conv2d_igemm(inp, weight_gemm, pre, post, out, mode, padding, exact_fp32, stream):
        import torch.nn.functional as F
        # GEMM-ready (M, kh, kw, Cp) back to W (O, I, kh, kw); the adjoint modes get it as (I, kh, kw, Op)
        c = inp.shape[1]
        assert weight_gemm.shape[3] == -(-c // 8) * 8 and not weight_gemm[..., c:].any()
        weight = weight_gemm[..., :c].permute(0, 3, 1, 2)
        if mode in (1, 2):
            weight = weight.transpose(0, 1)
        scaled = inp * pre[:, :, None, None].to(inp.dtype)
        if mode == 0:
            res = F.conv2d(scaled, weight, padding=padding)
        elif mode == 3:
            res = F.conv_transpose2d(scaled, weight.transpose(0, 1), stride=2, padding=padding)
        elif mode == 2:
            res = F.conv_transpose2d(scaled, weight, padding=padding)
        else:
            res = F.conv2d(scaled, weight.transpose(0, 1), stride=2, padding=padding)
        assert res.shape == out.shape, (res.shape, out.shape)
        out.copy_(res * post[:, :, None, None].to(inp.dtype))


def test_cuda_path_glue_with_fake_extension(monkeypatch):
    import contextlib
    from anyres_fast.ops import modulated_conv2d_op as mc
    monkeypatch.setattr(mc._dispatch, "extension", lambda: FakeExtension)
    monkeypatch.setattr(mc._dispatch, "current_stream", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    for up, padding, demodulate in ((1, 1, True), (1, 0, False), (2, 0, True), (2, 1, True)):
        x, weight, styles = make(2, 3, 4, 5, 6, 3, seed=9, dtype=torch.float32)
        y = mc._cuda_forward(x, weight, styles, demodulate, padding, up, 1e-8)
        inputs = [t.double().requires_grad_() for t in (x, weight, styles)]
        want = modulated_conv2d_ref(*inputs, demodulate, padding, up)
        assert y.dtype == torch.float32
        assert ((y - want).norm() / want.norm()).item() < 1e-6
        g = torch.randn_like(want)
        grads_want = torch.autograd.grad(want, inputs, g)
        grads = mc._cuda_backward(g.float(), x, weight, styles, demodulate, padding, up, 1e-8, y)
        for a, b in zip(grads, grads_want):
            assert a.shape == b.shape and a.dtype == torch.float32
            assert ((a - b).norm() / b.norm()).item() < 1e-6
