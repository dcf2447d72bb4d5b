"""A real campaign process: killed with SIGKILL it loses no finding it reported stored, and resumes.

Runs ``python -m service.cli fuzz`` (the ``foliodiff fuzz`` command) on a
SQLite file: a random-input campaign on v5.17 against v6.14, whose DMA data
loss it finds within seconds.  The test waits for the first "stored" line,
kills the whole process group with SIGKILL, and checks the store holds every
finding the campaign printed, then resumes the campaign.
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

from engine.diff import differential
from engine.program import parse_program
from service.models import CampaignStatus
from service.store import Store

ROOT = Path(__file__).resolve().parents[2]
STORED = re.compile(r"stored #(\d+) (\w+): (\S+)")


def _fuzz(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "service.cli", "fuzz", "--no-live", *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"},
                            start_new_session=True)


def test_sigkill_loses_no_stored_finding_and_the_campaign_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _fuzz("--fuzzer", "random", "--engines", "v5.17,v6.14", "--time", "300",
                 "--db", url, "--corpus", str(tmp_path / "corpus"), cwd=tmp_path)
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
            # The stored reproducer replays to the same signature.
            program = parse_program(json.loads(store.get_program(d.minimized_program_id).json))
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
        # Known signatures are hits now, never second records.
        assert all(store.get_divergence(i).seq == 0 for i in reported)
