"""A campaign's minimizer: its own process, so that minimization never holds up the search.

Workers store a new unexpected divergence at once, with the program that
found it (a campaign killed the next instant keeps it), and go on
searching.  The campaign hands the stored divergence's id to this process,
which delta-debugs the program keeping the signature
(:func:`fuzz.minimize.minimize_divergence`, within the campaign's run
budget and :data:`MINIMIZE_SECONDS`) and stores the result as the
divergence's minimized program, with that program's own outcomes and
detail beside the original's, then bisects it along the version tree
(:func:`engine.bisect`): ClusterFuzz's split of a crash and its minimize
and regression tasks, on one machine.

What it did goes back on the campaign's message queue as ``("minimized",
None, {...})``: the divergence, the operations before and after, the runs
it took.  Those runs are minimization, not search: the campaign counts
them apart from the workers' executions.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from typing import Any

from engine import parse_program
from engine.kernels import load_identities
from fuzz.errors import NotInterestingError
from fuzz.minimize import minimize_divergence
from fuzz.records import minimized_run
from fuzz.throughput import fuzzing_gc
from service.models import TriageStatus
from service.store import Store
from service.triage import keep_bisection

#: Seconds one divergence may take at most.
MINIMIZE_SECONDS = 30.0


def minimizer(db_url: str, tasks: Any, messages: Any, max_runs: int, deadline: float,
              plugins: list[dict[str, str]] | None = None) -> None:
    """Minimize each divergence id from @tasks until a None arrives.

    @plugins: the campaign's plugin engines (their identities), registered
    first: this process is spawned and knows only the built-ins.

    @deadline: a ``time.monotonic()`` instant after which each minimization
    in progress ends with the smallest program it found (stored as such)
    and the rest are left as they were stored.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides when to stop
    load_identities(plugins or [])
    store = Store.open(db_url)
    fuzzing_gc()
    try:
        while (divergence_id := tasks.get()) is not None:
            try:
                done = minimize_stored(store, divergence_id, max_runs, deadline)
            except Exception as exc:  # noqa: BLE001 - foliodiff's own defect: said, not fatal
                done = {"divergence_id": divergence_id, "ops_minimized": None, "runs": 0,
                        "error": f"the minimizer failed (a defect of foliodiff): "
                                 f"{''.join(traceback.format_exception(exc)).strip()}"}
            messages.put(("minimized", None, done))
    finally:
        store.close()


def minimize_stored(store: Store, divergence_id: int, max_runs: int,
                    deadline: float) -> dict[str, Any]:
    """Minimize stored divergence @divergence_id's program and keep the result.

    Return: what it did (``ops_original``, ``ops_minimized``, ``runs``, and
    the edges of the version tree where its bisection saw it come in and go,
    ``came_in`` and ``went``; or, with ``ops_minimized`` None, the ``error``
    why not: out of time, or the stored program no longer shows the
    divergence).
    """
    d = store.get_divergence(divergence_id)
    out: dict[str, Any] = {"divergence_id": divergence_id, "signature": d.signature}
    until = min(time.monotonic() + MINIMIZE_SECONDS, deadline)
    if time.monotonic() >= until:
        return {**out, "ops_minimized": None, "runs": 0,
                "error": "out of time: left for the next campaign of the pair"}
    program = parse_program(json.loads(store.get_program(d.original_program_id).json))
    out["ops_original"] = len(program.ops)
    try:
        res = minimize_divergence(program, d.engine_a, d.engine_b, d.signature_id,
                                  until=until, max_runs=max_runs)
    except NotInterestingError as exc:
        # out of time before the first run ended, or the program no longer shows it
        return {**out, "ops_minimized": None, "runs": 1, "error": str(exc)}
    # The minimized program's own run: its outcomes and detail, not the original's.
    run = minimized_run(res.report, d.signature_id) if res.report is not None else None
    store.set_minimized(divergence_id, res.program.to_json(indent=None), run)
    # Where it came in and went, on the minimized program: a few runs a version.
    kept = keep_bisection(store, d, res.program, res.report)
    return {**out, "ops_minimized": len(res.program.ops), "runs": res.runs,
            "came_in": kept.came_in, "went": kept.went,
            "duplicate_of": kept.duplicate_of if kept.status is TriageStatus.DUPLICATE else None}
