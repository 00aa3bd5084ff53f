"""style_fused_conv2d on CUDA vs the float64 reference: forward, all gradients, dtypes, odd sizes, poisoned
outputs, opcheck. Skipped without a GPU."""

import pytest
import torch
from helpers import assert_close_to_reference, conv_inputs, exact_fp32, rel_error

from anyres_fast.ops import modulated_conv2d, style_fused_conv2d, style_fused_conv2d_ref

from anyres_fast.ops import modulated_conv2d_op as mc

pytestmark = pytest.mark.cuda



@pytest.fixture(autouse=True)
def exact_math():
    with exact_fp32():
        yield


def make(b, i, o, h, w, k, dtype, seed=0):
    return conv_inputs(b, i, o, h, w, k, dtype, (b, i, h, w), seed)


SHAPES = [  # (b, i, o, h, w, k, padding, up)
    (3, 37, 45, 13, 17, 3, 1, 1), (2, 19, 70, 15, 11, 3, 0, 1), (1, 21, 9, 20, 23, 7, 0, 1),
    (3, 29, 31, 7, 9, 3, 0, 2), (2, 16, 24, 6, 5, 3, 1, 2), (2, 33, 17, 9, 12, 1, 0, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("demod", ["exact", "pointwise", "none"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_float64_reference(shape, demod, dtype):
    b, i, o, h, w, k, padding, up = shape
    x, weight, smap = make(b, i, o, h, w, k, dtype)
    inputs = [t.clone().requires_grad_() for t in (x, weight, smap)]
    y = style_fused_conv2d(*inputs, padding=padding, up=up, demod=demod, impl="cuda")
    ref_inputs = [t.detach().double().requires_grad_() for t in (x, weight, smap)]
    y_ref = style_fused_conv2d_ref(*ref_inputs, padding=padding, up=up, demod=demod)
    assert y.dtype == dtype and y.shape == y_ref.shape
    # the same-precision baseline: the PyTorch reference run in dtype on the GPU (and its autograd)
    base_inputs = [t.detach().clone().requires_grad_() for t in (x, weight, smap)]
    y_base = style_fused_conv2d_ref(*base_inputs, padding=padding, up=up, demod=demod)
    assert_close_to_reference("forward", y, y_ref, y_base.detach(), dtype)
    g = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, inputs, g.to(dtype))
    grads_ref = torch.autograd.grad(y_ref, ref_inputs, g)
    grads_base = torch.autograd.grad(y_base, base_inputs, g.to(dtype))
    for name, a, r, base in zip(("dx", "dweight", "dstyle_map"), grads, grads_ref, grads_base):
        assert_close_to_reference(name, a, r, base, dtype)


def test_constant_style_equals_modulated_conv2d_on_cuda():
    x, weight, _ = make(2, 24, 40, 12, 14, 3, torch.float32)
    styles = torch.rand(2, 24, device="cuda") + 0.5
    y = style_fused_conv2d(x, weight, styles[:, :, None, None].expand_as(x).contiguous(), impl="cuda")
    assert rel_error(y, modulated_conv2d(x, weight, styles, impl="cuda")) <= 1e-6


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_every_output_written(dtype, exact):
    ext = mc._dispatch.extension()
    for up, padding in ((1, 1), (2, 0)):
        x, weight, smap = make(3, 20, 67, 11, 13, 3, dtype)
        ho, wo = mc.output_size(11, 3, padding, up), mc.output_size(13, 3, padding, up)
        out = torch.full((3, 67, ho, wo), float("nan"), device="cuda", dtype=dtype)
        ext.style_fused_conv2d_igemm(x, mc.gemm_weight(weight), mc.gemm_weight(weight, square=True), smap, out,
                                     mc._mode_forward(up), padding, exact, 1e-8, False,
                                     torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()


def test_peak_memory_below_two_conv_reference():
    x, weight, smap = make(8, 256, 256, 53, 53, 3, torch.float16)
    peaks = {}
    for name, fn in (("cuda", lambda: style_fused_conv2d(x, weight, smap, impl="cuda")),
                     ("ref", lambda: style_fused_conv2d_ref(x, weight, smap))):
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() - base
    print(f"style_fused peak extra memory: cuda {peaks['cuda'] / 2**20:.1f} MiB, ref {peaks['ref'] / 2**20:.1f} MiB")
    assert peaks["cuda"] < peaks["ref"]


def test_opcheck_cuda():
    x, weight, smap = make(2, 6, 5, 7, 8, 3, torch.float32)
    for up, padding, demod in ((1, 1, "exact"), (2, 0, "pointwise")):
        args = (x, weight.requires_grad_(), smap, padding, up, demod, 1e-8)
        torch.library.opcheck(torch.ops.anyres_fast.style_fused_conv2d.default, args)
