"""filtered_lrelu on CPU: reference vs an independent definition, custom ops vs reference, gradients,
opcheck, sign record, bad input."""
import ctypes
import itertools
import math

import pytest
import torch
from helpers import rel_error
from helpers_flrelu_emulation import (EMU_CASES, EmulatedExtension, build_emulation,
                                      check_emulated_matches_reference)

from anyres_fast.ops import OpUnsupported, filtered_lrelu, filtered_lrelu_ref

# the package re-exports the function under the module's name, so fetch the module itself
from anyres_fast.ops import filtered_lrelu_op as fl

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------
# Independent definition: explicit zero insertion, explicit padding copy, direct FIR tap loops.

def _as_2d(f):
    if f is None:
        return torch.ones(1, 1, dtype=F64)
    f = f.to(F64)
    return torch.outer(f, f) if f.ndim == 1 else f


def _pad_explicit(z, px0, px1, py0, py1):
    n, c, h, w = z.shape
    out = torch.zeros(n, c, h + py0 + py1, w + px0 + px1, dtype=z.dtype)
    # source row r lands at r + py0; keep the part inside the output
    r0, r1 = max(0, -py0), min(h, h + py1)
    c0, c1 = max(0, -px0), min(w, w + px1)
    if r1 > r0 and c1 > c0:
        out[:, :, r0 + py0:r1 + py0, c0 + px0:c1 + px0] = z[:, :, r0:r1, c0:c1]
    return out


def _fir_explicit(z, f2, flip_filter):
    """'valid' convolution (correlation when flip_filter) as a sum over taps."""
    fh, fw = f2.shape
    n, c, h, w = z.shape
    oh, ow = h - fh + 1, w - fw + 1
    out = torch.zeros(n, c, oh, ow, dtype=z.dtype)
    for ky in range(fh):
        for kx in range(fw):
            tap = f2[ky, kx] if flip_filter else f2[fh - 1 - ky, fw - 1 - kx]
            out += tap * z[:, :, ky:ky + oh, kx:kx + ow]
    return out


def independent_filtered_lrelu(x, fu, fd, b, up, down, pads, gain, slope, clamp, flip_filter):
    x = x.to(F64)
    n, c, h, w = x.shape
    if b is not None:
        x = x + b.to(F64)[None, :, None, None]
    z = torch.zeros(n, c, h * up, w * up, dtype=F64)
    z[:, :, ::up, ::up] = x
    z = _pad_explicit(z, *pads)
    v = _fir_explicit(z, _as_2d(fu), flip_filter) * up * up
    a = torch.where(v > 0, v, v * slope) * gain
    if clamp is not None:
        a = torch.minimum(torch.maximum(a, torch.tensor(-clamp, dtype=F64)), torch.tensor(clamp, dtype=F64))
    t = _fir_explicit(a, _as_2d(fd), flip_filter)
    return t[:, :, ::down, ::down], v, a


