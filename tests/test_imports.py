"""Every module of metarl/ and envs/ imports; no two modules of the tree import each other, directly or in a
circle; and no module imports one above its layer.

The import graph is read statically (``ast``), counting imports inside
functions too, so a lazy import cannot hide a circle.  Layers, bottom up: the
library (``metarl/``, ``envs/``); the experiment scripts (``experiments/``) and
the benchmarks (``benchmarks/``), which use the library but not each other;
the tests (``tests/``), which may use everything.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metarl", "envs")
TREE = (*PACKAGES, "experiments", "benchmarks", "tests")
# what each top-level directory may import (besides itself)
MAY_IMPORT = {"metarl": {"envs"}, "envs": {"metarl"}, "experiments": {"metarl", "envs"},
              "benchmarks": {"metarl", "envs"}, "tests": set(TREE)}


def module_files(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports (``from pkg import sub`` counts as ``pkg.sub`` when that is a module)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circles():
    files = module_files()
    graph = {name: imports_of(name, path, set(files)) for name, path in files.items()}
    assert graph["metarl.trainer"] and "metarl.run" in graph["metarl.trainer"]  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def tree_graph() -> dict[str, set[str]]:
    files = module_files(TREE)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_no_import_circles_anywhere_in_the_tree():
    graph = tree_graph()
    assert "experiments.campaigns" in graph["experiments.reproduce"]  # experiments/ is really read
    assert "benchmarks.synthetic" in graph["benchmarks.bench_baseline"]  # and benchmarks/
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_imports_one_above_its_layer():
    upward = sorted(f"{name} imports {target}" for name, targets in tree_graph().items() for target in targets
                    if target.split(".")[0] != name.split(".")[0]
                    and target.split(".")[0] not in MAY_IMPORT[name.split(".")[0]])
    assert not upward, upward


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(set(module_files()) - {"metarl.__main__"}))  # __main__ runs the CLI
def test_every_module_imports(name):
    importlib.import_module(name)


def test_only_the_loop_and_the_commands_that_train_import_the_trainer():
    files = module_files()
    users = {name for name, path in files.items() if "metarl.trainer" in imports_of(name, path, set(files))}
    assert users <= {"metarl.cli"}, users
