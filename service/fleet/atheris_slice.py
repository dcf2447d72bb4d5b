"""A slice of an atheris share: libFuzzer for a while, on the campaign's shared corpus.

libFuzzer keeps its corpus as files and its coverage to itself, so an
atheris share shares its corpus as bytes: the slice writes every input of
the campaign's shared corpus into a fresh corpus directory, runs one
atheris worker (``service/atheris_worker.py``, which stores its findings
through its own sink) on it for the slice's seconds, then pushes every
file libFuzzer added (features: none; libFuzzer measures its own).  Its
``-seed`` is drawn from the campaign seed, the share and the generation, so
a share taken over does not replay its lost slice's stream.

The libFuzzer process dies with the worker (``PR_SET_PDEATHSIG``): a worker
killed with SIGKILL leaves no fuzzer running on its share.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz.sink import Stored
from service.campaign import CampaignConfig, atheris_env
from service.store import Store

#: libFuzzer's status lines ("#1865\tNEW    cov: 779 ft: 1604 corp: 65/..."), and its
#: final count of executions.
_STATUS = re.compile(r"^#(\d+)\s+(?:\w+\s+)?cov: (\d+)")
_FINAL = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the worker dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def atheris_slice(store: Store, campaign_id: int, config: CampaignConfig, share: int,
                  generation: int, budget: float, held: list[bytes],
                  on_stored: Callable[[list[Stored]], None],
                  go_on: Callable[[], bool]) -> tuple[int, int, list[bytes]]:
    """Run libFuzzer on the inputs @held for @budget seconds (at least 1).

    Return: the executions it made, the edges its corpus covered (libFuzzer's
    ``cov:``), and the inputs it added to the corpus.
    """
    seed = int.from_bytes(hashlib.sha256(
        f"{config.seed}/{share}/{generation}".encode()).digest()[:4], "little") or 1
    with tempfile.TemporaryDirectory(prefix="foliodiff-fleet-atheris-") as tmp:
        corpus, artifacts = Path(tmp) / "corpus", Path(tmp) / "artifacts"
        corpus.mkdir()
        artifacts.mkdir()
        names = set()
        for data in held:
            name = hashlib.sha1(data).hexdigest()
            names.add(name)
            (corpus / name).write_bytes(data)
        db_url = store.engine.url.render_as_string(hide_password=False)
        args = [sys.executable, str(Path(__file__).parents[1] / "atheris_worker.py"),
                str(corpus), f"-max_total_time={max(1, int(budget))}", "-print_final_stats=1",
                "-max_len=256", f"-artifact_prefix={artifacts}/", f"-seed={seed}"]
        proc = subprocess.Popen(args, env={**os.environ, **atheris_env(db_url, campaign_id)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_die_with_parent)
        execs = cov = 0
        said: list[str] = []

        def stop_when_told() -> None:
            while proc.poll() is None:
                if not go_on():
                    proc.send_signal(signal.SIGINT)     # libFuzzer stops and prints its stats
                    return
                time.sleep(0.2)

        threading.Thread(target=stop_when_told, daemon=True).start()
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("foliodiff-stored "):
                on_stored([Stored(**_json(line))])
            elif (m := _STATUS.match(line)) is not None:
                execs, cov = max(execs, int(m.group(1))), int(m.group(2))
            elif (m := _FINAL.search(line)) is not None:
                execs = max(execs, int(m.group(1)))
            elif not line.startswith("foliodiff-harness "):
                said.append(line.rstrip())
        if proc.wait() not in (0, -signal.SIGINT, 130) and go_on():
            tail = "\n".join(said[-20:])
            raise RuntimeError(f"atheris exited with code {proc.returncode}:\n{tail}")
        added = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.name not in names]
    return execs, cov, [d for d in added if d]


def _json(line: str) -> Any:
    return json.loads(line.split(" ", 1)[1])
