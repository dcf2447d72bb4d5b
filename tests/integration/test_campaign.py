"""A real campaign process: killed with SIGKILL it loses no finding it reported stored, and
resumes; a harness error is kept apart from the findings and said loudly.

Runs ``python -m service.cli fuzz`` (the ``foliodiff fuzz`` command) on a
SQLite file: a random-input campaign on v5.17 against v6.14 from the seed
corpus, whose seeds show v5.17's DMA data loss within seconds (from nothing,
random input may take minutes now that the oracles raise no false alarm).  The test
waits for the first "stored" line, kills the whole process group with SIGKILL, and
checks the store holds every finding the campaign printed, then resumes the campaign.  Another campaign
runs a model broken on purpose (an IndexError in MADV_FREE's walk).

Resume: a campaign paused with Ctrl-C (SIGINT to its process group) says how
to resume it, resumes from another directory (its paths were stored
absolute) and its counts go on; a second runner of a running campaign is
refused naming the first, and takes over the lease of one that was killed
or stopped renewing it; a worker that dies fails the campaign.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.corpus.upgrade import upgrade_program
from engine.diff.differential import differential
from engine.program.format import parse_program
from fuzz.codec import decode
from fuzz.sources import MAX_FUZZ_PAGES, CoverageUnit, Fuzzer, mapped_pages
from service.campaign import Campaign, CampaignConfig, create
from service.models import CampaignStatus
from service.store import LEASE_EXPIRY, Lease, Store

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
# `foliodiff` whose in-process fuzzers' sources cannot be built: every worker
# dies of a RuntimeError as it starts.
BROKEN_SOURCE = """
from fuzz.sources import Source

def broken(self, *args, **kw):
    raise RuntimeError("source broken on purpose")

Source.__init__ = broken

if __name__ == "__main__":
    import sys
    import service.cli
    sys.argv[0] = "foliodiff"
    service.cli.main()
"""
PROGRESS = re.compile(r"\[\s*(\d+)s\] execs ([\d,]+)")
# Corpus H2 as format 1 stored it: a schedule of global steps.
H2_V1 = json.loads((ROOT / "tests" / "data" / "format1" / "h2.json").read_text())


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    env.pop("FOLIODIFF_DB_URL", None)
    return env


def _fuzz(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "service.cli", "fuzz", "--no-live", *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True)


def _fuzz_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``foliodiff fuzz`` to its end; stdout and stderr apart, rich's wrapping undone."""
    r = subprocess.run([sys.executable, "-m", "service.cli", "fuzz", "--no-live", *args],
                       cwd=cwd, capture_output=True, text=True, timeout=240, env=_env())
    r.stdout, r.stderr = " ".join(r.stdout.split()), " ".join(r.stderr.split())
    return r