def _full_pads(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def _filters(up, down, kind, gen):
    """Taps ~ 2*factor+1 (odd/even mix), non-square 2-D filters to catch x/y swaps."""
    if kind == "sep":
        fu = torch.randn(2 * up + (up > 1), generator=gen, dtype=F64) if up > 1 else None
        fd = torch.randn(2 * down + 1 if down > 1 else 3, generator=gen, dtype=F64)
    else:
        fu = torch.randn(2 * up + 1, 2 * up, generator=gen, dtype=F64)
        fd = torch.randn(2 * down, 2 * down + 1, generator=gen, dtype=F64)
    return fu, fd


PADDINGS = [3, (2, 4), (1, 3, 4, 0), (-1, 2, 3, -2)]
CASES = list(itertools.product((1, 2, 4), (1, 2), ("sep", "2d"), (False, True)))


@pytest.mark.parametrize("up,down,kind,flip", CASES)
def test_reference_matches_independent_definition(up, down, kind, flip):
    gen = torch.Generator().manual_seed(up * 100 + down * 10 + (kind == "2d") * 2 + flip)
    fu, fd = _filters(up, down, kind, gen)
    idx = CASES.index((up, down, kind, flip))
    padding = PADDINGS[idx % len(PADDINGS)]
    pads = _full_pads(padding)
    x = torch.randn(2, 3, 7, 6, generator=gen, dtype=F64)
    for with_bias, clamp in ((False, None), (True, 0.7)):
        b = torch.randn(3, generator=gen, dtype=F64) if with_bias else None
        expected, _, _ = independent_filtered_lrelu(x, fu, fd, b, up, down, pads, 1.3, 0.15, clamp, flip)
        got = filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain=1.3, slope=0.15, clamp=clamp,
                                 flip_filter=flip)
        public = filtered_lrelu(x, fu, fd, b, up, down, padding, gain=1.3, slope=0.15, clamp=clamp,
                                flip_filter=flip)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-10
        assert torch.equal(public, got)
        if clamp is not None:  # the clamp must have been active somewhere for the case to mean anything
            assert expected.abs().max().item() > 0


@pytest.mark.parametrize("padding", [0, 2, (3, 1), (2, 5, 1, 0), (-2, -1, -3, 4), (5, -4, -2, 3)])
def test_padding_forms(padding):
    gen = torch.Generator().manual_seed(7)
    fu = torch.randn(8, generator=gen, dtype=F64)
    fd = torch.randn(4, 5, generator=gen, dtype=F64)
    x = torch.randn(1, 2, 6, 9, generator=gen, dtype=F64)
    expected, _, _ = independent_filtered_lrelu(x, fu, fd, None, 2, 2, _full_pads(padding), math.sqrt(2), 0.2,
                                                None, False)
    got = filtered_lrelu_ref(x, fu, fd, None, up=2, down=2, padding=padding)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-10


def test_defaults_identity_filters():
    """No filters, up=down=1: plain bias + scaled leaky ReLU."""
    x = torch.randn(2, 3, 4, 5, dtype=F64)
    b = torch.randn(3, dtype=F64)
    got = filtered_lrelu(x, b=b)
    u = x + b[None, :, None, None]
    assert torch.allclose(got, torch.where(u > 0, u, 0.2 * u) * math.sqrt(2), rtol=0, atol=1e-14)


def test_reference_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 3, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=F64, requires_grad=True)
    fu = torch.randn(4, generator=gen, dtype=F64)
    fd = torch.randn(3, 2, generator=gen, dtype=F64)
    fn = lambda x, b: filtered_lrelu_ref(x, fu, fd, b, up=2, down=2, padding=(2, 1, 1, 0), clamp=1.5)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


# ----------------------------------------------------------------------------------------------------
# Custom ops (CPU kernels written from explicit formulas) vs the reference

OP_CASES = [
    # up, down, fu kind, fd kind, padding, clamp, flip
    (2, 2, "sep", "sep", (5, 4, 5, 4), 1.0, False),
    (4, 2, "sep", "2d", (-3, -4, -2, -5), None, True),
    (2, 2, "sep", "2d", (3, 2, 4, 1), 0.8, False),
    (1, 1, None, None, (0, 0, 0, 0), 0.5, False),
    (1, 2, None, "sep", (1, 0, 2, 1), None, False),
    (4, 1, "2d", None, (-1, 2, 0, -3), 1.0, True),
    (2, 4, "sep", "sep", (8, 7, 9, 6), None, False),
]


def _op_inputs(case, dtype=F64, seed=0):
    up, down, fuk, fdk, padding, clamp, flip = case
    gen = torch.Generator().manual_seed(seed)
    mk = lambda kind, fac: (None if kind is None else
                            torch.randn(4 * fac, generator=gen, dtype=dtype) if kind == "sep" else
                            torch.randn(2 * fac + 1, 2 * fac, generator=gen, dtype=dtype))
    fu, fd = mk(fuk, up), mk(fdk, down)
    x = torch.randn(2, 3, 9, 8, generator=gen, dtype=dtype)
    b = torch.randn(3, generator=gen, dtype=dtype)
    return x, fu, fd, b


