"""Transparent huge pages (mm/huge_memory.c): PMD split, lazyfree PMD discard,
the deferred-split queue and its shrinker, folio split, MADV_FREE of a PMD.
"""

from __future__ import annotations

from engine.mm.events import (
    DEFERRED_SPLIT_PARTIALLY_MAPPED,
    DEFERRED_SPLIT_REF,
    DEFERRED_SPLIT_UNDERUSED,
    DISCARD_LAZYFREE_PMD,
    SPLIT_FAILED,
    SPLIT_FOLIO,
    SPLIT_HUGE_PMD,
    SPLIT_REMAP_ZEROPAGE,
)
from engine.mm.flags import VM_LOCKED
from engine.mm.folio import (
    Folio,
    folio_clear_dirty,
    folio_clear_partially_mapped,
    folio_mapcount,
    folio_mark_dirty,
    folio_ref_add,
    folio_ref_dec,
    folio_ref_inc,
    folio_set_count,
    folio_set_dirty,
    folio_set_lru,
    folio_set_partially_mapped,
    folio_set_swapcache,
    folio_test_anon,
    folio_test_dirty,
    folio_test_lru,
    folio_test_mlocked,
    folio_test_partially_mapped,
    folio_test_pmd_mappable,
    folio_test_swapbacked,
    folio_test_swapcache,
)
from engine.mm.memory import ZERO_PFN
from engine.mm.mm_types import MM_ANONPAGES, MmStruct, VmArea
from engine.mm.pgtable import (
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PageTable,
    mk_pte,
    pmd_dirty,
    pmd_index,
    pmd_mkclean,
    pmd_mkhuge,
    pmd_mkold,
    pmd_pfn,
    pmd_write,
    pmd_young,
    pte_dirty,
    pte_index,
    pte_pfn,
    pte_present,
)
from engine.mm.rmap import folio_end_in_vma
from engine.mm.sched import KThread, LockContext, SpinLock, YieldPoint, Yields, spin_lock, spin_unlock
from engine.mm.state import KernelMixin