def _wait_for(proc: subprocess.Popen[str], pattern: re.Pattern[str] | str,
              seconds: float = 180) -> re.Match[str]:
    """The first line of @proc's output that matches @pattern (the lines before are read)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    seen = []
    for line in proc.stdout:
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"ended without {pattern!r}: {''.join(seen)}")


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
            # and bisected it: the tree's runs of the minimized program are kept
            assert d.bisection is not None and d.bisection["engines"] == ["v5.17", "v6.14"]
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
        last = store.stats(cid)[-1]
    # Coverage in the fuzzer's own unit, measured (hypothesis' too).
    assert last.coverage_unit is fuzzer.coverage_unit and last.coverage
    assert any("|crash|PageTableOutOfBounds|" in d.signature and d.engine_b == "v6.15"
               for d in divergences), [d.signature for d in divergences]
    assert not [p.name for p in tmp_path.iterdir()
                if p.name.split("-")[0] in ("crash", "slow", "timeout", "oom", "leak")]


def test_a_paused_campaign_says_how_to_resume_and_resumes_elsewhere_counting_on(
        tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    (here / "seeds").mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("h1-clean-mthp-reclaim.json", "h5-dma-into-lazyfree.json"):
        shutil.copy(ROOT / "corpus" / name, here / "seeds" / name)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _fuzz("--fuzzer", "random", "--engines", "v6.14,v6.15", "--time", "300", "--db", url,
                 "--seeds", "seeds", "--corpus", "kept", "--no-minimize", cwd=here)
    m = _wait_for(proc, PROGRESS)
    assert "features" in m.string                  # the unit of the coverage it prints
    os.killpg(proc.pid, signal.SIGINT)             # Ctrl-C
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    said = " ".join(out.split())
    assert f"campaign 1 paused; resume it with: foliodiff fuzz --resume 1 --db {url}" in said
    with Store.open(url) as store:
        campaign = store.get_campaign(1)
        assert campaign.status is CampaignStatus.PAUSED and campaign.lease_token is None
        # Stored absolute: the campaign does not depend on where it was started.
        assert (campaign.config["seeds"], campaign.config["corpus"]) == (
            str(here / "seeds"), str(here / "kept"))
        paused = store.stats(1)[-1]
        assert paused.execs > 0 and paused.coverage_unit is CoverageUnit.FEATURES
        assert paused.coverage is not None and paused.coverage > 0
        assert campaign.config["progress"]["execs"] == paused.execs

    resumed = _fuzz_run("--resume", "1", "--time", "6", "--db", url, cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "paused; resume it with: foliodiff fuzz --resume 1" in resumed.stdout
    with Store.open(url) as store:
        after = [x for x in store.stats(1) if x.id > paused.id]
        assert after and after[-1].execs > paused.execs and after[-1].t > paused.t
        # Counts go on from the stored ones: never back to 0 with the time going on.
        assert all(x.execs >= paused.execs and x.t >= paused.t for x in after)
        assert all(x.coverage is not None and x.coverage >= (paused.coverage or 0)
                   for x in after)
        assert store.get_campaign(1).config["progress"]["execs"] == after[-1].execs
    assert f"{after[-1].execs:,} executions in" in resumed.stdout
    assert (here / "kept" / "random-0").is_dir() and not (elsewhere / "kept").exists()


def test_a_running_campaign_is_not_run_twice_and_a_silent_runner_is_taken_over(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = _fuzz("--fuzzer", "random", "--engines", "v6.14,v6.15", "--time", "300",
                  "--db", url, "--no-minimize", cwd=tmp_path)
    try:
        _wait_for(first, r"campaign 1: random on")          # it holds the lease now
        second = _fuzz_run("--resume", "1", "--time", "2", "--db", url, cwd=tmp_path)
        assert second.returncode == 2, second.stdout + second.stderr
        assert (f"campaign 1 is being run by pid {first.pid} on host "
                f"{socket.gethostname()!r} (last heartbeat") in second.stderr
        with Store.open(url) as store:
            assert store.get_campaign(1).lease_pid == first.pid
            assert store.get_campaign(1).status is CampaignStatus.RUNNING
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)

    # Killed: its heartbeat is fresh, but its holder is gone from this host.
    third = _fuzz_run("--resume", "1", "--time", "2", "--db", url, cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"campaign 1: took over from pid {first.pid} on host" in third.stderr

    # Held on another machine: refused while its heartbeat is fresh, taken over
    # once it is older than LEASE_EXPIRY.
    elsewhere = Lease(host="fuzz-9.example", pid=4242, token="f" * 32)
    with Store.open(url) as store:
        store.take_lease(1, elsewhere)
    refused = _fuzz_run("--resume", "1", "--time", "2", "--db", url, cwd=tmp_path)
    assert refused.returncode == 2
    assert "campaign 1 is being run by pid 4242 on host 'fuzz-9.example'" in refused.stderr
    silent = datetime.now(UTC) - timedelta(seconds=LEASE_EXPIRY + 5)
    with Store.open(url, clock=lambda: silent) as store:
        store.renew_lease(1, elsewhere.token)
    taken = _fuzz_run("--resume", "1", "--time", "2", "--db", url, cwd=tmp_path)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert (f"campaign 1: took over from pid 4242 on host 'fuzz-9.example', silent since "
            f"{silent:%Y-%m-%d %H:%M:%S} UTC") in taken.stderr
    with Store.open(url) as store:
        assert store.get_campaign(1).lease_token is None       # given up at the end


def test_a_worker_that_dies_fails_the_campaign_and_the_command(tmp_path: Path) -> None:
    script = tmp_path / "broken_foliodiff.py"
    script.write_text(BROKEN_SOURCE)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    r = subprocess.run([sys.executable, str(script), "fuzz", "--no-live", "--fuzzer", "random",
                        "--time", "60", "--db", url, "--no-minimize"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240, env=_env())
    assert r.returncode == 4, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "error: campaign 1 failed: worker 0 failed:" in said
    assert "RuntimeError: source broken on purpose" in said
    with Store.open(url) as store:
        campaign = store.get_campaign(1)
        assert campaign.status is CampaignStatus.FAILED and campaign.lease_token is None
