"""The project's shape: imports flow one way, app → comparisons → lab → pipelines.

The lab's evaluation and studies are programs on top, like the app: they score through the
comparisons harness, so they may import it; no library module below them may import them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"pipelines": 0, "lab": 1, "comparisons": 2, "app": 3}
PROGRAMS = {"lab.evaluate": 3, "lab.study": 3}  # top-level programs that live in the lab's folder


def _modules() -> dict[str, Path]:
    files = [ROOT / "app.py"] + [p for pkg in ("pipelines", "lab", "comparisons") for p in (ROOT / pkg).rglob("*.py")]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def imports_of(path: Path, module: str) -> set[str]:
    """Every first-party module `path` imports, at the top or inside a function."""
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
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in LAYERS}


def layer(module: str) -> int:
    for program, level in PROGRAMS.items():
        if module == program or module.startswith(program + "."):
            return level
    return LAYERS[module.split(".")[0]]


MODULES = _modules()


def test_the_scan_sees_the_whole_project():
    assert {"app", "pipelines.registry", "lab.evaluate", "comparisons.harness", "comparisons.app.session"} <= set(
        MODULES
    )
    assert "comparisons.harness" in imports_of(MODULES["lab.evaluate"], "lab.evaluate")
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
    assert "lab.train" not in imports_of(MODULES["lab.evaluate"], "lab.evaluate")
