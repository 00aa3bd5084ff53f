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
# The page viewers of `anyres-fast serve`, from the npm registry at pinned versions, unpacked into the
# cache (never committed) and served from there, so the pages work offline: OpenSeadragon (deep zoom)
# and pannellum (360-degree panorama models).
npm_viewer() {   # npm_viewer PACKAGE VERSION FOLDER_IN_PACKAGE DEST FILE_THAT_MARKS_IT_INSTALLED
  local pkg=$1 version=$2 inner=$3 dest=$4 marker=$5 tmp
  [ -f "$dest/$marker" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: npm not found; anyres-fast serve needs $pkg $version (install npm and rerun)" >&2
    return 0
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null)
  tar xzf "$tmp/$pkg-$version.tgz" -C "$tmp"
  mkdir -p "$(dirname "$dest")" && rm -rf "$dest"
  cp -r "$tmp/package/$inner" "$dest"
  rm -rf "$tmp"
  echo "setup: installed $pkg $version into $dest"
}
viewers=${XDG_CACHE_HOME:-$HOME/.cache}/anyres_fast/viewer
npm_viewer openseadragon 6.1.1 build/openseadragon "${ANYRES_FAST_VIEWER_DIR:-$viewers/openseadragon-6.1.1}" \
  openseadragon.min.js
npm_viewer pannellum 2.5.7 build "${ANYRES_FAST_PANNELLUM_DIR:-$viewers/pannellum-2.5.7}" pannellum.js
# Headless Chromium and its driver for the browser test of `anyres-fast serve` (Debian packages; only
# when missing, and only where apt-get can run).
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium and chromium-driver (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# jpegtran (libjpeg-turbo) for `anyres-fast prepare` and its tests (docs/data.md, "Prepared HR sets").
if ! command -v jpegtran >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing libjpeg-turbo-progs (apt-get, for jpegtran)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjpeg-turbo-progs >/dev/null; } \
    || echo "setup: libjpeg-turbo-progs not installed: anyres-fast prepare and its tests are unavailable"
fi
echo "setup: ok ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
