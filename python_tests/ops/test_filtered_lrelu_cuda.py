"""filtered_lrelu CUDA kernel vs the float64 reference (skipped without a GPU).

Every filtered_lrelu configuration of StyleGAN3-T and -R at 256² and 1024² (docs/anyres_generator.md §2: spatial
sizes, paddings, taps and up/down exact; a few channels and batch 1-2 to keep memory small), odd sizes,
non-contiguous inputs, N*C > 65535, poisoned output memory, opcheck on CUDA tensors."""
import math

import pytest
import torch
from helpers import assert_close_to_reference

from anyres_fast.ops import OpUnsupported, filtered_lrelu, filtered_lrelu_ref

from anyres_fast.ops import filtered_lrelu_op as fl
pytestmark = pytest.mark.cuda
DEV = "cuda"


def lowpass(taps: int, up: int) -> torch.Tensor:
    """Windowed-sinc lowpass (cutoff 1/(2*up) of the upsampled rate), unit DC gain, float32."""
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    cutoff = 0.5 / up
    window = torch.kaiser_window(taps, periodic=False, beta=6.0, dtype=torch.float64)
    h = 2 * cutoff * torch.sinc(2 * cutoff * n) * window
    return (h / h.sum()).float()


def radial(taps: int) -> torch.Tensor:
    """A non-separable 2-D lowpass (radial sinc x window), unit DC gain."""
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    r = torch.sqrt(n[:, None] ** 2 + n[None, :] ** 2)
    w = torch.cos(torch.clamp(r / (taps / 2), max=1.0) * math.pi / 2) ** 2
    f = torch.sinc(0.5 * r) * w
    return (f / f.sum()).float()


# (x size, up, dtype) per layer 0..13, StyleGAN3-T; ToRGB is appended separately.
T256 = [(38, 2, "f32")] * 3 + [(38, 4, "f16"), (54, 2, "f16"), (54, 4, "f16"), (86, 2, "f16"), (86, 4, "f16"),
                               (150, 2, "f16"), (150, 2, "f16"), (150, 4, "f16"), (278, 2, "f16"), (278, 2, "f16"),
                               (278, 2, "f16")]
T1024 = [(38, 2, "f32"), (38, 2, "f32"), (38, 4, "f32"), (54, 2, "f32"), (54, 4, "f32"), (86, 4, "f16"),
         (150, 2, "f16"), (150, 4, "f16"), (278, 2, "f16"), (278, 4, "f16"), (534, 4, "f16"), (1046, 2, "f16"),
         (1046, 2, "f16"), (1046, 2, "f16")]
DT = {"f32": torch.float32, "f16": torch.float16}


def stylegan3_layers():
    """(id, x size, up, fu, fd, padding, dtype, gain, slope, clamp) for every filtered_lrelu call."""
    out = []
    for res, table in ((256, T256), (1024, T1024)):
        for cfg in ("T", "R"):
            for i, (xs, up, dt) in enumerate(table):
                last = i == len(table) - 1
                if cfg == "T":
                    pad = (-11, -12) if last else ((9, 8) if up == 2 else (-6, -9))
                    size = xs
                    fd = lowpass(12, 2)
                else:  # 1x1 conv: no +2 margin; radial fd except the two critically sampled layers
                    pad = (-9, -10) if last else ((11, 10) if up == 2 else (-2, -5))
                    size = xs - 2
                    fd = lowpass(12, 2) if i >= len(table) - 2 else radial(12)
                padding = (pad[0], pad[1], pad[0], pad[1])
                out.append((f"{cfg}{res}-L{i}", size, up, lowpass(6 * up, up), fd, padding, DT[dt], math.sqrt(2), 0.2,
                            256.0))
            out.append((f"{cfg}{res}-RGB", res, 1, None, None, (0, 0, 0, 0), torch.float16, 1.0, 1.0, 256.0))
    return out


LAYERS = stylegan3_layers()


def poison_allocator(numel: int):
    """Fill (then free) a block of the caching allocator with NaN so the next same-size allocation is
    very likely to reuse it: elements the kernel fails to write stay NaN."""
    junk = torch.full((numel,), -1, dtype=torch.int32, device=DEV)  # all-ones bits: NaN in fp32/fp16/bf16
    del junk


