"""The API and plugin engines: it accepts the plugins its settings name, replays a
finding of one, refuses it when its source changed, and never imports code a request
names (a file path or an unregistered id is a 422).  Both store backends."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

from engine.corpus.entries import load_any
from engine.diff.differential import Classification, differential
from engine.kernels import KERNELS, PLUGINS
from fuzz.records import records_from_report
from service.api import Settings, create_app
from service.store import Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
MINE = """
from engine.kernels import V6_14

class Mine(V6_14):
    VERSION = "mine"
"""


@pytest.fixture(autouse=True)
def _unregister() -> Iterator[None]:
    before = set(KERNELS)
    yield
    for engine in set(KERNELS) - before:
        del KERNELS[engine]
        PLUGINS.pop(engine, None)


def test_a_plugin_of_the_settings_replays_and_a_changed_one_is_refused(
        url: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(MINE)
    spec = f"{path}:Mine"
    app = create_app(Settings(db_url=url, plugins=[spec]))
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"))
    (rec,) = records_from_report(differential(program, "v5.17", "mine"), program)
    assert rec.classification is Classification.UNEXPECTED
    with Store.open(url) as store:
        did = store.upsert_divergences([rec]).ids[rec.signature_id]
    with TestClient(app) as client:
        r = client.post(f"/divergences/{did}/replay", json={"author": "ci"})
        assert r.status_code == 200, r.text
        assert r.json()["reproduces"] and r.json()["report"]["engines"] == ["v5.17", "mine"]
        stored_sha = client.get(f"/divergences/{did}").json()["outcome_b"]["plugin"]["sha256"]
        # The same name, other code: re-registered from the edited file.
        del KERNELS["mine"], PLUGINS["mine"]
        path.write_text(MINE + "# edited\n")
        create_app(Settings(db_url=url, plugins=[spec]))
        new_sha = PLUGINS["mine"].sha256
        r = client.post(f"/divergences/{did}/replay", json={"author": "ci"})
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["field"] == "engines" and stored_sha in body["detail"]
        assert new_sha in body["detail"] and stored_sha != new_sha
        # Nor bisected, nor run on a real kernel, against the other code.
        r = client.post(f"/divergences/{did}/bisect")
        assert r.status_code == 409 and stored_sha in r.json()["detail"], r.text


def test_a_request_naming_a_file_or_an_unregistered_id_is_422_and_imports_nothing(
        url: str, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    path = tmp_path / "evil.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n" + MINE)
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json")).to_dict()
    with TestClient(create_app(Settings(db_url=url))) as client:
        for engines in (f"v6.14,{path}:Mine", "v6.14,mine", f"{path}:Mine,v6.15"):
            r = client.post("/run", json={"program": program, "engines": engines})
            assert r.status_code == 422, r.text
            body = r.json()
            assert body["field"] == "engines" and ("mine" in str(body["value"])
                                                   or "evil.py" in str(body["value"]))
        r = client.get("/divergences", params={"engines": f"v6.14..{tmp_path}/e.py:Mine"})
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "engines"
    assert not marker.exists() and "mine" not in KERNELS
