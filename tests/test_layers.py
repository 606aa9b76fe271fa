"""The package's layers, read off its import statements.

Config and names < the numerical library < the figures < the stages < the CLI: a module imports only
from its own layer or below (the library never a stage or a figure, a figure never a stage), no import
circle exists between modules, and no diffmem import hides inside a function, except in cli.py, whose
commands import their stage when they run (so `diffmem --help` does not import torch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffmem"
LAZY_ALLOWED = {"diffmem.cli"}  # the CLI's per-command imports, explicit and one per command


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, source: str, known: set[str]) -> list[tuple[str, bool]]:
    """(imported diffmem module, inside a function?) for every import in a module's source.

    `from diffmem.stages import train` imports diffmem.stages.train; `from diffmem.config import X`
    imports diffmem.config; every import also runs the parent packages' __init__."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                targets = [f"{child.module}.{alias.name}" if f"{child.module}.{alias.name}" in known else child.module
                           for alias in child.names]
            for target in targets:
                if target == "diffmem" or target.startswith("diffmem."):
                    while target not in known and "." in target:
                        target = target.rsplit(".", 1)[0]
                    found.append((target, nested))
            visit(child, nested)

    visit(ast.parse(source), False)
    return found


def graph_of(modules: dict[str, str]) -> dict[str, set[str]]:
    """module -> the diffmem modules importing it executes (parent packages included)."""
    known = set(modules)
    edges = {}
    for name, source in modules.items():
        targets = set()
        for target, _ in imports_of(name, source, known):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}  # diffmem.x, diffmem.x.y, ...
        edges[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def layer(name: str) -> int:
    if name in ("diffmem.cli", "diffmem.__main__"):
        return 3
    if name.startswith("diffmem.stages"):
        return 2
    if name.startswith("diffmem.figures"):
        return 1
    return 0  # config, names and the numerical library


LAYER_NAMES = {0: "library", 1: "figure", 2: "stage", 3: "cli"}


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in package_modules().items()}


def test_the_package_has_its_layers(sources):
    assert {"diffmem.stages.train", "diffmem.stages.fit", "diffmem.figures.common", "diffmem.onsets",
            "diffmem.scaling", "diffmem.config", "diffmem.names", "diffmem.cli"} <= set(sources)
    assert not any(layer(name) == 0 and name.rsplit(".", 1)[-1] in ("train", "sample", "score", "plots", "fit")
                   for name in sources), "a stage module left at the library level"


def test_no_module_imports_from_a_layer_above_its_own(sources):
    known = set(sources)
    wrong = [f"{name} ({LAYER_NAMES[layer(name)]}) imports {target} ({LAYER_NAMES[layer(target)]})"
             for name, source in sources.items() for target, _ in imports_of(name, source, known)
             if layer(target) > layer(name)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle(sources):
    cycle = find_cycle(graph_of(sources))
    assert cycle is None, " -> ".join(cycle)


def test_no_diffmem_import_inside_a_function(sources):
    known = set(sources)
    hidden = sorted({f"{name} imports {target}" for name, source in sources.items() if name not in LAZY_ALLOWED
                     for target, nested in imports_of(name, source, known) if nested})
    assert not hidden, "\n".join(hidden)


def test_the_cli_imports_each_stage_it_runs(sources):
    known = set(sources)
    stages = {name for name in sources if name.startswith("diffmem.stages.")}
    imported = {target for target, _ in imports_of("diffmem.cli", sources["diffmem.cli"], known)}
    assert stages <= imported, f"stages the CLI cannot run: {sorted(stages - imported)}"


def test_the_checks_catch_a_circle_a_layer_breach_and_a_hidden_import():
    """The checkers on a made-up package: each must fire."""
    fake = {
        "diffmem.a": "from diffmem.b import x\n",
        "diffmem.b": "import diffmem.c\n",
        "diffmem.c": "from diffmem import a\n",
        "diffmem.onsets": "def f():\n    from diffmem.stages import fit\n",
        "diffmem.stages": "", "diffmem.stages.fit": "",
    }
    assert find_cycle(graph_of(fake)) == ["diffmem.a", "diffmem.b", "diffmem.c", "diffmem.a"]
    found = imports_of("diffmem.onsets", fake["diffmem.onsets"], set(fake))
    assert found == [("diffmem.stages.fit", True)]
    assert layer("diffmem.stages.fit") > layer("diffmem.onsets")
    assert find_cycle(graph_of({"diffmem.a": "import diffmem.b\n", "diffmem.b": ""})) is None
