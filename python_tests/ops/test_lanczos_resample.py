"""lanczos_resample on the CPU: reference vs PIL and vs a brute-force definition, mask, gradients,
custom op (CPU kernel, explicit backward, opcheck), bad input."""
import math

import numpy as np
import pytest
import torch
from helpers import natural_image, pil_resize

from anyres_fast.ops import lanczos_resample, lanczos_resample_ref
from anyres_fast.ops.lanczos_resample_op import _lanczos_backward_op, _lanczos_op, max_taps


# ----------------------------------------------------------------------------------------------------
# Test data and independent definitions.

def brute_force_weights(n_in, n_out, start, end, a, antialias):
    """Per output pixel, every input pixel with |t| < a weighted by sinc(t)·sinc(t/a), normalised
    (numpy's sinc, set to its exact value 0 at nonzero integers; no tap windows, no tables)."""
    scale = (end - start) / n_out
    fs = max(scale, 1.0) if antialias else 1.0
    t = (np.arange(n_in)[None, :] + 0.5 - (start + (np.arange(n_out)[:, None] + 0.5) * scale)) / fs
    w = np.where((np.abs(t) < a) & ((t == 0) | (t != np.round(t))), np.sinc(t) * np.sinc(t / a), 0.0)
    total = w.sum(1, keepdims=True)
    return w / np.where(total == 0, 1.0, total)


def brute_force(img, out_hw, box, a=3, antialias=True):
    h, w = img.shape
    x0, y0, x1, y1 = box
    wy = brute_force_weights(h, out_hw[0], y0, y1, a, antialias)
    wx = brute_force_weights(w, out_hw[1], x0, x1, a, antialias)
    return wy @ img @ wx.T


def as_tensor(img, dtype=torch.float64):
    return torch.tensor(img, dtype=dtype)[None, None]


# ----------------------------------------------------------------------------------------------------
# Reference vs PIL (the independent definition named by the design).

# (H, W, out_hw, box or None). Boxes are exact in float32 (PIL passes boxes as float32).
PIL_CASES = [
    # shrink factors 1..8 (non-square input; some factors fractional after rounding the size)
    (96, 72, (95, 70), (0.25, 0.5, 70.25, 95.5)),   # factor 1, fractional shift
    (96, 72, (48, 36), None),
    (96, 72, (32, 24), None),
    (96, 72, (24, 18), None),
    (96, 72, (19, 14), None),
    (96, 72, (16, 12), None),
    (96, 72, (14, 10), None),
    (96, 72, (12, 9), None),
    (200, 152, (25, 19), None),                     # 8x on a larger image
    # enlargements up to 4x
    (24, 18, (48, 36), None),
    (24, 18, (60, 45), None),
    (24, 18, (96, 72), None),
    (17, 23, (68, 92), None),
    # fractional boxes
    (96, 72, (17, 13), (3.25, 5.5, 60.75, 90.125)),
    (96, 72, (40, 50), (10.5, 20.25, 30.75, 41.5)),  # enlarge a fractional region
    (64, 64, (9, 31), (0.125, 7.0, 63.875, 50.0)),
    # non-square, different factors per axis
    (96, 72, (12, 36), None),
    (24, 72, (96, 9), None),
    (33, 47, (5, 94), None),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(PIL_CASES)))
def test_matches_pil(case, dtype):
    h, w, out_hw, box = PIL_CASES[case]
    img = natural_image(h, w, seed=case)
    got = lanczos_resample(as_tensor(img, dtype), out_hw, box=box, impl="ref")[0, 0].double().numpy()
    want = pil_resize(img, out_hw, box)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4


def test_matches_pil_per_sample_boxes_and_channels():
    h, w = 80, 64
    imgs = [natural_image(h, w, seed=100 + i) for i in range(6)]
    x = torch.tensor(np.stack(imgs)).reshape(3, 2, h, w)          # B=3, C=2
    boxes = torch.tensor([[0.0, 0.0, 64.0, 80.0], [5.5, 2.25, 40.75, 70.0], [12.0, 30.5, 20.0, 36.5]])
    out_hw = (20, 16)
    y = lanczos_resample(x, out_hw, box=boxes, impl="ref")
    for b in range(3):
        for c in range(2):
            want = pil_resize(x[b, c].numpy(), out_hw, tuple(boxes[b].tolist()))
            assert np.abs(y[b, c].numpy() - want).max() <= 1e-4


