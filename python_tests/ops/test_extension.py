"""The JIT build (docs/build.md): cache key, locking, fallback and the impl switch."""
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from anyres_fast.ops import _dispatch, _extension

HAS_NVCC = _extension._cuda_home() is not None and os.path.exists(os.path.join(_extension._cuda_home(), "bin", "nvcc"))


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    monkeypatch.setattr(_extension, "_state", {"module": None, "error": None, "warned": False})
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_key_changes_with_sources_and_archs(fresh_state, monkeypatch):
    base = _extension.build_key()
    monkeypatch.setenv("ANYRES_FAST_ARCH", "9.0")
    assert _extension.build_key() != base
    monkeypatch.setenv("ANYRES_FAST_ARCH", "8.0;9.0")
    assert _extension.build_key() == base or torch.cuda.is_available()
    src = fresh_state / "csrc"
    shutil.copytree(_extension.source_dir(), src)
    monkeypatch.setattr(_extension, "source_dir", lambda: src)
    k1 = _extension.build_key()
    (src / "binding.cpp").write_text((src / "binding.cpp").read_text() + "\n// edit\n")
    assert _extension.build_key() == k1  # sources are hashed once per process ...
    _extension.refresh_sources()         # ... until refreshed (build() does this before compiling)
    assert _extension.build_key() != k1


def test_bad_mode_and_arch_are_rejected(monkeypatch):
    monkeypatch.setenv("ANYRES_FAST_EXT", "sometimes")
    with pytest.raises(ValueError, match="off, auto or require"):
        _extension.mode()
    monkeypatch.setenv("ANYRES_FAST_EXT", "auto")
    monkeypatch.setenv("ANYRES_FAST_ARCH", "sm90")
    with pytest.raises(ValueError, match="bad CUDA arch"):
        _extension.target_archs()


def test_off_mode(fresh_state, monkeypatch):
    monkeypatch.setenv("ANYRES_FAST_EXT", "off")
    assert _extension.get() is None
    with pytest.raises(_extension.ExtensionUnavailable, match="ANYRES_FAST_EXT=off"):
        _extension.get(required=True)


def test_lock_times_out_while_held_and_clears_stale_torch_lock(fresh_state):
    directory = fresh_state / "d"
    directory.mkdir()
    (directory / "lock").write_text("")  # torch FileBaton lock left by a killed build
    with _extension._build_lock(directory):
        assert not (directory / "lock").exists()
        # A second holder (another process in real life) must give up after the timeout, not hang.
        code = textwrap.dedent(f"""
            from pathlib import Path
            from anyres_fast.ops import _extension
            try:
                with _extension._build_lock(Path({str(directory)!r}), timeout=1.0):
                    print("acquired")
            except _extension.ExtensionUnavailable as e:
                print("timeout:", e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
        assert out.startswith("timeout:") and "waiting for another build" in out
    # Released: now it can be taken.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "acquired"


@pytest.mark.skipif(not HAS_NVCC, reason="needs nvcc to attempt a build")
def test_failed_build_warns_once_and_falls_back(fresh_state, monkeypatch):
    broken = fresh_state / "csrc"
    (broken / "kernels").mkdir(parents=True)
    (broken / "kernels" / "broken.cu").write_text("this is not C++;\n")
    monkeypatch.setattr(_extension, "source_dir", lambda: broken)
    monkeypatch.setenv("ANYRES_FAST_ARCH", "9.0")
    monkeypatch.setenv("ANYRES_FAST_EXT", "auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _extension.get() is None
        assert _extension.get() is None
    messages = [str(w.message) for w in caught if "anyres_fast" in str(w.message)]
    assert len(messages) == 1 and "build log" in messages[0]
    log = _extension.log_path()
    assert log.exists() and "broken.cu" in log.read_text()
    with pytest.raises(_extension.ExtensionUnavailable, match="build log"):
        _extension.get(required=True)


@pytest.mark.skipif(not HAS_NVCC, reason="needs nvcc")
def test_real_extension_builds_links_and_imports(monkeypatch):
    """Compile + link for the target archs and import, GPU or not (uses the default cache, which
    `anyres-fast doctor --build` in scripts/run_tests.sh has filled)."""
    monkeypatch.setattr(_extension, "_state", {"module": None, "error": None, "warned": False})
    monkeypatch.setenv("ANYRES_FAST_EXT", "require")
    module = _extension.get()
    assert module is not None
    assert module.cuda_runtime_version() >= 12000
    assert set(module.bound_ops) >= {"filtered_lrelu"}


def test_impl_switch_on_cpu():
    x = torch.zeros(1)
    assert _dispatch.resolve_impl("op", "auto", [x]) == "ref"
    assert _dispatch.resolve_impl("op", "ref", [x]) == "ref"
    with pytest.raises(_dispatch.OpUnsupported, match="impl='cuda' needs all tensors on a CUDA device"):
        _dispatch.resolve_impl("op", "cuda", [x])
    with pytest.raises(ValueError, match="impl must be one of"):
        _dispatch.resolve_impl("op", "fast", [x])
