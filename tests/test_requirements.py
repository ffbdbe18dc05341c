"""requirements.txt lists what the code imports: every third-party module a .py file of the project imports, at the
top or inside a function, comes from a distribution listed there, and everything listed is imported or named as
needed at run time. The scan is static (ast), so a module imported only on some machines counts too."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"app", "pipelines", "lab", "comparisons", "research", "tests"}
# modules under tests/ that pytest puts on the path and the tests import by their bare names
TEST_MODULES = {p.stem for p in (ROOT / "tests").rglob("*.py")}
# imported inside `try: ... except ImportError`, present only where the code runs with them
OPTIONAL = {"spaces": "ZeroGPU Spaces install it themselves; app.py runs without it elsewhere"}
# listed but imported by no .py file of ours
RUN_TIME_ONLY = {
    "torchvision": "open_clip and timm import it; pinned beside torch",
    "ruff": "make lint",
}


def normalise(name: str) -> str:
    """A distribution's name as PEP 503 compares them (Pillow, pillow; open_clip_torch, open-clip-torch)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_files() -> list[Path]:
    return [ROOT / "app.py"] + sorted(
        p for pkg in ("pipelines", "lab", "comparisons", "research", "tests") for p in (ROOT / pkg).rglob("*.py")
    )


def _optional_nodes(tree: ast.AST) -> set[int]:
    """The ids of import nodes inside a `try` whose handlers catch ImportError (or ModuleNotFoundError)."""
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {n.id for h in node.handlers if h.type for n in ast.walk(h.type) if isinstance(n, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            imports = [n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)]
            found |= {id(n) for n in imports}
    return found


def third_party_imports() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Top-level names of third-party modules imported, mapped to the files importing them: (required, optional)."""
    required: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}
    for path in project_files():
        tree = ast.parse(path.read_text())
        in_try = _optional_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in FIRST_PARTY or top in TEST_MODULES:
                    continue
                (optional if id(node) in in_try else required).setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return required, optional


def listed() -> dict[str, str]:
    """requirements.txt's distributions (normalised) and their lines."""
    lines = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            lines[normalise(re.match(r"[A-Za-z0-9._-]+", line).group())] = line
    return lines


def test_the_scan_sees_imports_at_the_top_and_inside_functions():
    required, optional = third_party_imports()
    assert {"torch", "diffusers", "gradio", "httpx2", "PIL", "numpy", "pytest"} <= set(required)
    assert "spaces" in optional and "spaces" not in required
    assert not {"os", "pipelines", "helpers", "conftest", "hub_server"} & set(required)


def test_every_third_party_import_comes_from_a_listed_distribution():
    required, optional = third_party_imports()
    distributions = importlib.metadata.packages_distributions()
    have = listed()
    missing = {}
    for module, files in sorted(required.items()):
        names = {normalise(d) for d in distributions.get(module, [])}
        if not names & set(have):
            missing[module] = (sorted(names) or ["not installed"], sorted(files)[:3])
    assert not missing, f"imported but not in requirements.txt (module: distributions, files): {missing}"
    assert set(optional) <= set(OPTIONAL), f"imported only under `except ImportError`: {sorted(optional)}"


def test_everything_listed_is_imported_or_needed_at_run_time():
    required, _ = third_party_imports()
    distributions = importlib.metadata.packages_distributions()
    imported = {normalise(d) for module in required for d in distributions.get(module, [])}
    unused = set(listed()) - imported - set(RUN_TIME_ONLY)
    assert not unused, f"listed in requirements.txt but imported nowhere: {sorted(unused)}"


def test_every_requirement_is_pinned():
    loose = [line for line in listed().values() if not re.search(r"(==|<=)", line)]
    assert not loose, f"requirements without a version: {loose}"
