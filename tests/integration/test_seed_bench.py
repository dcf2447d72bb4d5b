"""``foliodiff seed-bench`` on real Debian kernels: the seed series' counters, and the model's.

Boots Debian's 6.12 (before the series) and 6.16 (after it) once each under
qemu with the changelogs' workloads at full size, two runs each: 128 MiB of
64 KiB mTHPs (3/4) and 64 redirtied PMD-mapped THPs (4/4).  The counters
are exact: one deferred split per mTHP and one PMD split per THP before the
series, none after; and each kernel's model must predict the same.  About
20 s on two shared cores once the kernels are cached.

Without qemu the test is skipped, saying so; in CI (``CI`` set to true) it
fails instead, since CI installs it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from service.cli import app

pytestmark = pytest.mark.realkernel

#: 128 MiB of 64 KiB folios, and the PMD THPs of the 4/4 workload (bench-c's sizes).
MTHP_FOLIOS, PMD_THPS = 2048, 64


@pytest.fixture(scope="module")
def seed_bench(tmp_path_factory) -> tuple[int, str, dict]:
    if shutil.which("qemu-system-x86_64") is None:
        message = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("seed-bench") / "seed.json"
    res = CliRunner().invoke(app, ["seed-bench", "--kernels", "deb-6.12,deb-6.16",
                                   "--repeat", "2", "--timeout", "300", "--out", str(out)])
    return res.exit_code, res.output, json.loads(out.read_text()) if out.exists() else {}


def _rows(data: dict, workload: str) -> dict[str, dict]:
    return {r["kernel"]: r for r in data["workloads"][workload]["rows"]}


def test_both_kernels_boot_and_the_command_exits_0(seed_bench) -> None:
    code, output, data = seed_bench
    assert [(k["kernel"], k["engine"], k["boot"]) for k in data["kernels"]] == [
        ("deb-6.12", "v6.12", "ok"), ("deb-6.16", "v6.16", "ok")], output
    assert code == 0, output
    text = " ".join(output.split())
    assert "TCG" in text and "indicative only" in text
    assert data["complete"] and data["counters_match"]


def test_3_4_split_deferred_once_per_mthp_before_the_series_never_after(seed_bench) -> None:
    rows = _rows(seed_bench[2], "3/4")
    old, new = rows["deb-6.12"], rows["deb-6.16"]
    assert old["real"]["folios"] == new["real"]["folios"] == MTHP_FOLIOS
    assert (old["real"]["split_deferred"], new["real"]["split_deferred"]) == (MTHP_FOLIOS, 0)
    assert old["real"]["pglazyfreed"] == new["real"]["pglazyfreed"] == MTHP_FOLIOS * 16
    for r in (old, new):
        assert r["model"]["split_deferred"] == r["real"]["split_deferred"], r
        assert r["model"]["pglazyfreed"] == r["real"]["pglazyfreed"], r
        assert r["model"]["folios"] == r["real"]["folios"]
        assert r["counter_matches"] is True
        assert r["real"]["runs"] == 2 and r["real"]["pageout_ms"] > 0 and r["model"]["unmap_ms"] > 0
    assert old["real_ratio"] == 1.0 and new["real_ratio"] > 0 and new["model_ratio"] > 0


def test_4_4_thp_split_pmd_once_per_thp_before_the_series_never_after(seed_bench) -> None:
    rows = _rows(seed_bench[2], "4/4")
    old, new = rows["deb-6.12"], rows["deb-6.16"]
    assert old["real"]["folios"] == new["real"]["folios"] == PMD_THPS
    assert (old["real"]["thp_split_pmd"], new["real"]["thp_split_pmd"]) == (PMD_THPS, 0)
    for r in (old, new):
        assert r["model"]["thp_split_pmd"] == r["real"]["thp_split_pmd"], r
        assert r["counter_matches"] is True
