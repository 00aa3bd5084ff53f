"""Fuzzing every op's arguments (hypothesis, derandomised: the same examples on every run).

Contract (docs/ops.md §1): a call either returns a result of the documented shape and dtype, finite for
finite input, or raises one of the op's documented errors (TypeError, ValueError, MemoryError,
OpUnsupported) with a message that names the op. Anything else (an IndexError, a ZeroDivisionError, an
internal torch RuntimeError from deep inside the reference) fails the test. The CPU run goes through
each op's public function (impl="auto" and "ref"); the CUDA run (GPU machines only) sends the same
arguments through impl="cuda" and the launch checks of the kernels.
"""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from anyres_fast import ops
from anyres_fast.ops import OpUnsupported

# Examples per op on the CPU (the file takes about 12 s of CPU time) and on a GPU;
# ANYRES_FAST_FUZZ_EXAMPLES=N runs a deeper search by hand.
EXAMPLES = int(os.environ.get("ANYRES_FAST_FUZZ_EXAMPLES", 60))
CUDA_EXAMPLES = int(os.environ.get("ANYRES_FAST_FUZZ_EXAMPLES", 40))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_CUDA = settings(FUZZ, max_examples=CUDA_EXAMPLES)

DOCUMENTED = (TypeError, ValueError, MemoryError, OpUnsupported)
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------
# Strategies

