"""The C twins equal their Python versions on random programs (hypothesis).

Every field of the outcome is compared, cost and events included; only the
engine id and the crash's model stack (which names the C path's wrapper
instead of folio_pte_batch) may differ.  ``FOLIODIFF_CPATH_EXAMPLES`` scales
the examples per pair (CI's AddressSanitizer run uses fewer); the default,
700 per pair, is 2,100 programs per run.
"""

from __future__ import annotations

import os

import pytest
from cpath_programs import lazyfree_programs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.execution.runner import run
from fuzz.strategies import any_programs, programs

pytestmark = pytest.mark.property

EXAMPLES = int(os.environ.get("FOLIODIFF_CPATH_EXAMPLES", "700"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Mostly programs that reach the unmap (lazyfree_programs), some of the fuzzers'
#: reclaim-shaped ones, a few of anything the format allows.
PROGRAMS = st.one_of(lazyfree_programs(), lazyfree_programs(), lazyfree_programs(),
                     lazyfree_programs(), programs(max_ops=32), any_programs(max_ops=24))


def _fields(program, engine: str) -> dict:
    out = run(program, engine).to_dict()
    del out["engine"]
    if out["crash"] is not None:
        out["crash"] = {k: v for k, v in out["crash"].items() if k != "stack"}
    return out


def _assert_twins_equal(program, engine: str) -> None:
    py, c = _fields(program, engine), _fields(program, f"{engine}-c")
    # equal harness errors on both sides would hide a defect of foliodiff
    assert py["verdict"] != "harness", (engine, py["crash"], program.to_json(None))
    differing = sorted(k for k in py if py[k] != c[k])
    assert not differing, (engine, differing, {k: (py[k], c[k]) for k in differing},
                           program.to_json(None))


@SETTINGS
@given(PROGRAMS)
def test_v6_14_c_equals_v6_14(program):
    _assert_twins_equal(program, "v6.14")


@SETTINGS
@given(PROGRAMS)
def test_v6_15_c_equals_v6_15(program):
    _assert_twins_equal(program, "v6.15")


@SETTINGS
@given(PROGRAMS)
def test_v6_16_c_equals_v6_16(program):
    _assert_twins_equal(program, "v6.16")