def _call_op(x, fu, fd, b, case, write_signs=True):
    up, down, _, _, padding, clamp, flip = case
    one = torch.ones(1, 1, dtype=x.dtype)
    return torch.ops.anyres_fast.filtered_lrelu(x, one if fu is None else fu, one if fd is None else fd, b, up,
                                                down, list(padding), 1.1, 0.3, clamp, flip, write_signs)


@pytest.mark.parametrize("case", OP_CASES)
def test_custom_op_cpu_matches_reference(case):
    up, down, _, _, padding, clamp, flip = case
    x, fu, fd, b = _op_inputs(case)
    x.requires_grad_(True)
    b.requires_grad_(True)
    ref = filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain=1.1, slope=0.3, clamp=clamp, flip_filter=flip)
    y, signs = _call_op(x, fu, fd, b, case)
    assert (y - ref).abs().max().item() <= 1e-12
    dy = torch.randn_like(ref)
    dx_ref, db_ref = torch.autograd.grad(ref, (x, b), dy)
    dx, db = torch.autograd.grad(y, (x, b), dy)
    assert (dx - dx_ref).abs().max().item() <= 1e-12 * max(1.0, dx_ref.abs().max().item())
    assert (db - db_ref).abs().max().item() <= 1e-10 * max(1.0, db_ref.abs().max().item())


@pytest.mark.parametrize("case", [OP_CASES[0], OP_CASES[1], OP_CASES[5]])
def test_custom_op_double_backward(case):
    """The backward op and the masked op are adjoint; second-order gradients match the reference."""
    up, down, _, _, padding, clamp, flip = case
    x, fu, fd, b = _op_inputs(case, seed=4)
    x = x[:1, :2].clone().requires_grad_(True)
    b = b[:2].clone().requires_grad_(True)
    one = torch.ones(1, 1, dtype=F64)
    fu, fd = (one if fu is None else fu), (one if fd is None else fd)
    y, signs = _call_op(x, fu, fd, b, case)
    params = (up, down, list(padding), 1.1, 0.3, flip)
    dy = torch.randn_like(y)
    g = torch.randn_like(x)
    back = torch.ops.anyres_fast.filtered_lrelu_backward(dy, signs, fu, fd, x.shape[2], x.shape[3], *params)
    fwd = torch.ops.anyres_fast.filtered_lrelu_masked(g, signs, fu, fd, *params)
    assert abs((back * g).sum().item() - (dy * fwd).sum().item()) <= 1e-10 * (back.abs().sum().item() + 1)
    fn = lambda x, b: _call_op(x, fu, fd, b, case)[0]
    ref = lambda x, b: filtered_lrelu_ref(x, fu, fd, b, up, down, padding, 1.1, 0.3, clamp, flip)
    gx, gb = torch.autograd.grad((fn(x, b) ** 2).sum(), (x, b), create_graph=True)
    rx, rb = torch.autograd.grad((ref(x, b) ** 2).sum(), (x, b), create_graph=True)
    w = torch.randn_like(gx)
    hx, hb = torch.autograd.grad((gx * w).sum() + gb.sum(), (x, b))
    rhx, rhb = torch.autograd.grad((rx * w).sum() + rb.sum(), (x, b))
    assert torch.allclose(hx, rhx, rtol=1e-9, atol=1e-9) and torch.allclose(hb, rhb, rtol=1e-9, atol=1e-9)
    assert hx.abs().max().item() > 0


