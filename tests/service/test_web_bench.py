"""The page benchmark (``python3 -m service.web.bench``) runs, on a small store.

Its figures are not checked here (a shared CI machine is no place to time
anything): only that it fills its store, requests every page and reports
each page's server time.
"""

from __future__ import annotations

from service.web.bench import DAY_OF_SNAPSHOTS, bench_pages


def test_the_page_benchmark_times_every_page(capsys) -> None:
    result = bench_pages(n=120, requests=10)
    assert result["divergences"] == 120 and result["snapshots"] == DAY_OF_SNAPSHOTS
    pages = {r["page"]: r for r in result["pages"]}
    assert {"divergences (first page)", "divergence", "campaign (17,280 snapshots)",
            "corpus", "campaigns"} <= set(pages)
    for row in pages.values():
        assert row["requests"] == 10 and 0 < row["p50_ms"] <= row["max_ms"]
    assert "p99" in capsys.readouterr().out
