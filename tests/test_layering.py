"""The package's imports flow one way: sandbox <- agent <- evals <- training.

Every module of the four top-level folders is parsed (no import runs) and each ``mathagent`` import
it makes is checked:

- no import from a lower layer to a higher one (e.g. ``agent`` importing ``evals``);
- the grading library (``mathagent.agent.grading``) imports nothing else from mathagent, so every
  layer above can use it;
- an import inside a function must say why it is there (a comment containing ``lazy`` on its line or
  the line above), so function-local imports cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("sandbox", "agent", "evals", "training")
"""Bottom to top: a module may import its own layer and the ones before it."""
LEAF = "mathagent.agent.grading"


def package_modules() -> list[Path]:
    return sorted(p for top in LAYERS for p in (REPO / top).rglob("*.py"))


def module_name(rel: Path) -> str:
    """``agent/loop.py`` -> ``mathagent.agent.loop`` (``rel`` is relative to the repository)."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["mathagent", *parts])


def mathagent_imports(rel: Path, src: str) -> list[tuple[int, str, bool]]:
    """``(line, imported module, unexplained function-local)`` for each mathagent import in ``src``."""
    lines = src.splitlines()
    tree = ast.parse(src, filename=str(rel))
    me = module_name(rel)
    package = me if rel.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    names = [".".join(base + ([child.module] if child.module else []))]
                else:
                    names = [child.module or ""]
            for name in names:
                if name == "mathagent" or name.startswith("mathagent."):
                    local = in_function
                    if local:
                        here = lines[child.lineno - 1]
                        above = lines[child.lineno - 2] if child.lineno >= 2 else ""
                        local = "lazy" not in (here + above).lower()
                    out.append((child.lineno, name, local))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return out


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def violations(rel: Path, src: str) -> list[str]:
    """What is wrong with the imports of the module at ``rel`` whose text is ``src``."""
    me = module_name(rel)
    mine = layer_of(me)
    found = []
    for line, target, unexplained_local in mathagent_imports(rel, src):
        there = layer_of(target)
        if mine is not None and there is not None and there > mine:
            found.append(f"{rel}:{line}: upward import of {target} ({LAYERS[mine]} -> {LAYERS[there]})")
        if me.startswith(LEAF) and not target.startswith(LEAF):
            found.append(f"{rel}:{line}: the grading library imports {target}")
        if unexplained_local:
            found.append(f"{rel}:{line}: function-local import of {target} without a 'lazy' comment")
    return found


def test_the_package_has_modules_in_every_layer():
    names = {module_name(p.relative_to(REPO)) for p in package_modules()}
    assert {n.split(".")[1] for n in names} == set(LAYERS)
    assert LEAF in names


@pytest.mark.parametrize("top", LAYERS)
def test_imports_flow_one_way(top):
    bad = []
    for p in package_modules():
        rel = p.relative_to(REPO)
        if rel.parts[0] == top:
            bad += violations(rel, p.read_text(encoding="utf-8"))
    assert not bad, "\n".join(bad)


def test_the_checker_catches_each_kind_of_violation():
    up = violations(Path("agent/probe.py"), "from mathagent.evals.runs import RunDir\n")
    assert len(up) == 1 and "upward import" in up[0]
    rel = violations(Path("sandbox/probe.py"), "from ..agent import loop\n")
    assert len(rel) == 1 and "sandbox -> agent" in rel[0]
    leaf = violations(Path("agent/grading/probe.py"), "import mathagent.agent.trace\n")
    assert len(leaf) == 1 and "grading library" in leaf[0]
    assert violations(Path("agent/grading/probe.py"), "from .numbers import parse_number\n") == []
    hidden = "def f():\n    from mathagent.agent import loop\n    return loop\n"
    local = violations(Path("evals/probe.py"), hidden)
    assert len(local) == 1 and "without a 'lazy' comment" in local[0]
    explained = "def f():\n    from mathagent.agent import loop  # lazy: start-up speed\n    return loop\n"
    assert violations(Path("evals/probe.py"), explained) == []
    assert violations(Path("training/probe.py"), "from mathagent.sandbox import base\n") == []
