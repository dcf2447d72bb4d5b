"""v6.19: deferred_split_scan() scans the queue again while nr_to_scan is left.

Read in a v6.19 tree (docs/kernel-notes.md section 22, T619: mm/huge_memory.c
deferred_split_scan() :4398-4488, the ``retry:`` label :4409 and its
``goto retry`` :4478; include/linux/pagevec.h PAGEVEC_SIZE 31 :15), the form
the split-queue rework of the 6.19 cycle gave it (per-memcg queue lock helpers,
a folio_batch instead of an on-stack list; titles [I]):

- under the queue lock, each queued folio from the head is taken off the queue
  (list_del_init(), whether folio_try_get() succeeds or not) and, with its
  reference, added to a folio_batch; every folio taken counts against
  ``nr_to_scan``; the walk stops when ``nr_to_scan`` reaches 0 or the batch
  holds PAGEVEC_SIZE (31) folios;
- each folio of the batch is tried (split if partially mapped, ...); one still
  partially mapped and not split goes back to the tail of the queue at once,
  unless something queued it meanwhile;
- folios_put() drops the batch's references after the whole batch;
- then, while ``nr_to_scan`` is left and the queue is not empty, the scan
  starts again from the head: a folio whose split failed is tried again in the
  same call, until ``nr_to_scan`` runs out, and each failed split_folio()
  counts thp_split_page_failed / mTHP split_failed again.  6.12-6.18 try each
  queued folio once per call.

The 7.0.0 copy read (julianw1010/linux-7.0.0 mm/huge_memory.c) has the same
function; 7.2's list_lru queue has no retry (engine/kernels/v7_2.py).

A folio off the queue while the scan holds it is no longer "on a list", so
deferred_split_folio() may queue it again meanwhile, and its split clears
PG_partially_mapped without finding it on a list:
__folio_freeze_and_split_unmapped() (T619 :3780-3805) clears the flag outside
its list_empty() test, where 6.12 cleared it inside.
"""

from __future__ import annotations

from engine.kernels.v6_16 import V6_16
from engine.mm.events import DEFERRED_SPLIT_REF, Event
from engine.mm.folio import Folio, folio_clear_partially_mapped, folio_test_partially_mapped
from engine.mm.sched import Yields

DEFERRED_SPLIT_RETRY = Event(
    "deferred_split_retry",
    "deferred_split_scan() scanned the queue again, nr_to_scan being left (6.19)")
DEFERRED_SPLIT_HELD_REQUEUED = Event(
    "deferred_split_held_requeued",
    "deferred_split_folio() queued a folio the shrinker holds off the queue (6.19+)")


class V6_19(V6_16):
    """Mainline v6.19: v6.16 whose deferred split shrinker retries in one call."""

    VERSION = "v6.19"
    COMMIT = "6.19 split-queue rework: deferred_split_scan() folio_batch and retry"
    PARENT = "v6.16"

    def __init__(self) -> None:
        super().__init__()
        #: The folios a deferred_split_scan() holds off the queue (its folio_batch).
        self.deferred_split_held: dict[Folio, None] = {}

    def deferred_split_folio(self, folio: Folio, partially_mapped: bool) -> None:
        """deferred_split_folio(): as before; a folio the scan holds is off the queue
        (list_del_init()), so this queues it again, where 6.12-6.18 found it on
        the scan's list and left it there."""
        if folio in self.deferred_split_held and not folio.on_deferred_list:
            self.event(DEFERRED_SPLIT_HELD_REQUEUED, folio)
        super().deferred_split_folio(folio, partially_mapped)

    def deferred_split_isolate(self, folio: Folio) -> bool:
        """Take @folio off the queue (list_del_init()) with a speculative reference,
        as 6.19's scan does inline and 7.2's deferred_split_isolate() does; without
        one ("we lost race with folio_put()") it is no longer partially mapped.
        Return: whether the reference was taken."""
        del self.deferred_split_queue[folio]
        folio.on_deferred_list = False
        if self.speculative_get(folio):
            self.event(DEFERRED_SPLIT_REF, folio)
            return True
        if folio_test_partially_mapped(folio):
            folio_clear_partially_mapped(folio)
            self.count_mthp("nr_anon_partially_mapped", folio.order, -1)
        return False

    def deferred_split_scan(self, nr_to_scan: int) -> Yields[int]:
        """deferred_split_scan() of 6.19: passes of up to FOLIO_BATCH_SIZE (PAGEVEC_SIZE, 31) folios
        until ``nr_to_scan`` runs out or the queue is empty.

        Context: takes the split-queue lock to fill a batch (no yield inside) and
        a speculative reference on each folio taken; yields while holding them
        (:meth:`deferred_split_try`).  Return: folios split.
        """
        queue = self.deferred_split_queue
        split = 0
        passes = 0
        while True:
            fbatch: list[Folio] = []
            for folio in list(queue):
                if self.deferred_split_isolate(folio):
                    fbatch.append(folio)
                nr_to_scan -= 1
                if not nr_to_scan or len(fbatch) == self.FOLIO_BATCH_SIZE:
                    break
            if passes and fbatch:
                self.event(DEFERRED_SPLIT_RETRY, fbatch[0])
            passes += 1
            self.deferred_split_held.update(dict.fromkeys(fbatch))
            for folio in fbatch:
                did_split = yield from self.deferred_split_try(folio)
                split += did_split
                if did_split or not folio_test_partially_mapped(folio):
                    continue
                # Only a partially mapped folio goes back, to the tail, unless
                # deferred_split_folio() queued it again meanwhile.
                if not folio.on_deferred_list:
                    folio.on_deferred_list = True
                    queue[folio] = None
            for folio in fbatch:                        # folios_put()
                del self.deferred_split_held[folio]
                self.speculative_put(folio)
            if not (nr_to_scan and queue):
                return split

    def split_folio_to_order0(self, folio: Folio) -> list[Folio]:
        """__folio_freeze_and_split_unmapped() clears PG_partially_mapped (and its
        mTHP stat) also of a folio the scan holds off the queue."""
        if not folio.on_deferred_list and folio_test_partially_mapped(folio):
            folio_clear_partially_mapped(folio)
            self.count_mthp("nr_anon_partially_mapped", folio.order, -1)
        return super().split_folio_to_order0(folio)