def tensor(shape, dtype, seed, device="cpu", scale=1.0):
    """Seeded tensor of any dtype (integers and bools for the wrong-dtype cases)."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        t = torch.rand(shape, generator=g) > 0.5
    elif not dtype.is_floating_point:
        t = torch.randint(-3, 4, shape, generator=g).to(dtype)
    else:
        t = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    return t.to(device)


seeds = st.integers(0, 2**31 - 1)
junk_ints = st.one_of(st.integers(-2, 0), st.just(2.0), st.just(True), st.none(), st.just("2"), st.just(10**12))
junk_scalars = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.just("1"), st.just([1.0]))
valid_pads = st.one_of(st.integers(-3, 10), st.tuples(st.integers(-3, 10), st.integers(-3, 10)),
                       st.lists(st.integers(-3, 10), min_size=4, max_size=4))
junk_pads = st.one_of(st.just((1, 2, 3)), st.just(10**12), st.just(-(10**12)), st.just("3"), st.just((1.5, 2)),
                      st.just(None))
junk_tensors = st.sampled_from(["ints", "bool", "empty", "ndim", "list", "none"])


def junk_tensor(kind, shape):
    """A wrong argument where a tensor of `shape` is expected."""
    return {"ints": lambda: torch.ones(shape, dtype=torch.int64), "bool": lambda: torch.ones(shape, dtype=torch.bool),
            "empty": lambda: torch.zeros((0,) + tuple(shape[1:])), "ndim": lambda: torch.ones(tuple(shape) + (2,)),
            "list": lambda: [[1.0, 2.0]], "none": lambda: None}[kind]()


@st.composite
def pick(draw, names, valid, junk, bad_share=3):
    """Valid values for every name except at most one (drawn), which gets a junk value. About
    bad_share / (bad_share + len(names)) of the examples are fully valid."""
    bad = draw(st.sampled_from([None] * bad_share + list(names)))
    return {n: draw(junk[n]) if n == bad else draw(valid[n]) for n in names}, bad


@st.composite
def float_tensor(draw, shape):
    dtype = draw(st.sampled_from(FLOATS + (torch.float32,) * 4))
    return tensor(shape, dtype, draw(seeds))


@st.composite
def filters(draw):
    kind = draw(st.sampled_from(["none", "1d", "1d", "2d"]))
    seed = draw(seeds)
    if kind == "none":
        return None
    if kind == "1d":
        k = draw(st.integers(1, 8))
        return tensor((k,), draw(st.sampled_from(FLOATS)), seed, scale=1 / k)
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return tensor((kh, kw), torch.float32, seed, scale=1 / (kh * kw))


junk_filters = st.sampled_from([torch.zeros(0), torch.ones(2, 2, 2), torch.ones(3, dtype=torch.int64), [1.0, 2.0]])


def to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def check_outcome(op, call, expect):
    """Runs call(); a documented error must name the op; a result is checked by expect(result)."""
    try:
        result = call()
    except DOCUMENTED as exc:
        assert str(exc).startswith(op), f"{type(exc).__name__} without the op's name: {exc}"
        return None
    expect(result)
    return result


def _finite_float(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def expect_tensor(shape, dtype, finite=True):
    def check(y):
        assert isinstance(y, torch.Tensor)
        assert tuple(y.shape) == tuple(shape), (tuple(y.shape), shape)
        assert y.dtype == dtype
        if finite:
            assert torch.isfinite(y).all(), "non-finite result for finite input"
    return check


def _pads(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    padding = list(padding)
    return (padding[0], padding[0], padding[1], padding[1]) if len(padding) == 2 else tuple(padding)


def _fsize(f):
    if f is None:
        return 1, 1
    return (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])


# ----------------------------------------------------------------------------------------------------
# One fuzz driver per op; the CPU and CUDA tests share them.

@st.composite
def filtered_lrelu_args(draw):
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    valid = dict(x=float_tensor((n, c, h, w)), fu=filters(), fd=filters(),
                 b=st.one_of(st.none(), st.builds(lambda s: tensor((c,), torch.float32, s), seeds)),
                 up=st.integers(1, 4), down=st.integers(1, 4), padding=valid_pads, gain=st.floats(-3, 3),
                 slope=st.floats(-1, 1), clamp=st.one_of(st.none(), st.floats(0, 3)), flip_filter=st.booleans())
    junk = dict(x=junk_tensors.map(lambda k: junk_tensor(k, (n, c, h, w))), fu=junk_filters, fd=junk_filters,
                b=st.sampled_from([torch.ones(c + 1), torch.ones(c, 1), torch.ones(c, dtype=torch.int64)]),
                up=junk_ints, down=junk_ints, padding=junk_pads, gain=junk_scalars, slope=junk_scalars,
                clamp=st.one_of(junk_scalars, st.just(-1.0)), flip_filter=st.sampled_from([1, None, "yes"]))
    kw, _ = draw(pick(list(valid), valid, junk))
    return kw.pop("x"), kw


def run_filtered_lrelu(x, kw, device, impl):
    kw = {k: to(v, device) for k, v in kw.items()}
    x = to(x, device)

    def expect(y):
        (fw_u, fh_u), (fw_d, fh_d) = _fsize(kw["fu"]), _fsize(kw["fd"])
        up, down, (p0, p1, p2, p3) = kw["up"], kw["down"], _pads(kw["padding"])
        out_w = (x.shape[3] * up + p0 + p1 - (fw_u - 1) - fw_d) // down + 1
        out_h = (x.shape[2] * up + p2 + p3 - (fh_u - 1) - fh_d) // down + 1
        expect_tensor((x.shape[0], x.shape[1], out_h, out_w), x.dtype,
                      finite=all(_finite_float(kw[k]) or kw[k] is None for k in ("gain", "slope", "clamp")))(y)

    return check_outcome("filtered_lrelu", lambda: ops.filtered_lrelu(x, **kw, impl=impl), expect)


@st.composite
def lanczos_args(draw):
    n, c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    box_numbers = st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(1, 14), st.floats(1, 14)).filter(
        lambda b: b[2] > b[0] + 0.1 and b[3] > b[1] + 0.1)
    valid = dict(x=float_tensor((n, c, h, w)),
                 size=st.one_of(st.integers(1, 14), st.tuples(st.integers(1, 14), st.integers(1, 14))),
                 box=st.one_of(st.none(), box_numbers, box_numbers.map(lambda b: torch.tensor([b] * n)),
                               box_numbers.map(lambda b: torch.tensor(b))),
                 a=st.integers(1, 8), antialias=st.booleans(), return_mask=st.booleans())
    junk = dict(x=junk_tensors.map(lambda k: junk_tensor(k, (n, c, h, w))),
                size=st.sampled_from([0, -1, (3, 4, 5), 2.5, (0, 3), "4", (10**6, 10**6)]),
                box=st.sampled_from([[1, 2, 3], "box", (0.0, 0.0, math.nan, 4.0), (3.0, 0.0, 3.0, 4.0),
                                     (5.0, 0.0, 1.0, 4.0), (100.0, 100.0, 200.0, 200.0),
                                     torch.ones(n + 1, 4), torch.ones(n, 5), torch.ones(n, 4, dtype=torch.bool)]),
                a=st.sampled_from([0, 9, 2.0, None]), antialias=st.sampled_from([0, None]),
                return_mask=st.booleans())
    kw, _ = draw(pick(list(valid), valid, junk))
    return kw.pop("x"), kw


def run_lanczos(x, kw, device, impl):
    x = to(x, device)
    kw = {k: to(v, device) for k, v in kw.items()}

    def expect(out):
        hw = (kw["size"], kw["size"]) if isinstance(kw["size"], int) else tuple(kw["size"])
        y = out[0] if kw["return_mask"] else out
        expect_tensor((x.shape[0], x.shape[1]) + hw, x.dtype)(y)
        if kw["return_mask"]:
            assert out[1].shape == (x.shape[0], 1) + hw and out[1].dtype == torch.bool

    return check_outcome("lanczos_resample", lambda: ops.lanczos_resample(x, **kw, impl=impl), expect)


@st.composite
def teacher_args(draw):
    n, c, ph, pw = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 10)), draw(st.integers(1, 10))
    canvas = draw(st.integers(max(ph, pw), 40))
    xy = (draw(st.integers(0, canvas - pw)), draw(st.integers(0, canvas - ph)))
    valid = dict(x=float_tensor((n, c, ph, pw)), canvas_size=st.sampled_from([canvas, float(canvas), torch.tensor([canvas] * n)]),
                 box_xy=st.sampled_from([xy, torch.tensor(xy), torch.tensor([xy] * n, dtype=torch.float32)]),
                 teacher_size=st.integers(1, 12))
    junk = dict(x=junk_tensors.map(lambda k: junk_tensor(k, (n, c, ph, pw))),
                canvas_size=st.sampled_from([0, -3, math.nan, "32", torch.ones(n + 1), 1]),
                box_xy=st.sampled_from([(1, 2, 3), None, (canvas, 0), (-1, 0), (0.0, math.inf), torch.ones(n + 1, 2)]),
                teacher_size=st.sampled_from([0, -1, 4.0, (4, 4)]))
    kw, _ = draw(pick(list(valid), valid, junk))
    return kw.pop("x"), kw


def run_teacher(x, kw, device, impl):
    x = to(x, device)

    def expect(out):
        t = kw["teacher_size"]
        expect_tensor((x.shape[0], x.shape[1], t, t), x.dtype)(out[0])
        assert out[1].shape == (x.shape[0], 1, t, t) and out[1].dtype == torch.bool

    return check_outcome("teacher_warp", lambda: ops.teacher_warp(x, **kw, impl=impl), expect)


@st.composite
def conv_args(draw, style_map):
    b, i, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = draw(st.integers(1, 4))
    h, w = draw(st.integers(k, 7)), draw(st.integers(k, 7))
    dtype = draw(st.sampled_from(FLOATS + (torch.float32,) * 4))
    s_shape = (b, i, h, w) if style_map else (b, i)
    valid = dict(x=st.builds(lambda s: tensor((b, i, h, w), dtype, s), seeds),
                 weight=st.builds(lambda s: tensor((o, i, k, k), dtype, s, scale=1 / (i * k * k) ** 0.5), seeds),
                 styles=st.builds(lambda s, d: tensor(s_shape, d, s) * 0.25 + 1.0, seeds, st.sampled_from(FLOATS)),
                 padding=st.integers(0, k - 1), up=st.integers(1, 2), eps=st.sampled_from([1e-8, 1e-4, 1.0]))
    junk = dict(x=junk_tensors.map(lambda j: junk_tensor(j, (b, i, h, w))),
                weight=st.sampled_from([torch.ones(o, i + 1, k, k, dtype=dtype), torch.ones(o, i, k, dtype=dtype),
                                        torch.ones(o, i, k, k, dtype=torch.float64 if dtype != torch.float64 else torch.float32)]),
                styles=st.sampled_from([torch.ones(b, i + 1), torch.ones(i), torch.ones(b, i, h + 1, w), None]),
                padding=st.sampled_from([-1, k, 1.0, None]), up=st.sampled_from([0, 3, True, 2.0]),
                eps=st.sampled_from([0.0, -1.0, math.nan, "e"]))
    if style_map:
        valid["demod"] = st.sampled_from(["exact", "pointwise", "none"])
        junk["demod"] = st.sampled_from(["bogus", None, True])
    else:
        valid["demodulate"] = st.booleans()
        junk["demodulate"] = st.sampled_from([1, None, "yes"])
    kw, _ = draw(pick(list(valid), valid, junk))
    return kw.pop("x"), kw.pop("weight"), kw.pop("styles"), kw


def run_conv(op, args, device, impl):
    x, weight, styles, kw = (to(a, device) for a in args)
    fn = getattr(ops, op)

    def expect(y):
        p, up, kh = kw["padding"], kw["up"], weight.shape[2]
        size = lambda n: n + 2 * p - kh + 1 if up == 1 else 2 * (n - 1) + kh - 2 * p
        expect_tensor((x.shape[0], weight.shape[0], size(x.shape[2]), size(x.shape[3])), x.dtype)(y)

    return check_outcome(op, lambda: fn(x, weight, styles, **kw, impl=impl), expect)


@st.composite
def upfirdn_args(draw):
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    updown = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
    valid = dict(x=float_tensor((n, c, h, w)), f=filters(), up=updown, down=updown, padding=valid_pads,
                 flip_filter=st.booleans(), gain=st.floats(-3, 3))
    junk = dict(x=junk_tensors.map(lambda k: junk_tensor(k, (n, c, h, w))), f=junk_filters,
                up=st.one_of(junk_ints, st.just((1, 2, 3)), st.just((0, 1))), down=junk_ints, padding=junk_pads,
                flip_filter=st.booleans(), gain=junk_scalars)
    kw, _ = draw(pick(list(valid), valid, junk))
    return kw.pop("x"), kw


def run_upfirdn(x, kw, device, impl):
    x = to(x, device)
    kw = {k: to(v, device) for k, v in kw.items()}

    def expect(y):
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        (ux, uy), (dx, dy), (p0, p1, p2, p3), (fw, fh) = pair(kw["up"]), pair(kw["down"]), _pads(kw["padding"]), _fsize(kw["f"])
        shape = (x.shape[0], x.shape[1], (x.shape[2] * uy + p2 + p3 - fh) // dy + 1,
                 (x.shape[3] * ux + p0 + p1 - fw) // dx + 1)
        expect_tensor(shape, x.dtype)(y)

    return check_outcome("upfirdn2d", lambda: ops.upfirdn2d(x, **kw, impl=impl), expect)


@st.composite
def bias_act_args(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    valid = dict(x=float_tensor(shape),
                 b=st.one_of(st.none(), st.builds(lambda s: tensor((shape[dim],), torch.float32, s), seeds)),
                 dim=st.just(dim),
                 act=st.sampled_from(["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]),
                 alpha=st.one_of(st.none(), st.floats(-1, 1)), gain=st.one_of(st.none(), st.floats(-3, 3)),
                 clamp=st.one_of(st.none(), st.floats(0, 3)))
    junk = dict(x=st.sampled_from([torch.tensor(1.0), torch.ones(shape, dtype=torch.int64), [1.0], None]),
                b=st.sampled_from([torch.ones(shape[dim] + 1), torch.ones(2, 2), torch.ones(1, dtype=torch.bool)]),
                dim=st.sampled_from([len(shape), -len(shape) - 1, 1.0, None]), act=st.sampled_from(["gelu", None, 3]),
                alpha=junk_scalars, gain=junk_scalars, clamp=st.one_of(junk_scalars, st.just(-1.0)))
    kw, _ = draw(pick(list(valid), valid, junk))
    return kw.pop("x"), kw


def run_bias_act(x, kw, device, impl):
    x = to(x, device)
    kw = {k: to(v, device) for k, v in kw.items()}
    return check_outcome("bias_act", lambda: ops.bias_act(x, **kw, impl=impl),
                         lambda y: expect_tensor(x.shape, x.dtype)(y))


# ----------------------------------------------------------------------------------------------------
# CPU

IMPLS = st.sampled_from(["auto", "auto", "auto", "ref", "cuda", "fast"])


@FUZZ
@given(filtered_lrelu_args(), IMPLS)
def test_fuzz_filtered_lrelu(args, impl):
    run_filtered_lrelu(*args, "cpu", impl)


@FUZZ
@given(lanczos_args(), IMPLS)
def test_fuzz_lanczos_resample(args, impl):
    run_lanczos(*args, "cpu", impl)


@FUZZ
@given(teacher_args(), IMPLS)
def test_fuzz_teacher_warp(args, impl):
    run_teacher(*args, "cpu", impl)


@FUZZ
@given(conv_args(style_map=False), IMPLS)
def test_fuzz_modulated_conv2d(args, impl):
    run_conv("modulated_conv2d", args, "cpu", impl)


@FUZZ
@given(conv_args(style_map=True), IMPLS)
def test_fuzz_style_fused_conv2d(args, impl):
    run_conv("style_fused_conv2d", args, "cpu", impl)


@FUZZ
@given(upfirdn_args(), IMPLS)
def test_fuzz_upfirdn2d(args, impl):
    run_upfirdn(*args, "cpu", impl)


@FUZZ
@given(bias_act_args(), IMPLS)
def test_fuzz_bias_act(args, impl):
    run_bias_act(*args, "cpu", impl)


# ----------------------------------------------------------------------------------------------------
# Memory guard and NaN spread (docs/ops.md §1, §3.1)

@pytest.mark.parametrize("call", [
    lambda x: ops.filtered_lrelu(x, padding=10**12),
    lambda x: ops.filtered_lrelu(x, ops.setup_filter([1, 2, 1]), padding=(10**6, 10**6, 10**6, 10**6), up=2),
    lambda x: ops.lanczos_resample(x, (10**6, 10**6)),
    lambda x: ops.teacher_warp(x, 10**7, (0, 0), 10**6),
    lambda x: ops.upfirdn2d(x, padding=10**12),
    lambda x: ops.modulated_conv2d(torch.ones(1, 2, 64, 64), torch.ones(10**6, 2, 1, 1), torch.ones(1, 2)),
    lambda x: ops.style_fused_conv2d(torch.ones(1, 2, 64, 64), torch.ones(10**6, 2, 1, 1), torch.ones(1, 2, 64, 64)),
], ids=["flrelu_pad", "flrelu_pad4", "lanczos", "teacher", "upfirdn2d", "modconv", "sfconv"])
def test_memory_guard_stops_before_allocating(call, monkeypatch):
    """Estimates beyond what the machine has raise MemoryError with the estimate and the limit; a fixed
    limit makes the test independent of the machine's memory."""
    monkeypatch.setattr(ops._dispatch, "available_memory", lambda device: 8 * 2**30)
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MemoryError, match=r"needs about .* but only 8\.0 GiB is available"):
        call(x)


