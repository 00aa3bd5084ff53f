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
  # setuptools prints an "InformationOnly: Editable installation" banner on every editable install;
  # its output is kept in a log and shown only if the install fails.
  log=$(mktemp)
  if ! "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup: installing $root into $venv failed (pip output above)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "setup: installed $root into $venv (editable)"
fi
echo "setup: ok ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
