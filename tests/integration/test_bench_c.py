"""foliodiff bench-c runs end to end on a small workload (a smoke test, nothing timed)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bench_c_writes_its_figures(tmp_path):
    out = tmp_path / "bench-c.json"
    r = subprocess.run([sys.executable, "-m", "service.cli", "bench-c", "--repeat", "1",
                        "--mthp-mib", "2", "--pmd-thps", "2", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["a.mthp_folios"] == 32 and res["b.pmd_thps"] == 2
    assert res["a.split_deferred_v6.14-c"] == 32 and res["a.split_deferred_v6.15-c"] == 0
    assert res["b.thp_split_pmd_v6.14-c"] == 2 and res["b.thp_split_pmd_v6.15-c"] == 0
    assert res["mthp.v6.15-c.still_mapped"] == 0 and res["pmd.v6.15-c.still_mapped"] == 2
    assert set(res["timed"]) == {"unmap", "leg", "replay"}
