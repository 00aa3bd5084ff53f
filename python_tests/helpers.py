"""Small helpers shared by the test files (importable: pytest puts python_tests/ on sys.path)."""
import contextlib
import io
import json
import os
import time
from pathlib import Path

import pytest
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Set by .ci/run: in CI a missing compiler or header must not hide the host-emulation tests as skips.
REQUIRE_TOOLCHAIN_ENV = "ANYRES_FAST_REQUIRE_TOOLCHAIN"

# python_tests/ (on sys.path for every test, through its conftest.py) and the repository root.
TESTS_ROOT = Path(__file__).resolve().parent
REPO_ROOT = TESTS_ROOT.parent


def missing_toolchain(reason: str):
    """Skip a test whose build tools are missing, or fail it when ANYRES_FAST_REQUIRE_TOOLCHAIN=1 (CI)."""
    if os.environ.get(REQUIRE_TOOLCHAIN_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_TOOLCHAIN_ENV}=1: the toolchain is required here)", pytrace=False)
    pytest.skip(reason)


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64 on the CPU (the error measure of docs/ops.md §1)."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def exact_fp32():
    """No TF32 anywhere: not in cuBLAS/cuDNN (the references) nor in our implicit-GEMM kernel."""
    from anyres_fast.ops import modulated_conv2d_op as mc
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, mc.EXACT_FP32["enabled"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    mc.EXACT_FP32["enabled"] = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, mc.EXACT_FP32["enabled"] = saved


def conv_inputs(b, i, o, h, w, k, dtype, style_shape, seed=0):
    """x, weight (fan-in scaled) and styles of shape style_shape ((b, i) or (b, i, h, w)) ~ N(1, 0.25), on CUDA."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(b, i, h, w, device="cuda", generator=g).to(dtype)
    weight = (torch.randn(o, i, k, k, device="cuda", generator=g) / (i * k * k) ** 0.5).to(dtype)
    styles = (torch.randn(*style_shape, device="cuda", generator=g) * 0.5 + 1).to(dtype)
    return x, weight, styles


def natural_image(h, w, seed):
    """A natural-looking float64 image in [0, 1]: 1/f noise (natural-image spectrum) plus hard-edged
    rectangles and discs (edges ring under Lanczos, which is what we want to compare)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    field = np.fft.irfft2(spectrum, s=(h, w))
    field = (field - field.min()) / (field.max() - field.min())
    yy, xx = np.mgrid[:h, :w]
    shapes = np.zeros((h, w))
    for _ in range(3):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        shapes[y0:y0 + rng.integers(2, h // 2 + 3), x0:x0 + rng.integers(2, w // 2 + 3)] = rng.uniform(-0.5, 0.5)
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, min(h, w) / 3)
        shapes[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.uniform(-0.5, 0.5)
    return np.clip(0.7 * field + shapes + 0.15, 0.0, 1.0)


def pil_resize(img, out_hw, box=None):
    """PIL's LANCZOS on a float32 ('F') image; box (x0, y0, x1, y1) as PIL takes it."""
    im = Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
    out = im.resize((out_hw[1], out_hw[0]), Image.LANCZOS, box=box)
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# Low-precision tolerances relative to a same-precision baseline (docs/ops.md §1)

LOW_PRECISION_FACTOR = 3.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the distance from 1 to the next representable number: 2^-8 for bfloat16, 2^-11 for float16."""
    return torch.finfo(dtype).eps / 2


def assert_close_to_reference(name, got, ref64, baseline, dtype, fp32_tol=1e-5, factor=LOW_PRECISION_FACTOR):
    """The kernel's error against the float64 reference, ‖got − ref64‖/‖ref64‖, must be at most
    `fp32_tol` in float32; in float16/bfloat16 at most `factor` times the error of `baseline` (the
    PyTorch reference run in the same dtype), and never required below one unit roundoff of the
    dtype (an output rounded once to the dtype is already that far off)."""
    err = rel_error(got, ref64)
    if dtype in (torch.float32, torch.float64):
        assert err <= fp32_tol, f"{name}: rel err {err:.3e} > {fp32_tol:.0e}"
        return
    base = rel_error(baseline, ref64)
    bound = max(factor * base, unit_roundoff(dtype))
    assert err <= bound, (f"{name}: rel err {err:.3e} > {factor:g} x the {str(dtype).replace('torch.', '')} "
                          f"reference's {base:.3e} (bound {bound:.3e})")


def write_legacy_weights(folder) -> None:
    """Turn a save_pretrained folder into the format written before model.safetensors: weights.pt
    (torch.save of the state dict) next to the same config.json."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "weights.pt")
    (folder / "model.safetensors").unlink()


# --- metrics tests: a detector with the calling convention of NVIDIA's TorchScript Inception ---

class ScriptedTiny(torch.nn.Module):
    """Same calling convention as NVIDIA's TorchScript Inception: uint8 in, features with return_features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 10, 5, stride=3)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        y = F.interpolate(x.to(torch.float32) / 127.5 - 1, size=[40, 40], mode="bilinear", align_corners=False)
        y = torch.relu(self.conv(y))
        return torch.cat([y.mean(dim=[2, 3]), y.std(dim=[2, 3])], dim=1)


# --- training tests: a micro model configuration and small image folders ---
# Smaller than --tiny: the training tests run many steps on a shared 2-core CPU.
MICRO_G = dict(z_dim=8, w_dim=8, channel_base=256, channel_max=8, num_layers=4, scale_dim=8, mapping_width=8)
MICRO_D = dict(channel_base=256, channel_max=8, mapping_layers=1)


def randn_filled(module, seed):
    """`module` with every parameter and floating-point buffer redrawn from N(0, 1) (seeded), in place.

    Returns:
        The module, so that weights far from any initialisation show whether they are copied exactly.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn(t.shape, generator=g))
    return module


def micro_config(**kw):
    from anyres_fast.train.anyres_recipe import AnyresTrainConfig
    base = dict(resolution=64, tiny=True, lpips="random", g_kwargs=dict(MICRO_G), d_kwargs=dict(MICRO_D), grid_seeds=2)
    base.update(kw)
    return AnyresTrainConfig(**base)


def write_images(folder, sizes, seed=0, flat=None, labels=None, bad=False):
    """PNG images of the given (w, h); flat=(r, g, b) for one flat colour; labels: class per image."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i, (w, h) in enumerate(sizes):
        if flat is not None:
            a = np.empty((h, w, 3), np.uint8)
            a[...] = flat
        else:
            yy, xx = np.mgrid[0:h, 0:w]
            a = np.clip(np.stack([128 + 90 * np.sin(xx / (5.0 + c) + i) for c in range(3)], 2)
                        + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
        names.append(f"img{i}.png")
        Image.fromarray(a).save(os.path.join(folder, names[-1]))
    if labels is not None:
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump({"labels": [[n, int(c)] for n, c in zip(names, labels)]}, f)
    if bad:
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(b, format="JPEG")
        open(os.path.join(folder, "truncated.jpg"), "wb").write(b.getvalue()[: len(b.getvalue()) // 2])
        open(os.path.join(folder, "empty.jpg"), "wb").close()
        open(os.path.join(folder, "text.png"), "w").write("text, not a PNG\n")
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(os.path.join(folder, "small10.png"))
    return folder


BAD_NAMES = {"truncated.jpg", "empty.jpg", "text.png", "small10.png"}


def small_infinity(seed: int = 0, **kw):
    """Depth 3, z_S 7 -> 21-pixel patches at a 16-pixel stride; G_S of 2 layers of radius 1 (R = 2).
    Noise strengths and biases are random so that every input path shows in the output."""
    from anyres_fast.models.infinity import InfinityGenerator, patch_size_for

    torch.manual_seed(seed)
    cfg = dict(patch_size=patch_size_for(3, 7), ts_input=7, z_dim=8, local_dim=4, ss_layers=2, ss_radius=1,
               mapping_layers=2, channel_base=16, channel_max=4)
    cfg.update(kw)
    G = InfinityGenerator(**cfg).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias") and "affine" not in name:
                p.normal_(0, 0.5)
    return G


def run_cli(argv, capsys):
    """`anyres-fast ARGV` through anyres_fast.cli.main: (exit code, stdout, stderr); argparse's own exits
    count as exit codes. capsys: pytest's fixture (cleared first)."""
    from anyres_fast import cli

    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# -- browser tests (serve) ---------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium_driver(profile: str):
    """Debian's headless Chromium under Selenium, offline (no driver download); profile: a fresh folder."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(path), f"{path} missing: apt-get install chromium chromium-driver (scripts/setup_env.sh)"
    os.environ["SE_OFFLINE"] = "true"       # Selenium Manager must not look for a browser online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--window-size=520,400",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_for(driver, script: str, timeout: float = 90.0, settle: int = 2):
    """Poll until `script` returns true `settle` times in a row (the viewer stays fully loaded)."""
    deadline, ok = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        ok = ok + 1 if driver.execute_script(script) else 0
        if ok >= settle:
            return
        time.sleep(0.15)
    raise AssertionError(f"timed out waiting for: {script}")


# ----------------------------------------------------------------------------------------------------
# Published InfinityGAN generator state dicts (names and shapes written out from the published layout)

def published_layout(depth, z, local, chans, ss_layers, radius, n_mlp):
    """name -> (shape, kind) of the published generator: kind "param", "filter" (fixed [1,2,1] buffer),
    "noise" (unused noise buffer) or "const" (unused constant input)."""
    k = 2 * radius + 1
    out = {}
    for b in range(ss_layers):
        pre = f"structure_synthesizer.implicit_model.conv_stack.{b}.conv."
        out[pre + "conv.weight"] = ((1, local, local + 3, k, k), "param")
        out[pre + "conv.modulation.weight"] = ((local + 3, z), "param")
        out[pre + "conv.modulation.bias"] = ((local + 3,), "param")
        out[pre + "activate.bias"] = ((local,), "param")
    for i in range(1, n_mlp + 1):                         # entry 0 is the PixelNorm
        out[f"texture_synthesizer.mapping.{i}.weight"] = ((z, z), "param")
        out[f"texture_synthesizer.mapping.{i}.bias"] = ((z,), "param")
    out["texture_synthesizer.const_z.input"] = ((1, local, 4, 4), "const")
    cin = local
    for i in range(2 * depth):
        res = (i + 5) // 2
        out[f"texture_synthesizer.noises.noise_{i}"] = ((1, 1, 2 ** res, 2 ** res), "noise")
        cout = chans[i // 2]
        pre = f"texture_synthesizer.convs.{i}."
        out[pre + "conv.weight"] = ((1, cout, cin, 3, 3), "param")
        out[pre + "conv.modulation.weight"] = ((cin, z), "param")
        out[pre + "conv.modulation.bias"] = ((cin,), "param")
        if i % 2 == 0:
            out[pre + "conv.blur.kernel"] = ((3, 3), "filter")
        out[pre + "noise.weight"] = ((1,), "param")
        out[pre + "activate.bias"] = ((cout,), "param")
        cin = cout
    for p in range(depth):
        pre = f"texture_synthesizer.to_rgbs.{p}."
        out[pre + "upsample.kernel"] = ((3, 3), "filter")
        out[pre + "conv.weight"] = ((1, 3, chans[p], 1, 1), "param")
        out[pre + "conv.modulation.weight"] = ((chans[p], z), "param")
        out[pre + "conv.modulation.bias"] = ((chans[p],), "param")
        out[pre + "bias"] = ((1, 3, 1, 1), "param")
    return out


def filled(layout, seed=0, empty=False):
    g = torch.Generator().manual_seed(seed)
    f = torch.tensor([1.0, 2.0, 1.0])
    filt = torch.outer(f, f) / 16 * 4
    sd = {}
    for name, (shape, kind) in layout.items():
        if kind == "filter":
            sd[name] = filt.clone()
        elif empty:
            sd[name] = torch.empty(shape)
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.5 + (1.0 if name.endswith("modulation.bias") else 0.0)
    return sd


class RecordingBar:
    """Stands in for tqdm: records its keyword arguments, every update(n) and close(); the instances made
    since the last `RecordingBar.made.clear()` are in `made`."""
    made = []

    def __init__(self, **kw):
        self.kw, self.updates, self.closed = kw, [], False
        RecordingBar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True