class HugeMemoryMixin(KernelMixin):
    """THP paths.  ``__discard_anon_folio_pmd_locked`` here is the v6.11–v6.14 form."""

    # -- the deferred-split queue ---------------------------------------------
    def deferred_split_folio(self, folio: Folio, partially_mapped: bool) -> None:
        """deferred_split_folio(folio, partially_mapped) as in v6.12+.

        Context: split_queue_lock (not a yield point: taken and released here).
        """
        if folio.order <= 1:
            return
        if not partially_mapped and not self.split_underused_thp:
            return
        if folio_test_swapcache(folio):
            return
        if partially_mapped:
            if not folio_test_partially_mapped(folio):
                folio_set_partially_mapped(folio)
                if folio_test_pmd_mappable(folio):
                    self.count("THP_DEFERRED_SPLIT_PAGE")
                self.count_mthp("split_deferred", folio.order)
                self.count_mthp("nr_anon_partially_mapped", folio.order)
                self.event(DEFERRED_SPLIT_PARTIALLY_MAPPED, folio)
        if not folio.on_deferred_list:
            folio.on_deferred_list = True
            self.deferred_split_queue[folio] = None

    split_underused_thp = True

    def folio_unqueue_deferred_split(self, folio: Folio) -> None:
        """Take a folio off the queue (at free or split)."""
        self.deferred_split_queue.pop(folio, None)
        folio.on_deferred_list = False
        if folio_test_partially_mapped(folio):
            folio_clear_partially_mapped(folio)
            self.count_mthp("nr_anon_partially_mapped", folio.order, -1)

    def deferred_split_scan(self, nr_to_scan: int) -> Yields[int]:
        """The deferred-split shrinker's scan (list + ``prev`` form, v6.12–v6.18).

        Context: takes a speculative reference on each queued folio, without
        the folio lock or any PTL; yields while holding it.  Return: folios split.
        """
        batch: list[Folio] = []
        for folio in list(self.deferred_split_queue)[:nr_to_scan]:
            del self.deferred_split_queue[folio]
            if self.speculative_get(folio):
                # An event, so that coverage tells a scan that caught a folio from one
                # that found the queue empty.
                self.event(DEFERRED_SPLIT_REF, folio)
                batch.append(folio)          # stays "on a list": _deferred_list non-empty
            else:
                folio.on_deferred_list = False
                if folio_test_partially_mapped(folio):
                    folio_clear_partially_mapped(folio)
                    self.count_mthp("nr_anon_partially_mapped", folio.order, -1)
        split = 0
        requeue = []
        for folio in batch:
            did_split = yield from self.deferred_split_try(folio)
            split += did_split
            if not did_split and not folio.freed:
                if folio_test_partially_mapped(folio):
                    requeue.append(folio)
                else:
                    folio.on_deferred_list = False
            self.speculative_put(folio)
        for folio in requeue:
            if not folio.freed and folio.on_deferred_list:
                self.deferred_split_queue[folio] = None
        return split

    def deferred_split_try(self, folio: Folio) -> Yields[bool]:
        """One scanned folio of deferred_split_scan(): split it if it is partially
        mapped (or underused), unless mlocked or its lock is taken.

        The mlocked test stands before the split for every folio, as the model
        always had it; the kernels read (6.12-7.3) skip only an mlocked folio
        that is not partially mapped (6.18+), or none (6.12-6.17)
        (docs/kernel-notes.md section 22).
        Context: the shrinker's speculative reference held; yields first, since
        another CPU can act while the shrinker holds it.  Return: True if split.
        """
        yield YieldPoint.SHRINKER_REF_HELD
        if not folio.freed and (folio_test_partially_mapped(folio) or self.thp_underused(folio)):
            if not folio_test_mlocked(folio) and folio_trylock(self, folio):
                ok = yield from self.split_folio(folio)
                folio_unlock(self, folio)
                return ok
        return False

    def thp_underused(self, folio: Folio) -> bool:
        """thp_underused(): false with the default max_ptes_none = HPAGE_PMD_NR - 1."""
        return False

    def speculative_get(self, folio: Folio) -> bool:
        """folio_try_get() by a lockless walker; the reference is accounted as speculative."""
        if folio.freed or folio.ref == 0:
            return False
        self.ref_get(folio, "spec")
        return True

    def speculative_put(self, folio: Folio) -> None:
        self.ref_put(folio, "spec")

    # -- splitting a PMD mapping ------------------------------------------------
    def split_huge_pmd_locked(self, vma: VmArea, pmd_idx: int, folio: Folio,
                              freeze: bool = False) -> PageTable:
        """__split_huge_pmd_locked(): remap a huge PMD as 512 PTEs.

        The dirty, write and young bits go to every PTE; a dirty PMD dirties the
        folio.  Without @freeze the folio gains HPAGE_PMD_NR - 1 references and
        a PTE mapping of every page.  With @freeze (unmap_folio() before a
        split) the PTEs are migration entries: no PTE mapping is added and the
        PMD's reference is dropped, so the folio goes from entirely mapped to
        not mapped here, never partially mapped; the model writes the PTEs
        remap_page() will restore and keeps the list of them (see
        :meth:`unmap_folio`).  Context: PMD lock.  Return: the new page table.
        """
        mm = vma.mm
        word = mm.pmd_huge.pop(pmd_idx)
        dirty = pmd_dirty(word)
        if dirty:
            folio_set_dirty(folio)
        pt = mm.deposited.pop(pmd_idx, None)
        if pt is None:
            pt = PageTable(pmd_idx << PMD_SHIFT, mm.id, mm.ptl(pmd_idx))
        mm.pte_tables[pmd_idx] = pt
        write, young = pmd_write(word), pmd_young(word)
        pfn = pmd_pfn(word)
        entries = pt.entries
        for i in range(HPAGE_PMD_NR):
            entries[i] = mk_pte(pfn + i, write, dirty, young)
        self.cost["pte_writes"] += HPAGE_PMD_NR
        if freeze:
            self.folio_drop_rmap_pmd(folio, vma)
            folio_ref_dec(folio)                  # put_page() of the PMD's reference
        else:
            folio_ref_add(folio, HPAGE_PMD_NR - 1)
            self.folio_add_anon_rmap_ptes(folio, 0, HPAGE_PMD_NR, vma)
            self.folio_remove_rmap_pmd(folio, vma)
        self.count("THP_SPLIT_PMD")
        self.event(SPLIT_HUGE_PMD, folio)
        return pt

    def split_huge_pmd(self, vma: VmArea, pmd_idx: int) -> Yields[None]:
        """__split_huge_pmd(): take the PMD lock and split if still huge."""
        mm = vma.mm
        lock = mm.ptl(pmd_idx)
        yield from spin_lock(self, lock)
        try:
            word = mm.pmd_huge.get(pmd_idx)
            if word is not None:
                self.split_huge_pmd_locked(vma, pmd_idx, self.pfn_folio(pmd_pfn(word)))
        finally:
            spin_unlock(self, lock)

    # -- discarding a lazyfree PMD-mapped THP ------------------------------------
    def unmap_huge_pmd_locked(self, vma: VmArea, pmd_idx: int, folio: Folio) -> Yields[bool]:
        """unmap_huge_pmd_locked() (735ecdfaf4e8): only lazyfree anon folios.
        Return: True if discarded."""
        if folio_test_anon(folio) and not folio_test_swapbacked(folio):
            return (yield from self.discard_anon_folio_pmd_locked(vma, pmd_idx, folio))
        return False

    def _discard_anon_folio_pmd_finish(self, vma: VmArea, pmd_idx: int, folio: Folio) -> None:
        mm = vma.mm
        self.folio_remove_rmap_pmd(folio, vma)
        mm.deposited.pop(pmd_idx, None)           # zap_deposited_table()
        mm.rss[MM_ANONPAGES] -= HPAGE_PMD_NR
        self.folio_put(folio)
        self.event(DISCARD_LAZYFREE_PMD, folio)

    def discard_anon_folio_pmd_locked(self, vma: VmArea, pmd_idx: int,
                                      folio: Folio) -> Yields[bool]:
        """__discard_anon_folio_pmd_locked(): the version's dirty test
        (:meth:`pmd_discard_check`), pmdp_huge_clear_flush(), the refcount read,
        and the version's decision on the word the clear returned
        (:meth:`pmd_discard_decide`).

        Other CPUs can act on both sides of the clear though the PMD lock is
        held: a store through the still-present PMD sets its dirty bit (the MMU
        takes no lock), which the clear returns; GUP-fast may grab the folio
        until the barrier after the clear.  A refusal restores the cleared word,
        with whatever the MMU set in it (mm/huge_memory.c of 6.12.117 and of
        linux-source-7.2; docs/kernel-notes.md section 19).

        Context: PMD lock held.  Return: True if discarded.
        """
        mm = vma.mm
        if not self.pmd_discard_check(vma, folio, mm.pmd_huge[pmd_idx]):
            return False
        yield YieldPoint.PMD_CHECKED
        cleared = mm.pmd_huge.pop(pmd_idx)       # pmdp_huge_clear_flush()
        self.cost["tlb_flushes"] += 1
        yield YieldPoint.PMD_CLEARED             # smp_mb(), pairs with GUP-fast
        if self.pmd_discard_decide(vma, folio, cleared, folio.ref, folio_mapcount(folio)):
            self._discard_anon_folio_pmd_finish(vma, pmd_idx, folio)
            return True
        mm.pmd_huge[pmd_idx] = cleared           # set_pmd_at(orig_pmd): the cleared word
        return False

    def pmd_discard_check(self, vma: VmArea, folio: Folio, pmd: int) -> bool:
        """The v6.11–v6.14 test before the clear: a dirty folio or PMD is refused,
        no flag changes.  Return: True to go on and clear the PMD."""
        return not (folio_test_dirty(folio) or pmd_dirty(pmd))

    def pmd_discard_decide(self, vma: VmArea, folio: Folio, cleared: int, ref_count: int,
                           map_count: int) -> bool:
        """The v6.11–v6.14 test after the clear (and smp_rmb()): refuse a dirty
        folio or cleared word, or a reference beyond isolation's and the
        mappings'.  Return: True to discard."""
        return not (folio_test_dirty(folio) or pmd_dirty(cleared)) and ref_count == map_count + 1

    # -- splitting a folio ----------------------------------------------------
    #: remap_page() after a successful split maps every zero-filled page to the
    #: shared zero page instead of its new small folio (RMP_USE_SHARED_ZEROPAGE,
    #: b1f202060afe "mm: remap unused subpages to shared zeropage when splitting
    #: isolated thp", v6.12).  The v5.18 engine clears it.
    SPLIT_MAPS_UNUSED_TO_ZEROPAGE = True

    def split_folio(self, folio: Folio, to_list: list[Folio] | None = None) -> Yields[bool]:
        """split_folio() / split_huge_page_to_list_to_order(folio, list, 0).

        can_split_folio(), then unmap_folio() (:meth:`unmap_folio`), then
        folio_ref_freeze() at the caller's reference plus the swap cache's;
        if that fails, remap_page() maps the large folio again (-EAGAIN),
        else __split_huge_page() splits it and remap_page() maps the small
        folios (:meth:`remap_page`).

        The kernel replaces the mappings by migration entries, which make any
        other CPU that touches them wait for the split to finish.  The model
        has no migration entries: it waits until no other thread holds a page
        table lock unmap_folio() needs, then unmaps, splits and remaps without
        yielding, so no other thread sees the folio unmapped.

        Every attempt that gets past the argument checks is counted at the
        function's common exit: THP_SPLIT_PAGE or THP_SPLIT_PAGE_FAILED for a
        PMD-order folio, the mTHP stat split or split_failed for its order
        (mm/huge_memory.c of 6.12.117 and the v5.x split_huge_page_to_list()).

        Context: folio locked; the caller holds one reference.  Return: True
        when split (False = -EAGAIN).
        """
        if not folio.order:
            return True
        if not can_split_folio(folio):
            self.split_failed(folio)
            return False
        yield from self.unmap_folio_wait(folio)
        migrations = self.unmap_folio(folio)
        if folio.ref != 1 + split_extra_pins(folio):                # folio_ref_freeze()
            self.remap_page(migrations, use_zeropage=False)
            self.split_failed(folio)
            return False
        tails = self.split_folio_to_order0(folio)
        self.remap_page(migrations, use_zeropage=self.SPLIT_MAPS_UNUSED_TO_ZEROPAGE)
        self.split_folio_tails_done(folio, tails, to_list)
        return True

    def split_failed(self, folio: Folio) -> None:
        """The failure count at the exit of split_huge_page_to_list_to_order()."""
        if folio_test_pmd_mappable(folio):
            self.count("THP_SPLIT_PAGE_FAILED")
        self.count_mthp("split_failed", folio.order)
        self.event(SPLIT_FAILED, folio)

    def unmap_folio_wait(self, folio: Folio) -> Yields[None]:
        """Wait until no other thread holds a page table lock of a mapping of
        @folio: try_to_migrate() takes each one in turn."""
        while (busy := self._folio_busy_ptl(folio)) is not None:
            yield from spin_lock(self, busy)
            spin_unlock(self, busy)

    def _folio_busy_ptl(self, folio: Folio) -> SpinLock | None:
        for vma, address in self.rmap_targets(folio):
            end = folio_end_in_vma(folio, vma)
            for pmd_idx in range(pmd_index(address), pmd_index(end - 1) + 1):
                lock = vma.mm.pmd_ptl.get(pmd_idx)
                if lock is not None and lock.owner is not None:
                    return lock
        return None

    def unmap_folio(self, folio: Folio) -> list[tuple[VmArea, PageTable, int, int]]:
        """unmap_folio(): try_to_migrate(folio, TTU_RMAP_LOCKED | TTU_SPLIT_HUGE_PMD |
        TTU_SYNC | TTU_BATCH_FLUSH) for an anon folio.

        try_to_migrate_one() freezes a PMD mapping whole (split_huge_pmd_address()
        with freeze, :meth:`split_huge_pmd_locked`), and replaces PTE mappings
        one at a time: each folio_remove_rmap_pte() that leaves a page unmapped
        while others stay mapped finds the folio partially mapped, so
        __folio_remove_rmap() queues it with deferred_split_folio(folio, true)
        (split_deferred +1, once: unless PG_partially_mapped is already set).
        A dirty PTE dirties the folio (folio_mark_dirty() "now the pte is
        gone"), so every small folio of the split inherits PG_dirty.
        mm/huge_memory.c and mm/rmap.c of v6.12 and v6.16; real 6.12.117 and
        6.16.12 count split_deferred +1 when they split a PTE-mapped mTHP.

        The PTE words stay as they are (they are what remap_page() restores).
        Context: folio locked; nothing yields until :meth:`remap_page`.
        Return: the unmapped PTEs, as (vma, page table, index, pfn).
        """
        migrations: list[tuple[VmArea, PageTable, int, int]] = []
        lo, hi = folio.pfn, folio.pfn + folio.nr
        for vma, address in self.rmap_targets(folio):
            mm = vma.mm
            pmd_idx = pmd_index(address)
            word = mm.pmd_huge.get(pmd_idx)
            if word is not None and lo <= pmd_pfn(word) < hi:
                pt = self.split_huge_pmd_locked(vma, pmd_idx, folio, freeze=True)
                migrations.extend((vma, pt, i, pmd_pfn(word) + i) for i in range(HPAGE_PMD_NR))
                continue
            for a in range(address, folio_end_in_vma(folio, vma), PAGE_SIZE):
                table = mm.pte_tables.get(pmd_index(a))
                if table is None:
                    continue
                idx = pte_index(a)
                pte = table.entries[idx]
                self.cost["pte_reads"] += 1
                if not pte_present(pte) or not lo <= pte_pfn(pte) < hi:
                    continue
                if pte_dirty(pte):
                    folio_mark_dirty(folio)          # "now the pte is gone"
                self.folio_drop_rmap_ptes(folio, pte_pfn(pte) - lo, 1, vma)
                folio_ref_dec(folio)                  # folio_put(): the entry holds none
                migrations.append((vma, table, idx, pte_pfn(pte)))
        self.cost["tlb_flushes"] += 1                 # try_to_unmap_flush()
        return migrations

    def remap_page(self, migrations: list[tuple[VmArea, PageTable, int, int]],
                   use_zeropage: bool) -> None:
        """remap_page(): remove_migration_ptes() maps each page again, in the
        folio that now holds it (the large one after a failed split).

        With @use_zeropage, try_to_map_unused_to_zeropage() maps a page whose
        contents are all zero to the shared zero page instead, unless the
        folio or the VMA is mlocked, and drops MM_ANONPAGES: the small folio
        loses that mapping (and is freed with no other reference).
        Context: folio(s) locked.
        """
        for vma, pt, idx, pfn in migrations:
            folio = self.pfn_folio(pfn)
            page = pfn - folio.pfn
            if (use_zeropage and not folio.data[page] and not folio_test_mlocked(folio)
                    and not vma.vm_flags & VM_LOCKED):
                pt.entries[idx] = mk_pte(ZERO_PFN, False)
                vma.mm.rss[MM_ANONPAGES] -= 1
                self.event(SPLIT_REMAP_ZEROPAGE, folio)
                continue
            folio_ref_inc(folio)
            self.folio_add_anon_rmap_ptes(folio, page, 1, vma)

    def split_folio_to_order0(self, folio: Folio) -> list[Folio]:
        """__split_huge_page() of an unmapped, frozen folio into small folios.

        Context: after :meth:`unmap_folio`; the mappings come back with
        :meth:`remap_page`.  Return: the new tail folios.
        """
        order = folio.order
        if folio.on_deferred_list:
            self.folio_unqueue_deferred_split(folio)
        if folio_test_pmd_mappable(folio):
            self.count("THP_SPLIT_PAGE")
        self.count_mthp("split", order)
        self.event(SPLIT_FOLIO, folio)
        nr = folio.nr
        swap = folio.swap
        folio.mm_ids = None                   # small folios have no owner tracking
        tails = []
        for i in range(1, nr):
            t = Folio(folio.pfn + i, 0)
            t.anon, t.swapbacked, t.dirty = folio.anon, folio.swapbacked, folio.dirty
            t.active, t.referenced, t.mlocked = folio.active, folio.referenced, folio.mlocked
            t.index, t.anon_vma = folio.index + i, folio.anon_vma
            t.data[0] = folio.data[i]
            folio_set_count(t, 0)
            if folio_test_swapcache(folio):
                folio_set_swapcache(t)
                t.swap = [swap[i]]
                folio_ref_inc(t)
                t.set_holder("swapcache", 1)
            self.folio_register(t)
            tails.append(t)
        head_extra = folio.extra
        if folio_test_swapcache(folio):
            folio.set_holder("swapcache", 1)
            folio.swap = [swap[0]]
        folio.order, folio.nr = 0, 1
        folio.mapcount = [0]
        folio.data = [folio.data[0]]
        folio.entire_mapcount = 0
        folio.pincount = 0
        folio_set_count(folio, sum(head_extra.values()))
        self.rmap_changed(folio)
        return tails

    def split_folio_tails_done(self, folio: Folio, tails: list[Folio],
                               to_list: list[Folio] | None) -> None:
        """The end of __split_huge_page(): each tail goes to @to_list (isolated,
        for reclaim) or to the head's LRU list, and one that nothing maps or
        holds is freed."""
        for t in tails:
            if to_list is not None:
                self.ref_get(t, "isolate")
                to_list.append(t)
            elif folio_test_lru(folio) and folio.lru_list is not None:
                folio_set_lru(t)
                self.lruvec_add_folio(t)
            if t.ref == 0:
                self.free_folio(t)

    # -- MADV_FREE of a huge PMD ----------------------------------------------
    def madvise_free_huge_pmd(self, vma: VmArea, pmd_idx: int, addr: int,
                              next_: int) -> Yields[bool]:
        """madvise_free_huge_pmd() (v6.10–v6.14 form).  Return: True if handled as a PMD."""
        mm = vma.mm
        lock = mm.ptl(pmd_idx)
        yield from spin_lock(self, lock)
        held = True
        try:
            word = mm.pmd_huge.get(pmd_idx)
            if word is None:
                return False
            folio = self.pfn_folio(pmd_pfn(word))
            if self.folio_maybe_mapped_shared(folio):
                return False
            if not folio_trylock(self, folio):
                return False
            if next_ - addr != PMD_SIZE:
                self.temp_get(folio)
                spin_unlock(self, lock)
                held = False
                yield from self.split_folio(folio)
                folio_unlock(self, folio)
                self.temp_put(folio)
                return False
            if folio_test_dirty(folio):
                folio_clear_dirty(folio)
            folio_unlock(self, folio)
            if pmd_young(word) or pmd_dirty(word):
                mm.pmd_huge[pmd_idx] = pmd_mkold(pmd_mkclean(word))
                self.cost["tlb_flushes"] += 1
            self.folio_mark_lazyfree(folio)
            return True
        finally:
            if held:
                spin_unlock(self, lock)

    # -- the PMD side of faults, zaps and VMA changes -----------------------------
    def thp_vma_suitable(self, vma: VmArea, pmd_idx: int) -> bool:
        start = pmd_idx << PMD_SHIFT
        return vma.vm_start <= start and start + PMD_SIZE <= vma.vm_end

    def zap_huge_pmd(self, vma: VmArea, pmd_idx: int) -> Yields[bool]:
        """zap_huge_pmd(): under the PMD lock (__pmd_trans_huge_lock()), zap the
        PMD if it is still huge.  Return: False when it is not (split or
        cleared while the caller waited): zap_pmd_range() then falls through
        to the PTEs."""
        mm = vma.mm
        lock = mm.ptl(pmd_idx)
        yield from spin_lock(self, lock)
        try:
            word = mm.pmd_huge.pop(pmd_idx, None)
            if word is None:
                return False
            mm.deposited.pop(pmd_idx, None)
            folio = self.pfn_folio(pmd_pfn(word))
            if pmd_dirty(word):
                folio_mark_dirty(folio)
            mm.rss[MM_ANONPAGES] -= HPAGE_PMD_NR
            self.folio_remove_rmap_pmd(folio, vma)
            self.folio_put(folio)
            self.cost["tlb_flushes"] += 1
            return True
        finally:
            spin_unlock(self, lock)

    def vma_adjust_trans_huge(self, mm: MmStruct, start: int, end: int) -> Yields[None]:
        """Before VMAs are split at @start and @end: split_huge_pmd_if_needed() of
        each end that is not PMD-aligned inside a VMA that covers its PMD's whole
        range.  split_huge_pmd_address() finds the PMD without looking at it
        (mm_find_pmd()) and __split_huge_pmd() reads it under its lock, so a
        split waits for a PMD lock holder - reclaim with the PMD cleared in
        __discard_anon_folio_pmd_locked(), which may restore it - and then
        splits what is there (mm/huge_memory.c of 6.12.117)."""
        for addr in (start, end):
            if not addr & (PMD_SIZE - 1):
                continue
            vma = mm.find_vma(addr)
            if vma is not None and self.thp_vma_suitable(vma, pmd_index(addr)):
                yield from self.split_huge_pmd(vma, pmd_index(addr))

    # -- faulting a PMD THP ---------------------------------------------------
    def do_huge_pmd_anonymous_page(self, vma: VmArea, pmd_idx: int) -> Yields[None]:
        """Fault in a PMD-mapped THP with a deposited page table."""
        mm = vma.mm
        folio = self.folio_alloc(HPAGE_PMD_ORDER)
        # The allocation's reference, held while the fault waits for the PMD
        # lock (a holder may yield: reclaim in __discard_anon_folio_pmd_locked());
        # the PMD mapping takes it over.
        folio.set_holder("alloc", 1)
        lock = mm.ptl(pmd_idx)
        yield from spin_lock(self, lock)
        try:
            if pmd_idx in mm.pmd_huge or pmd_idx in mm.pte_tables:
                self.ref_put(folio, "alloc")
                return
            folio.set_holder("alloc", 0)
            mm.deposited[pmd_idx] = PageTable(pmd_idx << PMD_SHIFT, mm.id, mm.ptl(pmd_idx))
            mm.pmd_huge[pmd_idx] = pmd_mkhuge(folio.pfn, vma.writable, dirty=True, young=True)
            self.folio_add_new_anon_rmap(folio, vma, pmd_idx << PMD_SHIFT, pmd=True)
            mm.rss[MM_ANONPAGES] += HPAGE_PMD_NR
            self.new_folio_mapped(folio, vma)
            self.new_pmd_thp(folio)
        finally:
            spin_unlock(self, lock)

    def new_pmd_thp(self, folio: Folio) -> None:
        """v6.12+ (dafff3f4c850): a new PMD THP is queued as a possible underused THP."""
        self.deferred_split_folio(folio, False)
        self.event(DEFERRED_SPLIT_UNDERUSED, folio)


