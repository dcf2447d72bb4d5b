"""LRU lists and per-CPU folio batches (mm/swap.c, mm/vmscan.c isolation)."""

from __future__ import annotations

from collections.abc import Callable

from engine.mm.events import ISOLATE_QUEUED_LAZYFREE, LAZYFREE_REQUEUE, folio_batch_full
from engine.mm.flags import LruList
from engine.mm.folio import (
    Folio,
    folio_clear_active,
    folio_clear_lru,
    folio_clear_referenced,
    folio_clear_swapbacked,
    folio_set_lru,
    folio_test_active,
    folio_test_anon,
    folio_test_large,
    folio_test_lru,
    folio_test_mlocked,
    folio_test_swapbacked,
    folio_test_swapcache,
    folio_test_unevictable,
)
from engine.mm.state import KernelMixin


def folio_lru_list(folio: Folio) -> LruList:
    """Which list a folio belongs on, from its flags (folio_lru_list)."""
    if folio_test_unevictable(folio) or folio_test_mlocked(folio):
        return LruList.LRU_UNEVICTABLE
    file = not folio_test_swapbacked(folio)     # lazyfree anon folios live on the file LRU
    base = LruList.LRU_INACTIVE_FILE if file else LruList.LRU_INACTIVE_ANON
    return LruList(base + 1) if folio_test_active(folio) else base


class LruMixin(KernelMixin):
    """Per-node LRU lists and the per-CPU lru_add / lru_lazyfree batches."""

    #: PAGEVEC_SIZE: folios a per-CPU folio batch holds before it is moved
    #: (31 from 9cecde80aae0 "mm: increase folio batch size", v6.9; 15 before).
    FOLIO_BATCH_SIZE = 31
    #: folio_mark_lazyfree() clears PG_lru when it queues a folio (33dfe9204f29
    #: "mm/gup: clear the LRU flag of a page before adding to LRU batch", v6.11;
    #: reverted in 2025 upstream and in the stable branches).  Without it the
    #: queued folio stays on its anon LRU list, isolatable, and
    #: folio_batch_move_lru() clears the flag when it moves it (skipping a
    #: folio whose flag is gone: isolated meanwhile).
    LAZYFREE_QUEUE_CLEARS_LRU = True

    def lru_init(self) -> None:
        # dicts as ordered sets: first key = LRU tail (oldest), as reclaim scans it
        self.lruvec: dict[LruList, dict[Folio, None]] = {lru: {} for lru in LruList}
        self.cpu_lru_add: dict[int, list[Folio]] = {}
        self.cpu_lru_lazyfree: dict[int, list[Folio]] = {}

    def lruvec_add_folio(self, folio: Folio) -> None:
        lru = folio_lru_list(folio)
        folio.lru_list = lru
        folio_set_lru(folio)
        self.lruvec[lru][folio] = None

    def lruvec_del_folio(self, folio: Folio) -> None:
        if folio.lru_list is not None:
            self.lruvec[folio.lru_list].pop(folio, None)
        folio.lru_list = None

    def _batch_add_and_move(self, batches: dict[int, list[Folio]], folio: Folio,
                            move: Callable[[Folio], None]) -> None:
        """__folio_batch_add_and_move(): the batch holds a ref until moved."""
        self.ref_get(folio, "batch")
        batch = batches.setdefault(self.current.cpu, [])
        batch.append(folio)
        if len(batch) >= self.FOLIO_BATCH_SIZE:
            self.event(folio_batch_full(self.FOLIO_BATCH_SIZE), folio)
            self._batch_move(batch, move)
        elif folio_test_large(folio):
            self._batch_move(batch, move)

    def _batch_move(self, batch: list[Folio], move: Callable[[Folio], None]) -> None:
        for folio in batch:
            move(folio)
            self.ref_put(folio, "batch")
        batch.clear()

    def _lru_add(self, folio: Folio) -> None:
        if folio.freed:
            return
        self.lruvec_add_folio(folio)

    def folio_add_lru(self, folio: Folio) -> None:
        """folio_add_lru(): via the per-CPU lru_add batch."""
        self._batch_add_and_move(self.cpu_lru_add, folio, self._lru_add)

    def _lru_lazyfree(self, folio: Folio) -> None:
        """lru_lazyfree(): move to the inactive file LRU as a clean lazyfree folio.

        Context: PG_lru cleared by the caller (folio_batch_move_lru())."""
        if not (folio_test_anon(folio) and folio_test_swapbacked(folio)
                and not folio_test_swapcache(folio) and not folio_test_unevictable(folio)):
            return
        self.lruvec_del_folio(folio)
        folio_clear_active(folio)
        folio_clear_referenced(folio)
        folio_clear_swapbacked(folio)
        self.lruvec_add_folio(folio)
        self.count("PGLAZYFREE", folio.nr)

    def folio_mark_lazyfree(self, folio: Folio) -> None:
        """folio_mark_lazyfree(): queue a swapbacked anon folio for the lazyfree move."""
        if (folio_test_anon(folio) and folio_test_swapbacked(folio) and folio_test_lru(folio)
                and not folio_test_swapcache(folio) and not folio_test_unevictable(folio)):
            if self.LAZYFREE_QUEUE_CLEARS_LRU:
                folio_clear_lru(folio)             # folio_test_clear_lru() at queue time
            elif self._lazyfree_queued(folio):
                # PG_lru still set: a second MADV_FREE queues it again (another
                # reference), here or in another CPU's batch
                self.event(LAZYFREE_REQUEUE, folio)
            self._batch_add_and_move(self.cpu_lru_lazyfree, folio, self._lazyfree_move)

    def _lazyfree_queued(self, folio: Folio) -> bool:
        """Whether @folio waits in some CPU's lazyfree batch."""
        return any(folio in batch for batch in self.cpu_lru_lazyfree.values())

    def _lazyfree_move(self, folio: Folio) -> None:
        """folio_batch_move_lru(fbatch, lru_lazyfree) for one folio."""
        if not self.LAZYFREE_QUEUE_CLEARS_LRU:
            if not folio_test_lru(folio):
                return                        # folio_test_clear_lru() failed: skipped
            folio_clear_lru(folio)
        self._lru_lazyfree(folio)
        folio_set_lru(folio)

    def lru_add_drain_cpu(self, cpu: int) -> None:
        self._batch_move(self.cpu_lru_add.get(cpu, []), self._lru_add)
        self._batch_move(self.cpu_lru_lazyfree.get(cpu, []), self._lazyfree_move)

    def lru_add_drain(self) -> None:
        """lru_add_drain(): flush this CPU's batches."""
        self.lru_add_drain_cpu(self.current.cpu)

    def lru_add_drain_all(self) -> None:
        for cpu in sorted(set(self.cpu_lru_add) | set(self.cpu_lru_lazyfree)):
            self.lru_add_drain_cpu(cpu)

    def folio_isolate_lru(self, folio: Folio) -> bool:
        """Take a folio off its LRU with an isolation reference."""
        if not folio_test_lru(folio) or folio.freed:
            return False
        if not self.LAZYFREE_QUEUE_CLEARS_LRU and self._lazyfree_queued(folio):
            self.event(ISOLATE_QUEUED_LAZYFREE, folio)
        folio_clear_lru(folio)
        self.lruvec_del_folio(folio)
        self.ref_get(folio, "isolate")
        return True

    def folio_putback_lru(self, folio: Folio) -> None:
        """folio_putback_lru() / move_folios_to_lru(): back on the LRU, drop the isolation ref."""
        if folio.freed:
            return
        self.lruvec_add_folio(folio)
        self.ref_put(folio, "isolate")
