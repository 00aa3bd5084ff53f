"""Feature detectors for FID/KID: the Inception networks the published numbers come from.

Two files are supported; neither network is written here:

- NVIDIA's TorchScript `inception-2015-12-05.pt` (StyleGAN2-ADA/StyleGAN3 and the any-resolution
  paper): a direct TorchScript translation of TensorFlow's 2015-12-05 Inception graph. It takes uint8
  images (B, 3, H, W) of any size, resizes them to 299 itself and returns 2048 pool features with
  `return_features=True`. Loaded with `torch.jit.load` (a TorchScript archive holds code for the
  TorchScript interpreter and tensors, no arbitrary Python pickles).
- pytorch-fid's FID Inception (`pt_inception-2015-12-05-6726825d.pth`, the same TF weights ported to
  a state dict), for users who cannot run TorchScript files. The network is built by the installed
  `pytorch_fid` package; its weights file is read with `torch.load(weights_only=True)`. Inputs are
  scaled to [0, 1], resized bilinearly to 299 inside the network (pytorch-fid's own convention).

The two give close but not identical features (different resize to 299); every result records which
detector and which file (sha256) produced it. See docs/metrics.md.
"""
from __future__ import annotations

import glob
import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

NVIDIA_FILE = "inception-2015-12-05.pt"
NVIDIA_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
NVIDIA_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILE
PYTORCH_FID_SHA256_PREFIX = "6726825d"     # torch.hub convention: the file name carries the sha256 prefix

KINDS = ("auto", "nvidia", "pytorch-fid")

# Precision/recall features: NVIDIA's TorchScript VGG16 (StyleGAN2-ADA's file; StyleGAN3 ships the same
# network as a Python pickle, vgg16.pkl, which is not loaded here). It takes uint8 images of any size,
# resizes them to 224 itself and returns 4096 fc features with `return_features=True`.
VGG_FILE = "vgg16.pt"
VGG_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"


class DetectorNotFound(FileNotFoundError):
    """No detector weights file was found; the message names the file, where we looked and the URL."""


@dataclass
class Detector:
    """A feature network with a fixed calling convention: uint8 (B, 3, H, W) -> float32 (B, D).

    Attributes:
        kind: "nvidia-torchscript", "pytorch-fid" or "module" (a user/test network).
        name: short name recorded with results.
        sha256: hash of the weights file (or of the module's state dict for kind "module").
        path: the weights file, None for kind "module".
        verified: True when sha256 matches the published file, False when it does not, None when
            there is no published hash to compare with.
        num_features: width D of the features.
    """
    kind: str
    name: str
    sha256: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    module: torch.nn.Module
    path: Optional[str] = None
    verified: Optional[bool] = None
    num_features: int = 2048
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def to(self, device) -> "Detector":
        """Move the network to `device` (in place); returns self."""
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch.

        Args:
            images: uint8 (B, 3, H, W) or (B, 1, H, W) (grey is repeated to RGB), any H, W.

        Returns:
            float32 (B, D) features on the CPU.

        Raises:
            ValueError: wrong dtype or shape.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Detector: expected uint8 (B, 3, H, W) images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        out = self.forward(images.to(self.device))
        return out.reshape(images.shape[0], -1).to(torch.float32).cpu()

    def describe(self) -> dict:
        """What results record about the detector."""
        return {"kind": self.kind, "name": self.name, "path": self.path, "sha256": self.sha256,
                "sha256_matches_published": self.verified}


def file_sha256(path: str) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's class name and its state dict (names, shapes, dtypes, values)."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dnnlib_cache_dir() -> str:
    """Where StyleGAN2/3's dnnlib caches downloads: $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib, + downloads."""
    if os.environ.get("DNNLIB_CACHE_DIR"):
        return os.path.join(os.environ["DNNLIB_CACHE_DIR"], "downloads")
    return os.path.join(os.path.expanduser("~"), ".cache", "dnnlib", "downloads")