@pytest.mark.parametrize("case", OP_CASES[:3])
def test_sign_record_codes(case):
    """Codes in the record: 1 where v <= 0, 2 where the clamp was active, 0 elsewhere, over exactly the
    region the down filter reads; rows padded to 16 elements."""
    up, down, fuk, fdk, padding, clamp, flip = case
    x, fu, fd, b = _op_inputs(case)
    _, signs = _call_op(x, fu, fd, b, case)
    geo = fl.geometry(x.shape, fu, fd, up, down, padding)
    _, v, a_unclamped = independent_filtered_lrelu(x, fu, fd, b, up, down, padding, 1.1, 0.3, None, flip)
    expected = torch.where(v > 0, 0, 1)
    if clamp is not None:
        expected = torch.where(a_unclamped.abs() > clamp, 2, expected)
    expected = expected[:, :, :geo.sign_h, :geo.sign_w].to(torch.uint8)
    assert signs.shape == (2, 3, geo.sign_h, (geo.sign_w + 15) // 16 * 4)
    assert torch.equal(fl.unpack_signs(signs, geo.sign_w), expected)
    assert (fl.unpack_signs(signs, signs.shape[3] * 4)[..., geo.sign_w:] == 0).all()
    # byte layout: element k of a byte at bits 2k..2k+1
    e = expected.to(torch.int32)
    assert int(signs[0, 0, 0, 0]) == int(e[0, 0, 0, 0] | e[0, 0, 0, 1] << 2 | e[0, 0, 0, 2] << 4 | e[0, 0, 0, 3] << 6)


@pytest.mark.parametrize("case", [OP_CASES[0], OP_CASES[1], OP_CASES[3]])
def test_opcheck_cpu(case):
    x, fu, fd, b = _op_inputs(case, dtype=torch.float32)
    up, down, _, _, padding, clamp, flip = case
    one = torch.ones(1, 1)
    fu = one if fu is None else fu
    fd = one if fd is None else fd
    args = (x.requires_grad_(True), fu, fd, b.requires_grad_(True), up, down, list(padding), 1.1, 0.3, clamp,
            flip, True)
    torch.library.opcheck(torch.ops.anyres_fast.filtered_lrelu.default, args)
    y, signs = torch.ops.anyres_fast.filtered_lrelu(*args)
    bargs = (torch.randn_like(y), signs, fu, fd, x.shape[2], x.shape[3], up, down, list(padding), 1.1, 0.3, flip)
    torch.library.opcheck(torch.ops.anyres_fast.filtered_lrelu_backward.default, bargs)
    margs = (torch.randn_like(x), signs, fu, fd, up, down, list(padding), 1.1, 0.3, flip)
    torch.library.opcheck(torch.ops.anyres_fast.filtered_lrelu_masked.default, margs)


def test_half_and_bfloat16_reference_run_in_their_dtype():
    x = torch.randn(1, 2, 6, 6)
    fu = torch.randn(8)
    for dtype in (torch.float16, torch.bfloat16):
        y = filtered_lrelu(x.to(dtype), fu, fu, up=2, down=2, padding=3)
        y32 = filtered_lrelu(x, fu, fu, up=2, down=2, padding=3)
        assert y.dtype == dtype
        assert ((y.float() - y32).norm() / y32.norm()).item() < 3e-2


# ----------------------------------------------------------------------------------------------------
# Bad input: clear errors, never a crash

def _ok():
    return torch.randn(1, 2, 8, 8), torch.randn(8), torch.randn(8), torch.randn(2)


@pytest.mark.parametrize("mutate,exc,words", [
    (lambda a: a.update(x=torch.randn(2, 8, 8)), ValueError, "x must have 4"),
    (lambda a: a.update(b=torch.randn(3)), ValueError, "b has 3 elements"),
    (lambda a: a.update(b=torch.randn(2, 1)), ValueError, "b must have 1"),
    (lambda a: a.update(fu=torch.randn(2, 2, 2)), ValueError, "fu must have 1 or 2"),
    (lambda a: a.update(fd=torch.randn(0)), ValueError, "fd must not be empty"),
    (lambda a: a.update(fd=torch.randn(40)), ValueError, "too large"),
    (lambda a: a.update(gain=float("nan")), ValueError, "gain must be finite"),
    (lambda a: a.update(slope=float("inf")), ValueError, "slope must be finite"),
    (lambda a: a.update(clamp=float("inf")), ValueError, "clamp must be finite"),
    (lambda a: a.update(clamp=-1.0), ValueError, "clamp must be >= 0"),
    (lambda a: a.update(x=torch.randint(0, 3, (1, 2, 8, 8))), TypeError, "dtype"),
    (lambda a: a.update(up=0), ValueError, "up must be >= 1"),
    (lambda a: a.update(down=1.5), TypeError, "down must be an int"),
    (lambda a: a.update(padding=(1, 2, 3)), ValueError, "padding"),
    (lambda a: a.update(impl="fast"), ValueError, "impl must be one of"),
    (lambda a: a.update(impl="cuda"), OpUnsupported, "CUDA device"),
    (lambda a: a.update(flip_filter=1), TypeError, "flip_filter"),
])
def test_bad_input(mutate, exc, words):
    x, fu, fd, b = _ok()
    args = dict(x=x, fu=fu, fd=fd, b=b, up=2, down=2, padding=3)
    mutate(args)
    with pytest.raises(exc, match=words):
        filtered_lrelu(**args)


def test_cpu_gpu_mix_is_rejected():
    x, fu, fd, b = _ok()
    fake_gpu = torch.empty(8, device="meta")
    with pytest.raises(ValueError, match="one device"):
        filtered_lrelu(x, fake_gpu, fd, b, up=2, down=2, padding=3)


def test_auto_on_cpu_uses_reference():
    x, fu, fd, b = _ok()
    assert torch.equal(filtered_lrelu(x, fu, fd, b, 2, 2, 3, impl="auto"),
                       filtered_lrelu_ref(x, fu, fd, b, 2, 2, 3))


# ----------------------------------------------------------------------------------------------------
# The CUDA kernel's index math, run on the CPU: csrc/kernels/filtered_lrelu.cu compiled with g++ in host
# emulation (each CTA as one thread) and plugged in as the extension, so the Python CUDA path
# (_forward_cuda/_backward_cuda: filter flips, paddings, sign offsets, gains) and the kernel's tiling,
# polyphase indexing and sign-record ownership are checked against the reference without a GPU.

@pytest.fixture(scope="module")
def emulated_kernel(tmp_path_factory, monkeypatch_module):
    ext = EmulatedExtension(build_emulation(tmp_path_factory.mktemp("flrelu_emu")))
    monkeypatch_module.setattr(fl._dispatch, "extension", lambda: ext)
    return ext


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()



@pytest.mark.parametrize("case", EMU_CASES)
def test_emulated_kernel_matches_reference(emulated_kernel, case):
    check_emulated_matches_reference(case)


def test_emulated_kernel_noncontiguous_and_many_planes(emulated_kernel):
    """Strided input, no bias, no signs; N*C > 65535 exercises the chunked grid z."""
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(2, 9, 12, 4, generator=gen)
    x = base.permute(0, 3, 1, 2)[:, :, ::1, :]        # [2, 4, 9, 12], channels-last-like strides
    fu = torch.randn(6, generator=gen)
    y, signs = fl._forward_cuda(x, fu, fu, None, 2, 2, (3, 2, 3, 2), 1.0, 0.1, None, False, False)
    assert signs.numel() == 0
    assert rel_error(y, filtered_lrelu_ref(x.double(), fu.double(), fu.double(), None, 2, 2, (3, 2, 3, 2), 1.0, 0.1)) <= 1e-5
    x = torch.randn(1, 65536 + 7, 2, 3, generator=gen)
    b = torch.randn(x.shape[1], generator=gen)
    y, _ = fl._forward_cuda(x, None, None, b, 1, 1, (0, 0, 0, 0), 1.0, 0.2, None, False, False)
    assert torch.allclose(y, filtered_lrelu_ref(x, None, None, b, gain=1.0), rtol=1e-6, atol=1e-6)


def test_emulated_kernel_random_configurations(emulated_kernel):
    """60 random configurations (up/down in {1,2,4}, separable or 2-D filters of any tap count, paddings
    of both signs, odd sizes, flip, clamp): forward, backward and masked forward vs the reference."""
    rng = torch.Generator().manual_seed(2024)
    ri = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=rng))
    done = 0
    while done < 60:
        up, down = (1, 2, 4)[ri(0, 2)], (1, 2, 4)[ri(0, 2)]
        mk = lambda: (torch.randn(ri(1, 14), generator=rng, dtype=F64) if ri(0, 1) else
                      torch.randn(ri(1, 9), ri(1, 9), generator=rng, dtype=F64))
        fu, fd = mk(), mk()
        pads = tuple(ri(-6, 9) for _ in range(4))
        shape = (ri(1, 2), ri(1, 3), ri(1, 24), ri(1, 24))
        geo = fl.geometry(shape, fu, fd, up, down, pads)
        if geo.buf_w < geo.fd_w or geo.buf_h < geo.fd_h:
            continue
        done += 1
        flip, clamp = bool(ri(0, 1)), (None, 0.8)[ri(0, 1)]
        x = torch.randn(*shape, generator=rng, dtype=F64)
        b = torch.randn(shape[1], generator=rng, dtype=F64)
        ref = filtered_lrelu_ref(x, fu, fd, b, up, down, pads, 1.2, 0.25, clamp, flip)
        y, signs = fl._forward_cuda(x.float(), fu.float(), fd.float(), b.float(), up, down, pads, 1.2, 0.25, clamp,
                                    flip, True)
        assert (y.double() - ref).abs().max().item() <= 1e-5 * (ref.abs().max().item() + 1)
        dy = torch.randn(ref.shape, generator=rng, dtype=F64)
        dx = fl._backward_cuda(dy.float(), signs, fu.float(), fd.float(), shape[2], shape[3], up, down, pads, 1.2,
                               0.25, flip)
        dx_ref = fl._backward_explicit(dy, signs, fu, fd, shape[2], shape[3], up, down, pads, 1.2, 0.25, flip)
        assert (dx.double() - dx_ref).abs().max().item() <= 1e-5 * (dx_ref.abs().max().item() + 1)
        g = torch.randn(shape, generator=rng, dtype=F64)
        m = fl._masked_cuda(g.float(), signs, fu.float(), fd.float(), up, down, pads, 1.2, 0.25, flip)
        m_ref = fl._masked_explicit(g, signs, fu, fd, up, down, pads, 1.2, 0.25, flip)
        assert (m.double() - m_ref).abs().max().item() <= 1e-5 * (m_ref.abs().max().item() + 1)


