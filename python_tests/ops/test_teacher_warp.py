"""teacher_warp (docs/ops.md §3.2, inverse mode) on the CPU: identity, patches warped back onto the
Lanczos-downsized canvas (PIL), and a mask that is exactly 'does not depend on anything outside the patch'."""
import numpy as np
import pytest
import torch
from helpers import natural_image, pil_resize

from anyres_fast.ops import teacher_warp

# (canvas N, patch p, teacher T, top-left (x0, y0) of the patch on the canvas)
CONFIGS = [
    (64, 32, 32, (16, 8)),     # N = 2p
    (96, 32, 32, (33, 50)),    # N = 3p: every third tap of the kernel sits on a zero
    (48, 32, 32, (7, 13)),     # N = 1.5p
    (128, 32, 32, (64, 40)),   # N = 4p
    (80, 40, 24, (21, 30)),    # teacher smaller than the patch
]


def cut_patch(canvas, p, xy):
    x0, y0 = xy
    return canvas[y0:y0 + p, x0:x0 + p]


def warp_one(patch, n, xy, t, dtype=torch.float64):
    x = torch.tensor(patch, dtype=dtype)[None, None]
    warped, mask = teacher_warp(x, n, torch.tensor([xy], dtype=torch.float64), t, impl="ref")
    return warped[0, 0].double().numpy(), mask[0, 0].numpy()


def test_identity_patch_is_exact_identity():
    patch = torch.randn(3, 4, 32, 32)
    patch[0, 0, 0, 0] = -0.0
    warped, mask = teacher_warp(patch, 32, torch.zeros(3, 2), 32)
    assert torch.equal(warped.view(torch.int32), patch.view(torch.int32))
    assert mask.shape == (3, 1, 32, 32) and mask.all()


def test_identity_sample_in_a_mixed_batch_is_exact():
    """Through the general path (no copy shortcut): unit-scale integer-aligned weights are exactly one-hot."""
    patch = torch.randn(2, 3, 32, 32)
    warped, mask = teacher_warp(patch, torch.tensor([32.0, 64.0]), torch.tensor([[0.0, 0.0], [16.0, 8.0]]), 32)
    assert torch.equal(warped[0], patch[0]) and mask[0].all()
    assert not mask[1].all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,p,t,xy", CONFIGS)
def test_patch_lands_on_downsized_canvas(n, p, t, xy, dtype):
    canvas = natural_image(n, n, seed=n + xy[0])
    teacher = pil_resize(canvas, (t, t))
    warped, mask = warp_one(cut_patch(canvas, p, xy), n, xy, t, dtype)
    assert mask.sum() >= 1
    assert np.abs(warped - teacher)[mask].max() <= 1e-4


@pytest.mark.parametrize("n,p,t,xy", CONFIGS)
def test_mask_excludes_exactly_pixels_whose_support_leaves_the_patch(n, p, t, xy):
    """Independent check with PIL: change the canvas outside the patch; the teacher pixels whose
    Lanczos support stays inside the patch keep their value bit for bit, all others change."""
    canvas = natural_image(n, n, seed=n + 1)
    other = np.random.default_rng(n).uniform(-1.0, 2.0, (n, n))
    x0, y0 = xy
    other[y0:y0 + p, x0:x0 + p] = canvas[y0:y0 + p, x0:x0 + p]
    unchanged = pil_resize(canvas, (t, t)) == pil_resize(other, (t, t))
    _, mask = warp_one(cut_patch(canvas, p, xy), n, xy, t)
    assert unchanged.any() and (~unchanged).any()
    np.testing.assert_array_equal(mask, unchanged)


def test_non_square_patch():
    n, t, (x0, y0), (ph, pw) = 96, 32, (20, 37), (24, 40)
    canvas = natural_image(n, n, seed=5)
    patch = torch.tensor(canvas[y0:y0 + ph, x0:x0 + pw])[None, None]
    warped, mask = teacher_warp(patch, n, torch.tensor([[x0, y0]], dtype=torch.float64), t, impl="ref")
    mask = mask[0, 0].numpy()
    assert mask.any()
    assert np.abs(warped[0, 0].numpy() - pil_resize(canvas, (t, t)))[mask].max() <= 1e-4


def test_mask_lies_inside_the_patch_square():
    n, p, t, (x0, y0) = 64, 32, 32, (16, 8)
    _, mask = warp_one(np.zeros((p, p)), n, (x0, y0), t)
    rows, cols = np.nonzero(mask)
    s = t / n
    assert rows.min() >= y0 * s and rows.max() + 1 <= (y0 + p) * s
    assert cols.min() >= x0 * s and cols.max() + 1 <= (x0 + p) * s


def test_per_sample_batch_matches_single_samples_and_has_gradients():
    patches = torch.rand(3, 2, 32, 32, dtype=torch.float64, requires_grad=True)
    n = torch.tensor([64.0, 96.0, 48.0])
    xy = torch.tensor([[16.0, 8.0], [33.0, 50.0], [7.0, 13.0]])
    warped, mask = teacher_warp(patches, n, xy, 32)
    for b in range(3):
        w1, m1 = teacher_warp(patches[b:b + 1], float(n[b]), xy[b], 32)
        # the batched matmul may associate differently from a single one (BLAS blocking): 1-ulp differences
        torch.testing.assert_close(w1[0], warped[b], rtol=0, atol=1e-12)
        assert torch.equal(m1[0], mask[b])
    (warped * mask).sum().backward()
    assert patches.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(canvas_size=64, box_xy=(40.0, 0.0)), ValueError, "inside its canvas"),
    (dict(canvas_size=64, box_xy=(-1.0, 0.0)), ValueError, "inside its canvas"),
    (dict(canvas_size=16, box_xy=(0.0, 0.0)), ValueError, "inside its canvas"),
    (dict(canvas_size=0, box_xy=(0.0, 0.0)), ValueError, "canvas_size"),
    (dict(canvas_size=64, box_xy=(float("nan"), 0.0)), ValueError, "finite"),
    (dict(canvas_size=64, box_xy=torch.zeros(3, 2)), ValueError, "box_xy"),
    (dict(canvas_size=64, box_xy=(0.0, 0.0), teacher_size=0), ValueError, "teacher_size"),
    (dict(canvas_size="big", box_xy=(0.0, 0.0)), TypeError, "canvas_size"),
])
def test_bad_input(kwargs, error, match):
    kwargs.setdefault("teacher_size", 32)
    with pytest.raises(error, match=match):
        teacher_warp(torch.rand(2, 3, 32, 32), **kwargs)
