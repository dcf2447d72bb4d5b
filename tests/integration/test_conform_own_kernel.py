"""Your own kernel, your own program, a stored divergence: ``foliodiff conform`` on
real kernels beyond the catalogue's scenarios.

- ``--kernel-image`` on a catalogue image copied to a path gives the same
  verdicts and observables as the catalogue name, booted the same way, and
  both are stored (package version, image hash);
- ``--program`` runs a corpus file on deb-6.16, against a plugin engine too;
- the API queues a conformance job for a stored divergence, a process of its
  own boots the kernel, and the job reports which side of the pair the kernel
  matched.

Select with ``-m realkernel``; skipped without qemu, failed in CI without it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.corpus.entries import load_any
from engine.diff.differential import Classification, differential
from fuzz.records import records_from_report
from service.conform import fetch
from service.store import Store

pytestmark = pytest.mark.realkernel
ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "corpus"
TIMEOUT = "300"
MINE = """
from engine.kernels import V6_16

class Mine(V6_16):
    VERSION = "mine"
"""


@pytest.fixture(scope="module", autouse=True)
def _qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        message = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)


def foliodiff(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("FOLIODIFF_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)


def test_an_image_by_path_conforms_as_its_catalogue_name(tmp_path: Path) -> None:
    image = fetch("deb-6.16")
    own = tmp_path / "build" / "bzImage"
    own.parent.mkdir()
    shutil.copyfile(image.vmlinuz, own)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = tmp_path / "conform.json"
    r = foliodiff(tmp_path, "conform", "--kernels", "deb-6.16", "--kernel-image", str(own),
                  "--engine", "v6.16", "--db", url, "--out", str(out), "--timeout", TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    # No config beside a bare bzImage, and Debian builds have no IKCONFIG: said, not fatal.
    assert "no kernel configuration found" in r.stderr
    catalogue, by_path = json.loads(out.read_text())["kernels"]
    assert (catalogue["kernel"], by_path["kernel"]) == ("deb-6.16", "image:bzImage")
    assert by_path["image_sha256"] == catalogue["image_sha256"] == image.sha256
    assert by_path["uname"] == catalogue["uname"] and by_path["package_version"] == ""
    assert len(catalogue["results"]) >= 20
    def seen(k: dict) -> dict:
        return {r["scenario"]: (r["verdict"], (r["observed"] or {}).get("observables"))
                for r in k["results"]}
    assert seen(by_path) == seen(catalogue)
    assert catalogue["counts"]["equal"] == len(catalogue["results"])
    with Store.open(url) as store:
        rows, total = store.conformance_results(limit=1000)
    assert total == 2 * len(catalogue["results"])
    assert {r.kernel_version for r in rows} == {catalogue["package_version"],
                                                f"sha256:{image.sha256}"}


def test_a_corpus_program_on_deb_616_against_a_plugin_engine(tmp_path: Path) -> None:
    plugin = tmp_path / "mine.py"
    plugin.write_text(MINE)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    program = CORPUS / "h3-redirty-pte0.json"
    r = foliodiff(tmp_path, "conform", "--kernels", "deb-6.16", "--program", str(program),
                  "--db", url, "--timeout", TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "h3-redirty-pte0" in r.stdout and "equal" in r.stdout
    image = fetch("deb-6.16")
    r = foliodiff(tmp_path, "--plugins", f"{plugin}:Mine", "conform", "--kernel-image",
                  str(image.vmlinuz), "--engine", "mine", "--program", str(program),
                  "--db", url, "--timeout", TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    with Store.open(url) as store:
        rows, _ = store.conformance_results(scenario="h3-redirty-pte0")
    mine, catalogue = rows
    assert (catalogue.kernel, catalogue.engine, catalogue.plugin) == ("deb-6.16", "v6.16", None)
    assert mine.engine == "mine" and mine.plugin["spec"].endswith("mine.py:Mine")
    assert mine.verdict.value == catalogue.verdict.value == "equal"
    # Debian's image sits beside its config: the check read it and found nothing missing.
    assert "missing" not in r.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_api_runs_a_divergence_on_a_real_kernel_as_a_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    program = load_any(str(CORPUS / "conform-h5-dma-pageout.json"))
    (rec,) = [r for r in records_from_report(differential(program, "v5.17", "v6.15"), program)
              if r.classification is Classification.UNEXPECTED]
    with Store.open(url) as store:
        did = store.upsert_divergences([rec]).ids[rec.signature_id]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--db", url,
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _http("GET", f"{base}/conformance/kernels")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        t0 = time.monotonic()
        status, job = _http("POST", f"{base}/divergences/{did}/conform",
                            {"kernels": ["deb-6.16"], "author": "ci"})
        # The request only queued the job: it answered before any kernel booted.
        assert status == 202 and job["status"] in ("queued", "running"), job
        assert time.monotonic() - t0 < 10
        deadline = time.monotonic() + 600
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
            _, job = _http("GET", f"{base}/conformance/jobs/{job['id']}")
        log = tmp_path / f"conform-job-{job['id']}.log"
        assert job["status"] == "done", (job, log.read_text() if log.exists() else "")
        (result,) = job["results"]
        assert (result["kernel"], result["engine"], result["verdict"]) == ("deb-6.16", "v6.16",
                                                                          "equal")
        # deb-6.16 behaves as v6.15 does here, not as v5.17: the divergence is real.
        assert result["sides"]["v6.15"]["verdict"] == "equal"
        assert result["sides"]["v5.17"]["verdict"] == "different"
        _, detail = _http("GET", f"{base}/divergences/{did}")
        notes = [n["text"] for n in detail["notes"]]
        assert any("conformance on deb-6.16" in n and "behaves as v6.15" in n for n in notes), notes
        status, again = _http("GET", f"{base}/conformance?divergence_id={did}")
        assert status == 200 and again["total"] == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
