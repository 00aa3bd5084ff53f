"""Plant one-line bugs of the kinds issue 21's audit planted, one at a time, and run the tests that guard them.

    python benchmarks/planted_bugs.py            # all of them, a few minutes on two cores
    python benchmarks/planted_bugs.py --only ema  # those whose area or bug names "ema"

The audit that opened issue 21 planted 23 plausible one-line bugs in the data, training, InfinityGAN,
metrics and inversion code and found that the tests caught 6. Each entry below is such a bug in one of
the areas the issue names (the audit's own list was not kept, so these are written anew from its
descriptions). Mutation testing (benchmarks/mutation_report.py) measures the same thing over every
operator; this script is the short, readable version: one row per bug with the first test that fails.

How: the package and the tests are copied into a scratch folder (the checkout is never edited), each
bug is written into the copy, the named test files run with pytest `-x`, and the file is restored. A bug
is caught when pytest fails. Not part of CI; `python_tests/project/test_planted_bugs.py` checks that every
planted line still exists in the source, so a refactor that moves one shows up at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.mutation_report import copy_checkout  # noqa: E402

T = "python_tests/"
DATA = (T + "data/test_data_strength.py", T + "data/test_data_units.py")
ANYRES_TRAIN = (T + "train/test_train_strength.py", T + "train/test_anyres_recipe_step_units.py")
INFINITY_MODEL = (T + "models/test_infinity_strength.py",)
METRICS = (T + "metrics/test_metrics_strength.py",)
INVERSION = (T + "models/test_inversion_strength.py",)


@dataclasses.dataclass(frozen=True)
class Plant:
    area: str       # the area
    bug: str        # what the planted line gets wrong
    path: str       # file, relative to the repository root
    old: str        # text that occurs exactly once in the file
    new: str        # what replaces it
    tests: tuple    # test files to run


PLANTS = (
    Plant("sampling", "every epoch draws the same permutation", "anyres_fast/data/datasets.py",
          "[self.seed & 0xFFFFFFFF, 7919, e]", "[self.seed & 0xFFFFFFFF, 7919, 0]", DATA),
    Plant("sampling", "every rank takes the second rank's slice", "anyres_fast/data/datasets.py",
          "first = self.position + self.rank * b", "first = self.position + b", DATA),
    Plant("size filter", "a short side equal to --min-size is rejected", "anyres_fast/data/sources.py",
          "if min(w, h) < min_size:", "if min(w, h) <= min_size:", DATA),
    Plant("listing cache", "a file's modification time is not in its stamp", "anyres_fast/data/sources.py",
          "(st.st_size, st.st_mtime_ns)", "(st.st_size, 0)", DATA),
    Plant("G_ema", "the ramp-up is ignored", "anyres_fast/train/anyres_recipe.py",
          "beta = 0.5 ** (batch / max(ema_nimg, 1e-8))",
          "beta = 0.5 ** (batch / max(self.ema_kimg * 1000, 1e-8))", ANYRES_TRAIN),
    Plant("G_ema", "the half-life counts steps, not images", "anyres_fast/train/anyres_recipe.py",
          "beta = 0.5 ** (batch / max(ema_nimg, 1e-8))", "beta = 0.5 ** (1 / max(ema_nimg, 1e-8))", ANYRES_TRAIN),
    Plant("G_ema", "InfinityGAN's decay has a ten times shorter half-life", "anyres_fast/train/infinity_recipe.py",
          "ema_decay: float = 0.5 ** (32 / 10000)", "ema_decay: float = 0.5 ** (32 / 1000)",
          (T + "train/test_train_strength.py", T + "train/test_infinity_recipe_units.py")),
    Plant("teacher loss", "L1 over the whole patch, the mask ignored", "anyres_fast/train/losses.py",
          "l1 = masked_mean((warped - t).abs(), mask)", "l1 = masked_mean((warped - t).abs(), torch.ones_like(mask))",
          (T + "train/test_train_strength.py", T + "train/test_anyres_recipe_losses_units.py")),
    Plant("teacher loss", "lambda weighs L1 only", "anyres_fast/train/anyres_recipe.py",
          'loss + self.cfg.teacher_lambda * (tl["l1"] + tl["lpips"])',
          'loss + self.cfg.teacher_lambda * tl["l1"] + tl["lpips"]', ANYRES_TRAIN),
    Plant("ranks", "D's running statistics are not averaged over ranks", "anyres_fast/train/anyres_recipe.py",
          "zip(emas, ctx.mean_over_ranks_tensors([t / len(chunks) for t in total]))",
          "zip(emas, [t / len(chunks) for t in total])", ANYRES_TRAIN),
    Plant("checkpoints", "bytes renamed into place without an fsync", "anyres_fast/utils/files.py",
          "            os.fsync(f.fileno())\n", "            pass\n", (T + "train/test_train_strength.py",)),
    Plant("InfinityGAN windows", "fake vertical offsets never reach the last row", "anyres_fast/models/infinity.py",
          "xs = torch.randint(0, v, (batch,), generator=generator)",
          "xs = torch.randint(0, v - 1, (batch,), generator=generator)", INFINITY_MODEL),
    Plant("InfinityGAN windows", "the real's vertical label divides by span + 1", "anyres_fast/data/infinity.py",
          "2.0 * float(offset) / float(span) - 1.0", "2.0 * float(offset) / float(span + 1) - 1.0",
          INFINITY_MODEL + (T + "data/test_infinity_data_units.py",)),
    Plant("canvas seeds", "a seed's high 32 bits are dropped", "anyres_fast/models/infinity_canvas.py",
          "_mix_int(_mix_int(_mix_int(seed & M32) ^ (seed >> 32)) ^ _mix_int(stream + 0x9E37))",
          "_mix_int(_mix_int(_mix_int(seed & M32)) ^ _mix_int(stream + 0x9E37))", INFINITY_MODEL),
    Plant("converter numerics", "the conv weight gain leaves out one kernel side", "anyres_fast/models/infinity.py",
          "self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)",
          "self.weight_gain = 1.0 / math.sqrt(in_channels * kernel)", INFINITY_MODEL),
    Plant("converter numerics", "the structure block loses its leaky ReLU", "anyres_fast/models/infinity.py",
          'return ops.bias_act(y, self.bias.to(y.dtype), act="lrelu")\n\n\nclass',
          'return ops.bias_act(y, self.bias.to(y.dtype), act="linear")\n\n\nclass', INFINITY_MODEL),
    Plant("statistics cache", "pfid's key leaves out xflip", "anyres_fast/metrics/compute.py",
          "xflip=opts.xflip, crop=opts.crop, seed=opts.seed)", "crop=opts.crop, seed=opts.seed)", METRICS),
    Plant("statistics cache", "fid's key leaves out a random crop's seed", "anyres_fast/metrics/compute.py",
          'seed=opts.seed if opts.crop == "random" else None', "seed=None", METRICS),
    Plant("KID", "the number of subsets does not reach the computation", "anyres_fast/metrics/compute.py",
          "kernel_inception_distance(real.features(), fake.features(), opts.kid_subsets,",
          "kernel_inception_distance(real.features(), fake.features(), 100,", METRICS),
    Plant("placements", "--place right sets the photo one column short of the right edge",
          "anyres_fast/cli/outpaint.py",
          '"right": args.width - w,', '"right": args.width - w - 1,',
          INVERSION + (T + "cli/test_outpaint.py", T + "cli/test_edit_planning_units.py")),
    Plant("record to render", "the record's noise is not put into its regions",
          "anyres_fast/models/infinity_inversion.py",
          "            _put(n, src, ix)\n", "            pass\n", INVERSION),
    Plant("optimised variables", "z_l is not optimised", "anyres_fast/models/infinity_inversion.py",
          "opt_s = torch.optim.Adam([z_g, z_l], lr=st.lr_structure)",
          "opt_s = torch.optim.Adam([z_g], lr=st.lr_structure)", INVERSION),
    Plant("optimised variables", "the noise maps are not optimised", "anyres_fast/models/infinity_inversion.py",
          "opt_t = torch.optim.Adam([ws] + noises, lr=st.lr_texture)",
          "opt_t = torch.optim.Adam([ws], lr=st.lr_texture)", INVERSION),
)


def planted(source: str, plant: Plant) -> str:
    """`source` with the plant's bug written in.

    Raises:
        ValueError: the planted text does not occur exactly once (the source moved on: update the entry).
    """
    n = source.count(plant.old)
    if n != 1:
        raise ValueError(f"{plant.path}: the text to plant for {plant.bug!r} occurs {n} times, not once")
    return source.replace(plant.old, plant.new)


def first_failure(pytest_output: str) -> str:
    """The node id of the first FAILED or ERROR line of pytest's short summary ('' when none)."""
    for line in pytest_output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ")[1]
    return ""


