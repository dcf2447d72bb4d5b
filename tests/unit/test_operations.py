"""The runner's operation table: one row per operation type of the program format."""

from __future__ import annotations

from engine.execution.runner import OPERATIONS, YIELD_POINTS, entry_point
from engine.program.format import OP_TYPES, LruAddDrain, Reclaim


def test_every_operation_type_has_one_row():
    assert set(OPERATIONS) == set(OP_TYPES.values())


def test_yield_points_are_by_op_name_and_only_where_a_path_yields():
    assert set(YIELD_POINTS) <= set(OP_TYPES)
    for name, cls in OP_TYPES.items():
        assert YIELD_POINTS.get(name, ()) == OPERATIONS[cls].yield_points


def test_entry_points_name_kernel_functions():
    assert entry_point(Reclaim(thread="k", nr_to_scan=1)) == "shrink_folio_list"
    assert entry_point(LruAddDrain(thread="t")) == "lru_add_drain_all"
