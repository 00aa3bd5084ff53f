"""First-use self-check of the kernels (anyres_fast/ops/selfcheck.py): on the CPU, the ops' "cuda" paths are
pointed at their custom ops' CPU kernels (the reference math with explicit backward formulas: correct), then a
wrong kernel is planted (monkeypatched) and impl="auto" must refuse it, warn once, and cache the verdict."""
import warnings

import pytest
import torch

from anyres_fast.cli import doctor
from anyres_fast.ops import _dispatch, _extension, conv_choice, selfcheck
from anyres_fast.ops import modulated_conv2d_op as mc

CPU = torch.device("cpu")


@pytest.fixture
def cpu_kernels(tmp_path, monkeypatch):
    """impl="cuda" runs the custom ops on CPU tensors; fresh verdict cache in a temporary cache root."""
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(tmp_path))
    monkeypatch.setenv("ANYRES_FAST_ARCH", "9.0")
    monkeypatch.setattr(selfcheck, "_verdicts", {})
    monkeypatch.setattr(conv_choice, "_tables", {})
    monkeypatch.setattr(selfcheck, "_warned", set())
    monkeypatch.setattr(_dispatch, "resolve_impl", lambda op, impl, tensors, cu=None: "ref" if impl == "ref" else "cuda")
    runs = []
    real = selfcheck.run_check
    monkeypatch.setattr(selfcheck, "run_check", lambda *a: runs.append(a[:1]) or real(*a))
    return runs


@pytest.mark.parametrize("op", sorted(selfcheck.CHECKS))
def test_correct_kernels_pass(cpu_kernels, op):
    verdict = selfcheck.run_check(op, CPU, torch.float32)
    assert verdict["ok"], verdict
    assert verdict["forward"] < 1e-5 and verdict["backward"] < 1e-5 and verdict["error"] is None


def test_planted_wrong_kernel_is_refused_by_auto(cpu_kernels, monkeypatch):
    real = mc._modulated_conv2d_op
    monkeypatch.setattr(mc, "_modulated_conv2d_op", lambda *a: real(*a) * 1.01)  # 1% off: wrong
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not selfcheck.trusted("modulated_conv2d", CPU, torch.float32)
        assert not selfcheck.trusted("modulated_conv2d", CPU, torch.float32)
    messages = [str(w.message) for w in caught if "self-check" in str(w.message)]
    assert len(messages) == 1, messages  # one warning, naming the op, the error and how to report it
    assert "modulated_conv2d" in messages[0] and "> tolerance" in messages[0] and "doctor --gpu" in messages[0]
    assert cpu_kernels == [("modulated_conv2d",)]  # checked once
    assert selfcheck.trusted("filtered_lrelu", CPU, torch.float32)  # the others are untouched
    # the verdict is stored next to conv_choice.json, per device section, and read by a new process
    path = selfcheck.file_path()
    assert path.parent.name.startswith("ext-") and path.exists() and '"ok": false' in path.read_text()
    selfcheck._verdicts.clear()
    assert not selfcheck.trusted("modulated_conv2d", CPU, torch.float32)
    assert cpu_kernels == [("modulated_conv2d",), ("filtered_lrelu",)]


def test_planted_wrong_backward_is_caught(cpu_kernels, monkeypatch):
    real = mc._modulated_conv2d_backward_op
    monkeypatch.setattr(mc, "_modulated_conv2d_backward_op",
                        lambda *a: tuple(t * 1.05 if i == 0 else t for i, t in enumerate(real(*a))))  # wrong dx
    verdict = selfcheck.run_check("modulated_conv2d", CPU, torch.float32)
    assert not verdict["ok"] and verdict["forward"] < 1e-5 and "gradient of input 1" in verdict["error"]


def test_kernel_that_raises_is_refused(cpu_kernels, monkeypatch):
    def broken(*a):
        raise RuntimeError("modulated_conv2d_igemm: CUDA error: misaligned address")
    monkeypatch.setattr(mc, "_modulated_conv2d_op", broken)
    verdict = selfcheck.run_check("modulated_conv2d", CPU, torch.float16)
    assert not verdict["ok"] and "misaligned address" in verdict["error"]


def test_resolve_impl_consults_the_verdict(monkeypatch):
    """auto on a (fake) GPU tensor: a failed verdict sends the call to the reference; impl="cuda" never
    asks; teacher_warp is judged by the lanczos kernel it runs."""
    class OnGpu:
        device = torch.device("cuda", 0)
        dtype = torch.float16

    asked = []
    monkeypatch.setattr(_extension, "get", lambda required=False: object())
    monkeypatch.setattr(selfcheck, "trusted", lambda op, device, dtype: asked.append((op, dtype)) or False)
    real_resolve = _dispatch.resolve_impl
    assert real_resolve("modulated_conv2d", "auto", [OnGpu()]) == "ref"
    assert real_resolve("modulated_conv2d", "cuda", [OnGpu()]) == "cuda"
    assert asked == [("modulated_conv2d", torch.float16)]
    monkeypatch.setattr(selfcheck, "trusted", lambda op, device, dtype: True)
    assert real_resolve("modulated_conv2d", "auto", [OnGpu()]) == "cuda"


def test_unknown_verdict_while_compiling_is_not_trusted(cpu_kernels, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not selfcheck.trusted("lanczos_resample", CPU, torch.float32)
    assert cpu_kernels == []  # no check ran inside the trace
    monkeypatch.setenv("ANYRES_FAST_SELFCHECK", "off")
    assert selfcheck.trusted("lanczos_resample", CPU, torch.float32)


def test_doctor_gpu_without_a_gpu_prints_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = __import__("argparse").ArgumentParser()
    doctor.add_arguments(parser)
    assert doctor.main(parser.parse_args(["--gpu"])) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [doctor.NO_GPU_LINE] and "no CUDA GPU" in out[0]
