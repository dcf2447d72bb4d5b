"""The dashboard's pages through the app (no browser): answers, refusals, writes.

Every test runs on both backends (``url`` in conftest.py) over a store
seeded through the Store with records of real differential runs.  What a
browser shows (rendering, plots, no foreign request) is tests/browser's.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # starlette deprecates its httpx-based client in favour of httpx2; same API.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from engine import FoliodiffError
from engine.corpus.entries import load_any
from engine.diff.differential import differential
from fuzz.records import DivergenceRecord, records_from_report
from service.api import Settings, create_app
from service.conform.verdict import Verdict
from service.store import ConformanceRecord, Store
from service.web import jobs

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
TOKEN = "page-s3cret"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _record(name: str, a: str, b: str) -> DivergenceRecord:
    program = load_any(str(CORPUS / name))
    (rec,) = records_from_report(differential(program, a, b), program)
    return rec


@pytest.fixture(scope="module")
def records() -> list[DivergenceRecord]:
    return [_record("h5-dma-into-lazyfree.json", "v5.17", "v6.14"),
            _record("h12-mremap-straddle.json", "v6.14", "v6.15")]


@pytest.fixture
def seeded(url: str, records: list[DivergenceRecord]) -> dict[str, int]:
    with Store.open(url) as store:
        ids = store.upsert_divergences(records).ids
        campaign = store.create_campaign("v6.14", "v6.15", "random", {"seed": 1})
        for i in range(3):
            store.add_stats_snapshot(campaign.id, 5.0 * i, 100 * i, 20.0, 3 + i, {"crash": i})
    return {"data_loss": ids[records[0].signature_id], "crash": ids[records[1].signature_id],
            "campaign": campaign.id}


@pytest.fixture
def client(url: str, seeded: dict[str, int]):
    with TestClient(create_app(Settings(db_url=url)), follow_redirects=False) as c:
        yield c


@pytest.fixture
def locked(url: str, seeded: dict[str, int]):
    """A client of an app whose writes need the write token."""
    with TestClient(create_app(Settings(db_url=url, token=TOKEN)), follow_redirects=False) as c:
        yield c


def _csrf(client: TestClient, path: str) -> str:
    """Load @path (which sets the CSRF cookie) and return its forms' CSRF token."""
    r = client.get(path)
    assert r.status_code == 200, r.text
    match = _CSRF.search(r.text)
    assert match, "no form on " + path
    return match.group(1)


def _post(client: TestClient, path: str, form: dict[str, Any], **headers: str):
    return client.post(path, data=form, headers=headers)


# -- reading -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui/divergences", "/ui/divergences/{data_loss}",
                                  "/ui/divergences/{crash}", "/ui/campaigns",
                                  "/ui/campaigns/{campaign}", "/ui/corpus", "/ui/signin",
                                  "/ui/divergences?status=new&kind=&q=dma_write&sort=id&limit=1",
                                  "/ui/divergences?engines=v5.17..v6.14&came_in=v6.14->v6.15"])
def test_every_page_renders_html_that_loads_nothing_from_another_host(
        client: TestClient, seeded: dict[str, int], path: str) -> None:
    r = client.get(path.format(**seeded))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert re.search(r"app;dur=[0-9.]+", r.headers["server-timing"])
    assert not re.search(r'(src|href)="(https?:)?//', r.text), "a link to another host"


def test_the_corpus_page_shows_the_newest_conformance_result_per_kernel(
        client: TestClient, url: str) -> None:
    assert 'id="no-conformance"' in client.get("/ui/corpus").text
    with Store.open(url) as store:
        for verdict in (Verdict.DIFFERENT, Verdict.EQUAL):      # the newer one wins
            store.add_conformance([ConformanceRecord(
                scenario="h9-pmd-thp-pinned+vmsplice", program='{"version": 2}',
                kernel="deb-6.16", kernel_version="6.16.12-1", package="linux-image-6.16",
                uname="6.16.12", engine="v6.16", verdict=verdict)])
    page = client.get("/ui/corpus").text
    row = page[page.index('id="corpus-h9-pmd-thp-pinned"'):]
    row = row[:row.index("</tr>")]
    assert "deb-6.16+vmsplice" in row and ">equal<" in row and ">different<" not in row
    assert 'id="no-conformance"' not in page and 'id="other-conformance"' not in page