def run_and_compare(x, fu, fd, b, up, down, padding, gain, slope, clamp, dtype, check_grad=True):
    """Forward: CUDA vs the float64 reference. Sign record: vs float64 codes (a code may only differ where
    v is within fp32 rounding of 0, a handful of elements in millions). Backward (dx, db): CUDA vs the
    float64 explicit backward formula fed the same record, so rare legitimate code flips at v≈0 cannot
    masquerade as (or hide) kernel errors."""
    xd = x.to(DEV, dtype).requires_grad_(check_grad)
    bd = b.to(DEV, dtype).requires_grad_(check_grad)
    fud = None if fu is None else fu.to(DEV)
    fdd = None if fd is None else fd.to(DEV)
    x64, b64 = xd.detach().double(), bd.detach().double()
    fu64 = torch.ones(1, 1, dtype=torch.float64, device=DEV) if fud is None else fud.double()
    fd64 = torch.ones(1, 1, dtype=torch.float64, device=DEV) if fdd is None else fdd.double()
    ref = filtered_lrelu_ref(x64, fu64, fd64, b64, up, down, padding, gain, slope, clamp)
    poison_allocator(ref.numel() + 1024)
    y = filtered_lrelu(xd, fud, fdd, bd, up, down, padding, gain, slope, clamp, impl="cuda")
    assert y.dtype == dtype and y.shape == ref.shape
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    low = dtype not in (torch.float32, torch.float64)
    # the same-precision baseline: the PyTorch reference run in dtype (autograd for its gradients)
    xb = xd.detach().clone().requires_grad_(low and check_grad)
    bb = bd.detach().clone().requires_grad_(low and check_grad)
    base = filtered_lrelu_ref(xb, fud, fdd, bb, up, down, padding, gain, slope, clamp) if low else None
    assert_close_to_reference("forward", y, ref, None if base is None else base.detach(), dtype)
    if not check_grad:
        return
    pads = list(padding)
    fu32 = torch.ones(1, 1, device=DEV) if fud is None else fud
    fd32 = torch.ones(1, 1, device=DEV) if fdd is None else fdd
    _, signs = torch.ops.anyres_fast.filtered_lrelu(xd.detach(), fu32, fd32, bd.detach(), up, down, pads, gain, slope,
                                                    clamp, False, True)
    _, signs64 = fl._forward_explicit(x64, fu64, fd64, b64, up, down, tuple(pads), gain, slope, clamp, False, True)
    mismatch = int((signs != signs64).sum())
    assert mismatch <= max(3, signs.numel() // 100000), f"sign record: {mismatch} of {signs.numel()} bytes differ"
    dy = torch.randn(ref.shape, device=DEV, dtype=torch.float64).to(dtype).double()  # representable in dtype
    poison_allocator(x.numel() + 1024)
    dx, db = torch.autograd.grad(y, (xd, bd), dy.to(dtype))
    assert torch.isfinite(dx).all()
    dx_ref = fl._backward_explicit(dy, signs, fu64, fd64, x.shape[2], x.shape[3], up, down, tuple(pads), gain, slope,
                                   False)
    db_ref = dx_ref.sum(dim=(0, 2, 3))
    dx_base, db_base = torch.autograd.grad(base, (xb, bb), dy.to(dtype)) if low else (None, None)
    assert_close_to_reference("dx", dx, dx_ref, dx_base, dtype)
    assert_close_to_reference("db", db, db_ref, db_base, dtype)


@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_stylegan3_layers(layer):
    name, size, up, fu, fd, padding, dtype, gain, slope, clamp = layer
    gen = torch.Generator().manual_seed(LAYERS.index(layer))
    down = 1 if fd is None else 2
    c = 3
    x = torch.randn(1, c, size, size, generator=gen)
    b = torch.randn(c, generator=gen) * 0.2
    run_and_compare(x, fu, fd, b, up, down, padding, gain, slope, clamp, torch.float32)
    if dtype != torch.float32:
        run_and_compare(x, fu, fd, b, up, down, padding, gain, slope, clamp, dtype)


@pytest.mark.parametrize("shape,up,down,fu,fd,padding,clamp", [
    ((2, 5, 13, 17), 2, 2, lowpass(12, 2), lowpass(12, 2), (5, 4, 7, 2), 0.5),
    ((1, 3, 31, 7), 4, 2, lowpass(24, 4), radial(12), (-3, 1, 2, -4), None),
    ((2, 2, 9, 40), 1, 2, None, lowpass(7, 2), (3, 3, 0, 1), 1.0),
    ((1, 2, 11, 12), 2, 1, radial(6), None, (1, 2, 3, 4), 0.8),
    ((1, 2, 23, 19), 2, 4, lowpass(12, 2), lowpass(16, 4), (8, 8, 8, 8), None),
    ((3, 1, 5, 6), 4, 4, lowpass(9, 4), lowpass(8, 4), (4, 4, 4, 4), 0.3),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_odd_sizes(shape, up, down, fu, fd, padding, clamp, dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen)
    b = torch.randn(shape[1], generator=gen)
    run_and_compare(x, fu, fd, b, up, down, padding, 1.3, 0.2, clamp, dtype)


def test_flip_filter_and_asymmetric_filters():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 20, 21, generator=gen, device="cpu")
    fu = torch.randn(8, generator=gen)
    fd = torch.randn(5, 6, generator=gen)
    for flip in (False, True):
        xd = x.to(DEV)
        y = filtered_lrelu(xd, fu.to(DEV), fd.to(DEV), None, 2, 2, (3, 2, 1, 4), flip_filter=flip, impl="cuda")
        ref = filtered_lrelu_ref(x.double(), fu.double(), fd.double(), None, 2, 2, (3, 2, 1, 4), flip_filter=flip)
        assert ((y.cpu().double() - ref).norm() / ref.norm()).item() <= 1e-5


def test_noncontiguous_inputs():
    gen = torch.Generator().manual_seed(3)
    fu, fd = lowpass(12, 2).to(DEV), lowpass(12, 2).to(DEV)
    x = torch.randn(2, 4, 38, 38, generator=gen).to(DEV)
    b = torch.randn(4, generator=gen).to(DEV)
    ref = filtered_lrelu_ref(x.double(), fu.double(), fd.double(), b.double(), 2, 2, (9, 8, 9, 8))
    for variant in (x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3),
                    torch.randn(2, 4, 38, 76, device=DEV)[..., ::2].copy_(x)):
        assert not variant.is_contiguous()
        y = filtered_lrelu(variant, fu, fd, b, 2, 2, (9, 8, 9, 8), impl="cuda")
        assert ((y.double() - ref).norm() / ref.norm()).item() <= 1e-5


def test_more_than_65535_planes():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 33000, 6, 5, generator=gen)
    b = torch.randn(33000, generator=gen)
    run_and_compare(x, lowpass(4, 2), lowpass(4, 2), b, 2, 2, (2, 1, 2, 1), math.sqrt(2), 0.2, None, torch.float32)


