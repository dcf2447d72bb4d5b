"""``foliodiff seed-bench`` without qemu: the model's side, and what the command makes of boots.

The model side runs for real on small workloads.  The boots are replaced
(``run_suite``): by a junk kernel's real result, which must print its boot
status and no figures, or by an OK boot whose figures the test chooses, to
show that a counter the model does not predict exits 1 and one it does exits 0.
The real kernels are booted in tests/integration/test_seed_bench.py.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.program.format import Madvise, Write
from service.cli import app
from service.conform import (
    KernelImage,
    SeedFigure,
    SeedWorkload,
    SuiteResult,
    seedbench,
)
from service.conform.console import BootStatus
from service.conform.seedbench import model_figure, workload_program

SMALL = {"mthp_mib": 1, "pmd_thps": 2}


def test_workload_programs_are_the_c_programs():
    mthp = workload_program(SeedWorkload.MTHP, **SMALL)
    assert [o.op for o in mthp.ops] == ["mmap", "write", "madvise", "madvise"]
    assert (mthp.ops[0].pages, mthp.ops[0].order) == (256, 4)
    pmd = workload_program(SeedWorkload.PMD, **SMALL)
    assert (pmd.ops[0].pages, pmd.ops[0].order) == (1024, 9)
    redirty = [o for o in pmd.ops[3:-1] if isinstance(o, Write)]
    assert [(o.addr - pmd.ops[0].addr, o.pages) for o in redirty] == [(0, 1), (2 << 20, 1)]
    for p in (mthp, pmd):
        assert isinstance(p.ops[-1], Madvise) and p.ops[-1].advice.value == "MADV_PAGEOUT"
        assert p.ops[-1].pages == p.ops[0].pages


@pytest.mark.parametrize("engine, mthp_counter, pmd_counter", [("v6.12", 16, 2), ("v6.16", 0, 0)])
def test_model_predicts_the_series_counters(engine, mthp_counter, pmd_counter):
    mthp = model_figure(engine, SeedWorkload.MTHP, repeat=2, **SMALL)
    assert (mthp.folios, mthp.counter, mthp.pglazyfreed) == (16, mthp_counter, 256)
    pmd = model_figure(engine, SeedWorkload.PMD, repeat=2, **SMALL)
    # a redirtied THP is not freed, split or not
    assert (pmd.folios, pmd.counter, pmd.pglazyfreed) == (2, pmd_counter, 0)
    assert mthp.unmap_ms > 0 and pmd.unmap_ms > 0 and mthp.runs == 2
    assert pmd.to_dict()["thp_split_pmd"] == pmd_counter


def _figure(kernel, engine, workload, counter, ms) -> SeedFigure:
    folios = 16 if workload is SeedWorkload.MTHP else 2
    return SeedFigure(kernel=kernel, engine=engine, package_version="1", uname="u",
                      workload=workload, runs=1, folios=folios, counter=counter,
                      pglazyfreed=256 if workload is SeedWorkload.MTHP else 0,
                      pageout_ms=ms, pageout_cpu_ms=ms)


def _fake_boots(monkeypatch, counters: dict[str, tuple[int, int]], junk: Path | None = None):
    """Boots that give ``counters[kernel]`` = (3/4 counter, 4/4 counter); ``junk`` for none."""
    def run_suite(spec, sources, timeout):
        assert set(sources) == {w.test for w in SeedWorkload}
        if spec.name not in counters:
            return SuiteResult.read(KernelImage.from_file(junk), "", list(sources),
                                    qemu_stderr="qemu: linux kernel too old to load a ram disk")
        return types.SimpleNamespace(spec=spec, name=spec.name, status=BootStatus.OK,
                                     image=types.SimpleNamespace(sha256=""),
                                     package="p", package_version="1", uname="u", seconds=1.0)

    def seed_figures(suite):
        if suite.status is not BootStatus.OK:
            suite.require_ok()
        mthp, pmd = counters[suite.name]
        old = suite.name == "deb-6.12"
        return [_figure(suite.name, suite.spec.engine, SeedWorkload.MTHP, mthp, 4.0 if old else 2.0),
                _figure(suite.name, suite.spec.engine, SeedWorkload.PMD, pmd, 1.0 if old else 0.1)]

    monkeypatch.setattr(seedbench, "run_suite", run_suite)
    monkeypatch.setattr(seedbench, "seed_figures", seed_figures)


def _seed_bench(tmp_path, *extra):
    out = tmp_path / "seed.json"
    res = CliRunner().invoke(app, ["seed-bench", "--repeat", "1", "--mthp-mib", "1",
                                   "--pmd-thps", "2", "--out", str(out), *extra])
    return res, (json.loads(out.read_text()) if out.exists() else None)


def test_counters_as_predicted_exit_0_with_both_sides_and_ratios(monkeypatch, tmp_path):
    _fake_boots(monkeypatch, {"deb-6.12": (16, 2), "deb-6.16": (0, 0)})
    res, data = _seed_bench(tmp_path)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "TCG" in text and "indicative only" in text
    assert data["counters_match"] and data["complete"]
    rows = data["workloads"]["3/4"]["rows"]
    assert [(r["kernel"], r["real"]["split_deferred"], r["model"]["split_deferred"])
            for r in rows] == [("deb-6.12", 16, 16), ("deb-6.16", 0, 0)]
    assert [r["real_ratio"] for r in rows] == [1.0, 2.0]
    assert rows[1]["model_ratio"] == pytest.approx(
        rows[0]["model"]["unmap_ms"] / rows[1]["model"]["unmap_ms"], rel=1e-2)
    pmd = data["workloads"]["4/4"]["rows"]
    assert [r["model"]["thp_split_pmd"] for r in pmd] == [2, 0]


def test_a_counter_the_model_does_not_predict_exits_1_naming_it(monkeypatch, tmp_path):
    _fake_boots(monkeypatch, {"deb-6.12": (16, 2), "deb-6.16": (0, 1)})
    res, data = _seed_bench(tmp_path)
    assert res.exit_code == 1, res.output
    assert not data["counters_match"]
    assert "deb-6.16 4/4: thp_split_pmd is 1, the model (v6.16) predicts 0" in " ".join(
        res.output.split())


def test_a_kernel_that_does_not_boot_shows_its_status_not_figures(monkeypatch, tmp_path):
    junk = tmp_path / "vmlinuz-junk"
    junk.write_bytes(b"junk")
    _fake_boots(monkeypatch, {"deb-6.12": (16, 2)}, junk=junk)
    res, data = _seed_bench(tmp_path)
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "deb-6.16" in text and "boot no-boot" in text
    assert "deb-6.16: no figures" in text and "linux kernel too old" in text
    new = next(k for k in data["kernels"] if k["kernel"] == "deb-6.16")
    assert new["boot"] == "no-boot" and "no-boot" in new["detail"]
    assert [r["kernel"] for r in data["workloads"]["3/4"]["rows"]] == ["deb-6.12"]
    assert data["counters_match"] and not data["complete"]


def test_bad_input_exits_2_naming_it(tmp_path):
    res, _ = _seed_bench(tmp_path, "--kernels", "deb-6.12,deb-9.9")
    assert res.exit_code == 2 and "deb-9.9" in res.output
    res = CliRunner().invoke(app, ["seed-bench", "--mthp-mib", "512"])
    assert res.exit_code == 2 and "--mthp-mib" in res.output
