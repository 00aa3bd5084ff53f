#!/usr/bin/env bash
# Create or reuse the project venv with the pinned stack, and install this checkout into it (editable).
# The venv lives outside the checkout (default ~/.cache/anyres_fast/venv; ANYRES_FAST_VENV overrides) so
# fresh clones (CI) reuse it: the torch wheels are ~5 GB and are installed again only when
# scripts/requirements-dev.txt changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ANYRES_FAST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/anyres_fast/venv}
reqs=$root/scripts/requirements-dev.txt
stamp=$venv/.anyres_fast_requirements
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
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
# (checked from / so that the checkout itself is not on sys.path)
if [ ! -x "$venv/bin/anyres-fast" ] || ! (cd / && "$venv/bin/python" -c \
    "import anyres_fast, sys; sys.exit(0 if (anyres_fast.__file__ or '').startswith('$root/') else 1)") 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root"
fi
echo "setup: ok ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
