"""The import graph: no circle among the modules of notifier/ and tasks/; the core below its parts.

Every import counts: at module level, inside a function, and under ``TYPE_CHECKING`` (a circle of
types is still a circle of knowledge). Walked with the standard library's ``ast``, so the check
needs no tool of its own and sees exactly what the source says. A package importing its own
submodules (``__init__.py`` re-exporting) is not an edge: that is how a package shows its face.
"""

from __future__ import annotations

import ast
import graphlib
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("notifier", "tasks")
# Built on the core: the core (the publisher and what it imports) must know none of them.
OPTIONAL = (
    "notifier.health",
    "notifier.health.metrics",
    "notifier.gateway",
    "notifier.celery",
    "notifier.channels",
    "notifier.django",
    "notifier.fastapi",
    "notifier.progress",
)

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


# What the optional parts bring in: the core must run without any of them installed.
OPTIONAL_LIBRARIES = ("django", "channels", "channels_redis", "msgpack", "asgiref", "starlette")


def libraries_of(path: Path) -> set[str]:
    """The top-level names of every absolute import in the file at ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found


@pytest.mark.parametrize("core", ["notifier.publisher", "notifier.sender", "notifier.default"])
def test_the_core_imports_neither_django_nor_channels(core: str) -> None:
    """Django, Channels, channels_redis, msgpack and Starlette are the optional parts' own: no
    module the core reaches imports them."""
    known = modules(ROOT, PACKAGES)
    graph = import_graph(ROOT, PACKAGES)
    used = {
        (module, library)
        for module in {core, *reachable(graph, core)}
        for library in libraries_of(known[module])
        if library in OPTIONAL_LIBRARIES
    }
    assert set() == used


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


# Layers: each module's rank; an import may go to its own rank or below, never above. The
# layout tables of docs/internals/architecture.md in code: support at the bottom, the public face
# at the top, the optional packages between them, each above all of the core.
LAYERS = (
    ("notifier.exceptions", "notifier.aio", "notifier.native", "notifier.recent"),
    ("notifier.config.redaction",),
    ("notifier.logs", "notifier.config", "notifier.seams"),
    ("notifier.events", "notifier.eventtypes", "notifier.link", "notifier.naming"),
    ("notifier.workflows",),
    ("notifier.coalesce", "notifier.ledger"),
    ("notifier.dispatch",),
    ("notifier.batch",),
    ("notifier.topology",),
    ("notifier.outbox", "notifier.handover", "notifier.sender"),
    ("notifier.publisher", "notifier.default"),
    (
        "notifier.testing",
        "notifier.schema",
        "notifier.health",
        "notifier.celery",
        "notifier.consumer",
        "notifier.cli",
        "notifier.gateway",
        "notifier.channels",
        "notifier.django",
        "notifier.progress",
        "notifier.fastapi",
    ),
)
FACE = "notifier"  # the package itself: it may import anything


def rank_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """The layer of ``module`` (its own, or its package's); None for the face and for tasks/."""
    for rank, prefixes in enumerate(layers):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def upward_imports(graph: Graph, layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Every import from a module to one of a higher layer, as ``a -> b``."""
    found = []
    for module, targets in graph.items():
        own = rank_of(module, layers)
        if own is None:
            continue
        for target in targets:
            rank = rank_of(target, layers)
            if rank is not None and rank > own:
                found.append(f"{module} -> {target}")
    return sorted(found)


def precise_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    """The import graph with ``from package import module`` read as the module alone (not also
    the package, as ``imports_of`` counts it for circles)."""
    known = modules(root, packages)
    graph = import_graph(root, packages)
    for name, targets in graph.items():
        graph[name] = {
            t for t in targets if not any(o.startswith(t + ".") and o in targets for o in known)
        }
    return graph


def test_every_module_of_notifier_has_a_layer() -> None:
    """A new module is placed in LAYERS (and in the architecture page's tables) before it lands."""
    unplaced = [m for m in modules(ROOT, ("notifier",)) if m != FACE and rank_of(m) is None]
    assert [] == unplaced


def test_no_import_runs_from_a_lower_layer_up_to_a_higher_one() -> None:
    """Support, config, wire format, shared state, routers, the thread, the caller's side and
    the optional packages, in that order: no module imports one of a layer above its own."""
    assert [] == upward_imports(precise_graph(ROOT, ("notifier",)))


def test_an_upward_import_added_by_hand_is_found(tmp_path: Path) -> None:
    """The check can fail: a low module importing a higher one inside a function is found."""
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from layered import high\n")
    (package / "high.py").write_text("import layered.low\n")
    layers = (("layered.low",), ("layered.high",))
    found = upward_imports(precise_graph(tmp_path, ("layered",)), layers)
    assert ["layered.low -> layered.high"] == found


# Names in prose: a docstring or comment that names a file (``notifier/ledger.py``) or a dotted
# name (``notifier.config.urls``) sends the reader there, so it must be a name the tree has. A
# dotted name may go on past its module to a name the module binds (``notifier.celery.install``).
# In prose ``notifier.`` is the package: an instance's attribute is ``Notifier.stats``.


def prose(path: Path) -> list[tuple[int, str]]:
    """Every comment and docstring of the file at ``path``, with the line it starts on."""
    source = path.read_text()
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            found += [(node.lineno, node.value.value)] if isinstance(node.value.value, str) else []
    return sorted(found)


def top_level_names(path: Path) -> set[str]:
    """The names a module binds outside its functions and classes, under ``if`` and ``try`` too."""
    names: set[str] = set()
    todo = list(ast.parse(path.read_text(), str(path)).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If | ast.Try):
            todo.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt))
    return names


def resolves(dotted: str, known: dict[str, Path]) -> bool:
    """Whether ``dotted`` is a module of ``known``, or a name bound by its longest module prefix."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        if module in known:
            return end == len(parts) or parts[end] in top_level_names(known[module])
    return False


def stale_names(root: Path, packages: tuple[str, ...]) -> list[str]:
    """The file paths and dotted names in the prose of ``packages`` that the tree under ``root``
    does not have, as ``file:line: name``."""
    known = modules(root, packages)
    heads = "|".join(map(re.escape, packages))
    paths = re.compile(rf"(?<![\w/.])(?:{heads})/[\w/.-]*[\w/]")
    dotted = re.compile(rf"(?<![\w.])(?:{heads})(?:\.\w+)+")
    stale = []
    for path in known.values():
        for line, text in prose(path):
            where = f"{path.relative_to(root).as_posix()}:{line}"
            stale += [f"{where}: {p}" for p in paths.findall(text) if not (root / p).exists()]
            stale += [f"{where}: {d}" for d in dotted.findall(text) if not resolves(d, known)]
    return stale


def test_prose_in_notifier_names_only_files_and_modules_that_exist() -> None:
    """Docstrings and comments in notifier/ name only paths and dotted names the tree has."""
    assert [] == stale_names(ROOT, ("notifier",))


def test_a_stale_name_in_prose_is_found(tmp_path: Path) -> None:
    """The check can fail: a moved file's old path and dotted names the tree lacks are found."""
    package = tmp_path / "moved"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("from moved.inner.here import run\n")
    (package / "inner" / "__init__.py").write_text("")
    (package / "inner" / "here.py").write_text(
        '"""Moved from ``moved/there.py``; see ``moved.inner.here.run`` and moved/inner/."""\n'
        "def run() -> None:\n"
        "    path = 'moved/gone.py'  # a string in code is not prose: not checked\n"
        "    # see moved.there, moved.run and moved.inner.here.walk\n"
    )
    assert [
        "moved/inner/here.py:1: moved/there.py",
        "moved/inner/here.py:4: moved.there",
        "moved/inner/here.py:4: moved.inner.here.walk",
    ] == stale_names(tmp_path, ("moved",))
