"""Every function the extension binds (csrc/bindings/*.cpp) starts with anyres_fast::begin_launch over ALL
its tensor arguments: one-device check (not just is_cuda) and a pending CUDA error from earlier work
taken off the error state before the op launches, so a launch reports only its own error. Read from the
sources, so it runs without nvcc or a GPU; the behaviour itself is exercised by the CUDA tests."""
import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"
BINDINGS = sorted((CSRC / "bindings").glob("*.cpp"))


def _declared_without_tensors(qualified: str) -> bool:
    """A function bound straight from a kernel header (anyres_fast::name): declared there, and with no
    tensor parameter (a query such as a shared-memory size), so there is nothing to check on a device."""
    name = qualified.split("::")[-1]
    for header in (CSRC / "kernels").glob("*.h"):
        m = re.search(r"\b%s\(([^)]*)\)\s*;" % name, header.read_text())
        if m:
            return "Tensor" not in m.group(1) and "*" not in m.group(1)
    return False


def _bound_functions(src: str):
    """(python name, C++ function name, [tensor parameter names], body) of each m.def whose function is
    defined in the binding file; functions bound from a kernel header must take no tensors."""
    for py_name, fn in re.findall(r'm\.def\("(\w+)",\s*&([\w:]+)', src):
        if "::" in fn:
            assert _declared_without_tensors(fn), f"{py_name}: {fn} is bound from a header but takes tensors/pointers"
            continue
        m = re.search(r"\n\w[\w:<> ]*\b%s\(([^)]*)\)\s*\{" % fn, src)
        assert m, f"definition of {fn} not found"
        params = re.findall(r"(?:at|torch)::Tensor\s*&?\s*(\w+)", m.group(1))
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(src[i], 0)
            i += 1
        yield py_name, fn, params, src[m.end():i - 1]


@pytest.mark.parametrize("path", BINDINGS, ids=lambda p: p.name)
def test_each_binding_begins_with_begin_launch_over_all_tensors(path):
    found = list(_bound_functions(path.read_text()))
    assert found, f"no m.def in {path.name}"
    for py_name, fn, params, body in found:
        assert params, f"{fn} has no tensor parameters?"
        statements = [s.strip() for s in body.split(";") if s.strip() and not s.strip().startswith("//")]
        first = statements[0]
        assert "begin_launch(" in first, f"{py_name}: first statement is not begin_launch: {first[:80]!r}"
        listed = re.search(r"\{([^}]*)\}", first).group(1)
        names = {n.strip() for n in listed.split(",")}
        assert names == set(params), f"{py_name}: begin_launch lists {sorted(names)}, tensors are {sorted(params)}"
