"""Plugin engines: kernel versions defined outside the repository.

A plugin is a class that subclasses a registered version (:class:`V6_16`,
...) and declares, in its own class body, its engine id (``VERSION``) and
optionally its commit (``COMMIT``), its rules (``RULES``: :class:`Rule` s
from its parent to it) and its place (``PARENT``, default the version it
subclasses; ``BRANCH``, inherited).  A class that sets nothing but
``VERSION`` runs equal to its parent.

It is named by a spec: ``PATH.py:Class`` (a file, imported under a module
name of its own) or ``module:Class`` (an importable module); installed
packages register theirs through the entry-point group
:data:`ENTRY_POINT_GROUP`, loaded once, the first time an id is not found.

:func:`load` imports and registers (in :data:`engine.KERNELS`, so
the tree, rules and every runner see it); :func:`resolve_engine` does not
import: an id a request names is only ever looked up.  Each plugin keeps
its identity, the spec and a sha256 of its source file, which campaigns
and findings record (:func:`identity`) and :func:`check_identity` compares
before a finding is replayed, so that a finding never runs on changed code
under the same name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from engine.errors import PluginError, VersionTreeError
from engine.kernels.base import Kernel
from engine.kernels.registry import ALIASES, BASES, KERNELS, version_tree
from engine.kernels.rule import Rule

#: The entry-point group installed packages register plugin engines in
#: (``mine = "pkg.module:Mine"``; the entry point's name is not used, the class's VERSION is).
ENTRY_POINT_GROUP = "foliodiff.engines"
#: What an engine id may be: no ``:`` (a spec), ``,`` (a pair) or ``@`` and short
#: enough for the store's engine columns (32 characters).
_ENGINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,31}")


@dataclass(frozen=True)
class Plugin:
    """One registered plugin engine: its id, the spec it was loaded from (a file
    path made absolute), the sha256 of its source file and its class."""

    engine: str
    spec: str
    sha256: str
    cls: type[Kernel]

    def identity(self) -> dict[str, str]:
        return {"engine": self.engine, "spec": self.spec, "sha256": self.sha256}


#: Engine id -> plugin, for every plugin registered in this process.
PLUGINS: dict[str, Plugin] = {}
_entry_points_loaded = False


def is_spec(name: str) -> bool:
    """Whether @name is a plugin spec (``PATH.py:Class``, ``module:Class``), not an id."""
    return ":" in name


def _normal(spec: str) -> tuple[str, str, bool]:
    """(where, class name, is a file) of @spec, a file path made absolute."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise PluginError(spec, "is no plugin spec: give PATH.py:Class or module:Class")
    is_file = where.endswith(".py")
    return (os.path.abspath(where) if is_file else where), name, is_file


def canonical_spec(spec: str) -> str:
    where, name, _ = _normal(spec)
    return f"{where}:{name}"


def load(spec: str) -> str:
    """Import plugin @spec and register it; return its engine id.

    Loading a spec already registered returns its id (workers and resumed
    campaigns load what their parent did).  Raises :class:`PluginError`
    naming @spec and the reason: the file or module does not import, names
    no class, the class subclasses no registered version or declares no
    VERSION of its own, the id is taken, its PARENT names no version or its
    RULES are not rules from its parent to it.
    """
    where, name, is_file = _normal(spec)
    spec = f"{where}:{name}"
    for p in PLUGINS.values():
        if p.spec == spec:
            return p.engine
    module = _import(spec, where, is_file)
    cls = getattr(module, name, None)
    if cls is None:
        raise PluginError(spec, f"{where} has no attribute {name!r}")
    source = inspect.getsourcefile(cls) if isinstance(cls, type) else None
    return register(cls, spec, source or getattr(module, "__file__", None))