def split_extra_pins(folio: Folio) -> int:
    """The references a split expects besides the mappings and the caller's:
    one per page for the swap cache (can_split_folio()'s @pextra_pins)."""
    return folio.nr if folio_test_swapcache(folio) else 0


def can_split_folio(folio: Folio) -> bool:
    """can_split_folio(folio, 1, NULL): no reference beyond the mappings, the
    swap cache's and the caller's one."""
    return folio_mapcount(folio) == folio.ref - split_extra_pins(folio) - 1


def folio_trylock(k: LockContext, folio: Folio) -> bool:
    """folio_trylock()."""
    if folio.locked:
        return False
    folio.locked = True
    folio.lock_owner = k.current
    return True


def folio_lock(k: LockContext, folio: Folio) -> Yields[None]:
    """folio_lock(): sleeps (here: not runnable) until PG_locked is free."""
    t = k.current
    while folio.locked:
        t.blocked_on = FolioLockWait(folio)
        yield t.blocked_on
    t.blocked_on = None
    folio.locked = True
    folio.lock_owner = t


def folio_unlock(k: LockContext, folio: Folio) -> None:
    folio.locked = False
    folio.lock_owner = None


class FolioLockWait:
    """What a thread sleeping in folio_lock() waits for."""

    __slots__ = ("folio",)

    def __init__(self, folio: Folio) -> None:
        self.folio = folio

    def free_for(self, t: KThread) -> bool:
        return not self.folio.locked

    def __repr__(self) -> str:
        return f"<PG_locked of folio pfn {self.folio.pfn:#x}>"