def test_sign_record_every_word_written(emulated_kernel, monkeypatch):
    """The forward writes every 32-bit word of the sign record, padding and unread elements included, so
    it is allocated without a zero fill: on a record pre-filled with 0xFF (garbage) no 2-bit code 3 may
    remain, padding codes are 0, and the read elements match the CPU record."""
    real = emulated_kernel.filtered_lrelu

    def poisoned(x, b, fu, fd, fu_rev, fd_rev, y, signs, *rest):
        if signs.numel():
            signs.fill_(0xFF)
        return real(x, b, fu, fd, fu_rev, fd_rev, y, signs, *rest)

    monkeypatch.setattr(emulated_kernel, "filtered_lrelu", poisoned)
    gen = torch.Generator().manual_seed(8)
    # model shape (compile-time taps); a down filter shorter than down (rows/cols nobody reads); runtime taps
    for shape, up, down, fus, fds, pads in (((1, 2, 38, 37), 2, 2, (12,), (12,), (9, 8, 9, 8)),
                                            ((1, 1, 21, 30), 2, 4, (5,), (3,), (2, 3, 1, 4)),
                                            ((2, 1, 19, 45), 1, 1, (3, 3), None, (1, 1, 1, 1))):
        x = torch.randn(*shape, generator=gen)
        fu = torch.randn(*fus, generator=gen)
        fd = None if fds is None else torch.rand(*fds, generator=gen)
        _, signs = fl._forward_cuda(x, fu, fd, None, up, down, pads, 1.0, 0.2, 0.5, False, True)
        geo = fl.geometry(x.shape, fu, fd, up, down, pads)
        codes = fl.unpack_signs(signs, signs.shape[3] * 4)
        assert not (codes == 3).any(), "record words left unwritten"
        assert not codes[..., geo.sign_w:].any(), "row padding must be code 0"
        one = torch.ones(1, 1)
        _, want = fl._forward_explicit(x, fu, one if fd is None else fd, None, up, down, pads, 1.0, 0.2, 0.5,
                                       False, True)
        rows = (torch.arange(geo.sign_h) % down) < geo.fd_h
        cols = (torch.arange(geo.sign_w) % down) < geo.fd_w
        got, ref = codes[..., :geo.sign_w][:, :, rows][..., cols], fl.unpack_signs(want, geo.sign_w)[:, :, rows][..., cols]
        assert (got != ref).double().mean().item() <= 1e-3


