"""Where the page's deep-zoom viewer (OpenSeadragon, from the npm registry) lives on this machine.

scripts/setup_env.sh unpacks the pinned version into the cache; nothing of it is in the repository.
"""
from __future__ import annotations

import os

OPENSEADRAGON_VERSION = "6.1.1"


def viewer_dir() -> str:
    """The OpenSeadragon folder: $ANYRES_FAST_VIEWER_DIR, else
    ${XDG_CACHE_HOME:-~/.cache}/anyres_fast/viewer/openseadragon-<version>.

    Returns:
        path (may not exist).
    """
    if os.environ.get("ANYRES_FAST_VIEWER_DIR"):
        return os.environ["ANYRES_FAST_VIEWER_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "anyres_fast", "viewer", f"openseadragon-{OPENSEADRAGON_VERSION}")


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