def test_root_leads_to_the_dashboard(client: TestClient) -> None:
    for path in ("/", "/ui/"):
        r = client.get(path)
        assert (r.status_code, r.headers["location"]) == (303, "/ui/divergences")


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_documents_load_their_assets_from_the_package(client: TestClient,
                                                              path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and "cdn" not in r.text and "googleapis" not in r.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and all(a.startswith("/static/vendor/") for a in assets), assets
    for a in assets:
        assert client.get(a).status_code == 200, a
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_a_list_page_shows_groups_and_pages(client: TestClient, url: str,
                                            records: list[DivergenceRecord]) -> None:
    with Store.open(url) as store:
        store.transition(2, "duplicate", "", "bob", duplicate_of=1)
    page = client.get("/ui/divergences", params={"sort": "id", "limit": 1}).text
    assert "+1 dup" in page and 'rel="next"' in page and "1–1 of 2" in page
    second = client.get("/ui/divergences", params={"sort": "id", "limit": 1, "offset": 1}).text
    assert "dup of" in second and 'rel="prev"' in second


@pytest.mark.parametrize("path, status, field", [
    ("/ui/divergences?kind=boom", 422, "kind"),
    ("/ui/divergences?status=open", 422, "status"),
    ("/ui/divergences?classification=maybe", 422, "classification"),
    ("/ui/divergences?engines=v6.14..nope", 422, "engines"),
    ("/ui/divergences?engines=v6.14", 422, "engines"),
    ("/ui/divergences?sort=outcome_a", 422, "sort"),
    ("/ui/divergences?came_in=v1->v2", 422, "came_in"),
    ("/ui/divergences?limit=0", 422, "limit"),
    ("/ui/divergences?limit=many", 422, "limit"),
    ("/ui/divergences?offset=-1", 422, "offset"),
    ("/ui/divergences?q=" + "x" * 600, 422, "q"),
    ("/ui/divergences/0", 422, "divergence_id"),
    ("/ui/divergences/abc", 422, "divergence_id"),
    ("/ui/divergences/99999999999", 422, "divergence_id"),
    ("/ui/divergences/999", 404, "id"),
    ("/ui/campaigns/999", 404, "id"),
    ("/ui/campaigns?status=sleeping", 422, "status"),
    ("/ui/nowhere", 404, "request"),
])
def test_bad_query_parameters_are_a_4xx_page_naming_the_field(client: TestClient, path: str,
                                                               status: int, field: str) -> None:
    r = client.get(path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("text/html")
    assert f"<code>{field}</code>" in r.text


# -- writing -------------------------------------------------------------------------


def test_a_transition_and_a_note_from_the_page_land_in_the_history(
        client: TestClient, seeded: dict[str, int]) -> None:
    did = seeded["data_loss"]
    page = f"/ui/divergences/{did}"
    csrf = _csrf(client, page)
    r = _post(client, f"{page}/transition", {"csrf": csrf, "to": "confirmed", "author": "alice",
                                             "note": "seen on 6.14"})
    assert (r.status_code, r.headers["location"]) == (303, page)
    r = _post(client, f"{page}/note", {"csrf": csrf, "author": "alice", "text": "a DMA race"})
    assert r.status_code == 303
    history = client.get(f"/divergences/{did}/history").json()
    assert [(e["to_status"], e["author"], e["note"]) for e in history["events"]] == [
        ("confirmed", "alice", "seen on 6.14")]
    assert [n["text"] for n in history["notes"]] == ["a DMA race"]
    shown = client.get(page).text
    assert 'value="alice"' in shown            # the author is remembered for the next form
    r = _post(client, f"{page}/note", {"csrf": csrf, "author": "Zoë; Ng", "text": "ok"})
    assert r.status_code == 303 and 'value="Zoë; Ng"' in client.get(page).text
    # Marking a duplicate takes the id, with or without '#'.
    crash = seeded["crash"]
    csrf = _csrf(client, f"/ui/divergences/{crash}")
    r = _post(client, f"/ui/divergences/{crash}/transition",
              {"csrf": csrf, "to": "duplicate", "author": "bob", "duplicate_of": f"#{did}"})
    assert r.status_code == 303
    assert client.get(f"/divergences/{crash}").json()["duplicate_of"] == did


@pytest.mark.parametrize("form, status, field", [
    ({"to": "verified"}, 409, "to"),
    ({"to": "wontfix"}, 422, "to_status"),
    ({"to": "duplicate"}, 422, "duplicate_of"),
    ({"to": "duplicate", "duplicate_of": "x1"}, 422, "duplicate_of"),
    ({"to": "duplicate", "duplicate_of": "999"}, 422, "duplicate_of"),
    ({"to": "confirmed", "author": " "}, 422, "author"),
    ({"to": "confirmed", "note": "n" * 10_001}, 422, "note"),
])
def test_a_refused_transition_is_a_4xx_page_and_changes_nothing(
        client: TestClient, seeded: dict[str, int], form: dict[str, str], status: int,
        field: str) -> None:
    page = f"/ui/divergences/{seeded['data_loss']}"
    r = _post(client, f"{page}/transition", {"csrf": _csrf(client, page), "author": "alice",
                                             **form})
    assert r.status_code == status and f"<code>{field}</code>" in r.text
    assert client.get(f"/divergences/{seeded['data_loss']}/history").json()["events"] == []


def test_writes_without_the_pages_csrf_token_or_from_another_site_are_refused(
        client: TestClient, seeded: dict[str, int]) -> None:
    page = f"/ui/divergences/{seeded['data_loss']}"
    form = {"to": "confirmed", "author": "mallory"}
    # No cookie yet: nothing to match.
    assert _post(client, f"{page}/transition", form).status_code == 403
    csrf = _csrf(client, page)
    assert _post(client, f"{page}/transition", form).status_code == 403
    assert _post(client, f"{page}/transition", {**form, "csrf": "0" * 64}).status_code == 403
    r = _post(client, f"{page}/transition", {**form, "csrf": csrf}, origin="https://evil.example")
    assert r.status_code == 403 and "another site" in r.text
    r = client.post(f"{page}/transition", json={**form, "csrf": csrf})
    assert r.status_code == 422 and "Content-Type" in r.text
    assert client.get(f"/divergences/{seeded['data_loss']}/history").json()["events"] == []
    # The cookies are kept from other sites' requests.
    cookie = client.get(page).headers.get("set-cookie") or ""
    assert cookie == "" or "samesite=strict" in cookie.lower()


def test_with_a_write_token_writes_need_a_session_from_the_sign_in_form(
        locked: TestClient, seeded: dict[str, int]) -> None:
    page = f"/ui/divergences/{seeded['data_loss']}"
    form = {"to": "confirmed", "author": "alice"}
    csrf = _csrf(locked, page)
    r = _post(locked, f"{page}/transition", {**form, "csrf": csrf})
    assert r.status_code == 401 and "sign in first" in r.text
    csrf = _csrf(locked, "/ui/signin")
    r = _post(locked, "/ui/signin", {"csrf": csrf, "token": "guess", "next": page})
    assert r.status_code == 401 and "not the write token" in r.text
    # A next page elsewhere is not followed (no open redirect).
    r = _post(locked, "/ui/signin", {"csrf": csrf, "token": TOKEN, "next": "https://evil.example/"})
    assert (r.status_code, r.headers["location"]) == (303, "/ui/divergences")
    set_cookie = r.headers["set-cookie"].lower()
    assert "foliodiff_session=" in set_cookie and "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    r = _post(locked, f"{page}/transition", {**form, "csrf": csrf})
    assert r.status_code == 303
    # The API itself still wants its bearer token: the session is the pages'.
    assert locked.post(f"/divergences/{seeded['crash']}/notes",
                       json={"text": "x", "author": "a"}).status_code == 401
    r = _post(locked, "/ui/signout", {"csrf": csrf})
    assert r.status_code == 303
    r = _post(locked, f"{page}/note", {"csrf": csrf, "author": "alice", "text": "after"})
    assert r.status_code == 401


def test_a_replay_button_queues_the_replay_and_the_page_answers_before_it_runs(
        client: TestClient, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    started, release, done = threading.Event(), threading.Event(), threading.Event()
    ran: list[tuple[int, str, str | None, str]] = []

    def slow_replay(store: Store, divergence_id: int, author: str, engines: str | None) -> None:
        started.set()
        assert release.wait(30)
        ran.append((divergence_id, author, engines, threading.current_thread().name))
        done.set()

    monkeypatch.setattr(jobs, "replay", slow_replay)
    did = seeded["data_loss"]
    page = f"/ui/divergences/{did}"
    csrf = _csrf(client, page)
    form = {"csrf": csrf, "author": "alice", "engines": "v6.14,v6.15"}
    r = _post(client, f"{page}/replay", form)
    assert (r.status_code, r.headers["location"]) == (303, f"{page}?queued=replay")
    assert started.wait(10) and not done.is_set()      # answered while the replay runs
    assert "replay queued or running" in client.get(page).text
    assert _post(client, f"{page}/replay", form).headers["location"].endswith(
        "queued=replay-already")
    release.set()
    assert done.wait(10)
    assert ran == [(did, "alice", "v6.14,v6.15", ran[0][3])]
    assert ran[0][3].startswith("foliodiff-page-job")
    # A bad pair is refused at once, not queued to fail later.
    r = _post(client, f"{page}/replay", {**form, "engines": "v6.14,nope"})
    assert r.status_code == 422 and "<code>engines</code>" in r.text


def test_a_job_that_fails_leaves_a_note_saying_why(client: TestClient, seeded: dict[str, int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    finished = threading.Event()

    def broken(store: Store, divergence_id: int) -> None:
        try:
            raise FoliodiffError("the plugin's source changed")
        finally:
            finished.set()

    monkeypatch.setattr(jobs, "bisect_stored", broken)
    did = seeded["crash"]
    page = f"/ui/divergences/{did}"
    r = _post(client, f"{page}/bisect", {"csrf": _csrf(client, page), "author": "alice"})
    assert r.headers["location"] == f"{page}?queued=bisect"
    assert finished.wait(10)
    for _ in range(100):
        notes = client.get(f"/divergences/{did}/history").json()["notes"]
        if notes:
            break
        threading.Event().wait(0.05)
    assert [n["text"] for n in notes] == [
        "bisection asked from the dashboard failed: the plugin's source changed"]


def test_a_real_kernel_button_queues_a_conformance_job_and_shows_results(
        url: str, seeded: dict[str, int]) -> None:
    """The form queues a job for a catalogue kernel (no boot in the request: jobs are
    off here), refuses any other name by field, and the page lists stored results."""
    did = seeded["data_loss"]
    page = f"/ui/divergences/{did}"
    app = create_app(Settings(db_url=url, conform_jobs=False))
    with TestClient(app, follow_redirects=False) as client:
        assert "Not run on a real kernel yet" in client.get(page).text
        csrf = _csrf(client, page)
        r = _post(client, f"{page}/conform", {"csrf": csrf, "author": "alice", "kernel": "deb-6.16"})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?queued=conform")
        assert "A real-kernel run queued" in client.get(r.headers["location"]).text
        r = _post(client, f"{page}/conform", {"csrf": csrf, "author": "alice",
                                              "kernel": "/boot/vmlinuz"})
        assert r.status_code == 422 and "<code>kernel</code>" in r.text
        assert client.get(f"{page}?queued=whatever").status_code == 200
        with Store.open(url) as store:
            (job,) = [store.get_conformance_job(1)]
            assert (job.divergence_id, job.kernels, job.status.value) == (did, ["deb-6.16"], "queued")
            store.add_conformance([ConformanceRecord(
                scenario=f"divergence-{did}", program='{"version": 2}', kernel="deb-6.16",
                kernel_version="6.16.12-1", package="linux-image", uname="6.16.12",
                engine="v6.16", verdict=Verdict.EQUAL,
                sides={"v5.17": {"verdict": "different"}, "v6.15": {"verdict": "equal"}})],
                divergence_id=did, job_id=job.id)
        text = client.get(page).text
        assert "6.16.12-1" in text and "Not run on a real kernel yet" not in text
