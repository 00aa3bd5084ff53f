"""torch.compile(fullgraph=True) on every op, forward and backward (docs/ops.md §1).

CPU: backend "aot_eager". It runs dynamo (the whole public function must trace without a graph break:
validation, impl dispatch and the reference math) and AOTAutograd (forward and backward graphs through
the registered fake kernels and autograd formulas), which is what the op contract promises. Inductor
would add only code generation, which compiles C++ for every graph and costs minutes on 2 cores.
Two groups: the public functions (on CPU tensors they run the references), and the registered custom
ops `torch.ops.anyres_fast.*` called directly (the CUDA path's ops, here with their CPU kernels).

CUDA (GPU machines only, @pytest.mark.cuda): mode="reduce-overhead" (inductor + CUDA graphs) through
impl="cuda". A CUDA graph cannot hold a pageable host copy or a synchronisation; inductor skips graphs
that need one and counts the skip, so the test asserts no skip and that replays match eager.
"""
import pytest
import torch
from torch.testing import assert_close

from anyres_fast import ops

F32 = torch.float32


def _inputs(device="cpu", dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return dict(
        x=rnd(2, 3, 12, 12), b=rnd(3), f12=ops.setup_filter([1, 3, 3, 1] * 3).to(device),
        f2d=(rnd(4, 4).abs() / 16).float(), w=rnd(4, 3, 3, 3) / 5, s=rnd(2, 3) * 0.3 + 1,
        smap=rnd(2, 3, 12, 12) * 0.3 + 1, patch=rnd(2, 3, 16, 16))


# name -> (function of the inputs dict and impl, names of the differentiable inputs)
PUBLIC = {
    "filtered_lrelu": (lambda t, impl: ops.filtered_lrelu(t["x"], t["f12"], t["f12"], t["b"], up=2, down=2, padding=5,
                                                          clamp=2.0, impl=impl), ("x", "b")),
    "filtered_lrelu_2d": (lambda t, impl: ops.filtered_lrelu(t["x"], None, t["f2d"], None, up=1, down=2,
                                                             padding=(1, 2, 2, 1), flip_filter=True, impl=impl), ("x",)),
    "lanczos_resample": (lambda t, impl: ops.lanczos_resample(t["x"], (7, 9), impl=impl), ("x",)),
    "lanczos_resample_box": (lambda t, impl: ops.lanczos_resample(t["x"], (8, 8), box=(1.5, -2.0, 10.0, 9.5),
                                                                  return_mask=True, impl=impl), ("x",)),
    "teacher_warp": (lambda t, impl: ops.teacher_warp(t["patch"], 48, (16, 8), 16, impl=impl), ("patch",)),
    "modulated_conv2d": (lambda t, impl: ops.modulated_conv2d(t["x"], t["w"], t["s"], padding=1, impl=impl),
                         ("x", "w", "s")),
    "modulated_conv2d_up2": (lambda t, impl: ops.modulated_conv2d(t["x"], t["w"], t["s"], up=2, demodulate=False,
                                                                  impl=impl), ("x", "w", "s")),
    "style_fused_conv2d": (lambda t, impl: ops.style_fused_conv2d(t["x"], t["w"], t["smap"], padding=1, impl=impl),
                           ("x", "w", "smap")),
    "style_fused_conv2d_pointwise": (lambda t, impl: ops.style_fused_conv2d(t["x"], t["w"], t["smap"], up=2,
                                                                            demod="pointwise", impl=impl),
                                     ("x", "w", "smap")),
    "upfirdn2d": (lambda t, impl: ops.upfirdn2d(t["x"], t["f12"], up=2, down=1, padding=(6, 5, 6, 5), gain=4.0,
                                                impl=impl), ("x",)),
    "bias_act": (lambda t, impl: ops.bias_act(t["x"], t["b"], act="lrelu", clamp=1.5, impl=impl), ("x", "b")),
}

# The registered custom ops, called as the CUDA path calls them.
_lz = torch.ops.anyres_fast
CUSTOM = {
    "anyres_fast::filtered_lrelu": (lambda t: _lz.filtered_lrelu(t["x"], t["f12"], t["f12"], t["b"], 2, 2,
                                                                 [5, 5, 5, 5], 2 ** 0.5, 0.2, 2.0, False, True)[0],
                                    ("x", "b")),
    "anyres_fast::lanczos_resample": (lambda t: _lz.lanczos_resample(
        t["x"], torch.tensor([[0.0, 0.0, 12.0, 12.0], [1.0, 2.0, 9.0, 11.0]], dtype=torch.float64,
                             device=t["x"].device), 5, 6, 3, True, 12, 12)[0], ("x",)),
    "anyres_fast::modulated_conv2d": (lambda t: _lz.modulated_conv2d(t["x"], t["w"], t["s"], True, 1, 1, 1e-8),
                                      ("x", "w", "s")),
    "anyres_fast::style_fused_conv2d": (lambda t: _lz.style_fused_conv2d(t["x"], t["w"], t["smap"], 1, 1, "exact",
                                                                         1e-8), ("x", "w", "smap")),
}


def _run(fn, inputs, grads):
    """Output and the gradients of a fixed random projection of it w.r.t. the named inputs."""
    leaves = {k: v.detach().clone().requires_grad_(k in grads) for k, v in inputs.items()}
    out = fn(leaves)
    y = out[0] if isinstance(out, tuple) else out
    proj = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y)
    g = torch.autograd.grad((y * proj).sum(), [leaves[k] for k in grads])
    return out, g


def _check_compiled(fn, grads, inputs, **compile_kw):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, **compile_kw)
    want, want_g = _run(fn, inputs, grads)
    for _ in range(3 if compile_kw.get("mode") == "reduce-overhead" else 1):   # warm-up, record, replay
        got, got_g = _run(compiled, inputs, grads)
    if isinstance(want, tuple):
        for a, b in zip(got, want):
            assert_close(a, b) if a.dtype.is_floating_point else torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        assert_close(got, want)
    for a, b in zip(got_g, want_g):
        assert_close(a, b)


@pytest.mark.parametrize("name", list(PUBLIC))
def test_public_op_compiles_fullgraph_cpu(name):
    fn, grads = PUBLIC[name]
    _check_compiled(lambda t: fn(t, "auto"), grads, _inputs(), backend="aot_eager")


@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_op_compiles_fullgraph_cpu(name):
    fn, grads = CUSTOM[name]
    _check_compiled(fn, grads, _inputs(), backend="aot_eager")


def test_compile_catches_a_graph_break():
    """The fullgraph check is not vacuous: a data-dependent Python branch in the traced code fails."""
    torch._dynamo.reset()

    def fn(x):
        if x.sum() > 0:                    # data-dependent control flow: a graph break
            return ops.bias_act(x, act="relu")
        return x

    with pytest.raises(Exception, match="(?i)data-dependent|graph break|Unsupported"):
        torch.compile(fn, fullgraph=True, backend="aot_eager")(torch.ones(3))


# ----------------------------------------------------------------------------------------------------
# CUDA graphs (reduce-overhead) through the kernels

CUDA_CASES = {k: v for k, v in PUBLIC.items() if k not in ("upfirdn2d", "bias_act")}   # reference-only ops


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(CUDA_CASES))
def test_public_op_cuda_graphs(name):
    from torch._dynamo.utils import counters
    fn, grads = CUDA_CASES[name]
    counters.clear()
    _check_compiled(lambda t: fn(t, "cuda"), grads, _inputs("cuda"), mode="reduce-overhead")
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
