"""impl="auto" for the convolutions (anyres_fast/ops/conv_choice.py): the per-shape table measured at first
use, its file next to the extension build, the fixed rule before a measurement, the doctor lines, and the
wiring into the public ops. The timings are stand-ins here (no GPU); the GPU run measures for real."""
import pytest
import torch

from anyres_fast.ops import conv_choice as cc
from anyres_fast.ops import modulated_conv2d_op as mc
from anyres_fast.ops import style_fused_conv2d_op as sf

CUDA = torch.device("cuda", 0)


@pytest.fixture
def table(tmp_path, monkeypatch):
    """A fresh cache root and a fake GPU whose two paths take the times in `times` (ms)."""
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(tmp_path))
    monkeypatch.setenv("ANYRES_FAST_ARCH", "9.0")
    monkeypatch.setattr(cc, "_tables", {})
    monkeypatch.setattr(cc, "_device_names", {}, raising=False)
    monkeypatch.setattr(cc, "_paths", {}, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(cc, "_can_measure", lambda device: cc.autotune_enabled())
    times = {"cuda": 2.0, "ref": 1.0}
    measured = []

    def fake_time(fn):
        which = fn()
        measured.append(which)
        return times[which]

    monkeypatch.setattr(cc, "_time_ms", fake_time)
    return times, measured


def test_first_use_measures_then_the_table_decides(table):
    times, measured = table
    key = "modulated_conv2d|float16|x2x8x16x16|w8x8x3x3|p1|up1|demodulate=True|tf32"
    run = dict(run_cuda=lambda: "cuda", run_ref=lambda: "ref")
    assert cc.choose("modulated_conv2d", key, CUDA, **run) == "ref"  # ref measured faster
    assert measured == ["cuda", "ref"]
    times["cuda"] = 0.1  # the table is not re-measured: auto keeps its recorded choice
    assert cc.choose("modulated_conv2d", key, CUDA, **run) == "ref" and len(measured) == 2
    assert cc.table_path().parent.name.startswith("ext-") and cc.table_path().exists()
    cc._tables.clear()  # a new process reads the file
    assert cc.choose("modulated_conv2d", key, CUDA, **run) == "ref" and len(measured) == 2
    other = key.replace("up1", "up2")
    assert cc.choose("modulated_conv2d", other, CUDA, **run) == "cuda"  # measured faster this time
    lines = "\n".join(cc.report_lines())
    assert str(cc.table_path()) in lines and "Fake GPU" in lines and "-> cuDNN" in lines and "-> custom" in lines


def test_auto_bookkeeping_is_memoised(table, monkeypatch):
    """The per-call path of impl="auto" (choose -> table_path -> build_key) hashes csrc/ and queries the
    device once per process, not on every convolution (issue 28 item 1: it cost ~2 ms per call)."""
    from anyres_fast.ops import _extension
    monkeypatch.setattr(_extension, "_cache", {"sources": {}, "keys": {}}, raising=False)
    monkeypatch.delenv("ANYRES_FAST_ARCH")  # the default archs come from a device query
    calls = {"sources": 0, "name": 0, "capability": 0}
    real_sources = _extension.source_files

    def counting_sources():
        calls["sources"] += 1
        return real_sources()

    def counting_capability(index=None):
        calls["capability"] += 1
        return (9, 0)

    def counting_name(device=None):
        calls["name"] += 1
        return "Fake GPU"

    monkeypatch.setattr(_extension, "source_files", counting_sources)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", counting_capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", counting_name)
    key = "modulated_conv2d|float16|x2x8x16x16|w8x8x3x3|p1|up1|demodulate=True|tf32"
    for _ in range(20):
        assert cc.choose("modulated_conv2d", key, CUDA, run_cuda=lambda: "cuda", run_ref=lambda: "ref") == "ref"
    assert calls == {"sources": 1, "name": 1, "capability": 1}
    assert cc.table_path().exists()  # the memo points at the real table: it was written there
    # what can change within a process still changes the path: the cache root setting
    monkeypatch.setenv("ANYRES_FAST_CACHE", str(cc.table_path().parent.parent / "other"))
    assert "other" in str(cc.table_path())


