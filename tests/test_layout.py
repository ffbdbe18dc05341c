"""The project's shape: imports flow one way, app and research → comparisons → lab → pipelines, with no
exception, no two files importing each other, and no import hidden inside a function or behind TYPE_CHECKING
to dodge a cycle."""

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"pipelines": 0, "lab": 1, "comparisons": 2, "research": 3, "app": 3}


@functools.cache
def _modules() -> dict[str, Path]:
    files = [ROOT / "app.py"] + [
        p for pkg in ("pipelines", "lab", "comparisons", "research") for p in (ROOT / pkg).rglob("*.py")
    ]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def imports_of(path: Path, module: str) -> set[str]:
    """Every first-party module `path` imports, at the top, inside a function or behind TYPE_CHECKING: for
    `from package import submodule`, the submodule (the package's own __init__ runs first for any of its modules)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            named = {f"{base}.{alias.name}" for alias in node.names}
            found |= named if named <= set(_modules()) else named | {base}
    return {name for name in found if name.split(".")[0] in LAYERS}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


MODULES = _modules()


def test_the_scan_sees_the_whole_project():
    assert {"app", "pipelines.registry", "research.evaluate", "comparisons.harness", "comparisons.app.session"} <= set(
        MODULES
    )
    assert "comparisons.harness" in imports_of(MODULES["research.evaluate"], "research.evaluate")
    assert "comparisons.app.ui.compare" in imports_of(MODULES["app"], "app")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module):
    known = set(MODULES)
    upward = [name for name in imports_of(MODULES[module], module) if name in known and layer(name) > layer(module)]
    assert not upward, f"{module} imports {upward}: imports flow app → comparisons → lab → pipelines"


def test_nothing_imports_the_app_and_the_evaluation_does_not_train():
    for module, path in MODULES.items():
        if module != "app":
            assert "app" not in imports_of(path, module), module
    assert "lab.train" not in imports_of(MODULES["research.evaluate"], "research.evaluate")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph`, as the modules around it, or None (a depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_even_through_imports_inside_functions():
    """Every import counts, at the top, inside a function or behind TYPE_CHECKING: hoisted, none makes a cycle."""
    known = set(MODULES)
    graph = {m: {n for n in imports_of(p, m) if n in known and n != m} for m, p in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_apps_and_the_researchs_programs_do_not_import_each_other():
    for module, path in MODULES.items():
        top = module.split(".")[0]
        if top != "research":
            assert not any(n.startswith("research") for n in imports_of(path, module)), module


def _hidden_imports(path: Path, module: str) -> list[str]:
    """First-party imports inside a function or behind `if TYPE_CHECKING:`, as 'line: module'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        hidden = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        )
        for inner in ast.walk(node) if hidden else ():
            if isinstance(inner, (ast.Import, ast.ImportFrom)) and inner is not node:
                names = [a.name for a in inner.names] if isinstance(inner, ast.Import) else [inner.module or "."]
                if getattr(inner, "level", 0) or any(n.split(".")[0] in LAYERS for n in names):
                    found.append(f"{inner.lineno}: {', '.join(names)}")
    return sorted(set(found))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_first_party_imports_stand_at_the_top(module):
    """Nothing hides an import of ours in a function or behind TYPE_CHECKING: a reader sees what a room needs at its
    top (third-party packages may load lazily where they are heavy and optional)."""
    assert not _hidden_imports(MODULES[module], module), f"{module}: {_hidden_imports(MODULES[module], module)}"