def run_plant(root: str, plant: Plant) -> dict:
    """Write the bug into `root`, run its tests, restore the file.

    Returns:
        {"caught": bool, "test": first failing test, "seconds": float}.
    """
    path = os.path.join(root, plant.path)
    with open(path) as f:
        source = f.read()
    with open(path, "w") as f:
        f.write(planted(source, plant))
    env = dict(os.environ, ANYRES_FAST_EXT="off", PYTHONPATH=root, OMP_NUM_THREADS="1")
    start = time.time()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE",
                            *plant.tests], cwd=root, capture_output=True, text=True, env=env)
    finally:
        with open(path, "w") as f:
            f.write(source)
    return {"caught": r.returncode != 0, "test": first_failure(r.stdout), "seconds": time.time() - start}


def table(plants, results) -> str:
    """Markdown table of the plants and their results, with a caught / total line."""
    lines = ["| area | planted bug | caught | first failing test | s |", "|---|---|---|---|---|"]
    for p, r in zip(plants, results):
        lines.append(f"| {p.area} | {p.bug} (`{p.path}`) | {'yes' if r['caught'] else '**no**'} | "
                     f"{r['test'] or '-'} | {r['seconds']:.1f} |")
    lines.append(f"\ncaught {sum(r['caught'] for r in results)} of {len(results)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="only the plants whose area or bug contains this text")
    args = ap.parse_args(argv)
    plants = [p for p in PLANTS if args.only.lower() in (p.area + " " + p.bug).lower()]
    if not plants:
        ap.error(f"no plant matches --only {args.only!r}")
    with tempfile.TemporaryDirectory(prefix="planted-") as scratch:
        copy_checkout(scratch)
        results = []
        for p in plants:
            results.append(run_plant(scratch, p))
            print(f"{'caught' if results[-1]['caught'] else 'MISSED'}: {p.area}: {p.bug}", flush=True)
    print(table(plants, results))
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
