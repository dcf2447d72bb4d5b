"""Kernel versions the model implements, by engine id: the surface for writing one.

The registry: :data:`KERNELS` (engine id -> class), :data:`ORDER` (the
version ladder; adjacent pairs have rules), :data:`ALIASES`,
:data:`C_TWINS` and :data:`BASES`, :func:`resolve_engine`,
:func:`kernel_class`, :func:`base_version`; the history as a tree of
versions (mainline and branches), :func:`version_tree` (a
:class:`VersionTree` of :class:`TreeEdge` s; :data:`MAINLINE`).

Writing a version: subclass the version it changes (:class:`V7_3`, ...,
all of them over :class:`Kernel`), say where it stands in the history
(``PARENT``, the engine id it descends from, in its own class body, and
``BRANCH`` when it is not on :data:`MAINLINE`), and override the kernel
functions the patch changes, with the names and signatures of the kernel's (typed: the
folio, VMA and page-table types are in :mod:`folio`, :mod:`mm_types` and
:mod:`pgtable` here; the places a path may yield, :class:`YieldPoint`).
What a path does that a rule must see, it notes with ``self.event(EV)``:
``EV`` a declared :class:`Event` (the built-in ones in :mod:`events`; a
version declares its own at module level, ``Event(name, meaning)``, as
v6_15.py does).  Its intended differences from its parent are
:class:`Rule` s over those events, tested with :class:`Old`, :class:`New`,
:class:`Either` and :class:`OpIs`.
"""

from __future__ import annotations

from engine.errors import UnknownEngineError
from engine.kernels import plugins
from engine.kernels.base import MAINLINE, Kernel
from engine.kernels.c_twins import V6_14C, V6_15C, V6_16C
from engine.kernels.digest import model_digest
from engine.kernels.plugins import (
    PLUGINS,
    Plugin,
    check_identity,
    identities,
    identity,
    load_entry_points,
    load_identities,
    rules_of,
)
from engine.kernels.registry import ALIASES, BASES, KERNELS, ORDER, version_tree
from engine.kernels.rule import Either, New, Old, OpIs, Rule, When
from engine.kernels.tree import TreeEdge, VersionTree
from engine.kernels.v5_17 import V5_17
from engine.kernels.v5_18 import V5_18
from engine.kernels.v6_12 import V6_12
from engine.kernels.v6_14 import V6_14
from engine.kernels.v6_15 import V6_15
from engine.kernels.v6_16 import V6_16
from engine.kernels.v6_19 import V6_19
from engine.kernels.v6_19_y import V6_19_Y
from engine.kernels.v7_0 import V7_0
from engine.kernels.v7_2 import V7_2
from engine.kernels.v7_3 import V7_3
from engine.mm import events, folio, mm_types, pgtable
from engine.mm.events import Event, folio_batch_full, place_event
from engine.program.places import YieldPoint

KERNELS.update({k.VERSION: k for k in (V5_17, V5_18, V6_12, V6_14, V6_15, V6_16, V6_19, V6_19_Y,
                                        V7_0, V7_2, V7_3)})
ALIASES.update({"old": "v6.14", "new": "v6.15"})
# Version order: adjacent pairs have intended-divergence rules.  v6.12 (Debian's
# 6.12.117) sits by its number although its one difference from v6.14 came later,
# in the 6.12.y stable series (engine/kernels/v6_12.py); v6.19.y (Debian's 6.19.14)
# is v6.19 with the backport of the one change v7.0 brings (engine/kernels/v6_19_y.py);
# v7.3 (Debian's 7.3.4) is a 7.3.y release after mainline v7.2 (engine/kernels/v7_3.py).
ORDER.extend(["v5.17", "v5.18", "v6.12", "v6.14", "v6.15", "v6.16", "v6.19", "v6.19.y", "v7.0", "v7.2",
              "v7.3"])
#: The C twins (engine/kernels/c_twins.py): engine id -> the version each is the twin of.
C_TWINS: dict[str, str] = {k.VERSION: k.BASE_VERSION for k in (V6_14C, V6_15C, V6_16C)}
KERNELS.update({k.VERSION: k for k in (V6_14C, V6_15C, V6_16C)})
BASES.update(C_TWINS)


def resolve_engine(name: str) -> str:
    """Canonical engine id for ``name`` (an id, an alias, or the spec of a plugin
    registered already).  Imports nothing named by @name (a request's engine is
    only looked up: see :func:`load_engine`); the entry-point plugins are
    registered, once, the first time an id is not found.
    """
    name = ALIASES.get(name, name)
    if name not in KERNELS and isinstance(name, str) and plugins.is_spec(name):
        spec = plugins.canonical_spec(name)
        name = next((p.engine for p in plugins.PLUGINS.values() if p.spec == spec), name)
    if name not in KERNELS:
        plugins.load_entry_points()
    if name not in KERNELS:
        raise UnknownEngineError(name, sorted(KERNELS) + sorted(ALIASES))
    return name


def load_engine(name: str) -> str:
    """:func:`resolve_engine`, which first imports and registers @name when it is a
    plugin spec (``PATH.py:Class``, ``module:Class``): for the command line, never
    for a request.  Raises :class:`engine.errors.PluginError` for a plugin that fails."""
    if isinstance(name, str) and plugins.is_spec(name):
        return plugins.load(name)
    return resolve_engine(name)


def kernel_class(name: str) -> type[Kernel]:
    return KERNELS[resolve_engine(name)]


def base_version(name: str) -> str:
    """The kernel version engine ``name`` models: a C twin (or a mutant) answers as its
    Python version (rules, ``ORDER`` and corpus expectations are per kernel version)."""
    name = resolve_engine(name)
    return BASES.get(name, name)


__all__ = [
    # the registry
    "KERNELS", "ORDER", "ALIASES", "C_TWINS", "BASES", "resolve_engine", "load_engine",
    "kernel_class", "base_version",
    # plugin engines (engine/kernels/plugins.py)
    "plugins", "PLUGINS", "Plugin", "identity", "identities", "check_identity", "load_identities",
    "load_entry_points", "rules_of",
    # the built-in model's identity (engine/kernels/digest.py)
    "model_digest",
    # the tree of versions
    "version_tree", "VersionTree", "TreeEdge", "MAINLINE",
    # the versions
    "Kernel", "V5_17", "V5_18", "V6_12", "V6_14", "V6_15", "V6_16", "V6_19", "V6_19_Y", "V7_0", "V7_2",
    "V7_3", "V6_14C", "V6_15C", "V6_16C",
    # writing one
    "events", "Event", "folio_batch_full", "place_event", "Rule", "When", "Old", "New", "Either",
    "OpIs", "folio", "mm_types", "pgtable", "YieldPoint",
]
