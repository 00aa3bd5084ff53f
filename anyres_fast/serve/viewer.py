"""Where the page's viewers live on this machine: the deep-zoom viewer (OpenSeadragon) and, for
360-degree panorama models, the panorama viewer (pannellum), both from the npm registry.

scripts/setup_env.sh unpacks the pinned version into the cache; nothing of it is in the repository.
"""
from __future__ import annotations

import os

OPENSEADRAGON_VERSION = "6.1.1"
PANNELLUM_VERSION = "2.5.7"


def _cached(env: str, name: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "anyres_fast", "viewer", name)


def viewer_dir() -> str:
    """The OpenSeadragon folder: $ANYRES_FAST_VIEWER_DIR, else
    ${XDG_CACHE_HOME:-~/.cache}/anyres_fast/viewer/openseadragon-<version>.

    Returns:
        path (may not exist).
    """
    return _cached("ANYRES_FAST_VIEWER_DIR", f"openseadragon-{OPENSEADRAGON_VERSION}")


def find_viewer() -> str:
    """The OpenSeadragon folder, checked.

    Returns:
        path of a folder holding openseadragon.min.js and images/.
    Raises:
        FileNotFoundError: the files are missing; the message says how to install them.
    """
    d = viewer_dir()
    if not os.path.isfile(os.path.join(d, "openseadragon.min.js")) or not os.path.isdir(os.path.join(d, "images")):
        raise FileNotFoundError(
            f"the viewer OpenSeadragon {OPENSEADRAGON_VERSION} is not installed in {d}; run "
            f"`bash scripts/setup_env.sh`, or `npm pack openseadragon@{OPENSEADRAGON_VERSION}` and unpack "
            f"its package/build/openseadragon folder there")
    return d


def pannellum_dir() -> str:
    """The pannellum folder: $ANYRES_FAST_PANNELLUM_DIR, else
    ${XDG_CACHE_HOME:-~/.cache}/anyres_fast/viewer/pannellum-<version>.

    Returns:
        path (may not exist).
    """
    return _cached("ANYRES_FAST_PANNELLUM_DIR", f"pannellum-{PANNELLUM_VERSION}")


def find_pannellum() -> str:
    """The pannellum folder, checked (needed only to serve a panorama model).

    Returns:
        path of a folder holding pannellum.js and pannellum.css.
    Raises:
        FileNotFoundError: the files are missing; the message says how to install them.
    """
    d = pannellum_dir()
    if not all(os.path.isfile(os.path.join(d, f)) for f in ("pannellum.js", "pannellum.css")):
        raise FileNotFoundError(
            f"the panorama viewer pannellum {PANNELLUM_VERSION} is not installed in {d}; run "
            f"`bash scripts/setup_env.sh`, or `npm pack pannellum@{PANNELLUM_VERSION}` and unpack its "
            f"package/build folder there")
    return d
