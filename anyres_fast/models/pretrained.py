"""The save format of both generator families, and one strict loader for it (docs/save_format.md).

A model folder holds `config.json` ({"format": "anyres_fast.<Class>/<version>", "config": {...}}) and
`model.safetensors` (the state dict; safetensors stores raw tensors and a JSON header, so loading it
runs no code at all). This is the layout of Hugging Face's `from_pretrained(DIR)` convention. Folders
written before the switch hold `weights.pt` (a torch.save state dict) instead; they still load, with
`torch.load(weights_only=True)`.

Loading is strict for both families: the folder, the config and the weights are checked in that
order, and every problem is a FileNotFoundError / ValueError / TypeError whose message names the file
and what is wrong (missing or unexpected keys, mismatched shapes, a damaged or foreign file).
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Callable, Optional, Tuple

import torch

from ..utils.files import atomic_write, write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "weights.pt"


def write_pretrained(directory: str, state_dict: dict, fmt: str, config: dict, where: str) -> None:
    """Write a model folder: config.json and model.safetensors, each atomically.

    Args:
        directory: the folder (created with its parents; existing files are replaced; an old
            weights.pt there is removed so the folder holds one set of weights).
        state_dict: the model's state dict (copied to contiguous CPU tensors).
        fmt: the format tag, e.g. "anyres_fast.Generator/1".
        config: the JSON-able model configuration.
        where: the caller's name for messages.

    Raises:
        NotADirectoryError: `directory` (or a parent) exists and is a file.
    """
    from safetensors.torch import save

    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{where}: {directory} exists and is not a folder")
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{where}: cannot create the folder {directory} (a parent is a file)") from None
    # safetensors refuses tensors that share memory: every tensor gets its own contiguous copy.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    atomic_write(os.path.join(directory, WEIGHTS_FILE), save(state, metadata={"format": fmt}))
    write_json(os.path.join(directory, CONFIG_FILE), {"format": fmt, "config": config})
    legacy = os.path.join(directory, LEGACY_WEIGHTS_FILE)
    if os.path.exists(legacy):
        os.remove(legacy)


def weights_path(directory: str) -> Optional[str]:
    """The weights file of a model folder: model.safetensors, else a legacy weights.pt, else None."""
    for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def read_meta(directory: str, where: str) -> dict:
    """The {"format", "config"} object of a model folder's config.json, checked for shape only.

    Raises:
        FileNotFoundError: not a folder, or config.json / the weights file is missing.
        ValueError: config.json is not UTF-8 JSON, or not an object with "format" and a "config" object.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{where}: {directory} is not a folder (expected one written by save_pretrained "
                                f"with {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{where}: {cfg_path} not found (expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                                f"from save_pretrained)")
    if weights_path(directory) is None:
        raise FileNotFoundError(f"{where}: {os.path.join(directory, WEIGHTS_FILE)} not found (expected "
                                f"{CONFIG_FILE} and {WEIGHTS_FILE} from save_pretrained, or a {LEGACY_WEIGHTS_FILE} "
                                f"written before)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: {cfg_path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{where}: {cfg_path} cannot be read as UTF-8 JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: {cfg_path} must hold a JSON object with \"format\" and \"config\", "
                         f"got a JSON {type(meta).__name__}")
    return meta


def read_config(directory: str, fmt: str, from_dict: Callable, where: str):
    """The checked configuration object of a model folder of format `fmt`, without reading the weights.

    Args:
        directory: the model folder.
        fmt: the expected format tag.
        from_dict: the config class's from_dict.
        where: the caller's name for messages.

    Raises:
        FileNotFoundError, ValueError, TypeError: see read_meta; another format; a bad config value.
    """
    cfg_path = os.path.join(directory, CONFIG_FILE)
    meta = read_meta(directory, where)
    if meta.get("format") != fmt:
        raise ValueError(f"{where}: {cfg_path} has format {meta.get('format')!r}, expected {fmt!r}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{where}: {cfg_path}: \"config\" must be a JSON object, got {meta.get('config')!r}")
    try:
        return from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {cfg_path}: {exc}") from None


def read_state(path: str, where: str, map_location="cpu") -> dict:
    """A state dict from model.safetensors or a legacy weights.pt (weights_only), with clear errors.

    Raises:
        ValueError: the file is truncated, damaged, of another kind, or holds no name -> tensor dict.
    """
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
        try:
            return load_file(path, device=device)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{where}: {path} is not a readable safetensors file ({first}); is it complete? "
                             f"save it again") from None
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise ValueError(f"{where}: {path} is truncated or damaged (an incomplete zip archive of "
                         f"{os.path.getsize(path):,} bytes); save it again")
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise ValueError(f"{where}: {path} is not a file written by torch.save (it starts with {head!r})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure to read the user's file is about the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{where}: {path} cannot be read as a torch state dict "
                         f"({type(exc).__name__}: {first[:160]}); is the file complete?") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: {path} must hold a state dict (name -> tensor), got {type(state).__name__}")
    return state


