"""`anyres-fast serve` of a 360-degree panorama model: `/` leads to the panorama page, the strip endpoint
returns exactly G.render_panorama of the seed, bad heights are 400, and the page shows the strip in
pannellum (Debian's headless Chromium): the viewer loads it and its canvas is drawn."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from anyres_fast.cli import weights as weights_arg
from anyres_fast.serve.viewer import find_pannellum

from helpers import chromium_driver, wait_for

PANO = "random:64,channel_base=256,channel_max=8,z_dim=8,w_dim=8,fov=60"


@pytest.fixture
def pano_server(serve, tmp_path):
    try:
        find_pannellum()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))          # scripts/setup_env.sh installs it; a missing viewer is a setup bug
    return serve("--weights", PANO, "--device", "cpu", "--no-cache")


def test_strips_equal_a_direct_render_and_bad_heights_are_refused(pano_server):
    status, body = pano_server.get("api/panorama")
    info = json.loads(body)
    assert status == 200 and (info["width"], info["height"]) == (768, 128) and info["vaov"] == 60.0
    status, png = pano_server.get("api/panorama/5.png?height=64")
    assert status == 200
    got = np.asarray(Image.open(io.BytesIO(png)))
    G = weights_arg.load(weights_arg.resolve(PANO, "anyres"), torch.device("cpu"))
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5))
    want = G.render_panorama(z, 64, out_dtype=torch.uint8, progress=False, force_fp32=True)[0].permute(1, 2, 0).numpy()
    assert got.shape == (64, 384, 3) and np.array_equal(got, want)
    for bad in ("7", "abc", "4096"):
        assert pano_server.get(f"api/panorama/5.png?height={bad}")[0] == 400
    assert pano_server.get("pannellum/../secret")[0] == 404


def test_the_page_shows_the_strip_in_pannellum(pano_server, tmp_path):
    driver = chromium_driver(str(tmp_path / "profile"))
    try:
        driver.get(pano_server.url)                       # `/` redirects to /panorama
        wait_for(driver, "return document.body.dataset.loaded === '0' || !!document.body.dataset.error", 120)
        assert driver.current_url.endswith("/panorama")
        assert not driver.execute_script("return document.body.dataset.error || ''")
        assert driver.execute_script("return !!document.querySelector('.pnlm-render-container canvas')")
        shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
        shots = os.environ.get("ANYRES_FAST_SHOTS") or str(tmp_path)     # to look at it
        os.makedirs(shots, exist_ok=True)
        Image.fromarray(shot).save(os.path.join(shots, "panorama_page.png"))
        assert shot[60:-20].std() > 3                       # the strip is drawn, not a blank canvas
    finally:
        driver.quit()
