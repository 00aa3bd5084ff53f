"""Writes network pickles in the NVlabs persistence format from our own modules, for the tests: the
published class names, records whose reconstruct function and module source would leave a marker file
if anything ran them. Used by models/test_published.py and cli/test_weights_forms.py."""
from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types

import numpy as np


# Our module class -> the published class name of the same module.
PUBLISHED_NAMES = {"Generator": "Generator", "MappingNetwork": "MappingNetwork", "SynthesisNetwork": "SynthesisNetwork",
                   "SynthesisInput": "SynthesisInput", "SynthesisLayer": "SynthesisLayer",
                   "FullyConnected": "FullyConnectedLayer", "Discriminator": "Discriminator",
                   "DiscriminatorBlock": "DiscriminatorBlock", "Conv2dLayer": "Conv2dLayer",
                   "DiscriminatorEpilogue": "DiscriminatorEpilogue", "MinibatchStd": "MinibatchStdLayer",
                   "DiscriminatorMapping": "MappingNetwork"}


@contextlib.contextmanager
def persistence_names(marker):
    """Stand-ins for torch_utils.persistence and dnnlib.util while pickling (pickle checks that a global
    can be imported under its name); removed again before anything is loaded."""
    def reconstruct(meta):
        open(marker, "w").write("reconstruct ran")
        raise RuntimeError("the published reconstruct function was called")
    reconstruct.__module__, reconstruct.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    mods = {"torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": types.ModuleType("dnnlib.util")}
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = reconstruct
    mods["dnnlib.util"].EasyDict = easydict
    mods["torch_utils"].persistence, mods["dnnlib"].util = mods["torch_utils.persistence"], mods["dnnlib.util"]
    assert not set(mods) & set(sys.modules)
    sys.modules.update(mods)
    try:
        yield reconstruct, easydict
    finally:
        for name in mods:
            del sys.modules[name]


class Record:
    """Pickles as a persistence record: reconstruct(meta)."""

    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def records(module, reconstruct, src, init_kwargs=None, extra_children=None):
    """The persistence record tree of one of our modules, with the published class names."""
    state = {"training": module.training, "_parameters": dict(module._parameters), "_buffers": dict(module._buffers),
             "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
             "_forward_hooks": collections.OrderedDict(),
             "_modules": {n: records(c, reconstruct, src) for n, c in module._modules.items() if c is not None},
             "_init_args": (), "_init_kwargs": dict(init_kwargs or {})}
    state["_modules"].update(extra_children or {})
    if type(module).__name__ == "SynthesisLayer":
        s = module.spec
        state.update(in_channels=s.in_channels, out_channels=s.out_channels, up_factor=s.up, down_factor=s.down,
                     padding=list(s.padding), use_fp16=np.bool_(s.use_fp16), conv_kernel=s.conv_kernel,
                     in_size=np.broadcast_to(np.asarray(s.in_size), [2]), in_cutoff=np.float64(s.in_cutoff),
                     conv_clamp=256)
    name = PUBLISHED_NAMES[type(module).__name__]
    if name == "SynthesisInput" and getattr(module, "panorama", False):
        name = "SynthesisInput360"          # anyres-gan's global-360 input keeps its fov as an attribute
        state.update(fov=int(module.fov) if float(module.fov).is_integer() else module.fov,
                     margin_size=10, frame_size=np.broadcast_to(np.asarray(module.sampling_rate), [2]))
    meta = dict(type="class", version=6, module_src=src, class_name=name, state=state)
    return Record(reconstruct, meta)


def write_pickle(path, G, D=None, mode=None, marker=None, extra=None, protocol=4):
    """A training snapshot {G, D, G_ema, augment_pipe, training_set_kwargs} of our G (and D) in the
    persistence format; mode None: StyleGAN3, else anyres-gan's training_mode."""
    marker = marker or f"{path}.executed"
    src = f"open({marker!r}, 'w').write('module source ran')\nraise RuntimeError('module source executed')\n"
    cfg = G.config
    with persistence_names(marker) as (reconstruct, EasyDict):
        kw = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                  img_channels=cfg.img_channels, channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                  num_layers=cfg.num_layers, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                  magnitude_ema_beta=cfg.magnitude_ema_beta)
        if cfg.config == "R":
            kw.update(conv_kernel=1, use_radial_filters=True)
        children = {}
        if cfg.panorama:
            mode = mode or "global-360"
            kw["fov"] = int(cfg.fov) if float(cfg.fov).is_integer() else cfg.fov
        if mode is not None:
            kw["training_mode"] = mode
        if cfg.scale_branch:
            kw["scale_mapping_kwargs"] = EasyDict(scale_mapping_min=int(cfg.scale_mapping_min),
                                                  scale_mapping_max=int(cfg.scale_mapping_max),
                                                  scale_mapping_norm=cfg.scale_norm)
            name = {"positive": "ScaleNormalizePositive", "zerocentered": "ScaleNormalizeZeroCentered"}[cfg.scale_norm]
            norm_state = {"_parameters": {}, "_buffers": {}, "_modules": {},
                          "scale_mapping_min": int(cfg.scale_mapping_min), "scale_mapping_max": int(cfg.scale_mapping_max)}
            children["scale_norm"] = Record(reconstruct, dict(type="class", version=6, module_src=src, class_name=name,
                                                              state=norm_state))
        g = records(G, reconstruct, src, kw, children)
        data = dict(G=g, D=None if D is None else records(D, reconstruct, src, dict(
                        c_dim=D.c_dim, img_resolution=D.resolution, img_channels=3, channel_base=256, channel_max=8,
                        mapping_kwargs=EasyDict(num_layers=1), epilogue_kwargs=EasyDict(mbstd_group_size=4),
                        block_kwargs=EasyDict(freeze_layers=0))),
                    G_ema=g, augment_pipe=None, training_set_kwargs=EasyDict(resolution=cfg.resolution))
        data.update(extra or {})
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
    return marker
