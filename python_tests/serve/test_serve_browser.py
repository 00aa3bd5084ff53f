"""`anyres-fast serve` in a real browser: Debian's headless Chromium driven by Selenium (no download).

The page loads, the viewer requests tiles, the test zooms in three levels and pans, then sets a 1:1
zoom on integer pixels; the viewer's pixels in the screenshot must equal a direct G.zoom of that
window. Screenshots go to $ANYRES_FAST_SHOTS when set (to look at them), else to tmp_path.
"""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.serve.viewer import find_viewer
from helpers import chromium_driver as _driver, wait_for as _wait

TINY = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8"
LOADED = ("const v = window.anyres && window.anyres.viewer; const it = v && v.world.getItemAt(0);"
          "return !!(it && it.getFullyLoaded() && !v.world.needsDraw());")


def _viewer_pixels(driver) -> np.ndarray:
    el = driver.find_element("id", "viewer")
    r = el.rect
    shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    x, y = int(round(r["x"])), int(round(r["y"]))
    return shot[y:y + int(r["height"]), x:x + int(r["width"])]


def test_page_zoom_pan_and_one_to_one_pixels_equal_a_direct_render(serve, tmp_path):
    find_viewer()           # a clear message if OpenSeadragon is not installed
    shots = os.environ.get("ANYRES_FAST_SHOTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    seed, psi, size = 0, 0.9, 1024
    server = serve("--weights", TINY, "--max-size", str(size), "--tile-size", "128", "--device", "cpu",
                   "--cache", str(tmp_path / "cache"))
    driver = _driver(str(tmp_path / "profile"))
    try:
        driver.get(server.url + "?bare")
        _wait(driver, "return !!(window.anyres && window.anyres.viewer && window.anyres.info);")
        driver.execute_script(f"document.getElementById('seed').value = {seed};"
                              f"document.getElementById('psi').value = {psi}; applySettings();")
        _wait(driver, LOADED)
        whole = _viewer_pixels(driver)
        Image.fromarray(whole).save(os.path.join(shots, "whole_canvas.png"))
        assert server.stats()["tiles"] > 0 and whole.std() > 5
        # A 128 x 128 viewer: home shows the 1024 canvas at 1/8, so three levels in is exactly 1:1.
        driver.execute_script("const e = document.getElementById('viewer'); e.style.right = 'auto';"
                              "e.style.bottom = 'auto'; e.style.width = '128px'; e.style.height = '128px';"
                              "window.anyres.viewer.forceResize();")
        time.sleep(0.3)
        _wait(driver, "const v = window.anyres.viewer; return v.viewport.getContainerSize().x === 128;")
        driver.execute_script("window.anyres.viewer.viewport.goHome(true);")
        _wait(driver, LOADED)
        home_zoom = driver.execute_script("const vp = window.anyres.viewer.viewport;"
                                          "return vp.viewportToImageZoom(vp.getZoom(true));")
        assert home_zoom == pytest.approx(1 / 8, rel=1e-3)

        # Three levels in (x8), a pan, then exactly 1:1 with integer pixels at the viewer's top left.
        driver.execute_script("const vp = window.anyres.viewer.viewport; vp.zoomBy(8, null, true);"
                              "vp.panBy(new OpenSeadragon.Point(0.07, 0.05), true); vp.applyConstraints(true);")
        _wait(driver, LOADED)
        zoom8 = driver.execute_script("const vp = window.anyres.viewer.viewport;"
                                      "return vp.viewportToImageZoom(vp.getZoom(true));")
        assert zoom8 == pytest.approx(8 * home_zoom, rel=1e-3)
        x0, y0, w, h = driver.execute_script("""
            const v = window.anyres.viewer, vp = v.viewport, el = v.element;
            vp.zoomTo(vp.imageToViewportZoom(1.0), null, true);
            const p = vp.viewerElementToImageCoordinates(new OpenSeadragon.Point(0, 0));
            const x0 = Math.round(p.x), y0 = Math.round(p.y), w = el.clientWidth, h = el.clientHeight;
            vp.panTo(vp.imageToViewportCoordinates(new OpenSeadragon.Point(x0 + w / 2, y0 + h / 2)), true);
            return [x0, y0, w, h];""")
        _wait(driver, LOADED)
        got = driver.execute_script("const vp = window.anyres.viewer.viewport;"
                                    "const p = vp.viewerElementToImageCoordinates(new OpenSeadragon.Point(0, 0));"
                                    "return [p.x, p.y, vp.viewportToImageZoom(vp.getZoom(true))];")
        assert got == pytest.approx([x0, y0, 1.0], abs=1e-3)
        deep = _viewer_pixels(driver)
        Image.fromarray(deep).save(os.path.join(shots, "deep_zoom.png"))
    finally:
        driver.quit()
    assert 0 < x0 and 0 < y0 and x0 + w < size and y0 + h < size, (x0, y0, w, h)

    from anyres_fast.cli.weights import resolve_and_load
    torch.set_num_threads(1)
    G = resolve_and_load(TINY, "cpu")
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
    ref = G.zoom(z, size, (x0, y0, w, h), truncation_psi=psi, out_dtype=torch.uint8, progress=False)
    ref = ref[0].permute(1, 2, 0).numpy()
    assert deep.shape == ref.shape and ref.std() > 3      # a window with content, not a flat one
    diff = np.abs(deep.astype(np.int16) - ref.astype(np.int16))
    print(f"1:1 window {x0},{y0},{w}x{h}: mean abs diff {diff.mean():.4f}, max {diff.max()}, ref std {ref.std():.1f}")
    assert diff.mean() <= 1.0, f"mean abs diff {diff.mean():.3f} (max {diff.max()})"
    stats = server.stats()
    # Batching: the viewer asks for several tiles at once and they share generator calls.
    assert stats["generator_calls"] < stats["tiles"], stats
    assert stats["errors"] == 0
