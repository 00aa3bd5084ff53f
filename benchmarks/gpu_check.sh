#!/usr/bin/env bash
# The one command for a GPU machine: build the extension, run the CUDA tests (CUDA vs float64
# reference), the C++ kernel self-tests and the benchmarks; logs and tables go to $1, else $OUT, else
# out/gpu_check. Uses the machine's python3 and torch as they are (no installs; lpips is optional and,
# if wanted, carried as a wheel: see CONTRIBUTING.md).
#   bash benchmarks/gpu_check.sh [OUT_DIR] [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-out/gpu_check}}
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

# 4. Benchmarks (tables of ratios measured in this one run).
"$py" benchmarks/bench_ops.py $quick --out "$out/bench_ops.md" > "$out/bench_ops.log" 2>&1
rc=$?; status "bench_ops" "$([ $rc = 0 ] && echo done || echo "FAILED (rc $rc)")"
if [ -f benchmarks/bench_render.py ]; then
  "$py" benchmarks/bench_render.py $quick --out "$out/bench_render.md" > "$out/bench_render.log" 2>&1
  rc=$?; status "bench_render" "$([ $rc = 0 ] && echo done || echo "FAILED (rc $rc)")"
fi
for f in bench_ops.md bench_render.md; do
  [ -f "$out/$f" ] && { echo; cat "$out/$f"; } >> "$summary"
done
cat "$summary"
