"""Host-side bookkeeping of impl="auto" for the convolutions, per call, on the CPU.

    python benchmarks/bench_auto_overhead.py [--calls 2000]

Times what `modulated_conv2d(..., impl="auto")` does on the host after it decided the kernel can run
and before it launches anything: the table key (`conv_choice.shape_key`) and the table look-up
(`conv_choice.choose`, with the shape already measured). No GPU is needed: the device-name query is
answered by a stand-in (so the device query itself is not in these numbers), the table sits in a
temporary cache folder. Prints microseconds per call (median of 5 rounds). Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    args = parser.parse_args(argv)
    os.environ["ANYRES_FAST_CACHE"] = tempfile.mkdtemp(prefix="anyres_auto_overhead_")
    from anyres_fast.ops import conv_choice

    torch.cuda.get_device_name = lambda device=None: "stand-in GPU"  # no GPU here; see the docstring
    device = torch.device("cuda", 0)
    x, w = torch.empty(2, 64, 32, 32), torch.empty(64, 64, 3, 3)
    path = conv_choice.table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = conv_choice.shape_key("modulated_conv2d", x, w, 1, 1, "demodulate=True", False)
    path.write_text('{"stand-in GPU": {"%s": {"choice": "ref", "cuda_ms": 1.0, "cudnn_ms": 0.5}}}' % key)

    def one_call():
        k = conv_choice.shape_key("modulated_conv2d", x, w, 1, 1, "demodulate=True", False)
        return conv_choice.choose("modulated_conv2d", k, device, lambda: None, lambda: None)

    assert one_call() == "ref"
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(args.calls):
            one_call()
        rounds.append((time.perf_counter() - start) / args.calls * 1e6)
    print(f"impl='auto' conv bookkeeping (shape_key + choose, table hit): "
          f"{statistics.median(rounds):.1f} us per call (rounds: {', '.join(f'{r:.1f}' for r in rounds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
