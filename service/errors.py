"""Exceptions of the service package: one small hierarchy, values in messages.

Every error the store raises on purpose is a :class:`StoreError`, so that the
thin edges (CLI, HTTP) can turn all of them into clean messages with one
``except``; the subclasses say which kind of 4xx an edge should answer.
A store that cannot be opened is a :class:`StoreOpenError`
(:class:`StoreMissingError` when its SQLite file does not exist and the
caller did not ask to create it); a campaign held by another runner is a
:class:`LeaseHeldError`.  A fuzzer whose package is not installed is a
:class:`MissingDependencyError`, naming what to install.  A server a
benchmark starts that does not come up is a :class:`ServerStartError`.  (The API's own ``ApiError`` is in
``service/api/errors.py``, the conformance runs' in ``service/conform/errors.py``.)
"""

from __future__ import annotations

from typing import Any

from engine import FoliodiffError


class StoreError(FoliodiffError):
    """Base of every error the store raises on purpose."""


class NotFoundError(StoreError, LookupError):
    """A row that was asked for by id does not exist."""

    def __init__(self, what: str, ident: Any) -> None:
        self.what = what
        self.ident = ident
        super().__init__(f"{what} {ident!r} not found")


class InvalidValueError(StoreError, ValueError):
    """A value handed to the store is malformed: names the field and the value."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {value!r})")


class IllegalTransitionError(StoreError):
    """A triage or campaign state change the transition table does not allow."""

    def __init__(self, what: str, ident: int, from_status: Any, to_status: Any,
                 allowed: list[Any]) -> None:
        self.ident = ident
        self.from_status = from_status
        self.to_status = to_status
        names = ", ".join(a.value for a in allowed) or "none"
        super().__init__(f"{what} {ident}: cannot go from {from_status.value!r} to "
                         f"{to_status.value!r} (allowed from {from_status.value!r}: {names})")


class BatchError(StoreError):
    """A batched write failed as a whole; nothing of the batch was stored.

    @transient: the connection failed (the server went away, a partition):
    the same batch may succeed if sent again, with its idempotency key in
    case it committed before the connection was lost.
    """

    def __init__(self, count: int, reason: str, *, transient: bool = False) -> None:
        self.count = count
        self.transient = transient
        super().__init__(f"batch of {count} records rolled back, nothing stored: {reason}")


class MigrationError(StoreError):
    """The store's schema migrations asked to run in a way they do not: names how."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__(f"foliodiff migrations run online only, through Store.open() "
                         f"(asked for {mode} mode)")


class StoreOpenError(StoreError):
    """A store URL that cannot be opened: names the URL (password hidden) and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot open the store {url}: {reason}")


class StoreMissingError(StoreOpenError):
    """A SQLite store file that does not exist, where the caller only reads a store."""

    def __init__(self, url: str, path: str) -> None:
        self.path = path
        super().__init__(url, f"no such file {path!r} (a command that reads a store does "
                              f"not create one; check --db or the working directory)")


class LeaseHeldError(StoreError):
    """Another runner holds the lease of a campaign, and its heartbeat is fresh."""

    def __init__(self, campaign_id: int, host: str, pid: int, heartbeat: Any,
                 age: float, expiry: float) -> None:
        self.campaign_id = campaign_id
        self.host = host
        self.pid = pid
        self.heartbeat = heartbeat
        super().__init__(f"campaign {campaign_id} is being run by pid {pid} on host {host!r} "
                         f"(last heartbeat {heartbeat:%Y-%m-%d %H:%M:%S} UTC, {age:.0f} s ago); "
                         f"a lease without a heartbeat for {expiry:.0f} s is taken over")


class LeaseLostError(StoreError):
    """A runner's lease of a campaign was taken over: it must stop writing the campaign."""

    def __init__(self, campaign_id: int, host: str | None, pid: int | None) -> None:
        self.campaign_id = campaign_id
        holder = f"pid {pid} on host {host!r}" if host is not None else "nobody"
        super().__init__(f"campaign {campaign_id}: this runner's lease was taken over "
                         f"(now held by {holder})")


class ShareLostError(StoreError):
    """A worker's share of a fleet campaign was taken by another worker (a newer
    generation): it must stop writing the share."""

    def __init__(self, campaign_id: int, share: int, generation: int, now: int,
                 holder: str | None) -> None:
        self.campaign_id = campaign_id
        self.share = share
        super().__init__(f"campaign {campaign_id} share {share}: taken over by {holder!r} "
                         f"(generation {now}; this worker's is {generation})")


class FleetError(FoliodiffError):
    """A fleet worker cannot run a campaign's job: says which and why."""


class MissingDependencyError(FoliodiffError):
    """A package a fuzzer needs is not importable: names it and how to install it."""

    def __init__(self, what: str, module: str, install: str, reason: str) -> None:
        self.what = what
        self.module = module
        self.install = install
        super().__init__(f"{what} needs the {module!r} package, which is not importable "
                         f"({reason}): install it with {install}")


class ServerStartError(FoliodiffError):
    """A server the service started did not answer: names its URL and what it printed."""

    def __init__(self, url: str, output: bytes) -> None:
        self.url = url
        super().__init__(f"server {url} did not start: {output[:500]!r}")
