"""Imports point one way: no cycles inside cachewarm/, and only the Celery entry points import cachewarm.worker.

Read from the source with ast (nothing is imported). Every import statement counts: those inside functions (an
import moved into a function to dodge a cycle is still a cycle) and those under `if TYPE_CHECKING:` (two modules
that need each other's types are one idea, or need a protocol) too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cachewarm"
# Celery's entry points: the task modules import the app they register with.
MAY_IMPORT_WORKER = ("cachewarm.worker", "cachewarm.tasks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cachewarm modules `name` imports (a package's submodule when `from package import submodule`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "cachewarm")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "cachewarm":
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_there_is_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_only_celery_entry_points_import_the_worker_package() -> None:
    wrong = sorted(f"{name} imports {target}" for name, targets in _graph().items() for target in targets
                   if target.startswith("cachewarm.worker") and not name.startswith(MAY_IMPORT_WORKER))
    assert not wrong


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_consumer_is_handed_its_refresher() -> None:
    """It applies invalidations; what refreshes the hot keys it names (a Cache, the engine) is given to it."""
    reached = _reachable(_graph(), "cachewarm.invalidation.consumer")
    assert not reached & {"cachewarm.client", "cachewarm.warming.refresh_engine", "cachewarm.warming.refresh"}


def test_the_checker_sees_a_cycle_and_imports_anywhere(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cachewarm import client\n"
                      "def f():\n    from cachewarm import settings\n")
    modules = {"cachewarm.client": source, "cachewarm.settings": source, "cachewarm.m": source}
    assert _imports("cachewarm.m", source, modules) == {"cachewarm.client", "cachewarm.settings"}
