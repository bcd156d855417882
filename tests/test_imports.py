"""The house has no cycles and no arrows back up: runtime/ never imports tests or scripts, no two
runtime modules import each other (directly or around a loop), and the HTTP layer never reaches a
model or an engine. Imports inside functions count too: a lazy import is still an arrow."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runtime.config import PACKAGE_DIR, PROJECT_DIR

pytestmark = pytest.mark.unit

SCRIPT_MODULES = {path.stem for path in (PROJECT_DIR / "scripts").glob("*.py")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, wherever in the file the import stands."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    return {name: _imports(path) for name, path in modules.items()}


def _internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between runtime modules only. A module's own parent packages are left out: Python
    imports them before the module anyway (`from . import sibling` names the parent package)."""
    return {name: {target for target in targets
                   if target in graph and target != name and not name.startswith(target + ".")}
            for name, targets in graph.items()}


def test_runtime_never_imports_tests_or_scripts(graph):
    offenders = {name: sorted(target for target in targets
                              if target.split(".")[0] in {"tests", "scripts"} | SCRIPT_MODULES)
                 for name, targets in graph.items()}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_runtime_import_graph_has_no_cycles(graph):
    edges = _internal(graph)
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_http_layer_and_the_pipeline_know_interfaces_not_models(graph):
    """Routes reach only the pipeline; the pipeline reaches the TTS and avatar interfaces, never a
    factory, a wrapper or an engine (the app wires them together)."""
    edges = _internal(graph)
    for layer in ("runtime.api.routes", "runtime.api.schemas", "runtime.generation"):
        reached = {target for target in edges[layer]
                   if target.startswith(("runtime.models", "runtime.engines", "runtime.tts"))}
        allowed = {"runtime.models.base", "runtime.tts.base"} if layer == "runtime.generation" else set()
        assert reached <= allowed, f"{layer} imports {sorted(reached - allowed)}"


@pytest.mark.parametrize("folder", ["scripts", "testkit"])
def test_scripts_and_testkit_do_not_import_tests(folder):
    """What scripts and tests share (random-weight checkpoints, portrait variants) lives in testkit/."""
    offenders = {path.stem for path in (PROJECT_DIR / folder).glob("*.py")
                 if any(name.split(".")[0] == "tests" for name in _imports(path))}
    assert offenders == set()
