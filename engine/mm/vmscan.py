"""Reclaim (mm/vmscan.c): isolation, shrink_folio_list, putback, swap-out."""

from __future__ import annotations

import enum

from engine.mm.events import LAZYFREE_FREED, RECLAIM_SPLIT_LAZYFREE, RECLAIM_SPLIT_NO_SWAP
from engine.mm.flags import TTU_BATCH_FLUSH, TTU_SPLIT_HUGE_PMD, TTU_SYNC, VM_LOCKED, FolioRef, LruList
from engine.mm.folio import (
    Folio,
    folio_clear_active,
    folio_clear_dirty,
    folio_clear_swapcache,
    folio_mapped,
    folio_mark_dirty,
    folio_maybe_dma_pinned,
    folio_ref_freeze,
    folio_ref_unfreeze,
    folio_set_active,
    folio_set_referenced,
    folio_set_swapcache,
    folio_test_anon,
    folio_test_clear_referenced,
    folio_test_dirty,
    folio_test_mlocked,
    folio_test_partially_mapped,
    folio_test_pmd_mappable,
    folio_test_swapbacked,
    folio_test_swapcache,
)
from engine.mm.huge_memory import can_split_folio, folio_trylock, folio_unlock
from engine.mm.sched import YieldPoint, Yields
from engine.mm.state import KernelMixin


class ShrinkLabel(enum.Enum):
    """Where shrink_folio_list()'s loop body sends a folio: the label it jumps
    to (mm/vmscan.c), ``activate_locked_split`` folded into ACTIVATE_LOCKED."""

    #: free_it: the folio's count is frozen at zero; freed after the loop
    FREE_IT = enum.auto()
    #: activate_locked: put back on the active list (unless mlocked)
    ACTIVATE_LOCKED = enum.auto()
    #: keep_locked: put back on the list it came from
    KEEP_LOCKED = enum.auto()


