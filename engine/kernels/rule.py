"""What a version declares of its difference from its parent: rules over events.

A :class:`Rule` names an intended difference between two adjacent versions
and the patch that made it.  Its test is built from declared events
(:mod:`engine.mm.events`, or a version's own) with :class:`Old`,
:class:`New`, :class:`Either` and :class:`OpIs`, combined with ``&``, ``|``
and ``~``: a misspelt event is a NameError where the rule is written, and
:meth:`Rule.events` lists every event a rule reads.  The rules of the
built-in versions, and how a divergence is classified with them, are in
:mod:`engine.diff.rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from engine.mm.events import Event, UndeclaredEvent

Events = frozenset[str]


class When:
    """A test of what the older (``old``) and newer (``new``) run noted during
    the operations where they parted, and of the kind of operation.

    Combine with ``&``, ``|`` and ``~``.  Called as ``when(old, new, op_kind)``.
    """

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        raise NotImplementedError

    def events(self) -> frozenset[Event]:
        """Every event the test reads."""
        raise NotImplementedError

    def __and__(self, other: When) -> When:
        return _All((self, other))

    def __or__(self, other: When) -> When:
        return _Any((self, other))

    def __invert__(self) -> When:
        return _Not(self)


def _declared(events: tuple[Event, ...]) -> frozenset[Event]:
    for ev in events:
        if type(ev) is not Event:
            raise UndeclaredEvent(ev)
    if not events:
        raise UndeclaredEvent(None, "a rule test needs at least one event")
    return frozenset(events)


class _Noted(When):
    """Any of ``evs`` was noted (by the run(s) a subclass reads)."""

    def __init__(self, *evs: Event) -> None:
        self.evs = _declared(evs)

    def events(self) -> frozenset[Event]:
        return self.evs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(sorted(self.evs))})"


class Old(_Noted):
    """The older version's run noted any of the events."""

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return not self.evs.isdisjoint(old)


class New(_Noted):
    """The newer version's run noted any of the events."""

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return not self.evs.isdisjoint(new)


class Either(_Noted):
    """Either run noted any of the events."""

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return not (self.evs.isdisjoint(old) and self.evs.isdisjoint(new))


class OpIs(When):
    """The runs parted in an operation of this type (a program-format class)."""

    def __init__(self, op_type: type[BaseModel]) -> None:
        # the op string programs spell the type with (its ``op`` field's default)
        self.op: str = op_type.model_fields["op"].default

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return op_kind == self.op

    def events(self) -> frozenset[Event]:
        return frozenset()

    def __repr__(self) -> str:
        return f"OpIs({self.op})"


class _All(When):
    def __init__(self, parts: tuple[When, ...]) -> None:
        self.parts = parts

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return all(p(old, new, op_kind) for p in self.parts)

    def events(self) -> frozenset[Event]:
        return frozenset().union(*(p.events() for p in self.parts))

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.parts))


class _Any(_All):
    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return any(p(old, new, op_kind) for p in self.parts)

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.parts)) + ")"


class _Not(When):
    def __init__(self, part: When) -> None:
        self.part = part

    def __call__(self, old: Events, new: Events, op_kind: str) -> bool:
        return not self.part(old, new, op_kind)

    def events(self) -> frozenset[Event]:
        return self.part.events()

    def __repr__(self) -> str:
        return f"~{self.part!r}"


@dataclass(frozen=True)
class Rule:
    """An intended difference between ``older`` and the next version ``newer``."""

    name: str
    older: str
    newer: str
    patch: str
    explains: Callable[[Events, Events, str], bool]
    description: str

    def matches(self, old: Events, new: Events, op_kind: str) -> bool:
        return self.explains(old, new, op_kind)

    def events(self) -> frozenset[Event]:
        """The events the rule's test reads (none for a test that is no :class:`When`)."""
        return self.explains.events() if isinstance(self.explains, When) else frozenset()
