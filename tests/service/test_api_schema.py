"""schemathesis over the API's OpenAPI schema: no 5xx, no undocumented status code.

Generated requests (valid and invalid bodies, parameters and paths) go to
the ASGI app in-process, on a fresh seeded store of each backend (``url``
in conftest.py: a SQLite file and a PostgreSQL database); the example budget keeps
the whole run within a few seconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import status_code_conformance

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from fuzz.records import records_from_report
from service.api import Settings, create_app
from service.store import Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"


@pytest.fixture
def api_schema(url: str):
    program = load_any(str(CORPUS / "h12-mremap-straddle.json"))
    with Store.open(url) as store:
        store.upsert_divergences(records_from_report(differential(program, "v6.14", "v6.15"),
                                                     program))
        store.create_campaign("v6.14", "v6.15", "random")
    app = create_app(Settings(db_url=url))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    store = app.state.store
    if store is not None:
        store.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_undocumented_status(case) -> None:
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance])


def test_c_reproducer_routes_are_documented_as_c_source(tmp_path: Path) -> None:
    paths = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'store.db'}")).openapi()["paths"]
    for path in ("/divergences/{divergence_id}/reproducer.c", "/corpus/{name}/reproducer.c"):
        responses = paths[path]["get"]["responses"]
        assert list(responses["200"]["content"]) == ["text/x-csrc"], path
        assert {"404", "422"} <= set(responses), path
        params = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        assert params["pin"]["in"] == "query"
    assert "/corpus" in paths