def test_sign_record_view_at_an_odd_offset(emulated_kernel):
    """A sign record that is a contiguous view with a storage offset (not 4-byte aligned): the kernel
    stores 32-bit words, which fault on a GPU, so _launch writes through an aligned temporary and the
    launcher itself refuses the pointer (issue 28 item 4). The emulation counts misaligned stores."""
    lib = emulated_kernel.lib
    lib.emu_misaligned_stores.restype = ctypes.c_long
    gen = torch.Generator().manual_seed(3)
    x, fu, fd = torch.randn(1, 2, 20, 21, generator=gen), torch.randn(12, generator=gen), torch.rand(12, generator=gen)
    pads = (9, 8, 9, 8)
    y_ref, want = fl._forward_cuda(x, fu, fd, None, 2, 2, pads, 1.0, 0.2, 0.5, False, True)
    geo = fl.geometry(x.shape, fu, fd, 2, 2, pads)
    storage = torch.full((want.numel() + 1,), 0xFF, dtype=torch.uint8)
    signs = storage[1:].view(want.shape)  # contiguous, byte offset 1
    assert signs.is_contiguous() and signs.data_ptr() % 4 != 0
    y = torch.empty_like(y_ref)
    before = lib.emu_misaligned_stores()
    fl._launch(x, None, fl._kernel_filter(fu, False, x.device), fl._kernel_filter(fd, False, x.device), y, signs,
               2, 2, pads[0], pads[2], 1.0, 0.2, 0.5, fl.SIGN_WRITE, geo.sign_w, 0, 0)
    assert lib.emu_misaligned_stores() == before, "32-bit sign words stored at a misaligned address"
    assert torch.equal(signs, want) and torch.equal(y, y_ref)
    # the launcher refuses the misaligned record outright (what the binding also checks)
    (fu_c, fu_rev), (fd_c, fd_rev) = fl._kernel_filter(fu, False, x.device), fl._kernel_filter(fd, False, x.device)
    with pytest.raises(AssertionError, match="launcher returned"):
        emulated_kernel.filtered_lrelu(x, x.new_empty((0,)), fu_c, fd_c, fu_rev, fd_rev, y, signs, 2, 2, pads[0],
                                       pads[2], 1.0, 0.2, 0.5, fl.SIGN_WRITE, geo.sign_w, 0, 0, 0)


