"""The tools the GPU run depends on must not rot on CPU-only CI: the benchmark scripts (smoke runs on
the CPU, reference impls only) and the torch-free CMake build of the kernels with its self-test driver."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_ops, bench_render  # noqa: E402
from anyres_fast.ops import _extension  # noqa: E402


def table_rows(text: str) -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in r] for r in rows[1:]]          # without the header row


def test_bench_ops_smoke_runs_every_op_without_errors(tmp_path):
    out = tmp_path / "ops.md"
    assert bench_ops.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    rows = table_rows(out.read_text())
    assert {r[0] for r in rows} == set(bench_ops.available_ops())
    failed = [r for r in rows if r[-1]]
    assert not failed, f"benchmark cases raised: {failed}"
    assert all(float(r[4]) > 0 for r in rows)                  # every impl produced a forward time


def test_bench_render_smoke_runs(tmp_path):
    out = tmp_path / "render.md"
    assert bench_render.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    rows = table_rows(out.read_text())
    assert rows and not [r for r in rows if r[-1]], rows
    assert all(float(r[4]) > 0 for r in rows)


def test_bench_train_infinity_smoke_runs(tmp_path):
    """gpu_check.sh runs bench_train for InfinityGAN: the tiny CPU form must produce its s/kimg table."""
    out = tmp_path / "train.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--model", "infinity",
                          "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [r for r in table_rows(out.read_text()) if r[0] != "whole step"]
    assert len(rows) == 2 and all(float(r[1]) > 0 for r in rows), rows


CUDA_HOME = _extension._cuda_home()


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None or CUDA_HOME is None,
                    reason="needs cmake, ninja and the CUDA toolkit")
def test_cmake_builds_kernels_without_torch_and_selftest_runs(tmp_path):
    env = dict(os.environ, CUDACXX=os.path.join(CUDA_HOME, "bin", "nvcc"))
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DCMAKE_CUDA_ARCHITECTURES=80;90"],
                   check=True, capture_output=True, env=env)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, env=env)
    assert (build / "libanyres_fast_kernels.a").exists()
    run = subprocess.run([str(build / "anyres_fast_selftest")], capture_output=True, text=True)
    import torch
    if torch.cuda.is_available():
        assert run.returncode == 0, run.stdout
    else:  # 77 = ctest's "skipped": the driver says why instead of crashing
        assert run.returncode == 77 and "no CUDA device" in run.stdout
