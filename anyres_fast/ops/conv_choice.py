"""impl="auto" for the convolutions: the custom implicit-GEMM kernel or the cuDNN three-pass form, per shape
class.

A shape class is the call's dtype, channels, kernel size, padding, up, variant and fp32 mode exactly, with
the batch and the two spatial sizes rounded up to powers of two: any-resolution training and tiled
rendering meet many patch, tile and batch sizes, and timing every one would synchronise the GPU again and
again, while the faster path changes with the order of magnitude of the work, not with a few pixels.
The first time a shape class is seen on a GPU, both paths are timed (CUDA events, a warm-up run then the best of
a few) and the faster one is recorded in a table stored next to the extension build
(`<extension build dir>/conv_choice.json`, one section per GPU name), so later calls and later processes
reuse it and auto never picks the path that was measured slower. Until a shape is measured (measuring
turned off, no GPU, during CUDA-graph capture or torch.compile tracing, where a timing would synchronise),
a fixed rule decides: style_fused_conv2d uses the custom kernel (its reference needs two convolutions and
an extra activation-sized tensor), modulated_conv2d the three-pass form (one cuDNN convolution between two
cheap elementwise products).

Environment: ANYRES_FAST_CONV_AUTOTUNE = on (default) | off.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable

import torch

from . import _extension
from ..utils.files import write_json

TABLE_NAME = "conv_choice.json"
REPEATS = 5
FIXED_RULE = {"modulated_conv2d": "ref", "style_fused_conv2d": "cuda"}

_lock = threading.Lock()
_tables: dict = {}  # path -> table (conv_choice.json: {device name -> {key -> entry}}; selfcheck.json)
_device_names: dict = {}  # device index -> name, queried once per process (names cannot change)
_paths: dict = {}  # (build key, cache root settings) -> table path


def autotune_enabled() -> bool:
    """Whether first-use measurements are taken (ANYRES_FAST_CONV_AUTOTUNE, default on)."""
    value = os.environ.get("ANYRES_FAST_CONV_AUTOTUNE", "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"ANYRES_FAST_CONV_AUTOTUNE must be on or off, got {value!r}")
    return value == "on"


def table_path() -> Path:
    """Where the measured table lives: next to the extension build it was measured with.

    Memoised per build key and cache-root setting: on the per-call path of impl="auto" this costs a
    dict lookup (the build key itself is computed once per process, _extension.build_key).
    """
    memo = (_extension.build_key(), os.environ.get("ANYRES_FAST_CACHE"), os.environ.get("XDG_CACHE_HOME"))
    path = _paths.get(memo)
    if path is None:
        path = _paths[memo] = _extension.build_dir() / TABLE_NAME
    return path


def device_name(device: torch.device) -> str:
    """The GPU's name (the table's section), queried once per device index and process; "cpu" off GPU."""
    if device.type != "cuda":
        return "cpu"
    index = device.index if device.index is not None else torch.cuda.current_device()
    name = _device_names.get(index)
    if name is None:
        name = _device_names[index] = torch.cuda.get_device_name(index)
    return name


def load_table(path: Path) -> dict:
    """The JSON table at `path`, read once per process and kept in memory (empty if unreadable); the
    conv choice table and the self-check verdicts (selfcheck.py) both live in such files."""
    if path not in _tables:
        try:
            _tables[path] = json.loads(path.read_text())
        except (OSError, ValueError):
            _tables[path] = {}
    return _tables[path]


def save_table(path: Path, table: dict) -> None:
    """Write a table loaded with load_table, atomically; a read-only cache is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(str(path), table, indent=1)
    except OSError:
        pass  # a read-only cache only costs a re-measurement (or re-check) in the next process


def shape_class(n: int) -> int:
    """The power of two a batch or spatial size n >= 1 is rounded up to in a table key."""
    return 1 << max(int(n) - 1, 0).bit_length()


def shape_key(op: str, x: torch.Tensor, weight: torch.Tensor, padding: int, up: int, variant: str,
              exact_fp32: bool) -> str:
    """The table key of one call's shape class (module docstring): op, dtype, x's shape with batch and
    spatial sizes rounded up to powers of two, weight shape, padding, up, variant, fp32 mode."""
    dt = str(x.dtype).replace("torch.", "")
    b, c, h, w = x.shape
    x_class = (shape_class(b), c, shape_class(h), shape_class(w))
    return (f"{op}|{dt}|x{'x'.join(map(str, x_class))}|w{'x'.join(map(str, weight.shape))}|p{padding}|up{up}|"
            f"{variant}|{'fp32' if exact_fp32 else 'tf32'}")


def _time_ms(fn: Callable[[], torch.Tensor]) -> float:
    fn()  # warm-up (and the first-use costs: workspace, GEMM-ready weight)
    best = float("inf")
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def _can_measure(device: torch.device) -> bool:
    if not autotune_enabled() or device.type != "cuda":
        return False
    return not torch.cuda.is_current_stream_capturing()  # a timing would synchronise inside the capture


def choose(op: str, key: str, device: torch.device, run_cuda: Callable[[], torch.Tensor],
           run_ref: Callable[[], torch.Tensor]) -> str:
    """"cuda" or "ref" for one call of `op` with table key `key` (see the module docstring).

    run_cuda / run_ref compute the op by each path; they are only called to measure a new shape.
    Under torch.compile tracing the fixed rule decides (no file access or device query in the graph)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return FIXED_RULE[op]
    name = device_name(device)
    path = table_path()
    with _lock:
        entry = load_table(path).get(name, {}).get(key)
    if entry is not None:
        return entry["choice"]
    if not _can_measure(device):
        return FIXED_RULE[op]
    with torch.no_grad():
        cuda_ms, ref_ms = _time_ms(run_cuda), _time_ms(run_ref)
    entry = {"cuda_ms": round(cuda_ms, 4), "cudnn_ms": round(ref_ms, 4), "choice": "cuda" if cuda_ms <= ref_ms else "ref"}
    with _lock:
        table = load_table(path)
        table.setdefault(name, {})[key] = entry
        save_table(path, table)
    return entry["choice"]


def report_lines(limit: int = 20) -> list[str]:
    """What `anyres-fast doctor` prints about the auto choice: the rule, the table file and its entries."""
    try:
        enabled, path = autotune_enabled(), table_path()
    except Exception as exc:  # a bad environment variable: doctor reports, never crashes
        return [f"conv auto    unavailable: {exc}"]
    lines = [f"conv auto    measure at first use: {'on' if enabled else 'off'}; unmeasured shapes: "
             + ", ".join(f"{op} -> {'custom kernel' if c == 'cuda' else 'cuDNN three-pass'}"
                         for op, c in FIXED_RULE.items()),
             f"  table      {path}" + ("" if path.exists() else " (none measured yet)")]
    table = load_table(path) if path.exists() else {}
    rows = [(dev, key, e) for dev, entries in sorted(table.items()) for key, e in sorted(entries.items())]
    for dev, key, e in rows[:limit]:
        lines.append(f"  {dev}: {key}  custom {e['cuda_ms']:.3f} ms, cuDNN {e['cudnn_ms']:.3f} ms -> "
                     f"{'custom' if e['choice'] == 'cuda' else 'cuDNN'}")
    if len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more in the table file")
    return lines
