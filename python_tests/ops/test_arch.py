"""Per-architecture refusals of the implicit-GEMM convolution (anyres_fast/ops/_arch.py, docs/build.md §6):
the shared-memory table of each build arch against each kernel configuration, and the wiring into
modulated_conv2d / style_fused_conv2d (impl="cuda" raises OpUnsupported, impl="auto" runs the reference)."""
import pytest
import torch

from anyres_fast.ops import _arch, _dispatch
from anyres_fast.ops import modulated_conv2d_op as mc
from anyres_fast.ops import style_fused_conv2d_op as sf


def test_smem_table_against_each_configuration():
    # NVIDIA's opt-in maximum per block (capacity per SM less the 1 KB the system keeps)
    assert _arch.SMEM_OPTIN_BYTES == {(7, 5): 64 * 1024, (8, 0): 163 * 1024, (8, 6): 99 * 1024,
                                      (8, 9): 99 * 1024, (9, 0): 227 * 1024}
    expected = {  # bytes per CTA from the tile sizes: 3 stages x (A, B [, A², B²]) of 64 rows x (32 + pad)
        (torch.float16, False): 3 * 2 * 64 * 40 * 2, (torch.float16, True): 3 * 4 * 64 * 40 * 2,
        (torch.bfloat16, False): 3 * 2 * 64 * 40 * 2, (torch.bfloat16, True): 3 * 4 * 64 * 40 * 2,
        (torch.float32, False): 3 * 2 * 64 * 36 * 4, (torch.float32, True): 3 * 4 * 64 * 36 * 4,
    }
    for (dtype, dual), need in expected.items():
        assert _arch.igemm_smem_bytes(dtype, dual) == need
        for cap, smem in _arch.SMEM_OPTIN_BYTES.items():
            reason = _arch.igemm_refusal(cap, smem, dtype, dual)
            assert (reason is None) == (cap >= (8, 0) and need <= smem), (cap, dtype, dual, reason)
    # the case of the issue: fp32 two-accumulator conv (110592 B) on sm_86 / sm_89, refused with the numbers
    reason = _arch.igemm_refusal((8, 6), 101376, torch.float32, True)
    assert "110592" in reason and "101376" in reason and "sm_86" in reason
    assert "sm_80" in _arch.igemm_refusal((7, 5), 65536, torch.float16, False)
    matrix = dict(_arch.compile_matrix())
    assert matrix["conv float32 dual (110592 B)"]["8.0"] == "runs"
    assert matrix["conv float32 dual (110592 B)"]["8.9"] != "runs"
    assert all(v != "runs" for row in matrix.values() for arch, v in row.items() if arch == "7.5")


@pytest.mark.parametrize("gpu", [((8, 6), 101376), ((7, 5), 65536)], ids=["sm86", "sm75"])
def test_ops_refuse_what_the_arch_cannot_launch(monkeypatch, gpu):
    """On CPU tensors with the device answers of a fake sm_86 / sm_75: the configurations refused there
    make impl="cuda" raise OpUnsupported with the reason, and impl="auto" run the reference."""
    cap, smem = gpu
    monkeypatch.setattr(_arch, "igemm_unsupported",
                        lambda device, dtype, dual: _arch.igemm_refusal(cap, smem, dtype, dual))
    asked = []

    def fake_resolve(op, impl, tensors, cuda_unsupported=lambda: None):  # a GPU that has these tensors
        reason = cuda_unsupported()
        asked.append(reason)
        if reason is not None:
            if impl == "cuda":
                raise _dispatch.OpUnsupported(f"{op}: impl='cuda' cannot run this configuration: {reason}")
            return "ref"
        return "cuda"

    monkeypatch.setattr(_dispatch, "resolve_impl", fake_resolve)
    x, w = torch.randn(1, 4, 6, 6), torch.randn(3, 4, 3, 3)
    with pytest.raises(_dispatch.OpUnsupported, match="110592" if cap == (8, 6) else "sm_80"):
        sf.style_fused_conv2d(x, w, torch.ones_like(x), padding=1, demod="exact", impl="cuda")
    y = sf.style_fused_conv2d(x, w, torch.ones_like(x), padding=1, demod="exact", impl="auto")
    torch.testing.assert_close(y, sf.style_fused_conv2d_ref(x, w, torch.ones_like(x), padding=1))
    if cap == (8, 6):  # single accumulator and 16-bit dual fit 99 KB
        assert mc._cuda_unsupported(x, w) is None and mc._cuda_unsupported(x.half(), w.half(), dual=True) is None
    else:
        assert mc._cuda_unsupported(x.half(), w.half()) is not None