class VmscanMixin(KernelMixin):
    """shrink_folio_list() and its callers."""

    def folio_check_references(self, folio: Folio) -> Yields[FolioRef]:
        """folio_check_references(): referenced mappings decide activate, keep or
        reclaim (``referenced_ptes`` counts VMAs: :meth:`folio_referenced`)."""
        referenced_ptes, vm_flags = yield from self.folio_referenced(folio)
        referenced_folio = folio_test_clear_referenced(folio)
        if vm_flags & VM_LOCKED:
            return FolioRef.FOLIOREF_ACTIVATE
        if referenced_ptes:
            folio_set_referenced(folio)
            if referenced_folio or referenced_ptes > 1:
                return FolioRef.FOLIOREF_ACTIVATE
            return FolioRef.FOLIOREF_KEEP
        if referenced_folio and not folio_test_swapbacked(folio):
            return FolioRef.FOLIOREF_RECLAIM_CLEAN
        return FolioRef.FOLIOREF_RECLAIM

    def add_to_swap(self, folio: Folio) -> bool:
        """Give a swapbacked folio swap slots and put it in the swap cache."""
        folio.swap = self.swap.alloc(folio.nr)
        folio_set_swapcache(folio)
        self.ref_get(folio, "swapcache", folio.nr)
        folio_mark_dirty(folio)           # the data is not on swap yet
        if folio.on_deferred_list and not folio_test_partially_mapped(folio):
            self.folio_unqueue_deferred_split(folio)
        return True

    def pageout(self, folio: Folio) -> None:
        """Write a dirty swapcache folio to its slots (synchronously, in the model)."""
        for i, slot in enumerate(folio.swap):
            self.swap.data[slot] = folio.data[i]
        folio_clear_dirty(folio)
        self.count("PSWPOUT", folio.nr)

    def remove_mapping(self, folio: Folio) -> bool:
        """__remove_mapping() of a swapcache folio: freeze at isolation + cache refs."""
        if not folio_ref_freeze(folio, 1 + folio.nr):
            return False
        if folio_test_dirty(folio):
            folio_ref_unfreeze(folio, 1 + folio.nr)
            return False
        for slot in folio.swap:
            if not self.swap.count.get(slot):
                self.swap.release(slot)
        folio.swap = []
        folio_clear_swapcache(folio)
        folio.set_holder("swapcache", 0)
        return True

    def shrink_folio_list(self, folio_list: list[Folio],
                          ignore_references: bool) -> Yields[tuple[int, list[Folio]]]:
        """shrink_folio_list(): try to free each isolated folio.

        Context: each folio isolated (one reference); takes and drops folio
        locks.  Return: (nr_reclaimed, folios to put back).
        """
        nr_reclaimed = 0
        ret: list[Folio] = []
        freed: list[Folio] = []
        i = 0
        while i < len(folio_list):
            folio = folio_list[i]
            i += 1
            if i > 1:
                yield YieldPoint.BETWEEN_FOLIOS    # between two folios
            if not folio_trylock(self, folio):
                ret.append(folio)
                continue
            label = yield from self._shrink_one(folio, ignore_references, folio_list)
            nr = folio.nr                      # after any split in _shrink_one
            if label is ShrinkLabel.FREE_IT:
                folio_unlock(self, folio)
                nr_reclaimed += nr
                freed.append(folio)
                continue
            if label is ShrinkLabel.ACTIVATE_LOCKED:
                if not folio_test_mlocked(folio):
                    folio_set_active(folio)
                    self.count("nr_activate", nr)
            folio_unlock(self, folio)
            ret.append(folio)
        self.try_to_unmap_flush()
        for folio in freed:
            folio.set_holder("isolate", 0)      # the freeze took the isolation reference
            if folio.on_deferred_list:
                self.folio_unqueue_deferred_split(folio)
            self.free_folio(folio)
        self.count("nr_reclaimed", nr_reclaimed)
        return nr_reclaimed, ret

    def _shrink_one(self, folio: Folio, ignore_references: bool,
                    folio_list: list[Folio]) -> Yields[ShrinkLabel]:
        """The body of shrink_folio_list()'s loop.

        Return: the :class:`ShrinkLabel` it goes to with the folio (still locked).
        """
        references = FolioRef.FOLIOREF_RECLAIM
        if not ignore_references:
            references = yield from self.folio_check_references(folio)
            if references is FolioRef.FOLIOREF_ACTIVATE:
                return ShrinkLabel.ACTIVATE_LOCKED
            if references is FolioRef.FOLIOREF_KEEP:
                self.count("nr_ref_keep", folio.nr)
                return ShrinkLabel.KEEP_LOCKED
        if folio_test_anon(folio) and folio_test_swapbacked(folio):
            if not folio_test_swapcache(folio):
                # feb889fb40fa (v5.11): a maybe-pinned folio never reaches the
                # swap cache, nor a split: keep_locked, inactive.
                if folio_maybe_dma_pinned(folio):
                    return ShrinkLabel.KEEP_LOCKED
                if folio.order and not can_split_folio(folio):
                    return ShrinkLabel.ACTIVATE_LOCKED         # "cannot split folio, skip it"
                if not self.total_swap_pages:
                    return (yield from self.shrink_anon_without_swap(folio, folio_list))
                if folio.order:
                    # no contiguous swap cluster in the model: THP_SWPOUT_FALLBACK
                    if not (yield from self.split_folio(folio, folio_list)):
                        return ShrinkLabel.ACTIVATE_LOCKED
                self.add_to_swap(folio)
        elif self.SPLITS_LAZYFREE_IN_RECLAIM and folio.order:
            # Before 735ecdfaf4e8: "Split file/lazyfree THP" ahead of the unmap.
            self.event(RECLAIM_SPLIT_LAZYFREE, folio)
            if not (yield from self.split_folio(folio, folio_list)):
                return ShrinkLabel.KEEP_LOCKED
        nr = folio.nr
        if folio_mapped(folio):
            flags = TTU_BATCH_FLUSH
            if folio_test_pmd_mappable(folio):
                flags |= TTU_SPLIT_HUGE_PMD
            if folio.order:
                flags |= TTU_SYNC
            was_swapbacked = folio_test_swapbacked(folio)
            yield from self.try_to_unmap(folio, flags)
            if folio_mapped(folio):
                self.count("nr_unmap_fail", nr)
                if not was_swapbacked and folio_test_swapbacked(folio):
                    self.count("nr_lazyfree_fail", nr)
                return ShrinkLabel.ACTIVATE_LOCKED
        # GUP-fast and speculative references can land before the freeze below.
        yield YieldPoint.BEFORE_FREEZE
        if folio_maybe_dma_pinned(folio):
            return ShrinkLabel.ACTIVATE_LOCKED
        if folio_test_dirty(folio):
            if not folio_test_swapbacked(folio):
                # folio_is_file_lru(): not written back by reclaim, activated instead
                self.count("nr_immediate", nr)
                return ShrinkLabel.ACTIVATE_LOCKED
            if references is FolioRef.FOLIOREF_RECLAIM_CLEAN:
                return ShrinkLabel.KEEP_LOCKED
            self.pageout(folio)
        if folio_test_anon(folio) and not folio_test_swapbacked(folio):
            if not folio_ref_freeze(folio, 1):
                return ShrinkLabel.KEEP_LOCKED
            # The dirty flag is deliberately not rechecked (see __remove_mapping).
            self.count("PGLAZYFREED", nr)
            self.event(LAZYFREE_FREED, folio)
            return ShrinkLabel.FREE_IT
        if folio_test_swapcache(folio):
            if not self.remove_mapping(folio):
                return ShrinkLabel.KEEP_LOCKED
            return ShrinkLabel.FREE_IT
        return ShrinkLabel.KEEP_LOCKED

    def shrink_anon_without_swap(self, folio: Folio, folio_list: list[Folio]) -> Yields[ShrinkLabel]:
        """The rest of the swap block of shrink_folio_list() for a swapbacked
        anon folio when no swap area is on (``!total_swap_pages``), after the
        pin test and can_split_folio().

        mm/vmscan.c, as read at gregkh/linux 029c9408049f (~v6.8) and in a
        v6.18.38 copy (same shape in between; v6.16 renamed add_to_swap() to
        folio_alloc_swap()): a partially mapped large folio is split first.
        Then the slot allocation fails - get_swap_pages() finds no swap area -
        so a small folio goes to ``activate_locked_split``, and a large one
        takes the "Fallback to swap normal pages" path: split_folio_to_list()
        (tails onto @folio_list, each activated in turn when its own
        allocation fails) and ``activate_locked_split`` for the head.  Nothing
        is swapped: the folio stays mapped and resident, but a large folio is
        split.

        Context: folio locked and isolated.  Return: ShrinkLabel.ACTIVATE_LOCKED.
        """
        if folio.order:
            # the partially-mapped split or the fallback split: whichever
            # runs, a folio whose refcount cannot be frozen stays whole.
            if not (yield from self.split_folio(folio, folio_list)):
                return ShrinkLabel.ACTIVATE_LOCKED
            self.event(RECLAIM_SPLIT_NO_SWAP, folio)
        return ShrinkLabel.ACTIVATE_LOCKED

    def isolate_lru_folios(self, nr_to_scan: int) -> list[Folio]:
        """isolate_lru_folios() from the inactive tails, file LRU first.

        When both inactive lists are empty, shrink_active_list() deactivates
        the oldest active folios first.  Without swap only the file lists
        (where lazyfree folios live) are scanned.
        """
        lists: tuple[LruList, ...] = (LruList.LRU_INACTIVE_FILE, LruList.LRU_INACTIVE_ANON)
        active: tuple[LruList, ...] = (LruList.LRU_ACTIVE_FILE, LruList.LRU_ACTIVE_ANON)
        if not self.total_swap_pages:
            # get_scan_count(): SCAN_FILE when !can_reclaim_anon_pages(), and
            # can_age_anon_pages() keeps shrink_active_list() off the anon lists.
            lists, active = lists[:1], active[:1]
        if not any(self.lruvec[lru] for lru in lists):
            for src in active:
                for folio in list(self.lruvec[src])[:nr_to_scan]:
                    self.lruvec_del_folio(folio)
                    folio_clear_active(folio)
                    self.lruvec_add_folio(folio)
        out: list[Folio] = []
        for lru in lists:
            for folio in list(self.lruvec[lru]):
                if len(out) >= nr_to_scan:
                    break
                if self.folio_isolate_lru(folio):
                    out.append(folio)
        return out

    def shrink_inactive_list(self, nr_to_scan: int) -> Yields[int]:
        """kswapd's pass: drain this CPU, isolate, shrink, put back.  Return: nr_reclaimed."""
        self.lru_add_drain()
        folios = self.isolate_lru_folios(nr_to_scan)
        if not folios:
            return 0
        yield YieldPoint.ISOLATED
        nr, ret = yield from self.shrink_folio_list(folios, ignore_references=False)
        for folio in ret:
            self.folio_putback_lru(folio)
        return nr

    def reclaim_pages(self, folios: list[Folio]) -> Yields[int]:
        """reclaim_pages() for MADV_PAGEOUT: references ignored."""
        nr, ret = yield from self.shrink_folio_list(folios, ignore_references=True)
        for folio in ret:
            self.folio_putback_lru(folio)
        return nr
