"""Load NVlabs-style network pickles (StyleGAN3, anyres-gan) without running anything from the file.

Published StyleGAN3 and anyres-gan models are Python pickles of `torch_utils.persistence` records:
each network object is pickled as a call to the persistence module's reconstruct function with a
dict holding the source code of its Python module, its class name, its constructor arguments and its
`__dict__` (parameters, buffers, submodules). Loading them the published way executes that source.

Here a restricted unpickler resolves only a short allow-list of globals (tensor and storage
rebuilding, OrderedDict, numpy arrays and scalars, EasyDict-like dicts) and turns every persistence
record into an inert `PersistentRecord`; the module source is kept as text and never executed. The
records of the generator (and discriminator) are then checked class by class and rebuilt as *our*
modules from their constructor keyword arguments and state. Anything else is refused with one line
that names it. Conventions and the list of what loads: docs/published_models.md.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import types
from typing import Optional

import numpy as np
import torch

from .anyres import Generator, GeneratorConfig
from .pretrained import register_file_loader, state_dict_mismatch
from .discriminator import Discriminator


class PublishedModelError(ValueError):
    """A network pickle that cannot be (or must not be) loaded; the message is one line."""


# ----------------------------------------------------------------------------------------------------
# The restricted unpickler

class PersistentRecord:
    """A `torch_utils.persistence` object as data: class name, module source (text, never run), state.

    Attributes: class_name (str), module_src (str), version, state (dict: the object's __dict__ with
    _parameters, _buffers, _modules, _init_args, _init_kwargs and plain attributes).
    """

    def __init__(self, class_name: str, module_src: str, version, state: dict):
        self.class_name, self.module_src, self.version, self.state = class_name, module_src, version, state

    def __setstate__(self, state):
        raise PublishedModelError("network pickle: a persistence record carries extra state (not an NVlabs pickle)")

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def children(self) -> dict:
        return dict(self.state.get("_modules") or {})


class _EasyDict(dict):
    """Stands in for dnnlib's EasyDict (a dict with attribute access): unpickled as a plain dict."""


def _make_record(meta) -> PersistentRecord:
    # Replaces torch_utils.persistence._reconstruct_persistent_obj: it would exec meta["module_src"].
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise PublishedModelError("network pickle: a persistence record without a class name (not an NVlabs pickle)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise PublishedModelError(f"network pickle: the persistence record {meta['class_name']} has no state dict")
    src = meta.get("module_src")
    return PersistentRecord(meta["class_name"], src if isinstance(src, str) else "", meta.get("version"), state)


def _no_hooks(hooks, what: str) -> None:
    if hooks:
        raise PublishedModelError(f"network pickle: a {what} with backward hooks (refused: hooks are code)")


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    _no_hooks(backward_hooks, "tensor")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                          collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks):
    _no_hooks(backward_hooks, "parameter")
    if not isinstance(data, torch.Tensor):
        raise PublishedModelError("network pickle: a parameter whose data is not a tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if state:
        raise PublishedModelError("network pickle: a parameter with extra Python state (refused)")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _load_storage_bytes(data: bytes):
    # Replaces torch.storage._load_from_bytes (an unrestricted torch.load of the bytes): the nested
    # torch.load goes through the same restricted unpickler.
    if not isinstance(data, (bytes, bytearray)):
        raise PublishedModelError("network pickle: a tensor storage that is not bytes")
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", pickle_module=_RESTRICTED_PICKLE,
                      weights_only=False)


def _latin1_bytes(text, encoding="latin1"):
    if not isinstance(text, str) or encoding != "latin1":
        raise PublishedModelError("network pickle: _codecs.encode is only accepted for latin1 text (protocol-2 bytes)")
    return text.encode("latin1")


def _numpy_global(module: str, name: str):
    core = getattr(np, "_core", None) or np.core
    return {"_reconstruct": core.multiarray._reconstruct, "scalar": core.multiarray.scalar}[name]


_STORAGE_NAMES = ("FloatStorage", "HalfStorage", "DoubleStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                  "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "UntypedStorage")