def own_cache_dir() -> str:
    """This package's cache: $ANYRES_FAST_CACHE, else ~/.cache/anyres_fast."""
    return os.environ.get("ANYRES_FAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "anyres_fast")


def nvidia_candidates() -> list:
    """Paths where the TorchScript detector may already be (dnnlib names a download md5(url)_<name>)."""
    cands = [os.path.join(own_cache_dir(), "detectors", NVIDIA_FILE)]
    cands += sorted(glob.glob(os.path.join(dnnlib_cache_dir(), "*_" + NVIDIA_FILE)))
    cands.append(os.path.join(dnnlib_cache_dir(), "*_" + NVIDIA_FILE))     # named in the message
    return cands


def pytorch_fid_candidates() -> list:
    """Paths where pytorch-fid's weights may already be (torch.hub's checkpoint cache)."""
    return [os.path.join(own_cache_dir(), "detectors", PYTORCH_FID_FILE),
            os.path.join(torch.hub.get_dir(), "checkpoints", PYTORCH_FID_FILE)]


def vgg_candidates() -> list:
    """Paths where the VGG16 TorchScript detector may already be (ours, then dnnlib's download cache)."""
    cands = [os.path.join(own_cache_dir(), "detectors", VGG_FILE)]
    cands += sorted(glob.glob(os.path.join(dnnlib_cache_dir(), "*_" + VGG_FILE)))
    cands.append(os.path.join(dnnlib_cache_dir(), "*_" + VGG_FILE))      # named in the message
    return cands


def vgg_not_found_message(looked: list) -> str:
    """The one-line message for a missing vgg16.pt: the file, every place looked in and the URL."""
    where = ", ".join(dict.fromkeys(looked))
    return (f"no VGG16 detector found: precision/recall need {VGG_FILE} (NVIDIA's TorchScript VGG16) from "
            f"{VGG_URL}. Looked in: {where}. Download it (this command never downloads) and pass "
            f"--detector-vgg PATH, or put it in {os.path.join(own_cache_dir(), 'detectors')}")


def load_vgg16(path: Optional[str] = None, device="cpu") -> Detector:
    """NVIDIA's TorchScript VGG16 feature detector (precision/recall), from `path` or the caches.

    Args:
        path: the vgg16.pt file, or None to search vgg_candidates().
        device: where the network runs.

    Returns:
        A Detector (kind "nvidia-vgg16-torchscript"); it records the file's sha256. verified is None:
        no published sha256 of vgg16.pt is known to this package.

    Raises:
        DetectorNotFound: no file (the message names the file, where we looked and the URL).
        ValueError: the file is not a TorchScript archive (e.g. StyleGAN3's vgg16.pkl).
    """
    if path is None:
        cands = vgg_candidates()
        path = next((p for p in cands if os.path.isfile(p)), None)
        if path is None:
            raise DetectorNotFound(vgg_not_found_message(cands))
    elif not os.path.isfile(path):
        raise DetectorNotFound(f"--detector-vgg {path}: no such file. " + vgg_not_found_message([path]))
    if not is_torchscript(path):
        raise ValueError(f"{path}: not a TorchScript archive (expected {VGG_FILE} from {VGG_URL}; "
                         f"StyleGAN3's vgg16.pkl is a Python pickle and is not loaded)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu").eval()

    def forward(images: torch.Tensor) -> torch.Tensor:
        return module(images, return_features=True)

    with torch.no_grad():
        width = forward(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).reshape(1, -1).shape[1]
    return Detector(kind="nvidia-vgg16-torchscript", name="vgg16", sha256=file_sha256(path), forward=forward,
                    module=module, path=os.path.abspath(path), verified=None, num_features=width).to(device)


def not_found_message(kind: str, looked: list) -> str:
    """The one-paragraph message for a missing detector file."""
    parts = []
    if kind in ("auto", "nvidia"):
        parts.append(f"{NVIDIA_FILE} (NVIDIA's TorchScript Inception, what StyleGAN2/3 and the any-resolution "
                     f"paper report with; sha256 {NVIDIA_SHA256}) from {NVIDIA_URL}")
    if kind in ("auto", "pytorch-fid"):
        parts.append(f"{PYTORCH_FID_FILE} (pytorch-fid's FID Inception weights) from {PYTORCH_FID_URL}")
    where = ", ".join(dict.fromkeys(looked))
    return (f"no Inception detector weights found: need {' or '.join(parts)}. Looked in: {where}. "
            f"Download one of them (this command never downloads) and pass --detector PATH, or put it in "
            f"{os.path.join(own_cache_dir(), 'detectors')}")


def is_torchscript(path: str) -> bool:
    """A TorchScript archive is a zip with a code/ folder; a state-dict file has none."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_nvidia(path: str, device="cpu") -> Detector:
    """NVIDIA's TorchScript detector from `path`.

    Raises:
        ValueError: the file is not a TorchScript archive (e.g. StyleGAN3's .pkl, which is a Python
            pickle that we refuse to unpickle).
    """
    if not is_torchscript(path):
        raise ValueError(f"{path}: not a TorchScript archive (expected {NVIDIA_FILE}; StyleGAN3's "
                         f"inception-2015-12-05.pkl is a Python pickle and is not loaded, use the .pt from "
                         f"{NVIDIA_URL})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit.load is deprecated but is the loader
        module = torch.jit.load(path, map_location="cpu").eval()
    digest = file_sha256(path)

    def forward(images: torch.Tensor) -> torch.Tensor:
        return module(images, return_features=True)

    det = Detector(kind="nvidia-torchscript", name="inception-2015-12-05", sha256=digest, forward=forward,
                   module=module, path=os.path.abspath(path), verified=digest == NVIDIA_SHA256)
    if not det.verified:
        warnings.warn(f"{path}: sha256 {digest[:16]}... differs from the published {NVIDIA_FILE}; "
                      f"numbers will not be comparable with published ones", stacklevel=2)
    return det.to(device)


def build_pytorch_fid(state_dict: dict) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048 pool features, resize + normalise inside) with these weights.

    pytorch-fid builds its FID network and fetches the weights by URL in one function; we give it our
    already-loaded state dict instead of letting it download (its module-level loader is swapped for
    the duration of the call).
    """
    from pytorch_fid import inception as pfi

    original = pfi.load_state_dict_from_url

    def provide(url, *args, **kwargs):
        return state_dict

    pfi.load_state_dict_from_url = provide
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                normalize_input=True)
    finally:
        pfi.load_state_dict_from_url = original
    return model.eval()


