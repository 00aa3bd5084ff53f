"""lanczos_resample CUDA kernels vs the float64 reference (forward, backward, mask), dtypes, odd and
large shapes, per-sample boxes, poisoned outputs, non-contiguous input, determinism, opcheck."""
import pytest
import torch
from helpers import assert_close_to_reference, rel_error

from anyres_fast.ops import lanczos_resample, lanczos_resample_ref, teacher_warp
from anyres_fast.ops import _dispatch
from anyres_fast.ops.lanczos_resample_op import _lanczos_op, max_taps

pytestmark = pytest.mark.cuda


# (B, C, H, W, out_hw, boxes (one box, per-sample list, or None), a, antialias)
CASES = [
    (2, 3, 37, 53, (19, 11), None, 3, True),                                     # odd sizes, shrink
    (3, 2, 31, 29, (97, 64), None, 3, True),                                     # enlarge > 3x
    (3, 4, 64, 48, (8, 6), [[0, 0, 48, 64], [3.25, 1.5, 40.75, 60.0], [10, 20, 30, 36.5]], 3, True),
    (2, 3, 40, 40, (33, 21), [[-6.5, -3.0, 45.0, 44.0], [1.0, 2.0, 12.0, 39.0]], 3, True),  # outside
    (1, 5, 25, 70, (9, 140), (2.5, 1.0, 66.0, 24.0), 2, True),
    (2, 1, 45, 33, (20, 15), None, 4, False),
    (4, 3, 64, 64, (32, 32), [[-16, -8, 48, 56], [0, 0, 64, 64], [-40, -20, 24, 44], [-1, -63, 63, 1]], 3, True),
    (1, 1, 1, 7, (3, 4), None, 3, True),                                         # a single row
]


def _x(b, c, h, w, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=torch.float64).to(dtype)


def _boxes(boxes, b):
    return None if boxes is None else torch.tensor(boxes, dtype=torch.float64)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_backward_mask_vs_float64_reference(case, dtype):
    b, c, h, w, out_hw, boxes, a, aa = CASES[case]
    box = _boxes(boxes, b)
    x64 = _x(b, c, h, w, torch.float64, seed=case).requires_grad_(True)
    y_ref, m_ref = lanczos_resample_ref(x64, out_hw, box=box, a=a, antialias=aa, return_mask=True)
    g = torch.randn(y_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(case + 100))
    (dx_ref,) = torch.autograd.grad(y_ref, x64, g)

    x = x64.detach().to(dtype).cuda().requires_grad_(True)
    y, m = lanczos_resample(x, out_hw, box=box, a=a, antialias=aa, return_mask=True, impl="cuda")
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert torch.isfinite(y).all()
    # the same-precision baseline: the PyTorch reference run in dtype on the GPU
    xb = x.detach().clone().requires_grad_(True)
    y_base = lanczos_resample_ref(xb, out_hw, box=box, a=a, antialias=aa)
    assert_close_to_reference("forward", y, y_ref, y_base.detach(), dtype)
    assert torch.equal(m.cpu(), m_ref)
    (dx,) = torch.autograd.grad(y, x, g.to(dtype).cuda())
    assert dx.dtype == dtype and torch.isfinite(dx).all()
    (dx_base,) = torch.autograd.grad(y_base, xb, g.to(dtype).cuda())
    assert_close_to_reference("dx", dx, dx_ref, dx_base, dtype)


def test_auto_uses_cuda_and_matches():
    x = _x(2, 3, 30, 20, torch.float32).cuda()
    assert _dispatch.resolve_impl("lanczos_resample", "auto", (x,)) == "cuda"
    y = lanczos_resample(x, (12, 9), box=(1.5, 2.0, 19.0, 28.0))
    assert rel_error(y, lanczos_resample_ref(x.cpu().double(), (12, 9), box=(1.5, 2.0, 19.0, 28.0))) <= 1e-5


