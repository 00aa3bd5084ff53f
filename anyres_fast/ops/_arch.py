"""What each GPU architecture offers the kernels and what each kernel configuration needs (docs/build.md §6).

The extension builds for sm_75, sm_80, sm_86, sm_89 and sm_90. The implicit-GEMM convolution (behind
modulated_conv2d and style_fused_conv2d) needs sm_80 (cp.async; bf16 and TF32 tensor cores): below it
its kernels are compiled as stubs and refused here. Each of its configurations has a fixed shared-memory
footprint per CTA, which must fit the device's opt-in maximum per block; filtered_lrelu and the fused
lanczos pass size their tiles from that maximum at launch and need no entry here.

Opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin), from NVIDIA's CUDA C++
Programming Guide (shared memory per compute capability: the SM's configurable capacity less 1 KB
reserved for the system) and the Ampere, Ada and Hopper tuning guides:
  sm_75 (Turing)        64 KB  =  65536
  sm_80 (A100)         163 KB  = 166912   (164 KB per SM)
  sm_86 (RTX 30xx)      99 KB  = 101376   (100 KB per SM)
  sm_89 (Ada, L4/L40)   99 KB  = 101376   (100 KB per SM)
  sm_90 (H100/H200)    227 KB  = 232448   (228 KB per SM)
On a real device the value the driver reports is used; the table covers CPU-side checks and tests.
"""
from __future__ import annotations

from typing import Optional

import torch

SMEM_OPTIN_BYTES = {(7, 5): 65536, (8, 0): 166912, (8, 6): 101376, (8, 9): 101376, (9, 0): 232448}
BUILD_ARCHS = tuple(f"{major}.{minor}" for major, minor in SMEM_OPTIN_BYTES)
IGEMM_MIN_ARCH = (8, 0)

# Mirrors csrc/kernels/implicit_gemm.cuh (Tile, Smem): 64x64 CTA tile, K step 32, three stages of the
# A and B tiles (and A², B² for the dual accumulator), rows padded by 16 bytes; the accumulator tile(s)
# of 64 x 68 floats reuse the stages. Checked against the C++ by the emulation tests.
_BM, _BK, _STAGES, _LDC = 64, 32, 3, 64 + 4


def igemm_smem_bytes(dtype: torch.dtype, dual: bool) -> int:
    """Shared memory of one implicit-GEMM CTA.

    Args:
        dtype: float32 (TF32 and exact-fp32 FMA share the fp32 tiles), float16 or bfloat16.
        dual: the two-accumulator form (style_fused_conv2d with demod="exact").
    Returns:
        bytes per CTA (dynamic shared memory of conv_kernel).
    """
    size = 4 if dtype == torch.float32 else 2
    ld = _BK + (4 if size == 4 else 8)
    operand = _BM * ld * size
    pipeline = _STAGES * (4 if dual else 2) * operand
    epilogue = (2 if dual else 1) * _BM * _LDC * 4
    return max(pipeline, epilogue)


_capability: dict = {}
_smem: dict = {}


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def device_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) of a CUDA device, queried once per device and process."""
    index = _index(device)
    if index not in _capability:
        _capability[index] = tuple(torch.cuda.get_device_capability(index))
    return _capability[index]


def device_smem_optin(device: torch.device) -> int:
    """Opt-in shared memory per block of a CUDA device (the driver's value; else the table; once per device)."""
    index = _index(device)
    if index not in _smem:
        value = getattr(torch.cuda.get_device_properties(index), "shared_memory_per_block_optin", None)
        if not value:
            value = SMEM_OPTIN_BYTES.get(device_capability(device), min(SMEM_OPTIN_BYTES.values()))
        _smem[index] = int(value)
    return _smem[index]


def igemm_refusal(capability: tuple[int, int], smem_optin: int, dtype: torch.dtype, dual: bool) -> Optional[str]:
    """Why the implicit-GEMM kernel cannot run one configuration on an architecture, or None.

    Args:
        capability: (major, minor).
        smem_optin: the device's opt-in shared memory per block, bytes.
        dtype: the storage dtype (float32, float16, bfloat16).
        dual: the two-accumulator form.
    Returns:
        None when it can launch, else a one-line reason.
    """
    arch = f"sm_{capability[0]}{capability[1]}"
    if tuple(capability) < IGEMM_MIN_ARCH:
        return (f"the implicit-GEMM convolution needs sm_80 or newer (cp.async, bf16/TF32 tensor cores); "
                f"this GPU is {arch}")
    need = igemm_smem_bytes(dtype, dual)
    if need > smem_optin:
        form = "two-accumulator " if dual else ""
        return (f"the {str(dtype).replace('torch.', '')} {form}implicit-GEMM tile needs {need} bytes of shared "
                f"memory per CTA, {arch} offers {smem_optin}")
    return None


def igemm_unsupported(device: torch.device, dtype: torch.dtype, dual: bool) -> Optional[str]:
    """igemm_refusal for a CUDA device (its capability and shared memory read once per process); None
    for other devices (the dispatcher refuses those itself)."""
    if device.type != "cuda":
        return None
    return igemm_refusal(device_capability(device), device_smem_optin(device), dtype, dual)


def compile_matrix() -> list[tuple[str, dict[str, str]]]:
    """Per implicit-GEMM configuration and build arch: "runs" or why it is refused by design.

    Returns:
        [(configuration name, {arch "7.5": "runs" | reason})] for float16/bfloat16/float32 x single/dual.
    """
    rows = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for dual in (False, True):
            name = f"conv {str(dtype).replace('torch.', '')}{' dual' if dual else ''} ({igemm_smem_bytes(dtype, dual)} B)"
            rows.append((name, {f"{c[0]}.{c[1]}": igemm_refusal(c, smem, dtype, dual) or "runs"
                                for c, smem in SMEM_OPTIN_BYTES.items()}))
    return rows