def _import(spec: str, where: str, is_file: bool) -> Any:
    try:
        if not is_file:
            return importlib.import_module(where)
        if not os.path.isfile(where):
            raise PluginError(spec, f"no such file {where!r}")
        # A module name of its own per file: two plugins called mine.py do not clash.
        modname = "foliodiff_plugin_" + hashlib.sha256(where.encode()).hexdigest()[:16]
        if modname in sys.modules:
            return sys.modules[modname]
        loader_spec = importlib.util.spec_from_file_location(modname, where)
        if loader_spec is None or loader_spec.loader is None:
            raise PluginError(spec, f"{where!r} is not a loadable Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[modname] = module   # what dataclasses and pickling look up
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[modname]
            raise
        return module
    except PluginError:
        raise
    except Exception as exc:   # noqa: BLE001 - any failure of foreign code is the plugin's
        raise PluginError(spec, f"does not import: {type(exc).__name__}: {exc}") from exc


def register(cls: Any, spec: str, source: str | None = None) -> str:
    """Check plugin class @cls (loaded from @spec, its source file @source) and
    register it; return its engine id.  Raises :class:`PluginError` (see :func:`load`)."""
    if not isinstance(cls, type):
        raise PluginError(spec, f"{cls!r} is not a class")
    versions = {KERNELS[v]: v for v in _versions()}
    extends = next((c for c in cls.__mro__[1:] if c in versions), None)
    if not issubclass(cls, Kernel) or extends is None:
        raise PluginError(spec, f"{cls.__name__} subclasses no registered kernel version "
                                f"(versions: {', '.join(_versions())})")
    engine = vars(cls).get("VERSION")
    if engine is None:
        raise PluginError(spec, f"{cls.__name__} declares no VERSION (its engine id) of its own")
    if not isinstance(engine, str) or not _ENGINE_ID.fullmatch(engine):
        raise PluginError(spec, f"VERSION {engine!r} is no engine id (letters, digits, '.', "
                                f"'_', '+', '-'; at most 32 characters)")
    if engine in KERNELS or engine in ALIASES:
        taken = PLUGINS[engine].spec if engine in PLUGINS else "a built-in engine"
        raise PluginError(spec, f"engine id {engine!r} is taken (by {taken})")
    if "PARENT" not in vars(cls):
        # The version it extends, unless it says otherwise (tree.py wants it declared).
        cls.PARENT = versions[extends]
    parent = vars(cls)["PARENT"]
    if parent not in _versions():
        raise PluginError(spec, f"PARENT {parent!r} names no version "
                                f"(versions: {', '.join(_versions())})")
    if "COMMIT" not in vars(cls):
        cls.COMMIT = f"plugin {spec}"
    rules = vars(cls).get("RULES", [])
    if not isinstance(rules, list | tuple) or not all(isinstance(r, Rule) for r in rules):
        raise PluginError(spec, f"RULES must be a list of engine.kernels.Rule (got {rules!r})")
    for r in rules:
        if (r.older, r.newer) != (parent, engine):
            raise PluginError(spec, f"rule {r.name!r} is from {r.older} to {r.newer}: a "
                                    f"plugin's rules go from its PARENT to it ({parent} "
                                    f"-> {engine})")
    KERNELS[engine] = cls
    try:
        version_tree()
    except VersionTreeError as exc:
        del KERNELS[engine]
        raise PluginError(spec, str(exc)) from exc
    PLUGINS[engine] = Plugin(engine, spec, _sha256(spec, source), cls)
    return engine


def _versions() -> list[str]:
    return [v for v in KERNELS if v not in BASES]


def _sha256(spec: str, source: str | None) -> str:
    if source is None or not os.path.isfile(source):
        raise PluginError(spec, f"its source file cannot be found (got {source!r})")
    with open(source, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_entry_points() -> list[str]:
    """Register the plugins of the entry-point group, once per process; return their ids.

    Raises :class:`PluginError` naming the entry point for one that fails.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    out = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = f"{ENTRY_POINT_GROUP}:{ep.name} = {ep.value}"
        try:
            cls = ep.load()
        except Exception as exc:   # noqa: BLE001 - any failure of foreign code is the plugin's
            raise PluginError(spec, f"does not import: {type(exc).__name__}: {exc}") from exc
        if ep.value in (p.spec for p in PLUGINS.values()):
            continue
        out.append(register(cls, ep.value, inspect.getsourcefile(cls) if isinstance(cls, type)
                            else None))
    return out


def rules_of(engine: str) -> list[Rule]:
    """The rules plugin @engine declares (from its parent to it); none for a built-in."""
    p = PLUGINS.get(engine)
    return [] if p is None else list(vars(p.cls).get("RULES", []))


def identity(engine: str) -> dict[str, str] | None:
    """What a finding records of @engine: its spec and source hash for a plugin, else None."""
    p = PLUGINS.get(engine)
    return None if p is None else p.identity()


def identities(engines: Iterable[str]) -> list[dict[str, str]]:
    """The identities of the plugins among @engines (what a campaign config records)."""
    return [i for e in dict.fromkeys(engines) if (i := identity(e)) is not None]


def check_identity(recorded: Mapping[str, Any]) -> None:
    """Raise :class:`PluginError` unless the plugin @recorded (an :meth:`Plugin.identity`)
    is registered here with the same source hash, naming both hashes."""
    engine, spec, sha = recorded.get("engine"), recorded.get("spec"), recorded.get("sha256")
    p = PLUGINS.get(str(engine))
    if p is None:
        raise PluginError(str(spec), f"engine {engine!r} is not registered here")
    if p.sha256 != sha:
        raise PluginError(p.spec, f"the source of {engine} changed: recorded sha256 {sha}, "
                                  f"registered sha256 {p.sha256}")


def load_identities(recorded: Iterable[Mapping[str, Any]]) -> None:
    """Load each plugin @recorded (a campaign's) and check its source is unchanged."""
    for r in recorded:
        load(str(r.get("spec")))
        check_identity(r)