def test_auto_picks_cuda_and_matches():
    x = torch.randn(1, 3, 20, 20, device=DEV)
    fu = lowpass(12, 2).to(DEV)
    y_auto = filtered_lrelu(x, fu, fu, None, 2, 2, (9, 8, 9, 8))
    y_cuda = filtered_lrelu(x, fu, fu, None, 2, 2, (9, 8, 9, 8), impl="cuda")
    assert torch.equal(y_auto, y_cuda)


def test_cuda_unsupported_configurations_raise():
    x = torch.randn(1, 3, 20, 20, device=DEV)
    with pytest.raises(OpUnsupported, match="up=3"):
        filtered_lrelu(x, lowpass(9, 3).to(DEV), None, up=3, padding=4, impl="cuda")
    with pytest.raises(OpUnsupported, match="dtype"):
        filtered_lrelu(x.double(), impl="cuda")
    with pytest.raises(ValueError, match="one device"):
        filtered_lrelu(x, lowpass(12, 2), None, up=2, padding=5)
    # auto falls back to the reference for what the kernel does not cover
    y = filtered_lrelu(x.double(), impl="auto")
    assert y.dtype == torch.float64


def test_opcheck_cuda():
    x = torch.randn(2, 3, 16, 15, device=DEV, requires_grad=True)
    b = torch.randn(3, device=DEV, requires_grad=True)
    fu, fd = lowpass(12, 2).to(DEV), radial(6).to(DEV)
    args = (x, fu, fd, b, 2, 2, [5, 4, 6, 3], math.sqrt(2), 0.2, 1.0, False, True)
    torch.library.opcheck(torch.ops.anyres_fast.filtered_lrelu.default, args)
    y, signs = torch.ops.anyres_fast.filtered_lrelu(*args)
    bargs = (torch.randn_like(y), signs, fu, fd, 16, 15, 2, 2, [5, 4, 6, 3], math.sqrt(2), 0.2, False)
    torch.library.opcheck(torch.ops.anyres_fast.filtered_lrelu_backward.default, bargs)
    margs = (torch.randn_like(x), signs, fu, fd, 2, 2, [5, 4, 6, 3], math.sqrt(2), 0.2, False)
    torch.library.opcheck(torch.ops.anyres_fast.filtered_lrelu_masked.default, margs)


