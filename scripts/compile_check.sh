#!/usr/bin/env bash
# Compile single csrc files to objects with the extension's flags, without building the whole module.
# Fast feedback while writing one op's kernel or binding:  scripts/compile_check.sh csrc/kernels/foo.cu
# ARCH (default 90) picks the SM; the full build (anyres-fast doctor --build) targets sm_80 and sm_90.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-${ANYRES_FAST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/anyres_fast/venv}/bin/python}
arch=${ARCH:-90}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
out=$(mktemp -d)
torch_inc=$("$py" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-isystem '+p for p in include_paths()))")
py_inc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
for f in "$@"; do
  case "$f" in
    *.cu) "$cuda_home/bin/nvcc" -std=c++20 -O3 -lineinfo -Xptxas -v -gencode=arch=compute_$arch,code=sm_$arch \
            -I"$here/csrc" --compiler-options -fPIC -c "$f" -o "$out/$(basename "$f").o" 2>&1 \
            | grep -vE "^ptxas info *: (Compiling|Function properties)" || true
          test -f "$out/$(basename "$f").o" || { echo "FAILED: $f"; exit 1; } ;;
    *.cpp) g++ -std=c++20 -O2 -fPIC -DTORCH_EXTENSION_NAME=check -DTORCH_API_INCLUDE_EXTENSION_H $torch_inc \
            -isystem "$py_inc" -isystem "$cuda_home/include" -I"$here/csrc" -c "$f" -o "$out/$(basename "$f").o" ;;
    *) echo "skip $f (not .cu/.cpp)";;
  esac
  echo "ok: $f"
done
rm -rf "$out"