# ----------------------------------------------------------------------------------------------------
# Reference vs the brute-force definition: other a, no antialias, boxes reaching outside the input.

@pytest.mark.parametrize("a,antialias,out_hw,box", [
    (3, True, (9, 11), (-4.5, -2.0, 30.0, 27.25)),    # box reaching outside: taps excluded, renormalised
    (2, True, (7, 5), (0.0, 0.0, 26.0, 21.0)),
    (4, True, (40, 33), (1.5, -3.0, 20.0, 19.5)),
    (3, False, (8, 6), (0.0, 0.0, 26.0, 21.0)),        # shrink without the stretched kernel
    (1, False, (30, 30), (2.25, 3.5, 22.0, 18.0)),
    (3, True, (21, 26), (-2.0, -1.0, 24.0, 20.0)),    # integer shift at scale 1
])
def test_matches_brute_force(a, antialias, out_hw, box):
    img = natural_image(21, 26, seed=7)
    got = lanczos_resample(as_tensor(img), out_hw, box=box, a=a, antialias=antialias, impl="ref")[0, 0].numpy()
    want = brute_force(img, out_hw, box, a, antialias)
    assert np.abs(got - want).max() <= 1e-12


def test_integer_shift_is_exact():
    """Lanczos is exactly 0 at nonzero integers, so a unit-scale integer shift copies pixels exactly."""
    x = torch.randn(2, 3, 12, 10, dtype=torch.float32)
    y, mask = lanczos_resample(x, (12, 10), box=(2, -1, 12, 11), impl="ref", return_mask=True)
    assert torch.equal(y[:, :, 1:, :8], x[:, :, :11, 2:])
    assert mask[:, 0, 1:, :8].all() and not mask[:, 0, 0, :].any() and not mask[:, 0, :, 8:].any()


def test_identity_is_bitwise_copy():
    x = torch.randn(2, 3, 9, 7)
    x[0, 0, 0, 0] = -0.0
    x[1, 2, 3, 4] = float("inf")
    for impl in ("ref", "auto"):
        y, mask = lanczos_resample(x, (9, 7), impl=impl, return_mask=True)
        assert torch.equal(y.view(torch.int32), x.view(torch.int32)) and mask.all()
        assert y.data_ptr() != x.data_ptr()


# ----------------------------------------------------------------------------------------------------
# Validity mask: valid exactly where the output does not depend on content outside the input.

@pytest.mark.parametrize("out_hw,box", [
    ((13, 17), (-5.25, -3.5, 30.75, 24.0)),   # shrink, box beyond every side
    ((40, 36), (-3.0, 2.5, 20.0, 26.5)),      # enlarge
    ((21, 26), (-2.0, -1.0, 24.0, 20.0)),     # integer shift at scale 1 (exact zeros of the kernel)
    ((11, 14), (-6.0, -9.0, 36.0, 24.0)),     # factor 3 with integer offsets (every third tap a zero)
])
def test_mask_is_exactly_independence_from_outside(out_hw, box):
    h, w, pad = 21, 26, 40
    img = natural_image(h, w, seed=3)
    rng = np.random.default_rng(4)
    big = rng.uniform(-1, 2, (h + 2 * pad, w + 2 * pad))
    big[pad:pad + h, pad:pad + w] = img
    y, mask = lanczos_resample(as_tensor(img), out_hw, box=box, impl="ref", return_mask=True)
    shifted = (box[0] + pad, box[1] + pad, box[2] + pad, box[3] + pad)
    y_big = lanczos_resample(as_tensor(big), out_hw, box=shifted, impl="ref")
    diff = (y - y_big).abs()[0, 0]
    mask = mask[0, 0]
    assert mask.any() and (~mask).any()
    assert diff[mask].max() <= 1e-12          # valid: the outside content does not matter
    assert diff[~mask].min() > 1e-9           # invalid: it does