def test_double_backward_matches_reference():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 19, 18, generator=gen)
    b = torch.randn(3, generator=gen)
    fu, fd = lowpass(12, 2), radial(12)
    w = torch.randn(2, 3, 19, 18, generator=gen)
    results = []
    for dev, dtype, impl in ((DEV, torch.float32, "cuda"), ("cpu", torch.float64, "ref")):
        xv = x.to(dev, dtype).requires_grad_(True)
        bv = b.to(dev, dtype).requires_grad_(True)
        y = filtered_lrelu(xv, fu.to(dev, dtype), fd.to(dev, dtype), bv, 2, 2, (11, 10, 11, 10), clamp=2.0, impl=impl)
        gx, gb = torch.autograd.grad((y ** 2).sum(), (xv, bv), create_graph=True)
        hx, hb = torch.autograd.grad((gx * w.to(dev, dtype)).sum() + gb.sum(), (xv, bv))
        results.append((hx.double().cpu(), hb.double().cpu()))
    (hx, hb), (rx, rb) = results
    assert ((hx - rx).norm() / rx.norm()).item() <= 1e-4
    assert ((hb - rb).norm() / rb.norm()).item() <= 1e-4


def test_sign_record_matches_cpu_kernel():
    """The CUDA record equals the CPU custom-op kernel's wherever the down filter reads (fp32 inputs far
    from 0 and from the clamp level, so rounding cannot flip a code)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 2, 20, 22, generator=gen)
    fu = torch.zeros(1, 1) + 1.0
    fd = lowpass(4, 2)
    x = torch.where(x.abs() < 0.05, torch.full_like(x, 0.5), x)
    args = lambda t: (t, fu.to(t.device), fd.to(t.device), None, 1, 2, [1, 2, 0, 3], 1.0, 0.2, 1.0, False, True)
    x = torch.where((x.abs() - 1.0).abs() < 0.05, torch.full_like(x, 0.5), x)
    _, s_cpu = torch.ops.anyres_fast.filtered_lrelu(*args(x))
    _, s_gpu = torch.ops.anyres_fast.filtered_lrelu(*args(x.to(DEV)))
    assert torch.equal(s_cpu, s_gpu.cpu())


# ----------------------------------------------------------------------------------------------------
# Launcher refusals predicted by the support check, bindings' device checks, launch error isolation

def test_too_many_tile_rows_falls_back_or_raises():
    """2.2M output rows need more than 65535 tile rows: auto falls back to the reference, cuda raises."""
    x = torch.randn(1, 1, 2_200_000, 1, device=DEV)
    with pytest.raises(OpUnsupported, match="tile rows"):
        filtered_lrelu(x, gain=1.0, impl="cuda")
    assert torch.equal(filtered_lrelu(x, gain=1.0, impl="auto"), filtered_lrelu_ref(x, gain=1.0))


def test_padding_beyond_the_coordinate_range_falls_back_or_raises():
    x = torch.randn(1, 1, 8, 8, device=DEV)
    pads = (0, 0, 2**29, -(2**29))
    with pytest.raises(OpUnsupported, match="padding"):
        filtered_lrelu(x, padding=pads, impl="cuda")
    assert torch.equal(filtered_lrelu(x, padding=pads, impl="auto"), filtered_lrelu_ref(x, padding=pads))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_binding_rejects_tensors_on_two_devices():
    x = torch.randn(1, 1, 8, 8, device="cuda:0")
    f = torch.ones(1, 1, device="cuda:1")
    y = torch.empty(1, 1, 8, 8, device="cuda:0")
    ext = fl._dispatch.extension()
    with pytest.raises(RuntimeError, match="one device"):
        ext.filtered_lrelu(x, x.new_empty((0,)), f, f, False, False, y, x.new_empty((0,), dtype=torch.uint8), 1, 1,
                           0, 0, 1.0, 0.2, math.inf, 0, 1, 0, 0, torch.cuda.current_stream().cuda_stream)


def test_pending_error_from_earlier_work_is_not_this_ops():
    """A CUDA runtime error left unchecked by earlier work (a failed cudaHostRegister) must not come back
    as this op's launch error: the op runs, and warns about the earlier error."""
    x = torch.randn(1, 2, 38, 38, device=DEV)
    f = lowpass(12, 2).to(DEV)
    want = filtered_lrelu(x, f, f, None, 2, 2, (9, 8, 9, 8), impl="cuda")
    rc = torch.cuda.cudart().cudaHostRegister(0, 1 << 20, 0)  # invalid pointer: sets the last error
    assert int(rc) != 0
    with pytest.warns(RuntimeWarning, match="earlier work"):
        got = filtered_lrelu(x, f, f, None, 2, 2, (9, 8, 9, 8), impl="cuda")
    assert torch.equal(got, want)
