"""The dashboard in a real headless Chromium against a real uvicorn server.

Every page loads and renders without a console error (a Content-Security-
Policy violation is one); a triager signs in with the write token, moves a
divergence to confirmed, notes it and queues a replay, and sees each in
its history; the campaign page draws its plots (canvases with ink on them);
/docs and /redoc render from the package's own assets.  Every request any
page makes goes to the server on 127.0.0.1.  See conftest.py for the server,
the store and where the screenshots go.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest


class Recorder:
    """Every request a page made, and every console error and page error it logged."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def foreign(self, port: int) -> list[str]:
        """The requests that went anywhere but this server (data: URLs are no request)."""
        return [u for u in self.requests if not u.startswith(("data:", "blob:"))
                and (urlsplit(u).hostname, urlsplit(u).port) != ("127.0.0.1", port)]


@pytest.fixture(scope="module")
def session(browser: Any, server: dict[str, Any]) -> Iterator[tuple[Any, Recorder]]:
    """One browser context (its cookies) and page for the module, recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    recorder = Recorder()
    recorder.attach(page)
    yield page, recorder
    context.close()
    assert recorder.foreign(server["port"]) == [], "requests to another host"
    assert recorder.errors == []


def _shot(page: Any, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_the_divergence_list_loads_filters_and_pages(session: tuple[Any, Recorder],
                                                    server: dict[str, Any],
                                                    screenshots: Path) -> None:
    page, recorder = session
    page.goto(server["base"] + "/")
    assert page.url.endswith("/ui/divergences")
    rows = page.locator("#divergences tbody tr")
    assert rows.count() == 4 and page.inner_text("#total") == "4"
    dup = server["ids"]["duplicate"]
    assert "dup of #" in page.inner_text(f"#divergences tbody tr:has(a[href$='/{dup}'])")
    assert "+1 dup" in page.inner_text("#divergences")
    _shot(page, screenshots, "01-divergences")
    page.select_option("select[name=kind]", "crash")
    page.click("#filters button[type=submit]")
    assert rows.count() == 1 and "crash" in rows.first.inner_text()
    page.goto(server["base"] + "/ui/divergences?limit=2&sort=id")
    assert rows.count() == 2
    page.click("#next")
    assert rows.count() == 2 and "offset=2" in page.url
    assert recorder.errors == []


def test_a_triage_transition_a_note_and_a_replay_show_up_in_the_history(
        session: tuple[Any, Recorder], server: dict[str, Any], screenshots: Path) -> None:
    page, recorder = session
    did = server["ids"]["data_loss"]
    page.goto(f"{server['base']}/ui/divergences/{did}")
    assert page.inner_text("#status") == "new"
    assert page.locator("table.sides tr.differs").count() >= 1
    assert page.locator("#parting-op").count() == 1
    _shot(page, screenshots, "02-divergence")

    # Writes need the write token: without a session the page refuses (401) and says so.
    page.fill("#transition input[name=author]", "alice")
    page.click("#transition button[value=confirmed]")
    assert "sign in first" in page.inner_text("#error")

    page.goto(f"{server['base']}/ui/signin?next=/ui/divergences/{did}")
    page.fill("input[name=token]", "wrong")
    page.click("form button[type=submit]")
    assert "not the write token" in page.inner_text("#error")
    # The two refusals were 401 answers, which the console reports as such.
    assert [e for e in recorder.errors if "401" not in e] == []
    recorder.errors.clear()
    page.fill("input[name=token]", server["token"])
    page.click("form button[type=submit]")
    assert page.url.endswith(f"/ui/divergences/{did}")

    page.fill("#transition input[name=author]", "alice")
    page.fill("#transition textarea[name=note]", "reproduced on a real 6.14")
    page.click("#transition button[value=confirmed]")
    assert page.inner_text("#status") == "confirmed"
    history = page.inner_text("#history")
    assert "alice" in history and "new → confirmed" in history
    assert "reproduced on a real 6.14" in history

    page.fill("#note textarea[name=text]", "DMA completes before the unpin")
    page.click("#note button[type=submit]")
    assert "alice noted: DMA completes before the unpin" in page.inner_text("#history")

    # The author is remembered; the replay runs in the background, not in the request.
    assert page.input_value("#replay input[name=author]") == "alice"
    page.click("#replay button[type=submit]")
    assert "Replay queued" in page.inner_text("#jobs")
    deadline = time.monotonic() + 60
    while "replay on v5.17,v6.14: still reproduces" not in page.inner_text("#history"):
        assert time.monotonic() < deadline, "the replay's note never appeared"
        time.sleep(0.3)
        page.reload()
    _shot(page, screenshots, "03-divergence-triaged")
    assert recorder.errors == []


def test_the_campaign_pages_draw_their_plots(session: tuple[Any, Recorder],
                                            server: dict[str, Any], screenshots: Path) -> None:
    page, recorder = session
    page.goto(server["base"] + "/ui/campaigns")
    page.click(f"#campaigns a[href$='/campaigns/{server['ids']['campaign']}']")
    page.wait_for_selector("[data-plot][data-drawn='1'] canvas")
    plots = page.locator("[data-plot]")
    assert plots.count() == 4
    for name in ("exec_per_s", "coverage", "corpus_size", "by_kind"):
        # A canvas of some size with ink on it: uPlot drew the series.
        inked = page.evaluate("""(id) => {
            const c = document.querySelector('#plot-' + id + ' canvas');
            if (!c || c.width < 100 || c.height < 100) return 0;
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
            return n;
        }""", name)
        assert inked > 500, name
    assert page.locator("#intended tbody tr").count() >= 1
    _shot(page, screenshots, "04-campaign")
    assert recorder.errors == []


def test_the_corpus_page_lists_expectations(session: tuple[Any, Recorder],
                                           server: dict[str, Any], screenshots: Path) -> None:
    page, recorder = session
    page.goto(server["base"] + "/ui/corpus")
    assert page.locator("#corpus tbody tr").count() >= 40
    row = page.locator("#corpus-h5-dma-into-lazyfree")
    assert "v5.17" in page.inner_text("#corpus thead") and row.count() == 1
    row.locator("summary").click()
    assert "verdict=" in row.inner_text()
    # The newest result of each scenario on each real kernel, beside the expectations.
    assert "deb-6.12 different (1 field)" in page.inner_text("#corpus-conform-h5-dma-pageout")
    assert "deb-6.16+io_uring equal" in page.inner_text("#corpus-h9-pmd-thp-pinned")
    assert "divergence-1" in page.inner_text("#other-conformance")
    _shot(page, screenshots, "05-corpus")
    assert recorder.errors == []


@pytest.mark.parametrize("path, ready", [("/docs", ".swagger-ui .opblock"),
                                         ("/redoc", "h1:has-text(\"foliodiff triage API\")")])
def test_the_api_documents_render_offline(session: tuple[Any, Recorder], server: dict[str, Any],
                                          screenshots: Path, path: str, ready: str) -> None:
    page, recorder = session
    page.goto(server["base"] + path)
    page.wait_for_selector(ready)
    _shot(page, screenshots, "06" + path.replace("/", "-"))
    assert recorder.foreign(server["port"]) == []