def load_pretrained(cls, directory: str, fmt: str, config_from_dict: Callable, where: str,
                    map_location="cpu") -> Tuple[torch.nn.Module, object]:
    """Build `cls(config)` from a model folder and load its weights, strictly.

    Args:
        cls: the model class (constructed from the config object).
        directory: the model folder.
        fmt: the format tag the folder must have.
        config_from_dict: the config class's from_dict.
        where: the caller's name for messages ("Generator.from_pretrained").
        map_location: device of the weights.

    Returns:
        (model, config). The model is on `map_location` when that is a device.

    Raises:
        FileNotFoundError, ValueError, TypeError: a missing file, a bad config, unreadable weights, or
            weights that do not fit the config (the message names missing / unexpected keys, shapes and
            both files).
    """
    cfg = read_config(directory, fmt, config_from_dict, where)
    cfg_path, w_path = os.path.join(directory, CONFIG_FILE), weights_path(directory)
    state = read_state(w_path, where, map_location)
    model = cls(cfg)
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(f"{where}: {w_path} does not fit {cfg_path}: {mismatch}")
    model.load_state_dict(state, strict=True)
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    return model, cfg


def state_dict_mismatch(expected: dict, got: dict, show: int = 3) -> str:
    """'' when the names and shapes agree, else one line naming the first few differences."""
    def names(keys):
        keys = sorted(keys)
        return ", ".join(keys[:show]) + (f" (+{len(keys) - show} more)" if len(keys) > show else "")
    parts = []
    missing = set(expected) - set(got)
    unexpected = set(got) - set(expected)
    if missing:
        parts.append(f"{len(missing)} missing key(s): {names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {names(unexpected)}")
    shapes = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    for k in shapes[:show]:
        parts.append(f"{k} has shape {tuple(got[k].shape)} in the file, {tuple(expected[k].shape)} in the model")
    if len(shapes) > show:
        parts.append(f"{len(shapes) - show} more shape mismatch(es)")
    return "; ".join(parts)


def model_format(directory: str) -> Optional[str]:
    """The format tag of a model folder's config.json ("anyres_fast.Generator/1", ...), or None when the
    folder has no readable config.json."""
    try:
        with open(os.path.join(directory, CONFIG_FILE), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


# Loaders of single files other than our folders (published network pickles, models/published.py, which
# registers itself when anyres_fast.models loads): (model class, accepts(path), load(path, map_location)).
_FILE_LOADERS: list = []


def register_file_loader(model_class, accepts: Callable, load: Callable) -> None:
    """Let `model_class.from_pretrained(path)` read a file that `accepts(path)` recognises.

    Args:
        model_class: the class (and its subclasses) the loader builds.
        accepts: path -> bool.
        load: (path, map_location) -> a model_class instance.
    """
    _FILE_LOADERS.append((model_class, accepts, load))


class Pretrained:
    """`save_pretrained` / `from_pretrained` for a model class with a `config` dataclass (to_dict /
    from_dict). The class sets FORMAT (its format tag) and CONFIG_CLASS."""

    FORMAT: str = ""
    CONFIG_CLASS = None

    def save_pretrained(self, directory: str) -> None:
        """Write config.json + model.safetensors (docs/save_format.md), each atomically.

        Args:
            directory: folder to write into (created with its parents; existing files are replaced).

        Raises:
            NotADirectoryError: `directory` (or a parent) exists and is a file.
            OSError: the disk is full or the folder not writable (names the file; the old one is kept).
        """
        write_pretrained(directory, self.state_dict(), self.FORMAT, self.config.to_dict(),
                         f"{type(self).__name__}.save_pretrained")

    @classmethod
    def from_pretrained(cls, directory: str, map_location="cpu"):
        """Load a folder written by save_pretrained; every key and shape must match (strict). A file a
        registered loader accepts (for Generator: a published StyleGAN3 / anyres-gan network pickle,
        read without running anything from it; docs/published_models.md) is loaded by that loader.

        Args:
            directory: folder with config.json and model.safetensors (or a legacy weights.pt), or such
                a file.
            map_location: device for the weights.

        Returns:
            The model, in train mode as after construction (a pickle's G_ema: eval mode).

        Raises:
            FileNotFoundError: the folder, config.json or the weights file is missing.
            ValueError: config.json is not valid JSON, not an object, of another format (e.g. the other
                family's) or holds a bad config; the weights are unreadable (truncated, foreign) or do
                not fit the config (the message names missing / unexpected keys, shapes, both files).
            TypeError: a config value of the wrong type.
        """
        if os.path.isfile(directory):
            for model_class, accepts, load in _FILE_LOADERS:
                if issubclass(model_class, cls) and accepts(directory):
                    return load(directory, map_location)
        model, _ = load_pretrained(cls, directory, cls.FORMAT, cls.CONFIG_CLASS.from_dict,
                                   f"{cls.__name__}.from_pretrained", map_location)
        return model