def test_fixed_rule_until_measured(table, monkeypatch):
    _, measured = table
    monkeypatch.setenv("ANYRES_FAST_CONV_AUTOTUNE", "off")
    run = dict(run_cuda=lambda: "cuda", run_ref=lambda: "ref")
    assert cc.choose("modulated_conv2d", "k1", CUDA, **run) == "ref"
    assert cc.choose("style_fused_conv2d", "k2", CUDA, **run) == "cuda"
    assert measured == [] and not cc.table_path().exists()
    assert "none measured yet" in "\n".join(cc.report_lines())
    monkeypatch.setenv("ANYRES_FAST_CONV_AUTOTUNE", "maybe")
    assert "unavailable" in cc.report_lines()[0]  # doctor reports a bad setting instead of crashing


@pytest.mark.parametrize("choice", ["cuda", "ref"], ids=["custom-kernel", "three-pass"])  # no "cuda" id: conftest skips those
def test_auto_follows_the_choice(monkeypatch, choice):
    """impl="auto" asks the table (with the call's key) once the CUDA path is possible and runs what it
    says; impl="cuda" never asks. Checked on CPU tensors with the dispatch pretending a GPU."""
    asked = []
    monkeypatch.setattr(mc._dispatch, "resolve_impl", lambda *a, **k: "cuda")
    monkeypatch.setattr(cc, "choose", lambda op, key, device, run_cuda, run_ref: asked.append((op, key)) or choice)
    ran = []
    monkeypatch.setattr(mc, "modulated_conv2d_ref", lambda *a, **k: ran.append("ref") or a[0])
    monkeypatch.setattr(mc, "_modulated_conv2d_op", lambda *a, **k: ran.append("cuda") or a[0])
    monkeypatch.setattr(sf, "style_fused_conv2d_ref", lambda *a, **k: ran.append("ref") or a[0])
    monkeypatch.setattr(sf, "_style_fused_conv2d_op", lambda *a, **k: ran.append("cuda") or a[0])
    x, w = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
    mc.modulated_conv2d(x, w, torch.ones(2, 4), padding=1)
    sf.style_fused_conv2d(x, w, torch.ones_like(x), padding=1, up=2)
    assert ran == [choice, choice]
    assert [op for op, _ in asked] == ["modulated_conv2d", "style_fused_conv2d"]
    assert "x2x4x8x8" in asked[0][1] and "up2" in asked[1][1]  # 6x6 falls in the 8x8 class
    mc.modulated_conv2d(x, w, torch.ones(2, 4), padding=1, impl="cuda")
    assert len(asked) == 2 and ran[-1] == "cuda"


def test_shapes_of_one_class_share_one_measurement(table):
    """Batch and spatial sizes are rounded up to powers of two in the key (an independent rounding here):
    a run meeting many patch/tile sizes measures once per class, not once per shape."""
    times, measured = table
    w = torch.empty(8, 8, 3, 3)

    def key(b, h, w_):
        return cc.shape_key("modulated_conv2d", torch.empty(b, 8, h, w_, dtype=torch.float16), w, 1, 1, "d", False)

    def pow2(n):
        p = 1
        while p < n:
            p *= 2
        return p

    for n in (1, 2, 3, 5, 64, 65, 100, 128, 129):
        assert cc.shape_class(n) == pow2(n)
    assert key(3, 33, 50) == key(4, 64, 64) != key(5, 64, 64)
    assert key(4, 64, 64) != key(4, 65, 64) and key(4, 64, 64) != key(4, 64, 65)
    run = dict(run_cuda=lambda: "cuda", run_ref=lambda: "ref")
    for b, h, ww in ((3, 33, 50), (4, 64, 64), (4, 40, 61)):
        cc.choose("modulated_conv2d", key(b, h, ww), CUDA, **run)
    assert measured == ["cuda", "ref"]  # one class: measured once
    cc.choose("modulated_conv2d", key(4, 65, 64), CUDA, **run)
    assert len(measured) == 4  # the next class up is measured on its own
