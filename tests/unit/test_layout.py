"""The package layout holds: no import cycle, and tools/ uses only the engine's public surface.

``lint-imports`` (contracts in pyproject.toml) checks that dependencies point
one way, service -> fuzz -> engine, and that fuzz/ and service/ import only
``engine`` and ``engine.kernels``.  This test covers what it does not: a
cycle between any two modules, or between two subpackages of the engine
(``engine.mm`` and ``engine.program``, say, each importing a module of the
other), named with the import lines that make it; and tools/, which is not a
package.  The import graph is grimp's (what import-linter builds on), lazy
imports inside functions included: they cycle at run time all the same;
imports under ``if TYPE_CHECKING`` left out: they never run (the typed
kernel's mixins name each other's types that way).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "fuzz", "service", "corpus")
#: What code outside the engine may import of it (engine/__init__.py's docstring).
PUBLIC = ("engine", "engine.kernels")

#: Imports that close a cycle between engine subpackages, left to be fixed where
#: they are (issue 16): (importer, imported) -> how.  The test fails when one is
#: gone, so that the entry goes with it.
KNOWN_CYCLE_IMPORTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)


def _edges(graph: grimp.ImportGraph, modules: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of the graph it imports, without the known cycle imports."""
    out = {m: set(graph.find_modules_directly_imported_by(m)) & set(graph.modules)
           for m in modules}
    for importer, imported in KNOWN_CYCLE_IMPORTS:
        out.get(importer, set()).discard(imported)
    return out


def _components(adj: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of @adj with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adj.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(adj):
        if v not in index:
            visit(v)
    return out


def _cycle(adj: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through @component's first node, as a path that ends where it starts."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    todo = [start]
    while todo:                                   # breadth first: the shortest cycle
        v = todo.pop(0)
        for w in sorted(adj[v] & inside):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    raise AssertionError(f"no cycle through {start} in {component}")


def _why(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    """Where @importer imports @imported: ``file:line: the import``, one per line."""
    details = graph.get_import_details(importer=importer, imported=imported)
    return "; ".join(f"{importer.replace('.', '/')}.py:{d['line_number']}: "
                     f"{d['line_contents'].strip()}" for d in details) or f"{importer} -> {imported}"


def _subpackage(module: str) -> str | None:
    """The engine subpackage (or top-level engine module) @module belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "engine" and len(parts) > 1 else None


def test_no_import_cycle_between_modules(graph: grimp.ImportGraph) -> None:
    adj = _edges(graph, graph.modules)
    cycles = []
    for component in _components(adj):
        path = _cycle(adj, component)
        steps = "\n    ".join(_why(graph, a, b) for a, b in zip(path, path[1:], strict=False))
        cycles.append(f"{' -> '.join(path)}\n    {steps}")
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_no_import_cycle_between_engine_subpackages(graph: grimp.ImportGraph) -> None:
    modules = [m for m in graph.modules if _subpackage(m)]
    by_module = _edges(graph, modules)
    adj: dict[str, set[str]] = {}
    because: dict[tuple[str, str], tuple[str, str]] = {}     # (sub, sub) -> one module import
    for importer, imported in ((a, b) for a, bs in by_module.items() for b in bs):
        a, b = _subpackage(importer), _subpackage(imported)
        if a is None or b is None or a == b:
            continue
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set())
        because.setdefault((a, b), (importer, imported))
    cycles = []
    for component in _components(adj):
        path = _cycle(adj, component)
        steps = "\n    ".join(_why(graph, *because[a, b])
                              for a, b in zip(path, path[1:], strict=False))
        cycles.append(f"{' -> '.join(path)}\n    {steps}")
    assert not cycles, "import cycles between engine subpackages:\n" + "\n".join(cycles)


def test_known_cycle_imports_are_still_there(graph: grimp.ImportGraph) -> None:
    """A known cycle import that is gone must leave :data:`KNOWN_CYCLE_IMPORTS` too."""
    gone = [f"{a} -> {b}" for a, b in KNOWN_CYCLE_IMPORTS
            if not graph.direct_import_exists(importer=a, imported=b)]
    assert not gone, "fixed, remove from KNOWN_CYCLE_IMPORTS: " + ", ".join(gone)


def _engine_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an engine module in the file at @path."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return [(line, m) for line, m in out if m.split(".")[0] == "engine"]


def test_tools_use_only_the_public_engine() -> None:
    tools = sorted((ROOT / "tools").glob("*.py"))
    assert tools
    private = [f"{p.relative_to(ROOT)}:{line}: {module}" for p in tools
               for line, module in _engine_imports(p) if module not in PUBLIC]
    assert not private, ("tools/ imports engine modules that are not its public surface "
                         f"({', '.join(PUBLIC)}):\n" + "\n".join(private))


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The helpers find a planted cycle and name its import lines."""
    pkg = tmp_path / "planted"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    for init in (pkg, pkg / "a", pkg / "b"):
        (init / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from planted.b import y\n")
    (pkg / "b" / "y.py").write_text("import planted.a.x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    planted = grimp.build_graph("planted", cache_dir=None)
    adj = {m: set(planted.find_modules_directly_imported_by(m)) for m in planted.modules}
    (component,) = _components(adj)
    assert _cycle(adj, component) == ["planted.a.x", "planted.b.y", "planted.a.x"]
    assert _why(planted, "planted.a.x", "planted.b.y") == \
        "planted/a/x.py:2: from planted.b import y"
    script = tmp_path / "tool.py"
    script.write_text("from engine.mm.folio import Folio\nfrom engine import run\n")
    assert _engine_imports(script) == [(1, "engine.mm.folio"), (2, "engine")]