# ----------------------------------------------------------------------------------------------------
# Gradients.

@pytest.mark.parametrize("out_hw,box", [((4, 5), None), ((11, 14), "per_sample")])
def test_gradcheck_ref(out_hw, box):
    x = torch.randn(2, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    if box == "per_sample":
        box = torch.tensor([[-1.5, 0.25, 8.0, 7.0], [2.0, 1.0, 6.5, 5.75]], dtype=torch.float64)
    fn = lambda t: lanczos_resample_ref(t, out_hw, box=box)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def _op_args(x, out_hw, boxes, a=3, antialias=True):
    boxes = boxes.to(torch.float64)
    h, w = x.shape[2:]
    return (x, boxes, out_hw[0], out_hw[1], a, antialias, max_taps(boxes, 1, h, out_hw[0], a, antialias),
            max_taps(boxes, 0, w, out_hw[1], a, antialias))


OP_CASES = [((5, 6), [[0.0, 0.0, 13.0, 11.0], [1.5, -2.0, 10.25, 12.0]]),
            ((20, 9), [[0.0, 0.0, 13.0, 11.0], [3.0, 2.0, 7.0, 9.5]])]


@pytest.mark.parametrize("out_hw,boxes", OP_CASES)
def test_custom_op_cpu_matches_ref_forward_backward(out_hw, boxes):
    boxes = torch.tensor(boxes, dtype=torch.float64)
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64, requires_grad=True)
    y, valid_rows, valid_cols = _lanczos_op(*_op_args(x, out_hw, boxes))
    y_ref, mask_ref = lanczos_resample_ref(x, out_hw, box=boxes, return_mask=True)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-13)
    assert torch.equal(valid_rows[:, :, None] & valid_cols[:, None, :], mask_ref[:, 0])
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    (dx_ref,) = torch.autograd.grad(y_ref, x, g)
    assert torch.allclose(dx, dx_ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("out_hw,boxes", OP_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck_cpu(out_hw, boxes, dtype):
    x = torch.randn(2, 3, 11, 13, dtype=dtype, requires_grad=True)
    args = _op_args(x, out_hw, torch.tensor(boxes))
    torch.library.opcheck(_lanczos_op, args)
    grad = torch.randn(2, 3, *out_hw, dtype=dtype)
    torch.library.opcheck(_lanczos_backward_op, (grad, args[1], 11, 13) + args[4:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_ref(dtype):
    x = torch.rand(2, 3, 30, 22, dtype=torch.float64)
    want = lanczos_resample(x, (11, 17), box=(1.5, 2.0, 20.0, 29.0), impl="ref")
    got = lanczos_resample(x.to(dtype), (11, 17), box=(1.5, 2.0, 20.0, 29.0), impl="ref")
    assert got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert ((got.double() - want).norm() / want.norm()).item() <= tol


def test_public_function_on_cpu_uses_ref_and_cuda_impl_raises():
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(lanczos_resample(x, 4, impl="auto"), lanczos_resample_ref(x, 4))
    from anyres_fast.ops import OpUnsupported
    with pytest.raises(OpUnsupported, match="lanczos_resample"):
        lanczos_resample(x, 4, impl="cuda")


# ----------------------------------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize("kwargs,error,match", [
    (dict(size=(4, 4), box=(3.0, 0.0, 3.0, 8.0)), ValueError, "empty"),
    (dict(size=(4, 4), box=(0.0, 5.0, 8.0, 2.0)), ValueError, "inverted"),
    (dict(size=(0, 4)), ValueError, "size"),
    (dict(size=0), ValueError, "size"),
    (dict(size=(4, 4), box=(0.0, float("nan"), 8.0, 8.0)), ValueError, "finite"),
    (dict(size=(4, 4), box=(100.0, 0.0, 120.0, 8.0)), ValueError, "outside"),
    (dict(size=(4, 4), box=(0.0, -50.0, 8.0, -20.0)), ValueError, "outside"),
    (dict(size=(4, 4), box=torch.tensor([[0.0, 0.0, 8.0, 8.0], [1.0, 1.0, 1.0, 5.0]])), ValueError, r"box\[1\].*empty"),
    (dict(size=(4, 4), box=torch.zeros(3, 4)), ValueError, "batch"),
    (dict(size=(4, 4), box=(0.0, 0.0, 8.0)), ValueError, "4 values"),
    (dict(size=(4, 4), box="abcd"), TypeError, "box"),
    (dict(size=(4, 4), a=0), ValueError, "a must be"),
    (dict(size=(4, 4), a=2.5), TypeError, "a must be"),
    (dict(size=(4, 4), antialias=1), TypeError, "antialias"),
    (dict(size=(4.5, 4)), TypeError, "size"),
    (dict(size=(4, 4, 4)), ValueError, "size"),
    (dict(size=(4, 4), impl="fast"), ValueError, "impl"),
])
def test_bad_input(kwargs, error, match):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(error, match=match):
        lanczos_resample(x, **kwargs)


def test_bad_tensor():
    with pytest.raises(ValueError, match="dimensions"):
        lanczos_resample(torch.rand(8, 8), (4, 4))
    with pytest.raises(TypeError, match="dtype"):
        lanczos_resample(torch.ones(1, 1, 8, 8, dtype=torch.int32), (4, 4))
    with pytest.raises(ValueError, match="empty"):
        lanczos_resample(torch.rand(1, 0, 8, 8), (4, 4))


def test_huge_box_is_bounded():
    """A huge box overlapping the input uses at most W taps per pixel (no blow-up) and stays finite."""
    x = torch.rand(1, 1, 8, 8)
    y, mask = lanczos_resample(x, (4, 4), box=(-1e9, -1e9, 1e9, 1e9), impl="ref", return_mask=True)
    assert torch.isfinite(y).all() and not mask.any()
    assert max_taps(torch.tensor([[-1e9, -1e9, 1e9, 1e9]]), 0, 8, 4, 3, True) == 8
    assert math.isfinite(float(y.sum()))


def test_boxes_reach_the_device_without_a_host_copy(monkeypatch):
    """One box for the batch (None, 4 numbers, a (4,) tensor) reaches x's device without any host-to-device
    tensor copy (fill kernels; on CUDA a pageable copy per call would also block CUDA-graph capture).
    Checked on the meta device, where every host->device transfer goes through Tensor.to / copy_ and is
    recorded; and the public op routes its boxes through that helper."""
    from anyres_fast.ops import lanczos_resample as op_fn
    from anyres_fast.ops import lanczos_resample_op as lzm
    transfers = []
    real_to, real_copy = torch.Tensor.to, torch.Tensor.copy_

    def to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type != "cpu":
            transfers.append(tuple(self.shape))
        return out

    def copy_(self, src, *args, **kwargs):
        if src.device.type == "cpu" and self.device.type != "cpu":
            transfers.append(tuple(src.shape))
        return real_copy(self, src, *args, **kwargs)

    meta = torch.device("meta")
    for box in (None, (1.0, 2.0, 20.5, 18.0), torch.tensor([1.0, 2.0, 20.5, 18.0])):
        host = lzm.boxes_tensor(lzm.OP, box, 3, (20, 24))
        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch.Tensor, "copy_", copy_)
        dev = lzm._device_boxes(box, host, meta)
        monkeypatch.undo()
        assert dev.shape == (3, 4) and dev.dtype == torch.float64 and dev.device == meta
    assert transfers == []
    seen = []
    real_helper = lzm._device_boxes
    monkeypatch.setattr(lzm, "_device_boxes", lambda *a: seen.append(a[2]) or real_helper(*a))
    op_fn(torch.rand(1, 1, 6, 7, generator=torch.Generator().manual_seed(0)), (3, 4), box=(0.5, 0.5, 6.0, 5.0))
    assert seen == [torch.device("cpu")]