def _allowed_globals() -> dict:
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,                # protocol 2 writes Python 2 module names
        ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): _latin1_bytes,      # how protocol-2 pickles store bytes
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("torch", "Size"): torch.Size,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _make_record,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name in ("_reconstruct", "scalar"):
            allowed[(mod, name)] = _numpy_global(mod, name)
    for name in _STORAGE_NAMES:
        if hasattr(torch, name):
            allowed[("torch", name)] = getattr(torch, name)
    for name in ("float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        allowed[("torch", name)] = getattr(torch, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class resolves only the allow-list; any other global is refused."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        found = RestrictedUnpickler._allowed.get((module, name))
        if found is None:
            raise PublishedModelError(f"network pickle: refused the global {module}.{name} (only tensors, "
                                      f"numpy arrays, dicts and NVlabs persistence records are loaded; "
                                      f"nothing from the file is imported or run)")
        return found


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# What torch.load needs of a pickle module (`Unpickler` and `load`), restricted.
_RESTRICTED_PICKLE = types.SimpleNamespace(__name__="anyres_fast_restricted_pickle", Unpickler=RestrictedUnpickler,
                                           load=_restricted_load)


# ----------------------------------------------------------------------------------------------------
# Records -> our modules

@dataclasses.dataclass
class PublishedNetworks:
    """What load_network_pickle returns.

    Attributes:
        G_ema: the generator to render with (our Generator, eval mode).
        G: the training generator, or None when the file has none.
        D: the discriminator (our Discriminator), or None when absent or not supported (see notes).
        kind: what the file is, e.g. "stylegan3-T", "anyres-gan patch (positive)".
        config: the GeneratorConfig of G_ema.
        notes: one line per part of the file that was not built (e.g. augment_pipe).
        D_kwargs: the Discriminator's constructor arguments when D was built, else None.
    """
    G_ema: Generator
    G: Optional[Generator]
    D: Optional[Discriminator]
    kind: str
    config: GeneratorConfig
    notes: list
    D_kwargs: Optional[dict] = None


_GENERATOR_CLASSES = {"Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisInput", "SynthesisInput360",
                      "SynthesisLayer",
                      "FullyConnectedLayer", "ScaleNormalizePositive", "ScaleNormalizeZeroCentered"}
_DISCRIMINATOR_CLASSES = {"Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "Conv2dLayer",
                          "FullyConnectedLayer", "MappingNetwork", "MinibatchStdLayer"}

# Generator / SynthesisNetwork / SynthesisLayer keyword -> GeneratorConfig field.
_G_KWARGS = {"z_dim": "z_dim", "c_dim": "c_dim", "w_dim": "w_dim", "img_resolution": "resolution",
             "img_channels": "img_channels", "channel_base": "channel_base", "channel_max": "channel_max",
             "num_layers": "num_layers", "num_critical": "num_critical", "first_cutoff": "first_cutoff",
             "first_stopband": "first_stopband", "last_stopband_rel": "last_stopband_rel",
             "margin_size": "margin_size", "output_scale": "output_scale", "num_fp16_res": "num_fp16_res",
             "filter_size": "filter_size", "lrelu_upsampling": "lrelu_upsampling", "conv_clamp": "conv_clamp",
             "magnitude_ema_beta": "magnitude_ema_beta"}
_MAPPING_KWARGS = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier",
                   "w_avg_beta": "w_avg_beta"}
_FLOAT_FIELDS = {"first_cutoff", "first_stopband", "last_stopband_rel", "output_scale", "conv_clamp",
                 "magnitude_ema_beta", "mapping_lr_multiplier", "w_avg_beta"}


