"""Causes found outside the atheris worker (fuzz/causes.py).

With the engine instrumented by atheris, replaying a run under
sys.setprofile crashed CPython 3.11 (SIGSEGV on the frame of an instrumented
generator): an atheris campaign of v6.14,v6.15 from the seed corpus died in
its first seconds.  The worker now asks a plain process for causes.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from engine import Crash, Verdict, differential, register_mutants
from fuzz.causes import CauseServerError, OutOfProcessCauses
from fuzz.codec import decode

#: The seed-corpus mutant the atheris worker died on: a pinned mTHP, MADV_FREE,
#: half of it mprotect'd read-only, reclaim (v6.15 restores the batch past the VMA).
DIED_ON = "HwMAARM1AQARAQASAgADAQAAAQcAAAEHAAAAAAIAAAABDQoAAPEADg4AAQkA8QAAAwDxAAA="

_INSTRUMENTED = f"""
import base64, sys
from fuzz import atheris_target   # instruments the engine, as the atheris worker does
from engine import differential
from fuzz.causes import OutOfProcessCauses
from fuzz.codec import decode
causes = OutOfProcessCauses(["v6.14", "v6.15"])
program = decode(base64.b64decode("{DIED_ON}"))
for _ in range(2):    # the second answer comes from the cache
    report = differential(program, "v6.14", "v6.15", causes=causes)
causes.close()
print("signatures", [d.signature for d in report.divergences])
"""


def test_an_instrumented_process_gets_the_causes_a_plain_one_finds():
    plain = differential(decode(base64.b64decode(DIED_ON)), "v6.14", "v6.15")
    assert [d.signature for d in plain.divergences] == [
        "v6.14..v6.15|cause|set_ptes<ttu_lazyfree<try_to_unmap_one"]
    out = subprocess.run([sys.executable, "-c", _INSTRUMENTED], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == (
        f"signatures {[d.signature for d in plain.divergences]}")


def test_a_cause_process_failure_is_an_error_with_its_traceback():
    causes = OutOfProcessCauses(["v6.14"])
    crash = Crash(Verdict.INVARIANT, "folio.refcount", "x", 0, "T0", 1)
    with pytest.raises(CauseServerError, match="no-such-engine"):
        causes(decode(base64.b64decode(DIED_ON)), "no-such-engine", crash)
    causes.close()


#: The input an atheris trial of the fuzz benchmark found its vma-bound target
#: with (v6.16 without the VMA bound against v6.16's C twin), and died on: its
#: cause process knew no mutant engine.
FOUND_VMA_BOUND = "HwMAARM1AQARAQASAgADAQAAAQcAAAECAAAAAQcAAAABCgAACwITABgAKggAAQMAAAECAQAAAQ=="


def test_the_cause_process_knows_the_mutants_of_the_pair_it_serves():
    register_mutants()
    program = decode(base64.b64decode(FOUND_VMA_BOUND))
    pair = ("v6.16-no-vma-bound", "v6.16-c")
    plain = differential(program, *pair)
    causes = OutOfProcessCauses(list(pair))
    try:
        served = differential(program, *pair, causes=causes)
    finally:
        causes.close()
    assert [d.signature for d in plain.divergences] == [
        "v6.16-no-vma-bound..v6.16-c|cause|set_ptes<ttu_lazyfree<try_to_unmap_one"]
    assert [d.to_dict() for d in served.divergences] == [d.to_dict() for d in plain.divergences]
