"""A hypothesis strategy of lazyfree-reclaim programs for the C twins' equality test.

fuzz.strategies.programs() reaches the unmap path rarely (a region must be
written, MADV_FREE'd and then reclaimed, in that order).  These programs
always do that, then mix in what the unmap must cope with: redirtying
stores, speculative references, pins and DMA, the deferred-split shrinker,
mremap across a page-table boundary (v6.15's out-of-bounds scan, v6.16's
partial batches), droppable VMAs, PMD-mapped THPs and preemptions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from engine.execution.runner import YIELD_POINTS
from engine.mm.sched import YieldPoint
from engine.program.format import PAGE_SHIFT, Program, parse_program

_2M = 512
THREADS = [{"name": "T0", "kind": "task", "mm": 0}, {"name": "R", "kind": "kthread"},
           {"name": "S", "kind": "kthread"}, {"name": "W", "kind": "kthread"},
           {"name": "D", "kind": "device"}]


@st.composite
def lazyfree_programs(draw: Callable[[st.SearchStrategy], Any], max_body: int = 16) -> Program:
    """Map, write and MADV_FREE 1-3 regions, act on them, then reclaim."""
    ops: list[dict[str, Any]] = []
    regions: list[tuple[int, int, int]] = []          # (first page, pages, order)
    for slot in draw(st.lists(st.integers(1, 64), min_size=1, max_size=3, unique=True)):
        order = draw(st.sampled_from((4, 4, 9, 0)))
        pages = (1 << order) * draw(st.integers(1, 2 if order == 9 else 4))
        start = slot * 2 * _2M
        ops.append({"thread": "T0", "op": "mmap", "addr": start << PAGE_SHIFT, "pages": pages,
                    "order": order, "droppable": draw(st.integers(0, 7)) == 0})
        regions.append((start, pages, order))
    for start, pages, _ in regions:
        ops.append({"thread": "T0", "op": "write", "addr": start << PAGE_SHIFT, "pages": pages,
                    "value": draw(st.integers(1, 255))})
        ops.append({"thread": "T0", "op": "madvise", "addr": start << PAGE_SHIFT, "pages": pages,
                    "advice": "MADV_FREE"})

    def rng() -> tuple[int, int]:
        start, pages, order = draw(st.sampled_from(regions))
        folio = min(1 << order, pages)
        if draw(st.booleans()):                        # whole folios
            first = folio * draw(st.integers(0, pages // folio - 1))
            return (start + first) << PAGE_SHIFT, folio * draw(st.integers(1, (pages - first) // folio))
        first = draw(st.integers(0, pages - 1))
        return (start + first) << PAGE_SHIFT, draw(st.integers(1, pages - first))

    pins: list[str] = []
    refs: list[str] = []
    for i in range(draw(st.integers(0, max_body))):
        kind = draw(st.sampled_from(["write", "read", "madvise_free", "reclaim", "reclaim",
                                     "pageout", "shrink", "try_get", "put", "pin", "dma",
                                     "unpin", "mremap", "drain"]))
        if kind in ("write", "read"):
            addr, pages = rng()
            op = {"thread": "T0", "op": kind, "addr": addr, "pages": pages}
            if kind == "write":
                op["value"] = draw(st.integers(1, 255))
        elif kind in ("madvise_free", "pageout"):
            addr, pages = rng()
            op = {"thread": "T0", "op": "madvise", "addr": addr, "pages": pages,
                  "advice": "MADV_FREE" if kind == "madvise_free" else "MADV_PAGEOUT"}
        elif kind == "reclaim":
            op = {"thread": "R", "op": "reclaim"}
        elif kind == "shrink":
            op = {"thread": "S", "op": "deferred_split_scan"}
        elif kind == "try_get":
            refs.append(f"r{i}")
            op = {"thread": "W", "op": "folio_try_get", "mm": 0, "addr": rng()[0], "ref": f"r{i}"}
        elif kind == "put" and refs:
            op = {"thread": "W", "op": "folio_put", "ref": refs.pop(draw(st.integers(0, len(refs) - 1)))}
        elif kind == "pin":
            pins.append(f"p{i}")
            op = {"thread": "T0", "op": "pin", "addr": rng()[0], "pages": 1, "pin": f"p{i}",
                  "write": True, "fast": draw(st.booleans())}
        elif kind == "dma" and pins:
            op = {"thread": "D", "op": "dma_write", "pin": draw(st.sampled_from(pins)),
                  "value": draw(st.integers(1, 255))}
        elif kind == "unpin" and pins:
            op = {"thread": "T0", "op": "unpin", "pin": pins.pop(draw(st.integers(0, len(pins) - 1))),
                  "dirty": draw(st.booleans())}
        elif kind == "mremap":
            # move a region to end just short of, or across, a page-table boundary
            j = draw(st.integers(0, len(regions) - 1))
            start, pages, order = regions[j]
            dest = (130 + 4 * j) * _2M
            ops.append({"thread": "T0", "op": "mmap", "addr": dest << PAGE_SHIFT, "pages": 2 * _2M})
            new = dest + _2M - draw(st.integers(1, min(pages, 32)))
            regions[j] = (new, pages, order)
            op = {"thread": "T0", "op": "mremap", "addr": start << PAGE_SHIFT, "pages": pages,
                  "new_addr": new << PAGE_SHIFT}
        else:
            op = {"thread": "T0", "op": "lru_add_drain"}
        ops.append(op)
    ops.append({"thread": "R", "op": "reclaim"})
    schedule: dict[tuple[int, str, int], str] = {}
    for i in draw(st.lists(st.integers(0, len(ops) - 1), max_size=4)):
        at = draw(st.sampled_from(YIELD_POINTS.get(ops[i]["op"], ()) + (YieldPoint.OP_END,)))
        nth = 1 if at is YieldPoint.OP_END else draw(st.integers(1, 3))
        schedule[i, at.value, nth] = draw(st.sampled_from(THREADS))["name"]
    return parse_program({"version": 2, "threads": THREADS, "ops": ops,
                          "schedule": [{"op": i, "at": at, "nth": nth, "thread": t}
                                       for (i, at, nth), t in schedule.items()]})
