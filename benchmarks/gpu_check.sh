#!/usr/bin/env bash
# The one command for a GPU machine: build the extension, run the CUDA tests (CUDA vs float64
# reference), the C++ kernel self-tests and the benchmarks; logs and tables go to $1, else
# out/gpu_check. When $OUT is set (the device tool, which returns at most 8 files), summary.md,
# results.json, the plots and one gpu_check.tgz of everything are copied there at the end.
# Uses the machine's python3 and torch as they are (no installs; lpips is optional and, if wanted,
# carried as a wheel: see docs/build.md).
#   bash benchmarks/gpu_check.sh [OUT_DIR] [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu_check}
quick=${2:-}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ANYRES_FAST_CACHE=${ANYRES_FAST_CACHE:-$PWD/.build-ext}
summary=$out/summary.md
status() { printf '| %s | %s |\n' "$1" "$2" >> "$summary"; }

{
  echo "# gpu_check $(date -u +%F' '%H:%M' UTC')"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo '```'
  echo
  echo "| step | result |"
  echo "|---|---|"
} > "$summary"

# 1. Build and import the extension for this GPU's arch.
"$py" -m anyres_fast.cli doctor --build > "$out/build.log" 2>&1
rc=$?; status "extension build + import" "$([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc)")"
cat "$ANYRES_FAST_CACHE"/ext-*/build.log >> "$out/build.log" 2>/dev/null

# 2. C++ self-tests (kernels without torch).
if command -v cmake >/dev/null; then
  { cmake -S . -B .build-ext/cmake -G Ninja -DCMAKE_CUDA_ARCHITECTURES=native \
    && cmake --build .build-ext/cmake \
    && ctest --test-dir .build-ext/cmake --output-on-failure; } > "$out/selftest.log" 2>&1
  rc=$?; status "C++ kernel self-tests (ctest)" "$([ $rc = 0 ] && echo pass || echo "FAILED (rc $rc)")"
fi

# 3. CUDA tests against the float64 references (-rP keeps what passing tests print, e.g. peak memory).
ANYRES_FAST_EXT=require "$py" -m pytest python_tests -m cuda -q -rfEsP -p no:cacheprovider > "$out/cuda_tests.log" 2>&1
rc=$?; status "CUDA tests (pytest -m cuda)" "$(tail -n 1 "$out/cuda_tests.log") (rc $rc)"

# 4. Benchmarks (tables of ratios measured in this one run). --quick: smoke sizes only.
bench() {   # bench NAME SCRIPT ARGS...: run one benchmark, table to $out/NAME.md, log to $out/NAME.log
  local name=$1; shift
  "$py" "$@" --out "$out/$name.md" > "$out/$name.log" 2>&1
  local rc=$?; status "$name" "$([ $rc = 0 ] && echo done || echo "FAILED (rc $rc)")"
}
bench bench_ops benchmarks/bench_ops.py $quick
if [ -n "$quick" ]; then
  bench bench_render benchmarks/bench_render.py --quick
  bench bench_train benchmarks/bench_train.py --quick
  bench bench_train_infinity benchmarks/bench_train.py --model infinity --quick
else
  # any-resolution p=256 config T at 1024^2..8192^2; InfinityGAN-101 at 1024^2..8192^2 (DESIGN targets:
  # 4096^2 <= 2 s, 8192^2 <= 5 s, flat peak memory)
  bench bench_render benchmarks/bench_render.py --sizes 1024,2048,4096,8192 --tile-batches 8,32 \
    --precisions fp32,fp16,bf16 --inf-sizes 1024,2048,4096,8192 --patch-batches 1,16,128 --inf-precisions fp32,bf16
  bench bench_train benchmarks/bench_train.py --resolution 256 --config T --batch 32 --batch-gpu 8 \
    --precision fp16 --lpips random --phase patch
  bench bench_train_fixed benchmarks/bench_train.py --resolution 256 --config T --batch 32 --batch-gpu 8 \
    --precision fp16 --lpips random --phase fixed
  bench bench_train_infinity benchmarks/bench_train.py --model infinity --inf-patch 101 --batch 16 \
    --batch-gpu 16 --precision fp16
fi
# 5. Static kernel counts (registers, occupancy, inner-loop instruction mix) for this GPU's arch.
arch=$("$py" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}{p.minor}')" 2>/dev/null || echo 90)
bench kernel_report benchmarks/kernel_report.py --arch "$arch"

# 6. One JSON of every table, and plots (time and memory vs resolution, speed-up per op).
"$py" benchmarks/plot_results.py "$out" > "$out/plots.log" 2>&1
status "results.json + plots" "$(tail -n 1 "$out/plots.log")"
for f in bench_ops.md bench_render.md bench_train.md bench_train_fixed.md bench_train_infinity.md kernel_report.md; do
  [ -f "$out/$f" ] && { echo; cat "$out/$f"; } >> "$summary"
done
cat "$summary"
if [ -n "${OUT:-}" ] && [ "$(cd "$out" && pwd)" != "$(cd "$OUT" && pwd)" ]; then
  tar czf "$OUT/gpu_check.tgz" -C "$out" .
  cp "$summary" "$out/results.json" "$OUT/" 2>/dev/null
  cp "$out"/*.png "$OUT/" 2>/dev/null
fi
