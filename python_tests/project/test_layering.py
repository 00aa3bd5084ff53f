"""The package's architecture, read from its imports (docs/architecture.md): layers import only downwards,
train and metrics never import each other, no module imports itself back through a chain (no cycles,
lazy imports inside functions included), and the top level holds only the package face and subpackages."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "anyres_fast"

# What each subpackage may import of ours (besides itself). ops <- models <- data/train/metrics/serve <- cli.
ALLOWED = {
    "utils": set(),
    "ops": {"utils"},
    "models": {"ops", "utils"},
    "data": {"ops", "utils"},
    "train": {"data", "models", "ops", "utils"},
    "metrics": {"data", "models", "ops", "utils"},
    "serve": {"data", "models", "ops", "utils"},
    "cli": {"data", "metrics", "models", "ops", "serve", "train", "utils"},
    "": {"cli", "models", "ops"},                  # anyres_fast/__init__.py and __main__.py
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set:
    """Every anyres_fast module a file imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "anyres_fast")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "anyres_fast":
                continue
            for alias in node.names:       # `from . import x` imports the module x
                sub = f"{target}.{alias.name}"
                found.add(sub if (REPO_ROOT / (sub.replace(".", "/") + ".py")).exists()
                          or (REPO_ROOT / sub.replace(".", "/")).is_dir() else target)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def graph() -> dict:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py")) if "csrc" not in p.parts}


def test_layers_import_only_downwards():
    bad = []
    for module, targets in graph().items():
        own = layer_of(module)
        for t in targets:
            other = layer_of(t)
            if other != own and other not in ALLOWED[own]:
                bad.append(f"{module} -> {t}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    g = graph()
    # A package's __init__ re-exporting its own modules is not a cycle of the code.
    edges = {m: {t for t in ts if t in g and not (m == t.rpartition(".")[0] and m in g)} for m, ts in g.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt == node or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    cycles = [c for c in cycles if not _through_package_init(c, g)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _through_package_init(cycle: str, g: dict) -> bool:
    """A chain that only closes through a package's __init__ importing its own children (a.b -> a -> a.b)."""
    nodes = cycle.split(" -> ")
    return any(a.startswith(b + ".") and (PACKAGE.parent / b.replace(".", "/")).is_dir()
               for a, b in zip(nodes, nodes[1:]))


def test_top_level_holds_only_the_face_and_subpackages():
    files = sorted(p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py")
    assert files == ["__init__.py", "__main__.py"], files


def test_the_checker_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The rules above could pass by reading nothing: a models module importing cli must be caught."""
    planted = PACKAGE / "models" / "_planted_for_test.py"
    planted.write_text("def f():\n    from ..cli import weights\n")
    try:
        bad = [t for t in imports_of(planted) if layer_of(t) not in ALLOWED["models"] | {"models"}]
        assert bad == ["anyres_fast.cli.weights"]
    finally:
        planted.unlink()
