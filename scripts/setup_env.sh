#!/usr/bin/env bash
# Create or reuse the project venv (default .venv; ANYRES_FAST_VENV overrides) with the pinned stack,
# and install anyres_fast into it in editable mode. The torch wheels are ~5 GB: they are installed once
# and reused while scripts/requirements-dev.txt is unchanged.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ANYRES_FAST_VENV:-$root/.venv}
reqs=$root/scripts/requirements-dev.txt
stamp=$venv/.anyres_fast_requirements
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating venv $venv"
  "$python" -m venv "$venv"
fi
if ! cmp -s "$reqs" "$stamp" 2>/dev/null; then
  echo "setup: installing pinned packages into $venv (first time: several GB, some minutes)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$reqs"
  cp "$reqs" "$stamp"
else
  echo "setup: reusing $venv (pinned packages already installed)"
fi
if ! "$venv/bin/python" -c "import anyres_fast, sys; sys.exit(0 if anyres_fast.__file__.startswith('$root/') else 1)" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root"
fi
echo "setup: ok ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
