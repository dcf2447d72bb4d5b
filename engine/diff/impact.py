"""Change impact: when one run of a pair also answers for the other.

Two kernel versions are two classes (engine/kernels/): what one does
differently from the other is exactly the class attributes they resolve to
different objects - methods a version overrides, feature constants such as
``WP_REUSES_SHARED_LARGE_ANON``, events it declares for itself.  Everything
else is one and the same code.  A run is a pure function of the program and
the class (no clock, no global state: engine/execution/runner.py), so a run
of version A that never looked up any of those attributes is, step for step,
the run of version B too: B would have executed the same functions on the
same state.

:func:`watch` makes, once per pair, a subclass of A that changes nothing but
records every lookup of such an attribute (through an instance or the
class, ``hasattr`` and ``getattr`` with a default included; a name only B
has is recorded and then missing, as it is on A).  The differential runs A
as that class; when the run recorded nothing, B's outcome is A's under B's
name and B is not run (regression test selection, as Ekstazi selects tests
by the classes they touched, at the granularity of a class attribute).  A
run that touched any such attribute, even in a branch that did the same on
both versions, runs B as before: the test is conservative, never a guess.

What it cannot see, and therefore the engine must not do: read a version's
attributes past the instance and its class (``vars(cls)``, a version's
module globals, a registry keyed by the engine id) while a run runs.  The
equality of skipped and run outcomes on every adjacent pair is held by
tests/unit/test_impact.py and the equivalence snapshots.
"""

from __future__ import annotations

import threading
from typing import Any

from engine.kernels import kernel_class
from engine.kernels.base import Kernel

#: Attributes every class has of its own, which say nothing about behaviour.
_CLASS_OWN = frozenset({"__doc__", "__module__", "__qualname__", "__dict__", "__weakref__",
                        "__annotations__", "__firstlineno__", "__static_attributes__",
                        "__abstractmethods__", "_abc_impl", "__parameters__", "__orig_bases__",
                        "__slots__"})
_MISSING = object()


def _resolve(cls: type, name: str) -> Any:
    """The object @cls resolves @name to along its MRO, undecorated (a function,
    not a bound method: two lookups of one classmethod compare equal)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _MISSING


def differing_attributes(a: type, b: type) -> frozenset[str]:
    """The class attributes @a and @b resolve to different objects: where their
    behaviour can differ.  Return: the names (including ones only one has)."""
    names = {n for k in a.__mro__ + b.__mro__ for n in k.__dict__} - _CLASS_OWN
    return frozenset(n for n in names if _resolve(a, n) is not _resolve(b, n))


class Watch:
    """A pair's watched class: version A, recording lookups of what B does differently.

    Each thread records into its own dict (:meth:`start`): the API may run
    differentials of one pair in several threads at once.
    """

    def __init__(self, a: type[Kernel], b: type[Kernel]) -> None:
        self._local = threading.local()
        spies = {n: _Spy(n, _resolve(a, n), self._local) for n in differing_attributes(a, b)}
        #: The watched class: A itself, but for the spies.
        self.cls: type[Kernel] = type(a.__name__, (a,), {
            "__qualname__": a.__qualname__, "__module__": a.__module__, "__slots__": (), **spies})

    def start(self) -> dict[str, None]:
        """A new record for this thread: the names its runs of :attr:`cls` look up
        from now on, in the order of first lookup (why B had to run)."""
        touched: dict[str, None] = {}
        self._local.touched = touched
        return touched


class _Spy:
    """A class attribute of the watched class: records the lookup, then answers
    as A's own attribute would (bound where A's would be, missing where A has none)."""

    __slots__ = ("name", "value", "local")

    def __init__(self, name: str, value: Any, local: threading.local) -> None:
        self.name = name
        self.value = value
        self.local = local

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        touched = getattr(self.local, "touched", None)
        if touched is not None:
            touched[self.name] = None
        value = self.value
        if value is _MISSING:
            raise AttributeError(self.name)
        get = getattr(type(value), "__get__", None)
        return value if get is None else get(value, obj, owner)


_WATCHES: dict[tuple[type, type], Watch] = {}


def watch(engine_a: str, engine_b: str) -> Watch:
    """The watched class of version @engine_a against @engine_b (made once per
    pair of classes: a plugin registered again under its id is a new class)."""
    key = (kernel_class(engine_a), kernel_class(engine_b))
    w = _WATCHES.get(key)
    if w is None:
        w = _WATCHES[key] = Watch(*key)
    return w
