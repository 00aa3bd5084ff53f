"""Timing harness shared by the benchmarks: cases, timers and the ratio table.

Benchmarks are not tests: they measure, print a table of ratios taken in one run, and assert nothing.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Case:
    op: str                      # e.g. "filtered_lrelu"
    shape: str                   # human-readable description of the inputs
    dtype: torch.dtype
    forward: dict[str, Callable[[], object]]            # impl name -> one forward pass
    backward: Optional[dict[str, Callable[[], object]]] = None   # impl name -> one forward+backward
    bytes: int = 0               # minimum bytes one forward must move (GB/s column)
    baseline: str = "ref"        # the ratio column is time(baseline) / time(impl)


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    impl: str
    fwd_ms: Optional[float]
    fwdbwd_ms: Optional[float]
    gbps: Optional[float]
    ratio_fwd: Optional[float] = None
    ratio_fwdbwd: Optional[float] = None
    note: str = field(default="")


def forward_backward(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A Case.backward callable: fn on leaf copies of inputs, then backward with a gradient of ones."""
    leaves = [t.detach().requires_grad_() for t in inputs]

    def run():
        y = fn(*leaves)
        y.backward(torch.ones_like(y))
    return run


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3, iters: int = 10,
            min_time_s: float = 0.2) -> float:
    """Median milliseconds per call. On CUDA, events around each call; on CPU, perf_counter."""
    for _ in range(warmup):
        fn()
    samples = []
    start_all = time.perf_counter()
    while len(samples) < iters or (time.perf_counter() - start_all < min_time_s and len(samples) < 1000):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def run_case(case: Case, device: torch.device, quick: bool = False) -> list[Row]:
    iters = 3 if quick else 10
    rows = []
    for impl, fwd in case.forward.items():
        row = Row(case.op, case.shape, str(case.dtype).replace("torch.", ""), impl, None, None, None)
        try:
            with torch.no_grad():
                row.fwd_ms = time_ms(fwd, device, warmup=1 if quick else 3, iters=iters)
            if case.backward and impl in case.backward:
                row.fwdbwd_ms = time_ms(case.backward[impl], device, warmup=1 if quick else 3, iters=iters)
            if case.bytes and row.fwd_ms:
                row.gbps = case.bytes / (row.fwd_ms * 1e-3) / 1e9
        except Exception as exc:  # one failing impl must not hide the others' numbers
            row.note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
    base = next((r for r in rows if r.impl == case.baseline), None)
    for r in rows:
        if base is not None:
            if base.fwd_ms and r.fwd_ms:
                r.ratio_fwd = base.fwd_ms / r.fwd_ms
            if base.fwdbwd_ms and r.fwdbwd_ms:
                r.ratio_fwdbwd = base.fwdbwd_ms / r.fwdbwd_ms
    return rows


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    """A markdown table; ratios are against each case's baseline impl (x faster, >1 = faster)."""
    head = "| op | shape | dtype | impl | fwd ms | fwd+bwd ms | GB/s | fwd ratio | fwd+bwd ratio | note |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r.op} | {r.shape} | {r.dtype} | {r.impl} | {_fmt(r.fwd_ms, '.3f')} | "
                     f"{_fmt(r.fwdbwd_ms, '.3f')} | {_fmt(r.gbps, '.1f')} | {_fmt(r.ratio_fwd, '.2f')} | "
                     f"{_fmt(r.ratio_fwdbwd, '.2f')} | {r.note} |")
    return "\n".join(lines)


def report(title: str, device: torch.device, intro: str, table: str, out=None) -> str:
    """Print a dated, device-labelled markdown report and, if out is given, write it there too."""
    import datetime
    text = (f"# {title} — {datetime.date.today().isoformat()} — {device_description(device)}\n\n"
            f"{intro}\n\n{table}\n")
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    import os
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"