def test_poisoned_outputs_are_fully_overwritten():
    """Outputs pre-filled with NaN: every element must be written by the kernels."""
    ext = _dispatch.extension()
    x = _x(2, 3, 23, 31, torch.float32).cuda()
    boxes = torch.tensor([[0, 0, 31, 23], [-3.5, 2.0, 40.0, 20.0]], dtype=torch.float64, device="cuda")
    ho, wo = 9, 14
    ty, tx = max_taps(boxes.cpu(), 1, 23, ho, 3, True), max_taps(boxes.cpu(), 0, 31, wo, 3, True)
    y = torch.full((2, 3, ho, wo), float("nan"), device="cuda")
    vr = torch.ones((2, ho), dtype=torch.bool, device="cuda")
    vc = torch.ones((2, wo), dtype=torch.bool, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    ext.lanczos_resample_forward(x, boxes, y, vr, vc, 3, True, ty, tx, stream)
    y_ref, m_ref = lanczos_resample_ref(x.cpu().double(), (ho, wo), box=boxes.cpu(), return_mask=True)
    assert torch.isfinite(y).all() and rel_error(y, y_ref) <= 1e-5
    assert torch.equal((vr[:, :, None] & vc[:, None, :]).cpu(), m_ref[:, 0])
    dx = torch.full((2, 3, 23, 31), float("nan"), device="cuda")
    ext.lanczos_resample_backward(torch.ones_like(y), boxes, dx, 3, True, ty, tx, stream)
    torch.cuda.synchronize()
    assert torch.isfinite(dx).all()


def test_non_contiguous_input_and_grad():
    base = _x(3, 8, 40, 50, torch.float32).cuda()
    x = base[:, ::2, 3:, :].transpose(2, 3).requires_grad_(True)      # (3,4,50,37), non-contiguous
    assert not x.is_contiguous()
    y = lanczos_resample(x, (20, 13), box=(0.5, 1.0, 36.0, 49.0), impl="cuda")
    x64 = x.detach().cpu().double().requires_grad_(True)
    y_ref = lanczos_resample_ref(x64, (20, 13), box=(0.5, 1.0, 36.0, 49.0))
    assert rel_error(y, y_ref) <= 1e-5
    g = torch.randn(1, 4, 1, 13, device="cuda").expand_as(y)          # non-contiguous gradient
    (dx,) = torch.autograd.grad(y, x, g)
    (dx_ref,) = torch.autograd.grad(y_ref, x64, g.cpu().double())
    assert rel_error(dx, dx_ref) <= 1e-5


def test_many_rows_and_deterministic_backward():
    """More than 65535 rows in the W pass (B·C·H) and a backward that is bitwise repeatable (gather, no atomics)."""
    x = _x(300, 3, 80, 24, torch.float32).cuda().requires_grad_(True)
    y = lanczos_resample(x, (40, 12), box=(0.25, 0.5, 24.0, 80.0), impl="cuda")
    y_ref = lanczos_resample_ref(x.detach().double(), (40, 12), box=(0.25, 0.5, 24.0, 80.0))
    assert rel_error(y, y_ref) <= 1e-5
    g = torch.randn_like(y)
    (dx1,) = torch.autograd.grad(y, x, g, retain_graph=True)
    (dx2,) = torch.autograd.grad(y, x, g)
    assert torch.equal(dx1, dx2)


def test_teacher_warp_cuda_matches_cpu():
    patches = _x(4, 3, 32, 32, torch.float32)
    n = torch.tensor([64.0, 96.0, 32.0, 48.0])
    xy = torch.tensor([[16.0, 8.0], [33.0, 50.0], [0.0, 0.0], [7.0, 13.0]])
    w_cpu, m_cpu = teacher_warp(patches.double(), n, xy, 32, impl="ref")
    w, m = teacher_warp(patches.cuda(), n, xy, 32, impl="cuda")
    assert rel_error(w, w_cpu) <= 1e-5 and torch.equal(m.cpu(), m_cpu)
    assert torch.equal(w[2].cpu(), patches[2])     # identity sample, general path: exact
    w_id, m_id = teacher_warp(patches.cuda(), 32, torch.zeros(4, 2), 32, impl="cuda")
    assert torch.equal(w_id.cpu(), patches) and m_id.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_cuda(dtype):
    x = _x(2, 3, 11, 13, dtype).cuda().requires_grad_(True)
    boxes = torch.tensor([[0.0, 0.0, 13.0, 11.0], [1.5, -2.0, 10.25, 12.0]], dtype=torch.float64)
    args = (x, boxes.cuda(), 5, 6, 3, True, max_taps(boxes, 1, 11, 5, 3, True), max_taps(boxes, 0, 13, 6, 3, True))
    torch.library.opcheck(_lanczos_op, args)


def test_float64_on_gpu_falls_back_to_reference():
    x = _x(1, 1, 16, 16, torch.float64).cuda()
    y = lanczos_resample(x, (5, 5), impl="auto")
    assert y.dtype == torch.float64
    with pytest.raises(_dispatch.OpUnsupported, match="dtype"):
        lanczos_resample(x, (5, 5), impl="cuda")


def test_captured_in_a_cuda_graph():
    """No pageable host copy in the CUDA path (boxes reach the device by fill kernels or a pinned copy), so
    the op can be captured in a CUDA graph and replayed."""
    x = _x(2, 3, 40, 52, torch.float32).cuda()
    want = lanczos_resample(x, (17, 23), box=(1.5, 2.0, 50.0, 38.5))
    lanczos_resample(x, (17, 23), box=(1.5, 2.0, 50.0, 38.5))  # warm-up (extension load, allocator)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = lanczos_resample(x, (17, 23), box=(1.5, 2.0, 50.0, 38.5))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, want)
