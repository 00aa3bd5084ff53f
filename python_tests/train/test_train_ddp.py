"""torchrun + gloo: 2 CPU processes with batch 2 each give the gradients of 1 process with batch 4
(split into 2 chunks of gradient accumulation), for every optimiser step of a training step."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import TESTS_ROOT, micro_config, write_images  # noqa: F401  (the script imports it too)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    from anyres_fast.train import Trainer, TrainOptions
    from anyres_fast.train.anyres_recipe import AnyresRecipe
    from helpers import micro_config
    torch.set_num_threads(1)
    out, batch_gpu = sys.argv[1], int(sys.argv[2])
    rec = AnyresRecipe(micro_config(phase={phase!r}, lr_data={lr!r}))
    trainer = Trainer(rec, TrainOptions(out=out, batch=4, batch_gpu=batch_gpu, kimg=1, workers=0, snap=0,
                                        progress=False, max_steps=1, seed=3))
    grads = {{}}
    def hook(name, params):
        named = dict((id(p), n) for n, p in list(rec.G.named_parameters()) + list(rec.D.named_parameters()))
        grads.update({{f"{{name}}.{{named[id(p)]}}": p.grad.detach().clone() for p in params}})
    orig = trainer.run
    import anyres_fast.train.trainer as T
    real_init = T.Context.__init__
    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.grad_hooks.append(hook)
    T.Context.__init__ = init
    trainer.run()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(grads, os.path.join(out, "grads.pt"))
""")


@pytest.mark.parametrize("phase", ["fixed", "panorama"])      # panorama: its slice / cut draws too
def test_two_gloo_processes_match_one_process(tmp_path, phase):
    lr = write_images(str(tmp_path / "lr"), [(64, 64), (80, 64), (64, 70), (90, 90), (64, 64)])
    script = tmp_path / "grads.py"
    script.write_text(SCRIPT.format(tests=str(TESTS_ROOT), lr=lr, phase=phase))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               ANYRES_FAST_EXT="off")
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "2"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(29500 + os.getpid() % 1000), str(script), str(tmp_path / "two"), "2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    g1 = torch.load(tmp_path / "one" / "grads.pt", weights_only=True)
    g2 = torch.load(tmp_path / "two" / "grads.pt", weights_only=True)
    assert g1.keys() == g2.keys()
    assert {k.split(".")[0] for k in g1} == {"G", "D", "Dreg"}      # step 0 runs the lazy R1 pass too
    worst = max(((a := g1[k]) - g2[k]).abs().max().item() / max(1e-3, a.abs().max().item()) for k in g1)
    nonzero = sum(int(g1[k].abs().sum() > 0) for k in g1)
    assert nonzero > 0.8 * len(g1)
    assert worst <= 1e-5, worst
