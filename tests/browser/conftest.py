"""A real server and a real browser for the dashboard's tests.

The server is the API's app (dashboard included) under uvicorn on a free
loopback port, over a SQLite store filled through the Store with the
records of real differential runs of corpus programs, duplicates among them,
and a campaign with stats snapshots and intended counts; a write token is
set, so that the pages' writes go through the sign-in form.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by
Playwright with ``executable_path`` pointing at it: Playwright's own browser
download needs a host this machine cannot reach.  Without chromium or
Playwright the tests are skipped, saying why; under ``CI=true`` they fail.

Screenshots go to ``$FOLIODIFF_SCREENSHOTS`` when it is set, else to a
temporary directory; its path is printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from fuzz.records import DivergenceRecord, records_from_report
from fuzz.sources import CoverageUnit
from service.api import Settings, create_app
from service.conform.verdict import Verdict
from service.store import ConformanceRecord, Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
TOKEN = "browser-s3cret"
SCREENSHOTS_VAR = "FOLIODIFF_SCREENSHOTS"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def _records(name: str, a: str, b: str) -> list[DivergenceRecord]:
    program = load_any(str(CORPUS / name))
    return records_from_report(differential(program, a, b), program)


def _variant(rec: DivergenceRecord, i: int) -> DivergenceRecord:
    """@rec as if found as a different bug @i, with a program of its own."""
    signature = f"{rec.signature}|v{i}"
    return dataclasses.replace(rec, signature=signature,
                               signature_id=hashlib.sha1(signature.encode()).hexdigest()[:16],
                               original_program=rec.original_program[:-1] + f',"_v":{i}}}')


def fill(url: str) -> dict[str, Any]:
    """Store divergences (a data loss seen three times, two variants of it, one of
    them a duplicate, a crash), a campaign with 120 stats snapshots and
    intended counts, and conformance results of two corpus scenarios and of
    a divergence's program.  Return: the ids."""
    (data_loss,) = _records("h5-dma-into-lazyfree.json", "v5.17", "v6.14")
    (crash,) = _records("h12-mremap-straddle.json", "v6.14", "v6.15")
    intended = _records("h1-clean-mthp-reclaim.json", "v6.14", "v6.15")
    with Store.open(url) as store:
        campaign = store.create_campaign("v6.14", "v6.15", "random", {"seed": 7})
        ids = store.upsert_divergences([data_loss, data_loss, data_loss, _variant(data_loss, 1),
                                        _variant(data_loss, 2), crash]).ids
        store.upsert_divergences(intended, campaign_id=campaign.id)
        first, dup = ids[data_loss.signature_id], ids[_variant(data_loss, 2).signature_id]
        store.transition(dup, "duplicate", "same DMA window", "seed", duplicate_of=first)
        for i in range(120):
            store.add_stats_snapshot(campaign.id, 5.0 * i, 900 * i, 180.0 + (i % 7) * 3,
                                     20 + i // 3, {"crash": min(1, i // 30),
                                                   "data_loss": i // 40},
                                     coverage=100 + 4 * i - (i * i) // 60,
                                     coverage_unit=CoverageUnit.FEATURES)
        store.add_conformance([
            _run("h9-pmd-thp-pinned+io_uring", "deb-6.16", Verdict.EQUAL),
            _run("conform-h5-dma-pageout", "deb-6.12", Verdict.DIFFERENT,
                 differences=[{"field": "vmstat.pglazyfreed", "predicted": 0, "observed": 1}]),
            _run("divergence-1", "deb-6.16", Verdict.EQUAL)])
    return {"data_loss": first, "duplicate": dup, "crash": ids[crash.signature_id],
            "campaign": campaign.id}


def _run(scenario: str, kernel: str, verdict: Verdict, **kw: Any) -> ConformanceRecord:
    """A conformance result of @scenario on real kernel @kernel, as `foliodiff conform` keeps it."""
    return ConformanceRecord(scenario=scenario, program='{"version": 2}', kernel=kernel,
                             kernel_version="6.16.12-1", package="linux-image-6.16.12-amd64",
                             uname="6.16.12", engine="v6.16", verdict=verdict, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A uvicorn server of the app on a filled store: its ``base`` URL and ``port``,
    the ``ids`` of what :func:`fill` stored, the write ``token``."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    ids = fill(url)
    port = _free_port()
    app = create_app(Settings(db_url=url, token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield {"base": f"http://127.0.0.1:{port}", "port": port, "ids": ids, "token": TOKEN}
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, under Playwright."""
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("no chromium on PATH (Debian's package `chromium`; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests write their screenshots (printed)."""
    named = os.environ.get(SCREENSHOTS_VAR)
    path = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {path}")
    return path
