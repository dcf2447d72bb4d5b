"""Engine work a page asks for (replay, bisection), run after the page has answered.

A replay or a bisection runs the reproducer on the engines, from a fraction
of a second to minutes: no page request waits for one (the pages only read).
The page's button queues the job here and redirects back at once; one worker
thread runs the jobs in order, through the same library calls the API's
``POST /divergences/{id}/replay`` and ``/bisect`` make
(:func:`service.triage.replay`, :func:`service.triage.bisect_stored`), and
their results land where those put them: the record's history and notes, its
state, its bisection.  A job that fails leaves a note on the record saying
why, so the triager who asked sees it on the page.

One worker, not a pool: the jobs are CPU-bound Python, so a second thread
would only slow the pages further; and the same job for the same record is
not queued twice.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from engine import FoliodiffError
from service.store import Store
from service.triage import bisect_stored, replay

log = logging.getLogger(__name__)

#: The author of the note a failed job leaves.
JOB_AUTHOR = "dashboard"


class JobKind(str, enum.Enum):
    """What a page may queue for a divergence."""

    REPLAY = "replay"
    BISECT = "bisect"


class JobQueue:
    """A queue of page jobs and the one thread that runs them.

    Context: :meth:`submit` and :meth:`pending` may be called from any thread;
    :meth:`close` (the app's shutdown) drops what has not started.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foliodiff-page-job")
        self._lock = threading.Lock()
        self._queued: dict[tuple[JobKind, int], datetime] = {}

    def submit(self, kind: JobKind, divergence_id: int, work: Callable[[], None]) -> bool:
        """Queue @work, job @kind for divergence @divergence_id.

        Return: False, queuing nothing, when that job is queued or running already.
        """
        key = (kind, divergence_id)
        with self._lock:
            if key in self._queued:
                return False
            self._queued[key] = datetime.now(UTC)
        future = self._pool.submit(work)
        future.add_done_callback(lambda f: self._done(key, f))
        return True

    def _done(self, key: tuple[JobKind, int], future: Future[None]) -> None:
        with self._lock:
            self._queued.pop(key, None)
        if not future.cancelled() and future.exception() is not None:
            log.error("page job %s of divergence %d failed", key[0].value, key[1],
                      exc_info=future.exception())

    def pending(self, divergence_id: int) -> list[tuple[JobKind, datetime]]:
        """The jobs of divergence @divergence_id queued or running, and when each was queued."""
        with self._lock:
            return sorted((kind, at) for (kind, did), at in self._queued.items()
                          if did == divergence_id)

    def close(self) -> None:
        """Drop the jobs not started; the running one finishes in its thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _noted(store: Store, divergence_id: int, what: str, run: Callable[[], object]) -> None:
    """Run @run; when it fails, leave a note on the record saying so.

    A failure is an error foliodiff raises on purpose (a plugin whose source
    changed, a record deleted since) or a defect: either way the triager who
    pressed the button reads it on the record, and a defect goes to the log.
    """
    try:
        run()
    except FoliodiffError as exc:
        store.add_note(divergence_id, f"{what} asked from the dashboard failed: {exc}", JOB_AUTHOR)
    except Exception as exc:   # a defect: noted for the triager, raised for the log
        store.add_note(divergence_id, f"{what} asked from the dashboard failed: "
                                      f"{type(exc).__name__}: {exc}", JOB_AUTHOR)
        raise


def replay_job(store: Store, divergence_id: int, author: str,
               engines: str | None) -> Callable[[], None]:
    """The job of a replay button: :func:`service.triage.replay`, as the API runs it."""
    return lambda: _noted(store, divergence_id, "replay",
                          lambda: replay(store, divergence_id, author=author, engines=engines))


def bisect_job(store: Store, divergence_id: int) -> Callable[[], None]:
    """The job of a bisect button: :func:`service.triage.bisect_stored`, as the API runs it."""
    return lambda: _noted(store, divergence_id, "bisection",
                          lambda: bisect_stored(store, divergence_id))
