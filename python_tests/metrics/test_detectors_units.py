"""Detector loading (anyres_fast/metrics/detectors.py) with tiny TorchScript and state-dict files written
here: where each loader looks and in which order, what every message names, the recorded sha256 against
hashlib, the published-hash checks, and the calling convention of a Detector (docs/metrics.md)."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from anyres_fast.metrics import detectors as dt

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")


class FakeFeatures(torch.nn.Module):
    """Stands in for NVIDIA's TorchScript networks: uint8 (B, 3, H, W) -> (B, width) with return_features,
    something else without (so a loader that forgets the flag is seen)."""

    def __init__(self, width: int = 5, seed: int = 0):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(3, width, generator=torch.Generator().manual_seed(seed)))

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = images.to(torch.float32).mean(dim=(2, 3))
        if return_features:
            return pooled @ self.proj
        return -torch.ones(images.shape[0], 1)


def write_script(path, width=5, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(FakeFeatures(width, seed)), str(path))
    return path


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty private caches: ours, dnnlib's and torch.hub's."""
    own, dnn, hub = tmp_path / "own", tmp_path / "dnnlib", tmp_path / "hub"
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(own))
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(dnn))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return own, dnn / "downloads", hub


def test_cache_directories_follow_the_environment_then_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DNNLIB_CACHE_DIR", raising=False)
    monkeypatch.delenv("ANYRES_FAST_CACHE", raising=False)
    assert dt.dnnlib_cache_dir() == os.path.join(str(tmp_path), ".cache", "dnnlib", "downloads")
    assert dt.own_cache_dir() == os.path.join(str(tmp_path), ".cache", "anyres_fast")
    monkeypatch.setenv("DNNLIB_CACHE_DIR", "/x/dnn")
    monkeypatch.setenv("ANYRES_FAST_CACHE", "/y/own")
    assert dt.dnnlib_cache_dir() == os.path.join("/x/dnn", "downloads")
    assert dt.own_cache_dir() == "/y/own"


def test_candidate_lists_are_ours_then_dnnlibs_downloads_sorted(caches):
    own, dnn, hub = caches
    for name in ("b1_" + dt.VGG_FILE, "a0_" + dt.VGG_FILE, "c2_" + dt.NVIDIA_FILE, "other.pt"):
        (dnn / name).parent.mkdir(parents=True, exist_ok=True)
        (dnn / name).write_bytes(b"x")
    assert dt.vgg_candidates() == [str(own / "detectors" / dt.VGG_FILE), str(dnn / ("a0_" + dt.VGG_FILE)),
                                   str(dnn / ("b1_" + dt.VGG_FILE)), str(dnn / ("*_" + dt.VGG_FILE))]
    assert dt.nvidia_candidates() == [str(own / "detectors" / dt.NVIDIA_FILE), str(dnn / ("c2_" + dt.NVIDIA_FILE)),
                                      str(dnn / ("*_" + dt.NVIDIA_FILE))]
    assert dt.pytorch_fid_candidates() == [str(own / "detectors" / dt.PYTORCH_FID_FILE),
                                           str(hub / "checkpoints" / dt.PYTORCH_FID_FILE)]


