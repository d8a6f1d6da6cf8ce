"""The import graph: no circle among the modules of notifier/ and tasks/; the core below its parts.

Every import counts: at module level, inside a function, and under ``TYPE_CHECKING`` (a circle of
types is still a circle of knowledge). Walked with the standard library's ``ast``, so the check
needs no tool of its own and sees exactly what the source says. A package importing its own
submodules (``__init__.py`` re-exporting) is not an edge: that is how a package shows its face.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("notifier", "tasks")
# Built on the core: the core (the publisher and what it imports) must know none of them.
OPTIONAL = ("notifier.health", "notifier.metrics", "notifier.gateway", "notifier.celery")

Graph = dict[str, set[str]]


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules that ``name`` imports, wherever in the file the import stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:  # a name inside a module: the module
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not candidate.startswith(name + "."):
                targets.add(candidate)
    return targets


def import_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    known = modules(root, packages)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def a_circle(graph: Graph) -> list[str]:
    """One import circle, as the modules round it (the first again at the end); [] for none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def reachable(graph: Graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_import_circle_in_notifier_or_tasks() -> None:
    """No two modules of notifier/ or tasks/ import each other, directly or round a ring."""
    assert [] == a_circle(import_graph(ROOT, PACKAGES))


@pytest.mark.parametrize("core", ["notifier.publisher", "notifier.sender", "notifier.default"])
def test_the_core_imports_none_of_the_parts_built_on_it(core: str) -> None:
    """The publisher's side reads without health, metrics, the gateway or the Celery wiring."""
    graph = import_graph(ROOT, PACKAGES)
    built_on = {m for m in reachable(graph, core) if m.startswith(OPTIONAL)}
    assert set() == built_on


def test_a_circle_added_by_hand_is_found(tmp_path: Path) -> None:
    """The check can fail: a type-only import closing a ring of three modules is a circle."""
    package = tmp_path / "ring"
    package.mkdir()
    (package / "__init__.py").write_text("from ring.a import A\n")
    (package / "a.py").write_text("from ring.b import B\nclass A: ...\n")
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ring.a import A\n"
    )
    (package / "d.py").write_text("import ring.a\n")  # imports into the ring, not part of it
    ring = a_circle(import_graph(tmp_path, ("ring",)))
    assert {"ring.a", "ring.b", "ring.c"} == set(ring), ring
    assert ring[0] == ring[-1] and len(ring) == 4, ring
