"""A real campaign process: killed with SIGKILL it loses no finding it reported stored, and
resumes; a harness error is kept apart from the findings and said loudly.

Runs ``python -m service.cli fuzz`` (the ``foliodiff fuzz`` command) on a
SQLite file: a random-input campaign on v5.17 against v6.14 from the seed
corpus, whose seeds show v5.17's DMA data loss within seconds (from nothing,
random input may take minutes now that the oracles raise no false alarm).  The test
waits for the first "stored" line, kills the whole process group with SIGKILL, and
checks the store holds every finding the campaign printed, then resumes the campaign.  Another campaign
runs a model broken on purpose (an IndexError in MADV_FREE's walk).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.corpus.upgrade import upgrade_program
from engine.diff.differential import differential
from engine.program.format import parse_program
from fuzz.codec import decode
from fuzz.sources import MAX_FUZZ_PAGES, Fuzzer, mapped_pages
from service.campaign import Campaign, CampaignConfig, create
from service.models import CampaignStatus
from service.store import Store

ROOT = Path(__file__).resolve().parents[2]
STORED = re.compile(r"stored #(\d+) (\w+): (\S+)")

# `foliodiff` whose MADV_FREE page-table walk raises IndexError on every engine.
# Patched at import, outside the main guard, so that the campaign's spawned
# workers (which import this file again) run the broken model too.
BROKEN = """
from engine.mm.madvise import MadviseMixin

def madvise_free_range(self, vma, addr, end):
    raise IndexError("list index out of range")
    yield

MadviseMixin.madvise_free_range = madvise_free_range

if __name__ == "__main__":
    import sys
    import service.cli
    sys.argv[0] = "foliodiff"
    service.cli.main()
"""
# Corpus H2 as format 1 stored it: a schedule of global steps.
H2_V1 = json.loads((ROOT / "tests" / "data" / "format1" / "h2.json").read_text())


def _fuzz(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "service.cli", "fuzz", "--no-live", *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"},
                            start_new_session=True)


def test_sigkill_loses_no_stored_finding_and_the_campaign_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _fuzz("--fuzzer", "random", "--engines", "v5.17,v6.14", "--time", "300",
                 "--db", url, "--corpus", str(tmp_path / "corpus"),
                 "--seeds", str(ROOT / "corpus"), cwd=tmp_path)
    reported: dict[int, str] = {}
    deadline = time.monotonic() + 240
    assert proc.stdout is not None
    for line in proc.stdout:
        m = STORED.search(line)
        if m:
            reported[int(m.group(1))] = m.group(3)
            break
        assert time.monotonic() < deadline, "no finding stored in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    with Store.open(url) as store:
        for divergence_id, signature in reported.items():
            d = store.get_divergence(divergence_id)
            assert d.signature == signature
            # Stored as found, before the minimizer got to it: that program
            # replays to the same signature.
            program = parse_program(json.loads(store.get_program(d.original_program_id).json))
            replay = differential(program, d.engine_a, d.engine_b)
            assert d.signature_id in {x.signature_id for x in replay.divergences}
        campaign = store.get_campaign(1)
        assert campaign.status is CampaignStatus.RUNNING      # killed: nobody stopped it
        before = store.stats(1)

    resumed = _fuzz("--resume", "1", "--time", "4", "--db", url, cwd=tmp_path)
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    with Store.open(url) as store:
        assert store.get_campaign(1).status is CampaignStatus.PAUSED   # 300 s not used up
        after = store.stats(1)
        assert len(after) > len(before)
        assert after[-1].t > (before[-1].t if before else 0) and after[-1].execs > 0
        # Known signatures are hits now, never second records; the resumed
        # campaign's minimizer minimized what the killed one had not.
        for i in reported:
            d = store.get_divergence(i)
            assert d.seq == 0 and d.minimized_program_id is not None
            program = parse_program(json.loads(store.get_program(d.minimized_program_id).json))
            assert d.signature_id in {x.signature_id for x in
                                      differential(program, d.engine_a, d.engine_b).divergences}
        assert not set(reported) & set(store.unminimized("v5.17", "v6.14"))


def test_harness_errors_are_kept_apart_and_said_loudly(tmp_path: Path) -> None:
    script = tmp_path / "broken_foliodiff.py"
    script.write_text(BROKEN)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    r = subprocess.run([sys.executable, str(script), "fuzz", "--no-live", "--fuzzer", "random",
                        "--engines", "v6.14,v6.15", "--time", "8", "--db", url,
                        "--seeds", str(ROOT / "corpus"), "--no-minimize"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"})
    assert r.returncode == 3, r.stdout + r.stderr      # stored, then said by the exit code
    said = " ".join(r.stderr.split())
    with Store.open(url) as store:
        errors, total = store.list_harness_errors(limit=100)
        assert total == len(errors) >= 2             # one signature per engine at least
        for h in errors:
            assert (h.exception, h.op, h.function, h.campaign_id) == (
                "IndexError", "madvise", "sys_madvise", 1)
            assert f"HARNESS ERROR #{h.id} (new): a defect of foliodiff itself, NOT a kernel " \
                   f"finding: IndexError on {h.engine}" in said
            assert f"signature {h.signature}" in said and f"GET /harness-errors/{h.id}" in said
        # A run that hit the defect is no divergence.
        divergences, _ = store.list_divergences(limit=1000)
        assert not any("harness" in d.signature for d in divergences)
    out = " ".join(r.stdout.split())
    final = out[out.rindex("campaign 1 finished:"):]      # rich wraps it at 140 columns
    assert f"{total} harness errors (defects of foliodiff, not kernel findings" in final


def test_format_1_seeds_are_read_on_the_campaign_s_first_engine(tmp_path: Path) -> None:
    (tmp_path / "h2.json").write_text(json.dumps(H2_V1))
    for engine_a in ("v6.14", "v6.15"):
        config = CampaignConfig(fuzzer="random", engine_a=engine_a, engine_b="v6.16",
                                seconds=1, seeds=str(tmp_path))
        (seed,) = config.seed_inputs()
        assert decode(seed) == upgrade_program(H2_V1, engine_a).program


@pytest.mark.parametrize("fuzzer", list(Fuzzer))
def test_every_campaign_runs_the_large_seed_h12(tmp_path: Path, fuzzer: Fuzzer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """h12-mremap-straddle maps 1,040 pages, over the cap on generated inputs: a
    campaign seeded with it still runs it, and v6.15's out-of-bounds batch is stored.
    libFuzzer's artifacts (slow units) stay out of the working directory."""
    monkeypatch.chdir(tmp_path)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    h12 = ROOT / "corpus" / "h12-mremap-straddle.json"
    (seeds / h12.name).write_text(h12.read_text())
    assert mapped_pages(parse_program(json.loads(h12.read_text())["program"])) > MAX_FUZZ_PAGES
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store:
        cid = create(store, CampaignConfig(fuzzer=fuzzer, engine_a="v6.14", engine_b="v6.15",
                                           seconds=20 if fuzzer is Fuzzer.ATHERIS else 5,
                                           seeds=str(seeds), minimize=False))
    Campaign(url, cid, on_harness=lambda found: pytest.fail(f"harness error {found}")).run()
    with Store.open(url) as store:
        divergences, _ = store.list_divergences(limit=100)
    assert any("|crash|PageTableOutOfBounds|" in d.signature and d.engine_b == "v6.15"
               for d in divergences), [d.signature for d in divergences]
    assert not [p.name for p in tmp_path.iterdir()
                if p.name.split("-")[0] in ("crash", "slow", "timeout", "oom", "leak")]
