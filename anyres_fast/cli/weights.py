"""Which InfinityGenerator a `--weights` value names, shared by `generate --model infinity`, `outpaint`
and `inbetween`: an InfinityGAN training run (its newest G_ema), a save_pretrained folder, or
`random[:key=value,...]` (seeded random weights; see parse_random_spec).
"""
from __future__ import annotations

import json
import os

from .args import CommandError


def parse_random_spec(spec: str) -> tuple:
    """`random[:key=value,...]` -> (InfinityConfig keyword arguments, seed).

    Keys: any InfinityConfig field, `seed` (default 0) and `preset=tiny` (the `train --tiny` model,
    the other keys override it). Plain `random` is the published 101-pixel model, as for
    `anyres-fast generate --model infinity`.

    Raises:
        CommandError: a malformed spec or an unknown key.
    """
    import dataclasses

    from ..models.infinity import InfinityConfig

    fields = {f.name: f.type for f in dataclasses.fields(InfinityConfig)}
    rest = spec[len("random"):]
    if rest and not rest.startswith(":"):
        raise CommandError(f"--weights {spec!r}: expected random or random:key=value,...")
    kwargs, seed = {}, 0
    for item in filter(None, rest[1:].split(",")):
        key, sep, value = item.partition("=")
        if not sep or (key not in fields and key not in ("seed", "preset")):
            raise CommandError(f"--weights {spec!r}: unknown option {item!r}; allowed: preset=tiny, seed, "
                               f"{', '.join(fields)}")
        if key == "preset":
            if value != "tiny":
                raise CommandError(f"--weights {spec!r}: the only preset is tiny")
            from ..train.infinity_recipe import TINY_G
            kwargs = {**TINY_G, **kwargs}
            continue
        try:
            number = float(value) if fields.get(key) in ("float", float) else int(value)
        except ValueError:
            raise CommandError(f"--weights {spec!r}: {key} must be a number") from None
        if key == "seed":
            seed = number
        else:
            kwargs[key] = number
    try:
        InfinityConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"--weights {spec!r}: {exc}") from None
    return kwargs, int(seed)


def _is_random(spec: str) -> bool:
    return spec == "random" or spec.startswith("random:")


def generator_config(spec: str) -> dict:
    """The InfinityGenerator config (dict) that --weights names, read without building the model.

    Raises:
        CommandError: not a run folder, save_pretrained folder or random[:key=value,...].
    """
    from ..models.infinity import CONFIG_FILE, InfinityConfig

    if _is_random(spec):
        return InfinityConfig(**parse_random_spec(spec)[0]).to_dict()
    if not os.path.isdir(spec):
        raise CommandError(f"--weights {spec!r}: no such folder (expected an InfinityGAN run, a save_pretrained "
                           f"folder or random[:key=value,...])")
    try:
        opts = os.path.join(spec, "training_options.json")
        if os.path.isfile(opts):
            with open(opts) as f:
                cfg = json.load(f).get("config", {})
            if cfg.get("model") != "infinity" or "infinity_generator" not in cfg:
                raise CommandError(f"--weights {spec!r}: not an InfinityGAN training run")
            return cfg["infinity_generator"]
        path = os.path.join(spec, CONFIG_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                meta = json.load(f)
            if "config" not in meta or meta.get("format", "").split("/")[0] != "anyres_fast.InfinityGenerator":
                raise CommandError(f"--weights {spec!r}: {CONFIG_FILE} is not an InfinityGenerator's")
            return meta["config"]
    except (OSError, ValueError) as exc:
        raise CommandError(f"--weights {spec!r}: cannot read its configuration ({exc})") from None
    raise CommandError(f"--weights {spec!r}: neither an InfinityGAN run (training_options.json) nor a "
                       f"save_pretrained folder ({CONFIG_FILE})")


def load_generator(spec: str, device):
    """The InfinityGenerator --weights names, on device, eval mode, frozen."""
    import torch

    from ..models.infinity import InfinityConfig, InfinityGenerator

    if _is_random(spec):
        kwargs, seed = parse_random_spec(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G = InfinityGenerator(InfinityConfig(**kwargs))
    elif os.path.isfile(os.path.join(spec, "training_options.json")):
        from ..train.infinity_recipe import generator_from_run
        try:
            G = generator_from_run(spec)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(f"--weights {spec!r}: {exc}") from None
    else:
        G = InfinityGenerator.from_pretrained(spec)
    return G.eval().requires_grad_(False).to(device)
