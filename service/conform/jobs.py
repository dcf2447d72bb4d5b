"""A stored divergence on real kernels: run now, or as a background job the API queued.

A divergence is a claim that two kernel versions behave differently on one
program; a real kernel settles which of the two it behaves like.
:func:`check_divergence` translates the divergence's reproducer (the
minimized program when there is one), boots each kernel with it, compares
what the kernel printed with its own engine's prediction and with both
engines of the pair (the result's ``sides``), and stores the results.

The API never boots a kernel inside a request: ``POST
/divergences/{id}/conform`` stores a :class:`service.models.ConformanceJob`
and :func:`start_job` starts ``foliodiff conform --job ID`` in a process of
its own, which claims the job (:func:`run_job`; a second runner is refused),
runs it and marks it done or failed with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from engine import FoliodiffError, Scenario
from service.conform.check import KernelConformance, KernelTarget, conform, records
from service.conform.verdict import Verdict
from service.store import Store
from service.triage import check_plugins, reproducer


def divergence_scenario(store: Store, divergence_id: int) -> tuple[Scenario, tuple[str, str]]:
    """The scenario of divergence @divergence_id (``divergence-<id>``, its reproducer)
    and its engine pair."""
    d = store.get_divergence(divergence_id)
    check_plugins(d)    # its sides are its pair: the code it was found on, or none
    return (Scenario(f"divergence-{d.id}", reproducer(store, d),
                     description=f"divergence {d.id}: {d.signature}"), (d.engine_a, d.engine_b))


def check_divergence(store: Store, divergence_id: int,
                     kernels: Sequence[str | KernelTarget], *, timeout: float,
                     job_id: int | None = None, author: str = "conform",
                     keep: bool = True) -> list[KernelConformance]:
    """Run divergence @divergence_id's reproducer on @kernels and, unless @keep is
    False, store the results and note on the divergence, per kernel, which
    engine of its pair the kernel matched.

    Raises :class:`engine.NotTranslatable` (the program has an operation user
    space cannot express) before any boot.
    """
    scenario, pair = divergence_scenario(store, divergence_id)
    results = conform(kernels, {scenario.name: scenario}, timeout=timeout, sides=pair)
    for kc in results if keep else ():
        store.add_conformance(records(kc, {scenario.name: scenario}),
                              divergence_id=divergence_id, job_id=job_id)
        store.add_note(divergence_id, f"conformance on {kc.kernel} ({kc.identity}, uname "
                                      f"{kc.uname}): {_matched(kc, pair)}", author)
    return results


def _matched(kc: KernelConformance, pair: tuple[str, str]) -> str:
    """Which engines of @pair the kernel behaved as, in words."""
    if not kc.results:
        return f"no result (boot {kc.boot.value})"
    r = kc.results[0]
    if not r.sides:
        return f"{r.verdict.value} ({r.detail})" if r.detail else r.verdict.value
    same = [e for e in pair if e in r.sides and r.sides[e].verdict is Verdict.EQUAL]
    verdict = (f"behaves as {' and '.join(same)}" if same else
               f"behaves as neither {pair[0]} nor {pair[1]}")
    return f"{verdict}; its own engine {kc.engine}: {r.verdict.value}"


def holder() -> str:
    """This process as a job's holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(store: Store, job_id: int) -> list[KernelConformance]:
    """Claim queued job @job_id, run it, and mark it done or failed.

    A kernel that does not boot is reported in the job's error (it gives no
    results); any error of the runner marks the job failed with its message
    and is raised again.
    """
    job = store.claim_conformance_job(job_id, holder())
    try:
        results = check_divergence(store, job.divergence_id, job.kernels, timeout=job.timeout,
                                   job_id=job_id, author=job.author)
    except FoliodiffError as exc:
        store.finish_conformance_job(job_id, error=str(exc))
        raise
    failed = [f"{kc.kernel}: boot {kc.boot.value} ({kc.boot_detail[:300]})"
              for kc in results if not kc.results]
    store.finish_conformance_job(job_id, error="; ".join(failed) or None)
    return results


def start_job(job_id: int, db_url: str, plugins: Sequence[str] = (),
              log_dir: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``foliodiff conform --job @job_id --db @db_url`` in a new session, so that
    it outlives the request (and the server); its output goes to
    ``<log_dir>/conform-job-<id>.log`` (the temporary directory by default).

    @plugins: the plugin engines the server registered, registered in the job too.
    """
    log = Path(log_dir or tempfile.gettempdir()) / f"conform-job-{job_id}.log"
    argv = [sys.executable, "-m", "service.cli"]
    if plugins:
        argv += ["--plugins", ",".join(plugins)]
    argv += ["conform", "--job", str(job_id), "--db", db_url]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
