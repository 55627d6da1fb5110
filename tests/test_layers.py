"""
The layers of asynqueue and sasync, read from their sources: no import
cycle and no import from a lower layer to a higher one, counting every
import statement (those under C{if TYPE_CHECKING:} and inside functions
too), and sasync uses only asynqueue's public modules.

The layers, lowest first (see C{docs/contributing.md}):

  1. C{asynqueue}: the task queue, knows nothing of databases.
  2. sasync's base: C{sasync.errors}, C{sasync.retry} (an engine spec
     carries its broker's C{Backoff}), C{sasync._protocols} (what a part
     needs from its owner) and C{sasync._version} (checks asynqueue's).
  3. C{sasync.connection}: engines, connection workers, thread state.
  4. transactions: C{sasync.transact} (and its types), C{sasync.statements},
     C{sasync.tables} (and C{sasync._evolve}), C{sasync.migrations},
     C{sasync.startup}: the broker's parts.
  5. C{sasync.multicore}: the process pool a broker may run on.
  6. C{sasync.broker}: C{AccessBroker}.
  7. C{sasync.stores}: C{Items}, C{PersistentArray}, C{PersistentDict}.
  8. C{sasync} itself: the public API (its C{__init__}).
  9. C{sasync.testing}: fixtures for tests of programs using that API.
  10. C{sasync.demo} and C{sasync.__main__}: a program using that API.

Importing a package's module runs the package's C{__init__} first; that
implicit import is not counted (only import statements are).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("asynqueue", "sasync")

#: Lowest first: (name, module prefixes). A module is in the layer of the
#: longest prefix naming it (C{p} names C{p} and C{p.*}); a top package's
#: name names only its C{__init__}.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("asynqueue", ("asynqueue", "asynqueue.")),
    (
        "sasync base",
        ("sasync._protocols", "sasync._version", "sasync.errors", "sasync.retry"),
    ),
    ("sasync.connection", ("sasync.connection",)),
    (
        "transactions",
        (
            "sasync._originals",
            "sasync._tracing",
            "sasync._stats",
            "sasync._lifecycle",
            "sasync._admission",
            "sasync._writegate",
            "sasync._readguess",
            "sasync._schema",
            "sasync._conveniences",
            "sasync.metrics",
            "sasync.transactiontypes",
            "sasync.transact",
            "sasync.statements",
            "sasync.tables",
            "sasync._evolve",
            "sasync.migrations",
            "sasync.startup",
            "sasync.notifications",
        ),
    ),
    ("sasync.multicore", ("sasync.multicore",)),
    ("sasync.broker", ("sasync.broker",)),
    ("sasync.stores", ("sasync.stores",)),
    (
        "sasync (public API)",
        (
            "sasync",
            # The original sAsync's modules, re-exporting the public API.
            "sasync.database",
            "sasync.items",
            "sasync.parray",
            "sasync.queue",
            "sasync.selex",
        ),
    ),
    ("sasync.testing", ("sasync.testing",)),
    ("demo", ("sasync.demo", "sasync.__main__")),
)


def moduleFiles(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """
    Every module of C{packages} under C{root}: dotted name -> file.
    """
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _importedBy(
    name: str, path: Path, modules: Mapping[str, Path]
) -> Iterator[tuple[str, str]]:
    # (imported module, imported name or "") for each import statement.
    isPackage = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if isPackage else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([*here, base] if base else here)
            for alias in node.names:
                yield base, alias.name


def importGraph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """
    Module -> the modules of C{packages} its import statements name. C{from
    a import b} counts C{a.b} if that is a module, else C{a}.
    """
    modules = moduleFiles(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = graph[name] = set()
        for base, imported in _importedBy(name, path, modules):
            submodule = f"{base}.{imported}"
            dep = submodule if imported and submodule in modules else base
            if dep in modules and dep != name:
                deps.add(dep)
    return graph


def privateImports(root: Path, packages: tuple[str, ...]) -> list[str]:
    """
    Imports of another package's private modules or names
    (C{asynqueue._child}, C{from asynqueue.x import _y}).
    """
    modules = moduleFiles(root, packages)
    found = []
    for name, path in modules.items():
        top = name.split(".")[0]
        for base, imported in _importedBy(name, path, modules):
            if base.split(".")[0] not in packages or base.split(".")[0] == top:
                continue
            parts = [*base.split("."), imported] if imported else base.split(".")
            if any(p.startswith("_") and not p.startswith("__") for p in parts):
                found.append(f"{name} imports {'.'.join(parts)}")
    return found


def layerOf(module: str) -> int | None:
    """
    The index in L{LAYERS} of C{module}'s layer, or C{None}.
    """
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix in PACKAGES:
                matches = module == prefix
            elif prefix.endswith("."):
                matches = module.startswith(prefix)
            else:
                matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """
    The import cycles: each strongly connected group of more than one
    module, sorted (Tarjan's algorithm).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        onStack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in onStack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                onStack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def upwardImports(graph: Mapping[str, set[str]]) -> list[str]:
    """
    Every import of a module of a higher layer than the importer's.
    """
    found = []
    for module, deps in sorted(graph.items()):
        mine = layerOf(module)
        for dep in sorted(deps):
            theirs = layerOf(dep)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(
                    f"{module} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]})"
                )
    return found


def test_everyModuleHasALayer() -> None:
    """
    Each module of asynqueue and sasync is in a layer (a new module must be
    placed in L{LAYERS}).
    """
    unplaced = [m for m in moduleFiles(ROOT, PACKAGES) if layerOf(m) is None]
    assert unplaced == [], "\n".join(unplaced)


def test_noImportCycles() -> None:
    """
    No two modules import each other, directly or through others, not even
    for type checking only.
    """
    found = cycles(importGraph(ROOT, PACKAGES))
    assert found == [], "\n".join(" <-> ".join(c) for c in found)


def test_importsGoDown() -> None:
    """
    No module imports a module of a higher layer.
    """
    found = upwardImports(importGraph(ROOT, PACKAGES))
    assert found == [], "\n".join(found)


def test_onlyPublicAsynqueue() -> None:
    """
    sasync imports no private module or name of asynqueue.
    """
    found = privateImports(ROOT, PACKAGES)
    assert found == [], "\n".join(found)


def test_typeCheckingImportsCount(tmp_path: Path) -> None:
    """
    The walk sees an import under C{if TYPE_CHECKING:} and one inside a
    function: a cycle made of those two is found, and so is an upward
    import hidden that way.
    """
    package = tmp_path / "sasync"
    (package / "connection").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "connection" / "__init__.py").write_text("")
    (package / "connection" / "_engines.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..broker import AccessBroker\n"
    )
    (package / "broker.py").write_text(
        "def f():\n    from .connection import _engines\n"
    )
    graph = importGraph(tmp_path, ("sasync",))
    assert graph["sasync.connection._engines"] == {"sasync.broker"}
    assert graph["sasync.broker"] == {"sasync.connection._engines"}
    assert cycles(graph) == [["sasync.broker", "sasync.connection._engines"]]
    assert upwardImports(graph) == [
        "sasync.connection._engines (sasync.connection) imports sasync.broker"
        " (sasync.broker)"
    ]


def test_privateImportsFound(tmp_path: Path) -> None:
    """
    An import of another package's private module is found.
    """
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "asynqueue" / "_child.py").write_text("")
    (tmp_path / "sasync" / "pool.py").write_text("from asynqueue._child import dumps\n")
    assert privateImports(tmp_path, PACKAGES) == [
        "sasync.pool imports asynqueue._child.dumps"
    ]
