"""Imports point down the layers: each module imports only its own layer and the layers below it, and nothing
inside cachewarm/ forms an import cycle.

Read from the source with ast (nothing is imported). Every import statement counts: those inside functions (an
import moved into a function to dodge a cycle or a layer is still that import) and those under
`if TYPE_CHECKING:` (two modules that need each other's types are one idea, or need a protocol) too.

The layers, lowest first (docs/ARCHITECTURE.md, "Layers", says why in this order). A module belongs to the
layer of the longest name listed that is it or a package holding it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cachewarm"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # what every layer may use: the error tree, the outcome names, the observation hooks
    ("basics", ("cachewarm.errors", "cachewarm.outcomes", "cachewarm.hooks")),
    # keys, value format, Lua scripts and their calls, clients: handed URLs and numbers, never settings
    ("redis layer", ("cachewarm.redis_layer",)),
    # keyspaces, their sources (with the hooks integrations register), the settings that load them
    ("configuration", ("cachewarm.config", "cachewarm.settings")),
    # the near cache, which the read path consults before Redis
    ("near cache", ("cachewarm.near",)),
    # Cache / AsyncCache and what they share: plans, read accounting, single flight, breaker
    ("read path", ("cachewarm.read", "cachewarm.client")),
    # the scan, the refresh of a batch and its engine, hot refreshes of invalidated keys
    ("warming", ("cachewarm.warming",)),
    # publish, parse, apply, the consumer (handed its hot-key refresher: it imports no warming)
    ("invalidation", ("cachewarm.invalidation",)),
    # Prometheus metrics: per process, the collector of what Redis holds, the endpoint
    ("metrics", ("cachewarm.metrics",)),
    # the transactional outbox and its relay into the invalidation stream
    ("outbox", ("cachewarm.outbox",)),
    # the consistency auditor: compares cached values with their sources, explains and repairs what stays stale
    ("audit", ("cachewarm.audit",)),
    # the thin Celery tasks over warming
    ("tasks", ("cachewarm.tasks",)),
    # the economy simulator: traces replayed through a model of the scan, priced by warming's value policy
    ("simulation", ("cachewarm.simulation",)),
    # Django and SQLAlchemy: what applications use of all the above; the core registers nothing of them
    ("integrations", ("cachewarm.contrib",)),
    # the Celery app and the node's processes (sidecar, consumer, metrics); they load the integrations' hooks
    ("worker", ("cachewarm.worker",)),
    # the demo's parts (a private redis-server, a product API), put together by `cachewarm demo`
    ("demo", ("cachewarm.demo",)),
    # the `cachewarm` command
    ("cli", ("cachewarm.cli",)),
    # what is entered from outside: the package's public face, `python -m cachewarm`, Django's `manage.py cachewarm`
    ("entry points", ("cachewarm", "cachewarm.__main__", "cachewarm.contrib.django.management")),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the module's layer (the package `cachewarm` itself is named exactly, not as a
    prefix: it holds everything)."""
    best: tuple[int, int] | None = None  # (length of the matched name, layer index)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "cachewarm" and module.startswith(name + "."))
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), index)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS")
    return best[1]


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


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module in a higher layer than the importer's, as "importer (layer) imports target (layer)"."""
    return sorted(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                  for name, targets in graph.items() for target in targets if layer_of(target) > layer_of(name))


def test_every_module_is_in_a_layer() -> None:
    for name in _modules():
        layer_of(name)


def test_imports_point_down_the_layers() -> None:
    wrong = _upward(_graph())
    assert not wrong, "imports of a higher layer:\n" + "\n".join(wrong)


def test_only_the_worker_package_imports_the_worker_package() -> None:
    """The Celery app and its processes are entered from outside (`celery -A cachewarm.worker`, fork + exec), never
    imported by the layers above it either (the CLI starts them as processes)."""
    wrong = sorted(f"{name} imports {target}" for name, targets in _graph().items() for target in targets
                   if target.startswith("cachewarm.worker") and not name.startswith("cachewarm.worker"))
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


def test_the_checker_sees_an_import_of_a_higher_layer() -> None:
    graph = {"cachewarm.redis_layer.connections": {"cachewarm.settings", "cachewarm.errors"},
             "cachewarm.config.sources": {"cachewarm.contrib.django.startup"},
             "cachewarm.cli.warm": {"cachewarm.warming.refresh"}}
    assert _upward(graph) == [
        "cachewarm.config.sources (configuration) imports cachewarm.contrib.django.startup (integrations)",
        "cachewarm.redis_layer.connections (redis layer) imports cachewarm.settings (configuration)"]
    assert layer_of("cachewarm") == layer_of("cachewarm.contrib.django.management.commands.cachewarm")
    assert layer_of("cachewarm.contrib.django.startup") < layer_of("cachewarm.worker.sidecar")


def test_the_checker_sees_a_cycle_and_imports_anywhere(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cachewarm import client\n"
                      "def f():\n    from cachewarm import settings\n")
    modules = {"cachewarm.client": source, "cachewarm.settings": source, "cachewarm.m": source}
    assert _imports("cachewarm.m", source, modules) == {"cachewarm.client", "cachewarm.settings"}


MAX_LINES = 400
TOP_LEVEL = {"__init__", "__main__", "client", "errors", "hooks", "outcomes", "settings"}


def test_no_module_is_over_400_lines() -> None:
    """A module holds one idea; past 400 lines it usually holds several (split it where the ideas part)."""
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long


def test_the_top_level_holds_only_the_public_face() -> None:
    """Everything else lives in the package of its layer (LAYERS): a new module goes there, not beside these."""
    assert {path.stem for path in PACKAGE.glob("*.py")} == TOP_LEVEL