def test_vgg16_loads_from_a_path_or_the_first_cache_that_has_it(caches, tmp_path):
    own, dnn, _ = caches
    direct = write_script(tmp_path / "mine.pt", width=7, seed=1)
    det = dt.load_vgg16(str(direct))
    assert (det.kind, det.name, det.path, det.verified, det.num_features) == \
        ("nvidia-vgg16-torchscript", "vgg16", str(direct.resolve()), None, 7)
    assert det.sha256 == sha(direct)
    img = torch.randint(0, 256, (2, 3, 9, 11), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    want = FakeFeatures(7, 1)(img, return_features=True)
    torch.testing.assert_close(det(img), want.detach())
    in_dnnlib = write_script(dnn / ("0f_" + dt.VGG_FILE), seed=2)
    assert dt.load_vgg16().path == str(in_dnnlib)
    in_own = write_script(own / "detectors" / dt.VGG_FILE, seed=3)
    assert dt.load_vgg16().path == str(in_own)                    # ours is looked at first


def test_vgg16_refusals_name_the_file_every_place_looked_and_the_url(caches, tmp_path):
    own, dnn, _ = caches
    with pytest.raises(dt.DetectorNotFound) as info:
        dt.load_vgg16()
    msg = str(info.value)
    assert msg == dt.vgg_not_found_message(dt.vgg_candidates())
    for part in (dt.VGG_FILE, dt.VGG_URL, str(own / "detectors" / dt.VGG_FILE), str(dnn / ("*_" + dt.VGG_FILE)),
                 "--detector-vgg PATH", str(own / "detectors")):
        assert part in msg
    assert dt.vgg_not_found_message(["a", "b", "a"]).count("Looked in: a, b.") == 1     # each place once
    missing = tmp_path / "nope.pt"
    with pytest.raises(dt.DetectorNotFound, match="^--detector-vgg " + str(missing) + ": no such file. no VGG16"):
        dt.load_vgg16(str(missing))
    pickle_like = tmp_path / "vgg16.pkl"
    torch.save({"w": torch.zeros(2)}, pickle_like)                # a zip, but no TorchScript code/
    with pytest.raises(ValueError, match=f"^{pickle_like}: not a TorchScript archive \\(expected vgg16.pt from "):
        dt.load_vgg16(str(pickle_like))


def test_is_torchscript_needs_a_zip_with_code(tmp_path):
    assert dt.is_torchscript(str(write_script(tmp_path / "s.pt")))
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pth")
    (tmp_path / "text.pt").write_bytes(b"not a zip")
    assert not dt.is_torchscript(str(tmp_path / "state.pth"))
    assert not dt.is_torchscript(str(tmp_path / "text.pt"))
    assert not dt.is_torchscript(str(tmp_path / "missing.pt"))


def test_nvidia_loader_checks_the_published_hash_and_asks_for_features(tmp_path, monkeypatch):
    path = write_script(tmp_path / dt.NVIDIA_FILE, width=4, seed=5)
    digest = sha(path)
    with pytest.warns(UserWarning, match=f"sha256 {digest[:16]}\\.\\.\\. differs from the published "
                                         f"{dt.NVIDIA_FILE}; numbers will not be comparable"):
        det = dt.load_nvidia(str(path))
    assert (det.kind, det.name, det.path, det.sha256, det.verified) == \
        ("nvidia-torchscript", "inception-2015-12-05", str(path.resolve()), digest, False)
    img = torch.randint(0, 256, (1, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(det(img), FakeFeatures(4, 5)(img, return_features=True).detach())
    monkeypatch.setattr(dt, "NVIDIA_SHA256", digest)              # as if it were the published file
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dt.load_nvidia(str(path)).verified is True
    torch.save({"w": torch.zeros(1)}, tmp_path / "inception-2015-12-05.pkl")
    with pytest.raises(ValueError, match="not a TorchScript archive .*is a Python pickle and is not loaded, "
                                         "use the .pt from " + dt.NVIDIA_URL.replace(".", r"\.")):
        dt.load_nvidia(str(tmp_path / "inception-2015-12-05.pkl"))


def test_load_detector_dispatches_on_the_file_and_the_kind(caches, tmp_path):
    own, dnn, hub = caches
    with pytest.raises(ValueError, match=r"^detector kind must be one of \('auto', 'nvidia', 'pytorch-fid'\), "
                                         r"got 'inception'$"):
        dt.load_detector(kind="inception")
    script = write_script(tmp_path / "det.pt")
    with pytest.raises(ValueError, match="a TorchScript file, but the pytorch-fid detector was asked for"):
        dt.load_detector(str(script), kind="pytorch-fid")
    with pytest.warns(UserWarning):
        assert dt.load_detector(str(script), kind="nvidia").kind == "nvidia-torchscript"
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pth")
    with pytest.raises(ValueError, match=r"not a TorchScript archive \(expected inception-2015-12-05.pt\)$"):
        dt.load_detector(str(tmp_path / "state.pth"), kind="nvidia")
    missing = tmp_path / "gone.pt"
    with pytest.raises(dt.DetectorNotFound) as info:
        dt.load_detector(str(missing), kind="pytorch-fid")
    assert str(info.value).startswith(f"--detector {missing}: no such file. no Inception detector weights found: "
                                      f"need {dt.PYTORCH_FID_FILE}")
    assert dt.NVIDIA_FILE not in str(info.value).split("Looked in")[0]
    # the search: nothing anywhere names every place, per kind
    for kind, files in (("auto", (dt.NVIDIA_FILE, dt.PYTORCH_FID_FILE)), ("nvidia", (dt.NVIDIA_FILE,)),
                        ("pytorch-fid", (dt.PYTORCH_FID_FILE,))):
        with pytest.raises(dt.DetectorNotFound) as info:
            dt.load_detector(kind=kind)
        looked = (dt.nvidia_candidates() if kind != "pytorch-fid" else []) + \
                 (dt.pytorch_fid_candidates() if kind != "nvidia" else [])
        assert str(info.value) == dt.not_found_message(kind, looked)
        head = str(info.value).split("Looked in")[0]
        assert all(f in head for f in files) and len(files) == sum(f in head for f in
                                                                   (dt.NVIDIA_FILE, dt.PYTORCH_FID_FILE))
        assert ", ".join(looked) in str(info.value)
    assert dt.NVIDIA_SHA256 in dt.not_found_message("nvidia", []) and dt.NVIDIA_URL in dt.not_found_message("auto", [])
    assert dt.PYTORCH_FID_URL in dt.not_found_message("pytorch-fid", [])
    found = write_script(dnn / ("9_" + dt.NVIDIA_FILE))
    with pytest.warns(UserWarning):
        assert dt.load_detector().path == str(found)              # auto: NVIDIA's file from dnnlib's cache
    with pytest.raises(dt.DetectorNotFound):
        dt.load_detector(kind="pytorch-fid")                       # which does not look at NVIDIA's files


def test_pytorch_fid_loader_refuses_files_that_are_not_its_state_dict(tmp_path):
    (tmp_path / "g.pth").write_bytes(b"\x80garbage")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'g.pth'}: not a detector file: neither TorchScript "
                                         rf"\({dt.NVIDIA_FILE}\) nor a torch state dict \({dt.PYTORCH_FID_FILE}\); "
                                         r"torch.load says \w+: "):
        dt.load_pytorch_fid(str(tmp_path / "g.pth"))
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=rf"expected a state dict \({dt.PYTORCH_FID_FILE}\), got list$"):
        dt.load_pytorch_fid(str(tmp_path / "list.pth"))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not pytorch-fid's FID Inception weights \\("):
        dt.load_pytorch_fid(str(tmp_path / "other.pth"))


