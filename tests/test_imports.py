"""Layers point one way: the core does not import the embedded world, and no featscope modules import in a circle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import featscope

PACKAGE = Path(featscope.__file__).parent
CORE = [
    "featscope.backbones",
    "featscope.extractors",
    "featscope.objectives",
    "featscope.solvers.universal",
    "featscope.solvers.endtoend",
    "featscope.inversion",
    "featscope.targets",
    "featscope.losses",
    "featscope.images",
    "featscope.runs",
    "featscope.settings",
    "featscope.devices",
    "featscope.speed",
    "featscope.registry",
    "featscope.decoding",
    "featscope.investigate.cores",
    "featscope.investigate.settings",
    "featscope.investigate.neuron_prompts",
    "featscope.investigate.word_swap_start",
    # FeatInv's cores (reconstruct, steer, evaluate) and what they are made of; world specifics reach them through
    # the backbone (``Backbone.free_text_prompts``). Its orchestration (jobs, training, inputs, world, world_images)
    # may import the world.
    "featscope.featinv",
    "featscope.featinv.config",
    "featscope.featinv.features",
    "featscope.featinv.adapter",
    "featscope.featinv.model",
    "featscope.featinv.data",
    "featscope.featinv.sampling",
    "featscope.featinv.metrics",
    "featscope.featinv.fid",
    "featscope.featinv.reconstruction",
    "featscope.featinv.steering",
    "featscope.featinv.evaluation",
    "featscope.featinv.published",
]


def test_the_core_does_not_import_the_world():
    code = (
        f"import sys\nimport {', '.join(CORE)}\n"
        "print(sorted(m for m in sys.modules if m == 'featscope.world' or m.startswith('featscope.world.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def modules() -> dict[str, Path]:
    """featscope's modules by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def lazy_exports(found: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Per package, its ``_EXPORTS`` as name -> module imported on first access (the literal maps module -> names;
    see ``featscope._lazy``)."""
    exports = {}
    for name, path in found.items():
        if path.name == "__init__.py":
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS":
                    by_module = ast.literal_eval(node.value)
                    exports[name] = {n: module for module, names in by_module.items() for n in names}
    return exports


def imports(name: str, path: Path, found: dict[str, Path], exports: dict, *, nested: bool) -> set[str]:
    """The featscope modules that importing ``name`` runs (``nested``: function bodies' imports too), with the
    packages on the way there (not ``name``'s own) and lazy exports resolved to their modules."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def executed(module: str) -> set[str]:
        parts = module.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return {m for m in prefixes if m in found and not (name == m or name.startswith(m + "."))}

    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not nested:
                continue
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    targets.update(executed(alias.name))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                targets.update(executed(base))
                for alias in child.names:
                    if f"{base}.{alias.name}" in found:
                        targets.add(f"{base}.{alias.name}")
                    elif alias.name in exports.get(base, {}):
                        targets.add(exports[base][alias.name])
            visit(child)

    visit(ast.parse(path.read_text()))
    return targets - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = [stack.pop()]
            while component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "with-function-level"])
def test_no_import_cycles(nested):
    found = modules()
    exports = lazy_exports(found)
    graph = {name: imports(name, path, found, exports, nested=nested) for name, path in found.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
