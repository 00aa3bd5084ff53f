"""torchrun with 2 CPU processes (gloo): patches / tiles are sharded across ranks, rank 0 assembles the same
pixels as one process, for InfinityGenerator.generate and Generator.render."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]   # python_tests/
ROOT = HERE.parent

WORKER = r'''
import sys
import torch
import torch.distributed as dist
torch.set_num_threads(1)
sys.path[:0] = [TESTS]
from helpers import small_infinity as small
from anyres_fast import Generator
from anyres_fast.models import tiling as render

dist.init_process_group("gloo")
rank = dist.get_rank()

def run():
    G = small()
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    a = G.render(z[:1], 45, 70, top=-9, left=4, patch_batch=2, seed=3, progress=False)
    b = G.render(z, 45, 70, top=-9, left=4, patch_batch=3, seed=3, progress=False,
                   style_centres=[(10, 0), (60, 20)], fusion_kernel=7)
    torch.manual_seed(0)
    A = Generator(resolution=64, channel_base=256, channel_max=8, z_dim=8, w_dim=8, scale_dim=8).eval()
    c = A.render(torch.randn(1, 8, generator=torch.Generator().manual_seed(1)), 100, tile_batch=1, progress=False)
    return a, b, c

with render.sharding():
    sharded = run()
if rank != 0:
    assert all(t is None for t in sharded), "only rank 0 holds the image"
else:
    single = run()                      # outside sharding(): the one-process path
    for name, s, o in zip(("generate", "fused", "render"), sharded, single):
        assert s.shape == o.shape, (name, s.shape, o.shape)
        print(name, tuple(s.shape), "max abs diff", (s - o).abs().max().item(), flush=True)
        assert torch.equal(s, o), name
    print("OK", flush=True)
dist.destroy_process_group()
'''


def test_torchrun_two_processes_match_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun is not installed next to this Python")
    script = tmp_path / "worker.py"
    script.write_text(f"TESTS = {str(HERE)!r}\n" + WORKER)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               ANYRES_FAST_EXT="off", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    proc = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "0", "--standalone", str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "OK" in proc.stdout and proc.stdout.count("max abs diff") == 3, out[-3000:]
