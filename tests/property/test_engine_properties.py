"""Properties of the kernel models on random programs (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from engine.execution.runner import run
from fuzz.strategies import programs

pytestmark = pytest.mark.property

FIXED = ("v5.18", "v6.14", "v6.15", "v6.16")
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(programs(max_ops=32))
def test_no_data_loss_no_leak_from_v5_18_on(program):
    """6c8e2a256915 fixed the data loss; nothing since may lose data or leak a reference.

    The only crash allowed is v6.15's out-of-bounds page-table scan (ddd05742b45b);
    any other crash or broken invariant is a model bug.
    """
    for engine in FIXED:
        out = run(program, engine)
        v = out.verdict.value
        assert v != "harness", (engine, out.crash, program.to_json(None))
        assert v not in ("data_loss", "leak"), (engine, out.crash, program.to_json(None))
        if v == "crash":
            assert engine == "v6.15" and out.crash.field == "PageTableOutOfBounds", (
                engine, out.crash, program.to_json(None))
        assert v not in ("invariant", "hang"), (engine, out.crash, program.to_json(None))


@SETTINGS
@given(programs(max_ops=32))
def test_same_program_same_outcome(program):
    for engine in ("v5.17", "v6.14", "v6.15"):
        first = run(program, engine)
        assert first.verdict.value != "harness", (engine, first.crash, program.to_json(None))
        assert first.to_dict() == run(program, engine).to_dict()
