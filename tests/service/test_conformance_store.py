"""Stored conformance results and the API's conformance jobs, without a boot: the
store keeps and lists results, a job is claimed once, a dead runner's job is
failed; the API queues a job only for catalogue kernels (a path or an unknown
name is a 422), never boots inside the request, and reports the job.  Both
store backends."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

from engine.corpus.entries import load_any
from engine.diff.differential import Classification, differential
from fuzz.records import records_from_report
from service.api import Settings, create_app
from service.conform.verdict import Verdict
from service.errors import IllegalTransitionError, InvalidValueError, NotFoundError
from service.models import JobStatus
from service.store import ConformanceRecord, Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"


def _divergence(store: Store) -> int:
    program = load_any(str(CORPUS / "conform-h5-dma-pageout.json"))
    (rec,) = [r for r in records_from_report(differential(program, "v5.17", "v6.15"), program)
              if r.classification is Classification.UNEXPECTED]
    return store.upsert_divergences([rec]).ids[rec.signature_id]


def _result(scenario: str, kernel: str, verdict: Verdict, **kw) -> ConformanceRecord:
    return ConformanceRecord(scenario=scenario, program='{"version": 2}', kernel=kernel,
                             kernel_version="6.16.12-1", package="linux-image-6.16",
                             uname="6.16.12", engine="v6.16", verdict=verdict, **kw)


def test_results_are_kept_listed_and_the_newest_per_kernel_wins(url: str) -> None:
    with Store.open(url) as store:
        store.add_conformance([_result("a", "deb-6.16", Verdict.DIFFERENT,
                                       differences=[{"field": "x", "predicted": 1, "observed": 2}]),
                               _result("a", "deb-6.12", Verdict.EQUAL)])
        newer = store.add_conformance([_result("a", "deb-6.16", Verdict.EQUAL)])
        latest = {(r.scenario, r.kernel): (r.id, r.verdict) for r in store.latest_conformance()}
        assert latest[("a", "deb-6.16")] == (newer[0], Verdict.EQUAL)
        assert latest[("a", "deb-6.12")][1] is Verdict.EQUAL and len(latest) == 2
        items, total = store.conformance_results(kernel="deb-6.16")
        assert total == 2 and items[1].differences[0]["observed"] == 2
        # A bad record is refused by field before anything is written.
        with pytest.raises(InvalidValueError, match=r"results\[1\]\.kernel"):
            store.add_conformance([_result("b", "deb-6.16", Verdict.EQUAL),
                                   _result("b", "", Verdict.EQUAL)])
        with pytest.raises(InvalidValueError, match=r"results\[0\]\.verdict"):
            store.add_conformance([_result("b", "deb-6.16", "maybe")])  # type: ignore[arg-type]
        assert store.conformance_results()[1] == 3


def test_a_job_is_claimed_once_and_a_dead_runner_fails_it(url: str) -> None:
    with Store.open(url) as store:
        did = _divergence(store)
        job = store.create_conformance_job(did, ["deb-6.16"], timeout=60, author="me")
        assert job.status is JobStatus.QUEUED
        store.claim_conformance_job(job.id, f"{socket.gethostname()}:{os.getpid()}")
        with pytest.raises(IllegalTransitionError, match="cannot go from 'running'"):
            store.claim_conformance_job(job.id, "elsewhere:1")
        assert store.get_conformance_job(job.id).status is JobStatus.RUNNING   # we are alive
        other = store.create_conformance_job(did, ["deb-6.16"], timeout=60, author="me")
        store.claim_conformance_job(other.id, f"{socket.gethostname()}:{2 ** 22 + 17}")
        gone = store.get_conformance_job(other.id)
        assert gone.status is JobStatus.FAILED and "is gone" in (gone.error or "")
        with pytest.raises(NotFoundError):
            store.create_conformance_job(10 ** 6, ["deb-6.16"], timeout=60, author="me")


def test_the_api_queues_catalogue_kernels_only_and_reports_the_job(url: str) -> None:
    with Store.open(url) as store:
        did = _divergence(store)
    app = create_app(Settings(db_url=url, conform_jobs=False))
    with TestClient(app) as client:
        names = [k["name"] for k in client.get("/conformance/kernels").json()]
        assert "deb-6.16" in names
        for bad in ("/boot/vmlinuz", "deb-0.1", "../x"):
            r = client.post(f"/divergences/{did}/conform", json={"kernels": ["deb-6.16", bad]})
            assert r.status_code == 422, r.text
            assert r.json()["field"] == "kernels[1]" and r.json()["value"] == bad
        assert client.post(f"/divergences/{did}/conform", json={"kernels": []}).status_code == 422
        assert client.post("/divergences/999999/conform",
                           json={"kernels": ["deb-6.16"]}).status_code == 404
        r = client.post(f"/divergences/{did}/conform", json={"kernels": ["deb-6.16"],
                                                             "author": "ci"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert (job["status"], job["kernels"], job["results"]) == ("queued", ["deb-6.16"], [])
        # Nothing ran it (conform_jobs off): it stays queued, and reads say so.
        assert client.get(f"/conformance/jobs/{job['id']}").json()["status"] == "queued"
        assert client.get("/conformance/jobs/999999").status_code == 404
        assert client.get("/conformance", params={"divergence_id": did}).json()["total"] == 0
        assert client.get("/conformance", params={"limit": 0}).status_code == 422
