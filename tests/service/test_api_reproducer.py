"""C reproducers over HTTP: ``/divergences/{id}/reproducer.c`` and ``/corpus``.

Every test runs on both backends (``url`` in conftest.py) with a fresh store
seeded with records of real differential runs: one whose program translates
(conform-h5-dma-pageout, v5.17 against v6.15, an unexpected state divergence)
and one whose program does not (h5-dma-into-lazyfree, reclaim at op 5).  The
exported C is built as a user would build it, with ``cc -static -O1 -Wall``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from engine.corpus.entries import corpus_paths, load_any
from engine.diff.differential import Classification, differential
from fuzz.records import DivergenceRecord, records_from_report
from service.api import Settings, create_app
from service.store import Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
CC = shutil.which("cc")


def _record(name: str, a: str, b: str) -> DivergenceRecord:
    program = load_any(str(CORPUS / name))
    (rec,) = [r for r in records_from_report(differential(program, a, b), program)
              if r.classification is Classification.UNEXPECTED]
    return rec


@pytest.fixture(scope="module")
def records() -> dict[str, DivergenceRecord]:
    return {"translates": _record("conform-h5-dma-pageout.json", "v5.17", "v6.15"),
            "reclaim": _record("h5-dma-into-lazyfree.json", "v5.17", "v6.14")}


@pytest.fixture
def ids(url: str, records: dict[str, DivergenceRecord]) -> dict[str, int]:
    with Store.open(url) as store:
        stored = store.upsert_divergences(list(records.values())).ids
    return {k: stored[r.signature_id] for k, r in records.items()}


@pytest.fixture
def client(url: str, ids: dict[str, int]):
    with TestClient(create_app(Settings(db_url=url))) as c:
        yield c


def _build(source: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    return subprocess.run([CC, "-static", "-O1", "-Wall", "-o", str(tmp_path / name), str(src)],
                          capture_output=True, text=True, check=False)


def _is_c_download(r, filename: str) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "text/x-csrc"
    assert r.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert "FOLIODIFF" in r.text and "int main(" in r.text


# -- stored divergences ---------------------------------------------------------------

@pytest.mark.skipif(CC is None, reason="no cc")
@pytest.mark.parametrize("pin", ["io_uring", None])
def test_stored_divergence_exports_c_that_builds(client, ids, pin, tmp_path):
    query = {"pin": pin} if pin else {}
    r = client.get(f"/divergences/{ids['translates']}/reproducer.c", params=query)
    _is_c_download(r, f"divergence-{ids['translates']}.c")
    assert f"foliodiff reproducer divergence-{ids['translates']}:" in r.text
    assert "pins by io_uring" in r.text
    built = _build(r.text, tmp_path, "repro")
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr


def test_stored_program_that_does_not_translate_is_a_422_naming_the_op(client, ids, records):
    r = client.get(f"/divergences/{ids['reclaim']}/reproducer.c")
    assert r.status_code == 422
    body = r.json()
    program = json.loads(records["reclaim"].original_program)
    assert body["field"] == "ops[5]"
    assert body["value"] == program["ops"][5] and body["value"]["op"] == "reclaim"
    assert body["detail"].startswith("ops[5] {") and "not translatable" in body["detail"]


def test_vmsplice_cannot_express_dma_and_says_which_op(client, ids):
    r = client.get(f"/divergences/{ids['translates']}/reproducer.c", params={"pin": "vmsplice"})
    assert r.status_code == 422
    body = r.json()
    assert body["field"].startswith("ops[") and body["value"]["op"] in ("pin", "dma_write")
    assert "not translatable" in body["detail"]


def test_unknown_divergence_is_a_404_naming_the_id(client):
    r = client.get("/divergences/4242/reproducer.c")
    assert r.status_code == 404
    assert r.json() == {"field": "id", "value": 4242, "detail": "divergence 4242 not found"}


def test_bad_pin_is_a_422_naming_pin_and_value(client, ids):
    r = client.get(f"/divergences/{ids['translates']}/reproducer.c", params={"pin": "splice"})
    assert r.status_code == 422
    body = r.json()
    assert (body["field"], body["value"]) == ("pin", "splice")
    assert "io_uring" in body["detail"] and "vmsplice" in body["detail"]


# -- the corpus ---------------------------------------------------------------------------

def test_corpus_lists_every_program(client):
    body = client.get("/corpus").json()
    names = [item["name"] for item in body["items"]]
    assert names == list(corpus_paths(CORPUS)) and body["total"] == len(names)
    h1 = next(item for item in body["items"] if item["name"] == "h1-clean-mthp-reclaim")
    assert h1["scenario"] and h1["description"]


@pytest.mark.skipif(CC is None, reason="no cc")
def test_corpus_program_exports_c_that_builds(client, tmp_path):
    r = client.get("/corpus/vmsplice-style-extra-ref/reproducer.c", params={"pin": "vmsplice"})
    _is_c_download(r, "vmsplice-style-extra-ref.c")
    assert "pins by vmsplice" in r.text
    built = _build(r.text, tmp_path, "corpus")
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr


def test_corpus_program_that_does_not_translate_is_a_422_naming_the_op(client):
    r = client.get("/corpus/h2-shrinker-ref-between-ptes/reproducer.c")
    assert r.status_code == 422
    body = r.json()
    # The place H2's schedule names: MADV_PAGEOUT between two PTEs.
    assert body["field"] == "ops[3]" and body["value"]["op"] == "madvise"
    assert "schedule preempts it" in body["detail"] and "between_ptes" in body["detail"]


@pytest.mark.parametrize("name", ["nope", "h1-clean-mthp-reclaim.json", "...", "H1-CLEAN-MTHP-RECLAIM"])
def test_unknown_corpus_name_is_a_404_naming_it(client, name):
    r = client.get(f"/corpus/{name}/reproducer.c")
    assert r.status_code == 404
    assert r.json()["field"] == "name" and r.json()["value"] == name


def test_corpus_dir_is_a_setting_and_files_are_read_as_they_are(url, tmp_path):
    shutil.copy(CORPUS / "h4-small-redirty.json", tmp_path / "mine.json")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with TestClient(create_app(Settings(db_url=url, corpus_dir=tmp_path))) as c:
        items = c.get("/corpus").json()["items"]
        assert [i["name"] for i in items] == ["broken", "list", "mine"]
        assert items[0] == {"name": "broken", "scenario": None, "description": None}
        assert c.get("/corpus/mine/reproducer.c").status_code == 200
        r = c.get("/corpus/broken/reproducer.c")
        assert r.status_code == 422 and r.json()["field"] == "program"
        assert c.get("/corpus/list/reproducer.c").status_code == 422
        assert c.get("/corpus/h1-clean-mthp-reclaim/reproducer.c").status_code == 404


# -- no input gives a 500 ------------------------------------------------------------------

WEIRD = ["0", "-1", "2147483648", "99999999999999999999", "1e3", "0x10", " 1", "1.0", "abc",
         "%00", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "x" * 300, "%F0%9F%90%9B", "null"]
PINS = ["", "IO_URING", "io_uring ", "vmsplice,io_uring", "null", "%00", "p" * 300, "0"]


@pytest.mark.parametrize("ident", WEIRD)
def test_weird_ids_and_names_are_4xx_with_a_field(client, ids, ident):
    for path in (f"/divergences/{ident}/reproducer.c", f"/corpus/{ident}/reproducer.c"):
        r = client.get(path)
        if r.status_code == 200:
            # pydantic's lax int parsing: " 1" and "1.0" name divergence 1
            assert ident.strip() in ("1", "1.0") and path.startswith("/divergences/")
            continue
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert r.json()["field"] in ("divergence_id", "id", "name", "request")


@pytest.mark.parametrize("pin", PINS)
def test_weird_pins_are_422_naming_pin(client, ids, pin):
    for path in (f"/divergences/{ids['translates']}/reproducer.c",
                 "/corpus/h1-clean-mthp-reclaim/reproducer.c"):
        r = client.get(f"{path}?pin={pin}")
        assert r.status_code == 422, (path, pin, r.text)
        assert r.json()["field"] == "pin"


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ident=st.one_of(st.integers(min_value=-(1 << 40), max_value=1 << 40).map(str),
                       st.text(max_size=40)),
       pin=st.one_of(st.none(), st.sampled_from(["io_uring", "vmsplice"]), st.text(max_size=20)))
def test_fuzzed_params_never_give_a_server_error(client, ids, ident, pin):
    params = {} if pin is None else {"pin": pin}
    segment = quote(ident, safe="")
    for path in (f"/divergences/{segment}/reproducer.c", f"/corpus/{segment}/reproducer.c"):
        r = client.get(path, params=params)   # the test client raises on a server error
        assert r.status_code in (200, 400, 404, 405, 422), (path, params, r.status_code, r.text)
