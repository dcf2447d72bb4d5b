"""v7.2: the deferred split queue is a list_lru, and its scan is one walk again.

Read in Debian's 7.2.12 (D72 mm/huge_memory.c: deferred_split_folio() :4467,
deferred_split_isolate() :4552, deferred_split_scan() :4578; docs/kernel-notes.md
section 22); 7.2.13 (D7213) the same where read.  The list_lru conversion of
the queue came in 7.1 or 7.2 [U which]: the 7.0.0 copy read still has 6.19's
retry (engine/kernels/v6_19.py).

- list_lru_shrink_walk_irq() walks at most ``nr_to_scan`` queued folios from
  the head: deferred_split_isolate() takes each off the queue, with a
  folio_try_get() reference onto a dispose list, or, having lost the race with
  folio_put(), clears PG_partially_mapped;
- each folio of the dispose list is tried (split if partially mapped, ...);
  one still partially mapped and not split, or whose folio_trylock() failed,
  is added back to the queue's tail (list_lru_add_irq(), a no-op if something
  queued it meanwhile), and its reference dropped;
- no second walk: each queued folio is tried once per call, as on 6.12-6.18,
  so a pinned partially mapped folio counts one split_failed per scan.

The split still clears PG_partially_mapped of a folio held off the queue
(__folio_freeze_and_split_unmapped() dequeues any anon folio of order > 1: the
v6.19 engine's split_folio_to_order0()).  deferred_split_folio()'s conditions
and counters are unchanged.  Everything else read in 7.2 that the model covers
is the v7.0 engine (folio_unmap_pte_batch() with FPB_RESPECT_WRITE | ..._SOFT_DIRTY
:1948; the PMD discard still called, mm/rmap.c :2076).
"""

from __future__ import annotations

from engine.kernels.v7_0 import V7_0
from engine.mm.folio import Folio, folio_test_partially_mapped
from engine.mm.sched import Yields


class V7_2(V7_0):
    """Mainline v7.2: v7.0 whose deferred split shrinker walks its list_lru once."""

    VERSION = "v7.2"
    COMMIT = "7.1/7.2 list_lru deferred split queue: deferred_split_scan() without retry"
    PARENT = "v7.0"

    def deferred_split_scan(self, nr_to_scan: int) -> Yields[int]:
        """deferred_split_scan() of 7.2: one list_lru walk of ``nr_to_scan`` folios.

        Context: the walk holds the list_lru lock (no yield inside) and takes a
        speculative reference on each folio; yields while holding them
        (:meth:`deferred_split_try`).  Return: folios split.
        """
        queue = self.deferred_split_queue
        dispose: list[Folio] = []
        for folio in list(queue)[:nr_to_scan]:
            if self.deferred_split_isolate(folio):
                dispose.append(folio)
        split = 0
        self.deferred_split_held.update(dict.fromkeys(dispose))
        for folio in dispose:
            did_split = yield from self.deferred_split_try(folio)
            split += did_split
            if not did_split and folio_test_partially_mapped(folio) and not folio.on_deferred_list:
                folio.on_deferred_list = True                # list_lru_add_irq()
                queue[folio] = None
            del self.deferred_split_held[folio]
            self.speculative_put(folio)
        return split