def test_memory_guard_leaves_normal_calls_alone(monkeypatch):
    monkeypatch.setattr(ops._dispatch, "available_memory", lambda device: 2**30)
    x = torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    f = ops.setup_filter([1, 3, 3, 1] * 3)
    assert ops.filtered_lrelu(x, f, f, up=2, down=2, padding=5).shape == (1, 2, 58, 58)
    assert ops.lanczos_resample(x, (32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("size,box", [((10, 10), None), ((80, 80), None), ((40, 40), (0.5, 0.5, 40.5, 40.5)),
                                      ((17, 23), (-5.0, 3.0, 30.0, 41.0))])
def test_lanczos_nan_stays_in_window(size, box):
    """A NaN input pixel makes exactly the outputs whose kernel window gives it a nonzero weight NaN,
    nothing else (the dense reference would otherwise spread it along rows and columns)."""
    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, 0, 20, 13] = math.nan
    y = ops.lanczos_resample(x, size, box=box)
    # the op is linear: the outputs that weigh pixel (20, 13) are those of a unit impulse there
    impulse = torch.zeros_like(x)
    impulse[0, 0, 20, 13] = 1.0
    reach = ops.lanczos_resample(impulse, size, box=box) != 0
    assert reach.any() and not reach.all()
    assert torch.equal(torch.isnan(y), reach)
    clean = ops.lanczos_resample(x.nan_to_num(0.0), size, box=box)
    assert_close(y[~reach], clean[~reach], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# CUDA: the same arguments through impl="cuda" (the launch checks) and impl="auto"

CUDA_IMPLS = st.sampled_from(["cuda", "auto"])


@pytest.mark.cuda
@FUZZ_CUDA
@given(filtered_lrelu_args(), CUDA_IMPLS)
def test_fuzz_filtered_lrelu_cuda(args, impl):
    run_filtered_lrelu(*args, "cuda", impl)


@pytest.mark.cuda
@FUZZ_CUDA
@given(lanczos_args(), CUDA_IMPLS)
def test_fuzz_lanczos_resample_cuda(args, impl):
    run_lanczos(*args, "cuda", impl)


@pytest.mark.cuda
@FUZZ_CUDA
@given(teacher_args(), CUDA_IMPLS)
def test_fuzz_teacher_warp_cuda(args, impl):
    run_teacher(*args, "cuda", impl)


@pytest.mark.cuda
@FUZZ_CUDA
@given(conv_args(style_map=False), CUDA_IMPLS)
def test_fuzz_modulated_conv2d_cuda(args, impl):
    run_conv("modulated_conv2d", args, "cuda", impl)


@pytest.mark.cuda
@FUZZ_CUDA
@given(conv_args(style_map=True), CUDA_IMPLS)
def test_fuzz_style_fused_conv2d_cuda(args, impl):
    run_conv("style_fused_conv2d", args, "cuda", impl)
