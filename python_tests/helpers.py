"""Small helpers shared by the test files (importable: pytest puts python_tests/ on sys.path)."""
import contextlib
import importlib

import torch


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64 on the CPU (the error measure of docs/ops.md §1)."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def exact_fp32():
    """No TF32 anywhere: not in cuBLAS/cuDNN (the references) nor in our implicit-GEMM kernel."""
    mc = importlib.import_module("anyres_fast.ops.modulated_conv2d")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, mc.EXACT_FP32["enabled"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    mc.EXACT_FP32["enabled"] = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, mc.EXACT_FP32["enabled"] = saved


def conv_inputs(b, i, o, h, w, k, dtype, style_shape, seed=0):
    """x, weight (fan-in scaled) and styles of shape style_shape ((b, i) or (b, i, h, w)) ~ N(1, 0.25), on CUDA."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(b, i, h, w, device="cuda", generator=g).to(dtype)
    weight = (torch.randn(o, i, k, k, device="cuda", generator=g) / (i * k * k) ** 0.5).to(dtype)
    styles = (torch.randn(*style_shape, device="cuda", generator=g) * 0.5 + 1).to(dtype)
    return x, weight, styles
