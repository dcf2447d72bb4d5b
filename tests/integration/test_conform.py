"""The conformance suite on real Debian kernels, and C reproducer export from the CLI.

``foliodiff conform`` boots Debian's 6.12 and 6.16 under qemu once each with
every scenario of :data:`engine.realobs.CONFORMANCE` and compares each with
the kernel's model: every scenario must be equal on both kernels.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest
from typer.testing import CliRunner

from engine.realobs import CONFORMANCE
from service.cli import app

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"


@pytest.fixture(scope="module")
def conformance(tmp_path_factory) -> dict:
    if shutil.which("qemu-system-x86_64") is None:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but qemu-system-x86_64 is not installed", pytrace=False)
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    out = tmp_path_factory.mktemp("conform") / "conform.json"
    res = CliRunner().invoke(app, ["conform", "--kernels", "deb-6.12,deb-6.16", "--out", str(out)])
    assert res.exit_code in (0, 1), res.output
    return {k["kernel"]: k for k in json.loads(out.read_text())["kernels"]}


@pytest.mark.realkernel
@pytest.mark.parametrize("kernel, engine", [("deb-6.12", "v6.12"), ("deb-6.16", "v6.16")])
def test_every_scenario_conforms(conformance: dict, kernel: str, engine: str) -> None:
    k = conformance[kernel]
    assert k["boot"] == "ok" and k["engine"] == engine
    assert len(k["results"]) == len(CONFORMANCE)
    differing = {r["scenario"]: r["differences"] for r in k["results"] if r["verdict"] != "equal"}
    assert differing == {}


@pytest.mark.realkernel
def test_the_clean_pmd_thp_split_of_debian_612_is_modelled(conformance: dict) -> None:
    """Section J: 6.12.117 splits a clean lazyfree PMD THP; v6.12 predicts it, v6.16 does not split."""
    for kernel in ("deb-6.12", "deb-6.16"):
        r = next(r for r in conformance[kernel]["results"]
                 if r["scenario"] == "conform-h10-pmd-thp-clean")
        assert r["verdict"] == "equal", (kernel, r)


def test_reproducer_exports_c_and_names_the_untranslatable_op(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["reproducer", str(CORPUS / "h8-pmd-thp-redirty.json"),
                              "--out", str(tmp_path / "h8.c")])
    assert res.exit_code == 0, res.output
    assert "int main" in (tmp_path / "h8.c").read_text()
    res = runner.invoke(app, ["reproducer", str(CORPUS / "h2-shrinker-ref-between-ptes.json")])
    assert res.exit_code != 0
    assert "ops[3]" in res.output and "not translatable" in res.output