def _plain(value):
    """numpy scalars -> Python numbers; EasyDicts -> dicts (init kwargs are compared and stored as JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _flat_state(record: PersistentRecord, allowed: set, where: str, prefix: str = "", out=None) -> dict:
    """The state dict (name -> tensor) of a record tree, checking every record's class name."""
    out = {} if out is None else out
    if record.class_name not in allowed:
        raise PublishedModelError(f"{where}: unknown network part {record.class_name!r} at "
                                  f"{prefix.rstrip('.') or 'the top'} (not a StyleGAN3 / anyres-gan module)")
    st = record.state
    skip = st.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        items = st.get(group) or {}
        if not isinstance(items, dict):
            raise PublishedModelError(f"{where}: {record.class_name} has a malformed {group}")
        for name, t in items.items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise PublishedModelError(f"{where}: {prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
    for name, child in (st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise PublishedModelError(f"{where}: submodule {prefix}{name} is a {type(child).__name__}, not a "
                                      f"persistence record")
        _flat_state(child, allowed, where, prefix + name + ".", out)
    return out


def generator_config_from_record(record: PersistentRecord, where: str = "network pickle") -> tuple:
    """Our GeneratorConfig for a published StyleGAN3 / anyres-gan Generator record.

    Args:
        record: the Generator's PersistentRecord.
        where: prefix of error messages (the file name).

    Returns:
        (GeneratorConfig, kind): kind such as "stylegan3-T" or "anyres-gan patch (zerocentered)".

    Raises:
        PublishedModelError: an architecture or option that has no equivalent here (named).
    """
    if record.class_name != "Generator":
        raise PublishedModelError(f"{where}: G_ema is a {record.class_name!r}, not a Generator")
    synthesis = record.children.get("synthesis")
    if not isinstance(synthesis, PersistentRecord) or synthesis.class_name != "SynthesisNetwork":
        raise PublishedModelError(f"{where}: the generator has no StyleGAN3 synthesis network")
    parts = {c.class_name for c in synthesis.children.values() if isinstance(c, PersistentRecord)}
    if "SynthesisBlock" in parts:
        raise PublishedModelError(f"{where}: a StyleGAN2 / StyleGAN2-ADA generator (SynthesisBlock layers) is not "
                                  f"supported; StyleGAN3 (configs T and R) and anyres-gan generators are")
    kwargs = _plain(record.init_kwargs)
    if record.state.get("_init_args"):
        raise PublishedModelError(f"{where}: the generator was built with positional arguments (not an NVlabs pickle)")
    mode = kwargs.pop("training_mode", "global")
    if mode not in ("global", "patch", "global-360"):
        raise PublishedModelError(f"{where}: unknown anyres-gan training_mode {mode!r} "
                                  f"(expected global, patch or global-360)")
    panorama = mode == "global-360"
    want_input = "SynthesisInput360" if panorama else "SynthesisInput"
    if want_input not in parts:
        raise PublishedModelError(f"{where}: the {mode} synthesis network has no {want_input} "
                                  f"(parts: {sorted(parts)})")
    fields = {}
    mapping = kwargs.pop("mapping_kwargs", {}) or {}
    for key, value in mapping.items():
        if key not in _MAPPING_KWARGS:
            raise PublishedModelError(f"{where}: mapping_kwargs.{key} has no equivalent here")
        fields[_MAPPING_KWARGS[key]] = value
    scale_kwargs = kwargs.pop("scale_mapping_kwargs", {}) or {}
    fov = kwargs.pop("fov", None)
    if panorama:
        # The input module that runs is the authority for fov; the kwargs only say what was asked for.
        inp = synthesis.children.get("input")
        fov = _plain(inp.state.get("fov", fov)) if isinstance(inp, PersistentRecord) else fov
        if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0 < fov <= 360:
            raise PublishedModelError(f"{where}: a global-360 generator needs fov in (0, 360], got {fov!r}")
        fields.update(panorama=True, fov=float(fov))
    elif fov is not None:
        raise PublishedModelError(f"{where}: fov={fov} belongs to the global-360 panorama mode, not to {mode}")
    conv_kernel = kwargs.pop("conv_kernel", 3)
    radial = bool(kwargs.pop("use_radial_filters", False))
    if (conv_kernel, radial) == (3, False):
        fields["config"] = "T"
    elif (conv_kernel, radial) == (1, True):
        fields["config"] = "R"
    else:
        raise PublishedModelError(f"{where}: conv_kernel={conv_kernel} with use_radial_filters={radial} is neither "
                                  f"StyleGAN3 config T (3, False) nor R (1, True)")
    for key, value in kwargs.items():
        if key not in _G_KWARGS:
            raise PublishedModelError(f"{where}: generator option {key}={value!r} has no equivalent here")
        fields[_G_KWARGS[key]] = value
    for key in _FLOAT_FIELDS & set(fields):
        if isinstance(fields[key], int) and not isinstance(fields[key], bool):
            fields[key] = float(fields[key])
    kind = f"stylegan3-{fields['config']}" if "training_mode" not in record.init_kwargs else "anyres-gan global"
    if mode == "patch":
        norm = record.children.get("scale_norm")
        names = {"ScaleNormalizePositive": "positive", "ScaleNormalizeZeroCentered": "zerocentered"}
        if not isinstance(norm, PersistentRecord) or norm.class_name not in names:
            raise PublishedModelError(f"{where}: patch-mode generator without a known scale_norm "
                                      f"({getattr(norm, 'class_name', None)!r})")
        # The module that runs is the authority (its min/max), the kwargs only say what was asked for.
        lo = _plain(norm.state.get("scale_mapping_min", scale_kwargs.get("scale_mapping_min")))
        hi = _plain(norm.state.get("scale_mapping_max", scale_kwargs.get("scale_mapping_max")))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise PublishedModelError(f"{where}: scale_mapping_min/max must be numbers, got {lo!r}, {hi!r}")
        fields.update(scale_branch=True, scale_branch_style="anyres-gan", scale_norm=names[norm.class_name],
                      scale_mapping_min=float(lo), scale_mapping_max=float(hi))
        kind = f"anyres-gan patch ({names[norm.class_name]}, {fields['config']})"
    else:
        fields["scale_branch"] = False
        if panorama:
            kind = f"anyres-gan global-360 (fov {fields['fov']:g}, {fields['config']})"
        elif kind == "anyres-gan global":
            kind = f"anyres-gan global ({fields['config']})"
    try:
        cfg = GeneratorConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise PublishedModelError(f"{where}: {exc}") from None
    return cfg, kind


def _check_layers(record: PersistentRecord, model: Generator, where: str) -> None:
    """The published layers' own attributes (sizes, factors, padding, fp16, clamp) equal our schedule."""
    synthesis = record.children["synthesis"]
    for spec in model.synthesis.schedule.layers:
        layer = synthesis.children.get(spec.name)
        if not isinstance(layer, PersistentRecord):
            raise PublishedModelError(f"{where}: the file has no synthesis layer {spec.name} "
                                      f"(its layers: {sorted(synthesis.children)[:4]}...)")
        st = layer.state
        want = {"in_channels": spec.in_channels, "out_channels": spec.out_channels, "up_factor": spec.up,
                "down_factor": spec.down, "padding": list(spec.padding), "use_fp16": spec.use_fp16,
                "conv_kernel": spec.conv_kernel}
        for key, value in want.items():
            if key in st:
                got = _plain(st[key])
                got = [int(v) for v in got] if key == "padding" else got
                if got != value:
                    raise PublishedModelError(f"{where}: layer {spec.name} has {key}={got!r} in the file, "
                                              f"{value!r} here")
        if "conv_clamp" in st and _plain(st["conv_clamp"]) != model.config.conv_clamp:
            raise PublishedModelError(f"{where}: layer {spec.name} has conv_clamp={_plain(st['conv_clamp'])!r}")


def _build_generator(record: PersistentRecord, where: str) -> tuple:
    cfg, kind = generator_config_from_record(record, where)
    state = _flat_state(record, _GENERATOR_CLASSES, where)
    model = Generator(cfg)
    _check_layers(record, model, where)
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise PublishedModelError(f"{where}: the weights do not fit the {kind} architecture: {mismatch}")
    model.load_state_dict(state, strict=True)
    return model, cfg, kind


def _build_discriminator(record: PersistentRecord, where: str) -> tuple:
    """(Discriminator or None, note, its arguments): StyleGAN2's residual D as StyleGAN3 and anyres-gan
    train it."""
    if record.class_name != "Discriminator":
        return None, f"D is a {record.class_name!r}, not loaded", None
    kw = _plain(record.init_kwargs)
    if kw.pop("architecture", "resnet") != "resnet":
        return None, "D: only the resnet architecture is supported, not loaded", None
    block = kw.pop("block_kwargs", {}) or {}
    mapping = kw.pop("mapping_kwargs", {}) or {}
    epilogue = kw.pop("epilogue_kwargs", {}) or {}
    block.pop("freeze_layers", None)            # a training option only
    args = dict(resolution=kw.pop("img_resolution", None), img_channels=kw.pop("img_channels", 3),
                c_dim=kw.pop("c_dim", 0))
    for key in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "cmap_dim"):
        if key in kw:
            args[key] = kw.pop(key)
    if "num_layers" in mapping:
        args["mapping_layers"] = mapping.pop("num_layers")
    for key in ("mbstd_group_size", "mbstd_num_channels"):
        if key in epilogue:
            args[key] = epilogue.pop(key)
    rest = {**kw, **{f"block_kwargs.{k}": v for k, v in block.items()},
            **{f"mapping_kwargs.{k}": v for k, v in mapping.items()},
            **{f"epilogue_kwargs.{k}": v for k, v in epilogue.items()}}
    if rest:
        return None, f"D: options {sorted(rest)} have no equivalent here, not loaded", None
    try:
        state = _flat_state(record, _DISCRIMINATOR_CLASSES, where)
        model = Discriminator(**args)
    except PublishedModelError as exc:
        return None, f"D not loaded: {str(exc).replace(where + ': ', '')}", None
    except (TypeError, ValueError) as exc:
        return None, f"D not loaded: {exc}", None
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        return None, f"D not loaded: its weights do not fit: {mismatch}", None
    model.load_state_dict(state, strict=True)
    return model.eval(), None, args


def is_network_pickle(path) -> bool:
    """Whether `path` looks like a network pickle (a file named *.pkl / *.pickle, or a file that starts
    like a pickle) rather than one of our save_pretrained folders or run folders.

    Args:
        path: a path (str or os.PathLike).

    Returns:
        bool (True also for broken pickles: the loader then says what is wrong).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if path.lower().endswith((".pkl", ".pickle")):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def read_network_pickle(path) -> object:
    """The unpickled contents of a network pickle, persistence records as PersistentRecord (nothing run).

    Args:
        path: the .pkl file.

    Returns:
        Whatever the pickle holds (usually a dict with G, D, G_ema, augment_pipe, training_set_kwargs).

    Raises:
        FileNotFoundError: no such file.
        PublishedModelError: a torch.save zip, a truncated or damaged file, a refused global.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PK\x03\x04":
            raise PublishedModelError(f"{path}: a torch.save zip archive, not an NVlabs network pickle (a "
                                      f"save_pretrained folder loads with Generator.from_pretrained(folder))")
        if head[:1] != b"\x80":
            raise PublishedModelError(f"{path}: not a pickle file (it starts with {head!r})")
        f.seek(0)
        try:
            return RestrictedUnpickler(f).load()
        except PublishedModelError as exc:
            raise PublishedModelError(str(exc).replace("network pickle", path, 1)) from None
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                RuntimeError, MemoryError, OverflowError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise PublishedModelError(f"{path}: truncated or damaged pickle ({type(exc).__name__}: {first}); "
                                      f"download it again") from None


def load_network_pickle(path, *, with_training_networks: bool = True) -> PublishedNetworks:
    """Load a StyleGAN3 or anyres-gan network pickle into our modules, executing nothing from it.

    Args:
        path: the .pkl file (a training snapshot dict with G_ema, or a pickled Generator).
        with_training_networks: also build G and D when the file has them (False: G_ema only).

    Returns:
        PublishedNetworks (G_ema always; G and D when present and supported; notes on what was skipped).

    Raises:
        FileNotFoundError: no such file.
        PublishedModelError (a ValueError): refused globals, a truncated file, a torch.save zip, an
            unsupported architecture or mode (named), weights that do not fit their architecture.
    """
    path = os.fspath(path)
    data = read_network_pickle(path)
    if isinstance(data, PersistentRecord):
        data = {"G_ema": data}
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentRecord):
        what = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise PublishedModelError(f"{path}: no G_ema network in the pickle (found {what})")
    G_ema, cfg, kind = _build_generator(data["G_ema"], path)
    G_ema.eval().requires_grad_(False)
    notes, G, D, D_kwargs = [], None, None, None
    if with_training_networks:
        if isinstance(data.get("G"), PersistentRecord):
            G = _build_generator(data["G"], path)[0]
        if isinstance(data.get("D"), PersistentRecord):
            D, note, D_kwargs = _build_discriminator(data["D"], path)
            if note:
                notes.append(note)
    for key, value in data.items():
        if key not in ("G", "G_ema", "D") and isinstance(value, PersistentRecord):
            notes.append(f"{key} ({value.class_name}) not loaded")
    return PublishedNetworks(G_ema=G_ema, G=G, D=D, kind=kind, config=cfg, notes=notes, D_kwargs=D_kwargs)


_CACHE: dict = {}


def cached_network_pickle(path, with_training_networks: bool = True) -> PublishedNetworks:
    """load_network_pickle(path), remembered for the last file read (same path, size and mtime), so
    that a command which first checks a file and then uses it reads it once. The modules are shared:
    do not modify them (copy.deepcopy them to train).

    Args:
        path: the .pkl file.
        with_training_networks: as load_network_pickle (a cached load with them serves either value).

    Returns:
        PublishedNetworks.

    Raises:
        FileNotFoundError, PublishedModelError: as load_network_pickle.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        raise FileNotFoundError(f"{path}: no such file") from None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    for full in (True, False) if not with_training_networks else (True,):
        if (key, full) in _CACHE:
            return _CACHE[(key, full)]
    _CACHE.clear()
    _CACHE[(key, with_training_networks)] = load_network_pickle(path, with_training_networks=with_training_networks)
    return _CACHE[(key, with_training_networks)]


def _load_g_ema(path, map_location="cpu") -> Generator:
    G = load_network_pickle(path, with_training_networks=False).G_ema
    return G.to(map_location) if isinstance(map_location, (str, torch.device)) else G


register_file_loader(Generator, is_network_pickle, _load_g_ema)   # Generator.from_pretrained("x.pkl")
