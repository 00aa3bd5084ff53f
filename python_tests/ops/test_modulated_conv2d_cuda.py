"""modulated_conv2d on CUDA vs the float64 reference: forward, all gradients, dtypes, odd sizes, poisoned
outputs, peak memory vs the grouped reference, opcheck. Skipped without a GPU."""

import pytest
import torch
from helpers import assert_close_to_reference, conv_inputs, exact_fp32, rel_error

from anyres_fast.ops import modulated_conv2d, modulated_conv2d_ref

# The package re-exports the function under the module's name, so fetch the module itself.
from anyres_fast.ops import modulated_conv2d_op as mc

pytestmark = pytest.mark.cuda



@pytest.fixture(autouse=True)
def exact_math():
    with exact_fp32():
        yield


def make(b, i, o, h, w, k, dtype, seed=0):
    return conv_inputs(b, i, o, h, w, k, dtype, (b, i), seed)


SHAPES = [  # (b, i, o, h, w, k, padding, up)
    (3, 37, 45, 13, 17, 3, 1, 1), (2, 19, 70, 15, 11, 3, 0, 1), (1, 21, 9, 20, 23, 7, 0, 1),
    (2, 33, 17, 9, 12, 1, 0, 1), (3, 29, 31, 7, 9, 3, 0, 2), (2, 16, 24, 6, 5, 3, 1, 2), (1, 8, 130, 5, 5, 7, 3, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_float64_reference(shape, demodulate, dtype):
    b, i, o, h, w, k, padding, up = shape
    x, weight, styles = make(b, i, o, h, w, k, dtype)
    inputs = [t.clone().requires_grad_() for t in (x, weight, styles)]
    y = modulated_conv2d(*inputs, demodulate=demodulate, padding=padding, up=up, impl="cuda")
    ref_inputs = [t.detach().double().requires_grad_() for t in (x, weight, styles)]
    y_ref = modulated_conv2d_ref(*ref_inputs, demodulate=demodulate, padding=padding, up=up)
    assert y.dtype == dtype and y.shape == y_ref.shape
    # the same-precision baseline: the PyTorch reference run in dtype on the GPU (and its autograd)
    base_inputs = [t.detach().clone().requires_grad_() for t in (x, weight, styles)]
    y_base = modulated_conv2d_ref(*base_inputs, demodulate=demodulate, padding=padding, up=up)
    assert_close_to_reference("forward", y, y_ref, y_base.detach(), dtype)
    g = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, inputs, g.to(dtype))
    grads_ref = torch.autograd.grad(y_ref, ref_inputs, g)
    grads_base = torch.autograd.grad(y_base, base_inputs, g.to(dtype))
    for name, a, r, base in zip(("dx", "dweight", "dstyles"), grads, grads_ref, grads_base):
        assert a.dtype == dtype
        assert_close_to_reference(name, a, r, base, dtype)


def test_tf32_default_is_close():
    mc.EXACT_FP32["enabled"] = False
    torch.backends.cudnn.allow_tf32 = True   # (restored by the fixture)
    x, weight, styles = make(2, 64, 64, 12, 12, 3, torch.float32)
    y = modulated_conv2d(x, weight, styles, padding=1, impl="cuda")
    assert rel_error(y, modulated_conv2d_ref(x.double(), weight.double(), styles.double(), padding=1)) <= 5e-3


@pytest.mark.parametrize("up,padding", [(1, 1), (2, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_output_written(dtype, up, padding):
    """The kernel must write every output element: poison the output buffer and look for survivors."""
    ext = mc._dispatch.extension()
    x, weight, styles = make(3, 20, 67, 11, 13, 3, dtype)
    ho, wo = mc.output_size(11, 3, padding, up), mc.output_size(13, 3, padding, up)
    out = torch.full((3, 67, ho, wo), float("nan"), device="cuda", dtype=dtype)
    d = torch.ones(3, 67, device="cuda")
    ext.modulated_conv2d_igemm(x, mc.gemm_weight(weight), styles.float(), d, out, mc._mode_forward(up), padding,
                               False, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    gxs = torch.full_like(x, float("nan"))
    ext.modulated_conv2d_igemm(out, mc.gemm_weight(weight, adjoint=True), d, torch.ones(3, 20, device="cuda"), gxs,
                               mc._mode_adjoint(up), padding, False, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert torch.isfinite(gxs).all()


def test_many_output_pixels_and_noncontiguous():
    # N = B·H·W well above 65535 (grid.x indexing), and a transposed (non-contiguous) input.
    x, weight, styles = make(2, 4, 5, 190, 210, 3, torch.float32)
    xt = x.transpose(2, 3)
    y = modulated_conv2d(xt, weight, styles, padding=1, impl="cuda")
    y_ref = modulated_conv2d_ref(xt.double(), weight.double(), styles.double(), padding=1)
    assert rel_error(y, y_ref) <= 1e-5


def test_peak_memory_below_grouped_reference():
    """Batch 32, 512 channels, 3x3 at 36 px, fp16: the grouped reference builds (32,512,512,3,3) weights."""
    x, weight, styles = make(32, 512, 512, 36, 36, 3, torch.float16)
    peaks = {}
    for name, fn in (("cuda", lambda: modulated_conv2d(x, weight, styles, padding=1, impl="cuda")),
                     ("grouped", lambda: modulated_conv2d_ref(x, weight, styles, padding=1, form="grouped"))):
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() - base
    print(f"peak extra memory, batch 32: cuda {peaks['cuda'] / 2**20:.1f} MiB, "
          f"grouped reference {peaks['grouped'] / 2**20:.1f} MiB")
    assert peaks["cuda"] < peaks["grouped"]


def test_opcheck_cuda():
    x, weight, styles = make(2, 6, 5, 7, 8, 3, torch.float32)
    for up, padding in ((1, 1), (2, 0)):
        args = (x, weight.requires_grad_(), styles, True, padding, up, 1e-8)
        torch.library.opcheck(torch.ops.anyres_fast.modulated_conv2d.default, args)


def test_auto_uses_cuda_and_matches():
    x, weight, styles = make(2, 8, 8, 9, 9, 3, torch.float32)
    a = modulated_conv2d(x, weight, styles, padding=1)
    b = modulated_conv2d(x, weight, styles, padding=1, impl="cuda")
    assert torch.equal(a, b)
