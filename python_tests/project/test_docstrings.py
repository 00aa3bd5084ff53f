"""help() tells a user everything needed to call the public API: every public op, the Generator's and
Discriminator's entry points and the render helpers document each argument, the result and the errors."""
import inspect
import re

import pytest

from anyres_fast import Discriminator, Generator, ops
from anyres_fast.models import published
from anyres_fast.models import tiling as render

OPS = ["filtered_lrelu", "filtered_lrelu_ref", "lanczos_resample", "lanczos_resample_ref", "teacher_warp",
       "modulated_conv2d", "modulated_conv2d_ref", "style_fused_conv2d", "style_fused_conv2d_ref", "upfirdn2d",
       "upfirdn2d_ref", "setup_filter", "bias_act", "bias_act_ref"]
API = [(f"ops.{n}", getattr(ops, n)) for n in OPS] + [
    ("Generator.__init__", Generator.__init__), ("Generator.forward", Generator.forward),
    ("Generator.render", Generator.render), ("Generator.zoom", Generator.zoom),
    ("Generator.save_pretrained", Generator.save_pretrained),
    ("Generator.from_pretrained", Generator.from_pretrained),
    ("Generator.calibrate_magnitudes_", Generator.calibrate_magnitudes_),
    ("Generator.schedule_table", Generator.schedule_table),
    ("Discriminator.__init__", Discriminator.__init__), ("Discriminator.forward", Discriminator.forward),
    ("render.parse_window", render.parse_window), ("render.tile_offsets", render.tile_offsets),
    ("render.to_output", render.to_output), ("render.render_canvas", render.render_canvas),
    ("Generator.scale_features", Generator.scale_features),
] + [(f"published.{n}", getattr(published, n)) for n in (
    "load_network_pickle", "read_network_pickle", "is_network_pickle", "cached_network_pickle",
    "generator_config_from_record")]


@pytest.mark.parametrize("name,fn", API, ids=[n for n, _ in API])
def test_docstring_names_every_argument(name, fn):
    doc = inspect.getdoc(fn) or ""
    assert "Returns:" in doc or "Raises:" in doc, f"{name}: no Returns/Raises section"
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
    if params:
        assert "Args:" in doc, f"{name}: no Args section"
        args = doc.split("Args:", 1)[1]
        for p in params:
            label = p.name if p.kind is not p.VAR_KEYWORD else f"**{p.name}"
            assert re.search(rf"(^|[\s,(*]){re.escape(p.name)}\b", args), f"{name}: argument {label} undocumented"


def test_help_of_filtered_lrelu_shows_every_argument():
    text = ops.filtered_lrelu.__doc__
    for arg in ("x", "fu", "fd", "b", "up", "down", "padding", "gain", "slope", "clamp", "flip_filter", "impl"):
        assert re.search(rf"^\s+{arg}:", text, re.M), arg