def load_pytorch_fid(path: str, device="cpu") -> Detector:
    """pytorch-fid's FID Inception with the weights file at `path` (torch.load(weights_only=True))."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read the user's file is about the file
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{path}: not a detector file: neither TorchScript ({NVIDIA_FILE}) nor a torch state "
                         f"dict ({PYTORCH_FID_FILE}); torch.load says {type(exc).__name__}: {first}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict ({PYTORCH_FID_FILE}), got {type(state).__name__}")
    try:
        model = build_pytorch_fid(state)
    except RuntimeError as exc:     # missing/unexpected keys, shape mismatch
        raise ValueError(f"{path}: not pytorch-fid's FID Inception weights ({str(exc).splitlines()[0]})") from None
    digest = file_sha256(path)

    def forward(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(torch.float32) / 255)[0]

    # The published file's name carries the start of its sha256 (the torch hub convention); the check
    # is on the bytes, whatever the file is called.
    verified = digest.startswith(PYTORCH_FID_SHA256_PREFIX)
    if not verified:
        warnings.warn(f"{path}: sha256 {digest[:16]}... differs from the published {PYTORCH_FID_FILE} "
                      f"(sha256 {PYTORCH_FID_SHA256_PREFIX}...); numbers will not be comparable with "
                      f"published ones", stacklevel=2)
    return Detector(kind="pytorch-fid", name="pt_inception-2015-12-05", sha256=digest, forward=forward,
                    module=model, path=os.path.abspath(path), verified=verified).to(device)


def from_module(module: torch.nn.Module, name: str = "module") -> Detector:
    """Wrap any network taking uint8 (B, 3, H, W) and returning (B, D) (e.g. a random one in tests)."""
    module = module.eval()
    with torch.no_grad():
        width = module(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)).reshape(1, -1).shape[1]
    return Detector(kind="module", name=name, sha256=module_sha256(module), forward=module, module=module,
                    num_features=width)


def load_detector(path: Optional[str] = None, kind: str = "auto", device="cpu") -> Detector:
    """Find and load a detector.

    Args:
        path: a weights file (TorchScript .pt or pytorch-fid .pth; the format is detected), or None to
            search the caches (see nvidia_candidates / pytorch_fid_candidates).
        kind: "auto" (NVIDIA's first, then pytorch-fid's), "nvidia" or "pytorch-fid".
        device: where the network runs.

    Returns:
        A Detector.

    Raises:
        DetectorNotFound: no file (message: the file names, where we looked, how to obtain them).
        ValueError: the file exists but is not a usable detector.
    """
    if kind not in KINDS:
        raise ValueError(f"detector kind must be one of {KINDS}, got {kind!r}")
    if path is not None:
        if not os.path.isfile(path):
            raise DetectorNotFound(f"--detector {path}: no such file. " + not_found_message(kind, [path]))
        if is_torchscript(path):
            if kind == "pytorch-fid":
                raise ValueError(f"{path}: a TorchScript file, but the pytorch-fid detector was asked for")
            return load_nvidia(path, device)
        if kind == "nvidia":
            raise ValueError(f"{path}: not a TorchScript archive (expected {NVIDIA_FILE})")
        return load_pytorch_fid(path, device)
    looked = []
    if kind in ("auto", "nvidia"):
        cands = nvidia_candidates()
        looked += cands
        for p in cands:
            if os.path.isfile(p):
                return load_nvidia(p, device)
    if kind in ("auto", "pytorch-fid"):
        cands = pytorch_fid_candidates()
        looked += cands
        for p in cands:
            if os.path.isfile(p):
                return load_pytorch_fid(p, device)
    raise DetectorNotFound(not_found_message(kind, looked))