def test_launch_plan_matches_the_launcher(emulated_kernel):
    """filtered_lrelu.launch_plan (the support check's prediction) equals the C++ launcher's plan: tile,
    shared memory, grid, compile-time variant and refusal, over random parameters and shared-memory limits."""
    import ctypes
    lib = emulated_kernel.lib
    rng = torch.Generator().manual_seed(77)
    ri = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=rng))
    cases = [(2, 2, 38, 38, 36, 36, 9, 9, 12, 12, 1, 12, 12, 1, 1, 0, 0, 227 * 1024),
             (4, 2, 38, 38, 52, 52, -6, -6, 24, 24, 1, 12, 12, 0, 1, 0, 0, 227 * 1024),
             (2, 4, 52, 52, 38, 38, 30, 30, 12, 12, 0, 24, 24, 1, 2, -17, -17, 100 * 1024),
             (1, 1, 2_200_000, 1, 2_200_000, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 227 * 1024),  # too many rows
             (2, 2, 8, 8, 9, 9, 2**28 + 5, 0, 3, 3, 1, 3, 3, 1, 0, 0, 0, 227 * 1024)]           # padding range
    for _ in range(150):
        up, down = (1, 2, 4)[ri(0, 2)], (1, 2, 4)[ri(0, 2)]
        fu_sep, fd_sep = ri(0, 1), ri(0, 1)
        fu_w = ri(1, 64) if fu_sep else ri(1, 32)
        fd_w = ri(1, 64) if fd_sep else ri(1, 32)
        fu_h = fu_w if fu_sep else ri(1, 32)
        fd_h = fd_w if fd_sep else ri(1, 32)
        mode = ri(0, 2)
        cases.append((up, down, ri(1, 300), ri(1, 300), ri(1, 3000), ri(1, 300), ri(-40, 40), ri(-40, 40), fu_w, fu_h,
                      fu_sep, fd_w, fd_h, fd_sep, mode, 0 if mode != 2 else ri(-30, 0), 0 if mode != 2 else ri(-30, 0),
                      (227, 163, 99, 48, 20)[ri(0, 4)] * 1024))
    out = (ctypes.c_int64 * 6)()
    for c in cases:
        *v, smem = c
        rc = lib.emu_plan((ctypes.c_int * 17)(*v), smem, out)
        (up, down, in_h, in_w, out_h, out_w, px, py, fu_w, fu_h, fu_sep, fd_w, fd_h, fd_sep, mode, sx, sy) = v
        plan = fl.launch_plan(up, down, in_h, in_w, out_h, out_w, px, py, fu_w, fu_h, bool(fu_sep), fd_w, fd_h,
                              bool(fd_sep), mode == 1, (sx, sy), smem)
        assert (rc != 0) == (plan["reason"] is not None), (c, rc, plan)
        assert plan["variant"] == ("compile-time taps" if out[5] else "runtime taps"), c
        if rc in (0, 100001) and plan["tile_w"]:
            assert (plan["tile_w"], plan["tile_h"], plan["smem_bytes"]) == tuple(out[:3]), (c, plan, list(out))
            if rc == 0:
                assert (plan["grid_x"], plan["grid_y"]) == tuple(out[3:5]), c


def test_support_check_predicts_launcher_refusals():
    """impl="auto" must fall back (and impl="cuda" raise OpUnsupported) where the launcher would refuse:
    more than 65535 tile rows, paddings beyond the kernel's coordinate range. Checked on the support
    predicate with meta tensors (no memory, no GPU); a model configuration stays on the kernel."""
    def reason(shape, fu, fd, up, down, pads):
        x = torch.empty(shape, device="meta")
        geo = fl.geometry(x.shape, fu, fd, up, down, pads)
        return fl._cuda_unsupported(x, fu, fd, up, down, geo)

    f12 = torch.ones(12, device="meta")
    assert reason((1, 4, 38, 38), f12, f12, 2, 2, (9, 8, 9, 8)) is None
    tall = reason((1, 1, 2_200_000, 1), None, None, 1, 1, (0, 0, 0, 0))
    assert tall is not None and "tile rows" in tall
    shifted = reason((1, 1, 8, 8), None, None, 1, 1, (0, 0, 2**29, -(2**29)))
    assert shifted is not None and "padding" in shifted
