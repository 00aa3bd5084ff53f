"""What a `--weights` value names, for every command and both model families (docs/cli.md).

The forms, the same for `generate`, `metrics`, `outpaint`, `inbetween` (and every later command):

- `random:P[,key=value...]`: a seeded random any-resolution Generator of patch size P (keys: config,
  channel_base, channel_max, z_dim, w_dim, seed, and fov=DEG for a panorama model); its magnitude
  statistics are set from a seeded batch of latents so images have full contrast.
- `random` or `random:key=value,...`: a seeded random InfinityGenerator (keys of InfinityConfig, plus
  seed and preset=tiny); plain `random` is the published 101-pixel model.
- a `save_pretrained` folder (config.json + model.safetensors, or a legacy weights.pt); its format says
  the family.
- a training run folder (`training_options.json`): its newest checkpoint's G_ema. The configuration is
  read from the run's options, so checking a value costs no checkpoint load.
- a published StyleGAN3 / anyres-gan network pickle `FILE.pkl` (any-resolution family), read by the
  restricted unpickler of models/published.py, which runs nothing from the file (docs/published_models.md).

`resolve` checks a value and reads its configuration without building anything; `load` builds the
model. Both raise CommandError with one line naming the value.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Optional

from .args import CommandError

FAMILIES = ("anyres", "infinity")
_FORMATS = {"anyres_fast.Generator/1": "anyres", "anyres_fast.InfinityGenerator/1": "infinity"}
RUN_OPTIONS = "training_options.json"
ANYRES_RANDOM_KEYS = {"config": str, "channel_base": int, "channel_max": int, "z_dim": int, "w_dim": int,
                      "seed": int, "fov": float}   # fov: a panorama model of that many degrees per frame
FORMS = ("random:P[,key=value...] (any-resolution), random[:key=value,...] (InfinityGAN), a save_pretrained "
         "folder, a training run folder, or a published network pickle FILE.pkl")


@dataclass
class Weights:
    """A checked --weights value.

    text: the value as given. kind: "random", "pretrained", "run" or "pickle". family: "anyres" or "infinity".
    config: the GeneratorConfig or InfinityConfig. seed: the seed of random weights (else None).
    path: the folder or pickle file (else None).
    """
    text: str
    kind: str
    family: str
    config: object
    seed: Optional[int] = None
    path: Optional[str] = None

    def files(self) -> list:
        """The files `load` reads (empty for random weights): a pickle, a save_pretrained folder's
        config and weights, or a run's newest checkpoint. For caches keyed by the weights' bytes."""
        if self.kind == "pickle":
            return [self.path]
        if self.kind == "run":
            from ..train.checkpoint import latest_checkpoint
            newest = latest_checkpoint(self.path)
            return [newest] if newest else []
        if self.kind == "pretrained":
            from ..models.pretrained import CONFIG_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE
            return [os.path.join(self.path, n) for n in (CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE)
                    if os.path.isfile(os.path.join(self.path, n))]
        return []


def resolve(text: str, family: Optional[str] = None, flag: str = "--weights",
            needed_by: str = "this command") -> Weights:
    """Check a --weights value and read its configuration; nothing is built or loaded.

    Args:
        text: the value.
        family: the family the command needs ("anyres", "infinity"), or None to accept either. A
            `random:` value whose first field is an integer P is any-resolution, any other InfinityGAN.
        flag: the option name used in messages.
        needed_by: who needs `family`, for the message ("this command", "--model anyres").

    Returns:
        Weights.

    Raises:
        CommandError: a malformed random spec, a missing or foreign folder, an unreadable or bad config,
            or weights of the other family than `family`.
    """
    if text == "random" or text.startswith("random:"):
        head = text[len("random:"):].split(",")[0]
        anyres = family == "anyres" or head.strip().isdigit()
        weights = _random_anyres(text, flag) if anyres else _random_infinity(text, flag)
    elif not os.path.exists(text):
        raise CommandError(f"{flag} {text!r}: no such file or folder (expected {FORMS})")
    elif _is_network_pickle(text):
        weights = _network_pickle(text, flag)
    elif not os.path.isdir(text):
        raise CommandError(f"{flag} {text!r}: not a folder (expected {FORMS})")
    elif os.path.isfile(os.path.join(text, RUN_OPTIONS)):
        weights = _run_folder(text, flag)
    else:
        weights = _pretrained_folder(text, flag)
    if family is not None and weights.family != family:
        names = {"anyres": "an any-resolution generator", "infinity": "an InfinityGAN generator"}
        raise CommandError(f"{flag} {text!r}: {names[weights.family]}, but {needed_by} needs {names[family]}")
    return weights


def load(weights: Weights, device):
    """Build the model a resolved --weights value names, in eval mode and frozen, on `device`.

    Args:
        weights: from resolve.
        device: target torch.device.

    Returns:
        A Generator or an InfinityGenerator.

    Raises:
        CommandError: a damaged file or a checkpoint that does not fit (one line naming the file).
    """
    import torch

    try:
        if weights.kind == "random":
            G = _build_random(weights)
        elif weights.kind == "pickle":
            from ..models.published import cached_network_pickle
            G = cached_network_pickle(weights.path, with_training_networks=False).G_ema
        elif weights.kind == "run":
            if weights.family == "anyres":
                from ..train.anyres_recipe import generator_from_run
            else:
                from ..train.infinity_recipe import generator_from_run
            G = generator_from_run(weights.path, map_location=device)
        else:
            cls = _model_class(weights.family)
            G = cls.from_pretrained(weights.path, map_location=device)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        message = str(exc)
        for prefix in ("Generator.from_pretrained: ", "InfinityGenerator.from_pretrained: "):
            message = message.replace(prefix, "")
        raise CommandError(f"--weights {weights.text!r}: {message}") from None
    G = G.eval().requires_grad_(False)
    return G.to(device) if isinstance(device, (str, torch.device)) else G


def resolve_and_load(text: str, device, family: Optional[str] = None):
    """resolve + load in one call (for commands that need nothing from the config first)."""
    return load(resolve(text, family), device)


# ----------------------------------------------------------------------------------------------------

def _model_class(family: str):
    from ..models import Generator, InfinityGenerator
    return Generator if family == "anyres" else InfinityGenerator


def _build_random(weights: Weights):
    import torch

    cls = _model_class(weights.family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(weights.seed)
        G = cls(weights.config)
    if weights.family == "anyres":
        G.calibrate_magnitudes_(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(weights.seed)))
    return G


def _random_anyres(text: str, flag: str) -> Weights:
    """`random:P[,key=value...]` -> a GeneratorConfig and seed, checked without building a model."""
    from ..models.anyres import GeneratorConfig

    fields = text[len("random:"):].split(",") if text.startswith("random:") else [""]
    try:
        resolution = int(fields[0])
    except ValueError:
        raise CommandError(f"{flag} {text!r}: expected random:P with an integer patch size P") from None
    kwargs = {}
    for item in fields[1:]:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ANYRES_RANDOM_KEYS:
            raise CommandError(f"{flag} {text!r}: unknown option {item!r}; allowed: {', '.join(ANYRES_RANDOM_KEYS)}")
        try:
            kwargs[key] = ANYRES_RANDOM_KEYS[key](value.strip())
        except ValueError:
            raise CommandError(f"{flag} {text!r}: {key} must be {ANYRES_RANDOM_KEYS[key].__name__}, "
                               f"got {value!r}") from None
    seed = kwargs.pop("seed", 0)
    if "fov" in kwargs:
        kwargs["panorama"] = True
    if not 0 <= seed < 2 ** 63:
        raise CommandError(f"{flag} {text!r}: seed must be in [0, 2^63)")
    try:
        config = GeneratorConfig(resolution=resolution, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"{flag} {text!r}: {exc}") from None
    return Weights(text, "random", "anyres", config, seed=seed)


def _random_infinity(text: str, flag: str) -> Weights:
    """`random[:key=value,...]` -> an InfinityConfig and seed. Keys: any InfinityConfig field, `seed`
    (default 0) and `preset=tiny` (the `train --tiny` model; other keys override it)."""
    from ..models.infinity import InfinityConfig

    fields = {f.name: f.type for f in dataclasses.fields(InfinityConfig)}
    rest = text[len("random"):]
    if rest and not rest.startswith(":"):
        raise CommandError(f"{flag} {text!r}: expected random or random:key=value,...")
    kwargs, seed = {}, 0
    for item in filter(None, rest[1:].split(",")):
        key, sep, value = item.partition("=")
        if not sep or (key not in fields and key not in ("seed", "preset")):
            raise CommandError(f"{flag} {text!r}: unknown option {item!r}; allowed: preset=tiny, seed, "
                               f"{', '.join(fields)}")
        if key == "preset":
            if value != "tiny":
                raise CommandError(f"{flag} {text!r}: the only preset is tiny")
            from ..train.infinity_recipe import TINY_G
            kwargs = {**TINY_G, **kwargs}
            continue
        try:
            number = float(value) if fields.get(key) in ("float", float) else int(value)
        except ValueError:
            raise CommandError(f"{flag} {text!r}: {key} must be a number") from None
        if key == "seed":
            seed = number
        else:
            kwargs[key] = number
    try:
        config = InfinityConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"{flag} {text!r}: {exc}") from None
    return Weights(text, "random", "infinity", config, seed=int(seed))


def _is_network_pickle(path: str) -> bool:
    from ..models.published import is_network_pickle
    return is_network_pickle(path)


def _network_pickle(path: str, flag: str) -> Weights:
    """A published network pickle: the config of its G_ema (the unpickled networks are cached, so the
    later `load` reads the file once)."""
    from ..models.published import cached_network_pickle

    try:
        config = cached_network_pickle(path, with_training_networks=False).config
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(f"{flag} {path!r}: {exc}") from None
    return Weights(path, "pickle", "anyres", config, path=path)


def _run_folder(path: str, flag: str) -> Weights:
    """A training run: family and generator config from its training_options.json."""
    from ..models.anyres import GeneratorConfig
    from ..models.infinity import InfinityConfig

    options = os.path.join(path, RUN_OPTIONS)
    try:
        with open(options, encoding="utf-8") as f:
            saved = json.load(f)
        cfg = saved["config"]
        if cfg.get("model") == "infinity":
            family, config = "infinity", InfinityConfig.from_dict(cfg["infinity_generator"])
        else:
            family, config = "anyres", GeneratorConfig.from_dict(cfg["generator"])
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{flag} {path!r}: cannot read {options} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{flag} {path!r}: {options} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CommandError(f"{flag} {path!r}: {options} holds no generator configuration ({exc}); is it a "
                           f"run written by `anyres-fast train`?") from None
    from ..train.checkpoint import latest_checkpoint
    if latest_checkpoint(path) is None:
        raise CommandError(f"{flag} {path!r}: a training run without checkpoints (nothing in "
                           f"{os.path.join(path, 'checkpoints')} yet)")
    return Weights(path, "run", family, config, path=path)


def _pretrained_folder(path: str, flag: str) -> Weights:
    """A save_pretrained folder: the family from config.json's format, the config checked."""
    from ..models import pretrained
    from ..models.anyres import FORMAT as ANYRES_FORMAT, GeneratorConfig
    from ..models.infinity import FORMAT as INFINITY_FORMAT, InfinityConfig

    meta_format = pretrained.model_format(path)
    family = _FORMATS.get(meta_format, "anyres")      # unknown formats get the any-resolution checks' message
    fmt, from_dict, where = ((INFINITY_FORMAT, InfinityConfig.from_dict, "InfinityGenerator.from_pretrained")
                             if family == "infinity" else
                             (ANYRES_FORMAT, GeneratorConfig.from_dict, "Generator.from_pretrained"))
    try:
        config = pretrained.read_config(path, fmt, from_dict, where)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise CommandError(f"{flag} {path!r}: {str(exc).replace(where + ': ', '')}") from None
    return Weights(path, "pretrained", family, config, path=path)