def test_hashes_are_sha256_of_the_bytes_and_of_the_documented_module_recipe(tmp_path):
    blob = os.urandom((1 << 20) + 12345)                          # more than one 1 MiB chunk
    (tmp_path / "b").write_bytes(blob)
    assert dt.file_sha256(str(tmp_path / "b")) == hashlib.sha256(blob).hexdigest()
    m = FakeFeatures(3, 0)
    m.register_buffer("empty", torch.zeros(0))
    h = hashlib.sha256(type(m).__qualname__.encode())
    for name, t in m.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.contiguous().numpy().tobytes())
    assert dt.module_sha256(m) == h.hexdigest()
    other = FakeFeatures(3, 0)
    assert dt.module_sha256(other) != dt.module_sha256(m)         # the empty buffer's name counts
    with torch.no_grad():
        other.proj[0, 0] += 1
    assert dt.module_sha256(other) != dt.module_sha256(FakeFeatures(3, 0))


class Pooled(torch.nn.Module):
    def forward(self, images):
        return images.to(torch.float64).mean(dim=(2, 3))


def test_detector_call_convention_and_description():
    det = dt.from_module(Pooled())
    assert (det.kind, det.name, det.num_features, det.path, det.verified) == ("module", "module", 3, None, None)
    assert det.sha256 == dt.module_sha256(Pooled())
    assert dt.from_module(Pooled(), "mine").name == "mine"
    grey = torch.randint(0, 256, (2, 1, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out = det(grey)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (2, 3)
    torch.testing.assert_close(out, grey.double().mean(dim=(2, 3)).repeat(1, 3).float())
    for bad in (grey.float(), grey[0], torch.zeros(1, 2, 4, 4, dtype=torch.uint8)):
        with pytest.raises(ValueError, match=rf"^Detector: expected uint8 \(B, 3, H, W\) images, got {bad.dtype} "
                                             rf"{re_shape(bad)}$"):
            det(bad)
    assert det.describe() == {"kind": "module", "name": "module", "path": None, "sha256": det.sha256,
                              "sha256_matches_published": None}
    assert det.to("cpu") is det and det.device == torch.device("cpu")


def re_shape(t) -> str:
    return str(tuple(t.shape)).replace("(", r"\(").replace(")", r"\)")
