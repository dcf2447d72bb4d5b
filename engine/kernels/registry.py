"""The engine registry's tables, apart from the package that fills them.

:mod:`engine.kernels` fills them with the built-in versions and re-exports
them; :mod:`engine.kernels.plugins` registers plugin engines into the same
objects.  Kept here so that neither imports the other's package (no import
cycle).
"""

from __future__ import annotations

from engine.kernels.base import Kernel
from engine.kernels.tree import VersionTree, build_tree

#: Engine id -> kernel class: the versions, their C twins, mutants and plugins.
KERNELS: dict[str, type[Kernel]] = {}
#: Alias -> engine id.
ALIASES: dict[str, str] = {}
#: Version order: adjacent pairs have intended-divergence rules.
ORDER: list[str] = []
#: Engine id -> the kernel version it answers as, for engines that are not one
#: themselves: the C twins, and the benchmark's mutants once registered
#: (engine/kernels/mutants.py).
BASES: dict[str, str] = {}


def version_tree() -> VersionTree:
    """The versions registered now (C twins and mutants left out) as a tree, by
    each version class's ``PARENT`` and ``BRANCH`` (see engine/kernels/tree.py).

    Built per call, so that engines registered later (mutants, plugins) are in it.
    Raises :class:`engine.errors.VersionTreeError` for a wrong declaration.
    """
    return build_tree(KERNELS, BASES, ORDER)
