"""The test suite's own machinery: the CUDA skip follows the `cuda` marker (not names), and host-emulation
tests fail instead of skipping when CI requires the toolchain (.ci/run sets ANYRES_FAST_REQUIRE_TOOLCHAIN)."""
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parents[1]   # python_tests/


def _sandbox(pytester):
    pytester.makeconftest((HERE / "conftest.py").read_text())
    pytester.makepyfile(helpers=(HERE / "helpers.py").read_text())


def test_cuda_skip_follows_the_marker_not_the_name(pytester):
    _sandbox(pytester)
    pytester.makepyfile(test_cuda_things="""
        import pytest

        def test_cuda_in_the_name_but_a_cpu_test():
            assert True

        @pytest.mark.parametrize("impl", ["ref", "cuda"])
        def test_impl_switch(impl):
            # the "cuda" case is a CPU test of the error path (impl="cuda" on CPU tensors must raise):
            # its id puts "cuda" into item.keywords, so a keyword-based skip would hide it
            assert impl in ("ref", "cuda")

        @pytest.mark.cuda
        def test_marked():
            import torch
            assert torch.cuda.is_available()

        @pytest.mark.cuda
        class TestMarkedClass:
            def test_inside(self):
                import torch
                assert torch.cuda.is_available()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    if torch.cuda.is_available():
        result.assert_outcomes(passed=5)
    else:
        result.assert_outcomes(passed=3, skipped=2)


def test_missing_toolchain_skips_locally_and_fails_in_ci(pytester, monkeypatch):
    _sandbox(pytester)
    pytester.makepyfile(test_emu="""
        from helpers import missing_toolchain

        def test_emulation():
            missing_toolchain("needs g++ and the CUDA headers")
    """)
    monkeypatch.delenv("ANYRES_FAST_REQUIRE_TOOLCHAIN", raising=False)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=1)
    monkeypatch.setenv("ANYRES_FAST_REQUIRE_TOOLCHAIN", "1")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*needs g++ and the CUDA headers*ANYRES_FAST_REQUIRE_TOOLCHAIN=1*"])


def test_ci_requires_the_toolchain():
    run = (HERE.parent / ".ci" / "run").read_text()
    assert "export ANYRES_FAST_REQUIRE_TOOLCHAIN=1" in run
