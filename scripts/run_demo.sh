#!/usr/bin/env bash
# The main job on its embedded defaults: set up the venv, then `anyres-fast demo` (images in out/demo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${ANYRES_FAST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/anyres_fast/venv}/bin/anyres-fast" demo "$@"
