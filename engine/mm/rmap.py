"""Reverse mapping (mm/rmap.c): rmap counts, page_vma_mapped_walk, try_to_unmap.

The version-specific ``try_to_unmap_one`` lives in ``engine/kernels/``; this
module holds what every version shares: the rmap bookkeeping, the walk, the
swap-entry path of an unmap and the TLB-flush accounting.
"""

from __future__ import annotations

from engine.errors import HarnessError, RefcountUnderflow
from engine.mm.events import TTU_PINNED_ANON_STAYS_MAPPED
from engine.mm.flags import TTU, TTU_BATCH_FLUSH, TTU_IGNORE_MLOCK, VM_LOCKED, LockedLargeRef
from engine.mm.folio import (
    Folio,
    MmIds,
    folio_clear_swapbacked,
    folio_mapped,
    folio_mark_dirty,
    folio_maybe_dma_pinned,
    folio_set_mlocked,
    folio_set_swapbacked,
    folio_test_anon,
    folio_test_clear_mlocked,
    folio_test_lru,
    folio_test_partially_mapped,
    folio_test_swapbacked,
    folio_test_swapcache,
)
from engine.mm.mm_types import MM_ANONPAGES, MM_SWAPENTS, VmArea, linear_page_index, vma_address
from engine.mm.pgtable import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PageTable,
    pmd_index,
    pmd_young,
    pte_dirty,
    pte_index,
    pte_mkold,
    pte_pfn,
    pte_present,
    pte_young,
    set_pte_at,
    swp_entry_to_pte,
)
from engine.mm.sched import SpinLock, YieldPoint, Yields, spin_lock, spin_unlock
from engine.mm.state import KernelMixin


def folio_end_in_vma(folio: Folio, vma: VmArea) -> int:
    """Where the folio's range in @vma ends: past its last page, or at vm_end."""
    return min(vma_address(vma, folio.index) + folio.nr * PAGE_SIZE, vma.vm_end)


def folio_within_one_table(folio: Folio, vma: VmArea) -> bool:
    """folio_within_vma() and one PMD's range: folio_referenced_one()'s test
    before it calls a wholly mapped large folio in a locked VMA locked."""
    start = vma_address(vma, folio.index)
    end = start + folio.nr * PAGE_SIZE
    return (vma.vm_start <= start and end <= vma.vm_end
            and pmd_index(start) == pmd_index(end - 1))


class Pvmw:
    """struct page_vma_mapped_walk: where the walk is and which PTL it holds.

    ``pt``/``idx`` name the current PTE; ``pte`` is False when the hit is a
    huge PMD (the kernel's ``pvmw.pte == NULL``).
    """

    __slots__ = ("folio", "vma", "address", "start", "end", "pt", "idx", "pte", "ptl", "pmd_idx")

    def __init__(self, folio: Folio, vma: VmArea, address: int) -> None:
        self.folio = folio
        self.vma = vma
        self.start = address
        self.address = address - PAGE_SIZE     # advanced before the first look
        self.end = folio_end_in_vma(folio, vma)
        self.pt: PageTable | None = None
        self.idx = 0
        self.pte = True
        self.ptl: SpinLock | None = None
        self.pmd_idx = -1


def pvmw_table(pvmw: Pvmw) -> PageTable:
    """The PTE table of the walk's PTE hit (``pvmw.pte``): what the kernel's
    ``pvmw.pte`` points into.  Return: the table; at a PMD hit, a harness
    error (the PTE leg of a path reached a PMD mapping)."""
    pt = pvmw.pt
    if pt is None:
        raise HarnessError(f"{pvmw.vma!r} at {pvmw.address:#x}: a PMD hit has no PTE table")
    return pt


class RmapMixin(KernelMixin):
    """Rmap counting and walking, shared by every kernel version."""

    # -- adding and removing rmaps ----------------------------------------
    def rmap_changed(self, folio: Folio) -> None:
        """Every change of @folio's mapcounts ends here: counted as an rmap
        update (cost), and the refcount oracle's stamp dropped, so that it sums
        the folio's mappings again (Oracle.check_folios()).  With
        :meth:`Folio.set_holder` the only places the stamp is dropped."""
        folio.checked = None
        folio.touch()
        self.cost["rmap_updates"] += 1

    def folio_add_new_anon_rmap(self, folio: Folio, vma: VmArea, address: int, pmd: bool) -> None:
        """A freshly allocated anon folio gets its first mapping(s).

        VM_DROPPABLE folios are born lazyfree: never swapbacked (9651fcedf7b9).
        """
        folio.anon_vma = vma.anon_vma
        folio.index = linear_page_index(vma, address)
        if self.HAS_DROPPABLE and vma.droppable:
            folio_clear_swapbacked(folio)
        else:
            folio_set_swapbacked(folio)
        if pmd:
            folio.entire_mapcount += 1
        else:
            for i in range(folio.nr):
                folio.mapcount[i] += 1
        if folio.order:
            folio.mm_ids = MmIds(vma.mm.id, 1 if pmd else folio.nr)
        self.rmap_changed(folio)

    def folio_add_anon_rmap_ptes(self, folio: Folio, first: int, nr: int, vma: VmArea) -> None:
        mc = folio.mapcount
        for i in range(first, first + nr):
            mc[i] += 1
        if folio.mm_ids is not None:
            folio.mm_ids.add(vma.mm.id, nr)
        self.rmap_changed(folio)

    def folio_add_anon_rmap_pmd(self, folio: Folio, vma: VmArea) -> None:
        folio.entire_mapcount += 1
        if folio.mm_ids is not None:
            folio.mm_ids.add(vma.mm.id, 1)
        self.rmap_changed(folio)

    def folio_remove_rmap_ptes(self, folio: Folio, first: int, nr: int, vma: VmArea) -> None:
        """__folio_remove_rmap(RMAP_LEVEL_PTE): drop ``nr`` PTE mappings from page ``first``."""
        self.folio_drop_rmap_ptes(folio, first, nr, vma)
        if vma.vm_flags & VM_LOCKED and not folio_mapped(folio):
            self.munlock_folio(folio)

    folio_remove_rmap_pte = folio_remove_rmap_ptes

    def folio_drop_rmap_ptes(self, folio: Folio, first: int, nr: int, vma: VmArea) -> None:
        """The mapcount and deferred-split part of __folio_remove_rmap(RMAP_LEVEL_PTE),
        without munlock_vma_folio(): what unmap_folio() does before a split, whose
        remap_page() mlocks the folio again (the munlock and mlock cancel out)."""
        mc = folio.mapcount
        unmapped = 0
        for i in range(first, first + nr):
            mc[i] -= 1
            if mc[i] < 0:
                raise RefcountUnderflow(f"mapcount of page {i} of folio pfn {folio.pfn:#x} underflows")
            if mc[i] == 0 and not folio.entire_mapcount:
                unmapped += 1
        if folio.mm_ids is not None:
            folio.mm_ids.sub(vma.mm.id, nr)
        self.rmap_changed(folio)
        if folio.order and folio_test_anon(folio):
            partially_mapped = unmapped > 0 and folio_mapped(folio)
            self.deferred_split_on_rmap_removal(folio, unmapped, partially_mapped)

    def folio_remove_rmap_pmd(self, folio: Folio, vma: VmArea) -> None:
        """__folio_remove_rmap(RMAP_LEVEL_PMD)."""
        self.folio_drop_rmap_pmd(folio, vma)
        if vma.vm_flags & VM_LOCKED and not folio_mapped(folio):
            self.munlock_folio(folio)

    def folio_drop_rmap_pmd(self, folio: Folio, vma: VmArea) -> None:
        """__folio_remove_rmap(RMAP_LEVEL_PMD) without munlock_vma_folio()
        (see :meth:`folio_drop_rmap_ptes`)."""
        folio.entire_mapcount -= 1
        if folio.entire_mapcount < 0:
            raise RefcountUnderflow(f"entire mapcount of folio pfn {folio.pfn:#x} underflows")
        if folio.mm_ids is not None:
            folio.mm_ids.sub(vma.mm.id, 1)
        self.rmap_changed(folio)
        if not folio.entire_mapcount:
            still = sum(1 for m in folio.mapcount if m)
            partially_mapped = 0 < still < folio.nr
            self.deferred_split_on_rmap_removal(folio, folio.nr - still, partially_mapped)

    def deferred_split_on_rmap_removal(self, folio: Folio, unmapped: int, partially_mapped: bool) -> None:
        """v6.12+: queue a partially mapped anon folio once (PG_partially_mapped)."""
        if partially_mapped and not folio_test_partially_mapped(folio):
            self.deferred_split_folio(folio, True)

    def munlock_folio(self, folio: Folio) -> None:
        if folio_test_clear_mlocked(folio):
            if folio_test_lru(folio):
                self.lruvec_del_folio(folio)
                self.lruvec_add_folio(folio)

    # -- page_vma_mapped_walk ---------------------------------------------
    def page_vma_mapped_walk(self, pvmw: Pvmw) -> Yields[bool]:
        """Advance to the next mapping of ``pvmw.folio`` in ``pvmw.vma``.

        Context: takes the PTL of the table (or PMD) it stops at and keeps it
        until the walk moves on or ends.  Return: True at a mapping.
        """
        folio = pvmw.folio
        mm = pvmw.vma.mm
        lo, hi = folio.pfn, folio.pfn + folio.nr
        addr = pvmw.address + PAGE_SIZE
        while addr < pvmw.end:
            pmd_idx = pmd_index(addr)
            if pmd_idx != pvmw.pmd_idx:
                if pvmw.ptl is not None:
                    spin_unlock(self, pvmw.ptl)
                    pvmw.ptl = None
                pvmw.pmd_idx = pmd_idx
                huge = mm.pmd_huge.get(pmd_idx)
                pt = mm.pte_tables.get(pmd_idx)
                if huge is None and pt is None:
                    addr = (pmd_idx + 1) << PMD_SHIFT
                    continue
                lock = mm.ptl(pmd_idx)
                yield from spin_lock(self, lock)
                pvmw.ptl = lock
                huge = mm.pmd_huge.get(pmd_idx)   # recheck under the lock
                if huge is not None:
                    pvmw.pte = False
                    pvmw.pt = None
                    pvmw.address = pmd_idx << PMD_SHIFT
                    if lo <= pte_pfn(huge) < hi:
                        # one hit per PMD: move past it on the next call
                        pvmw.address = ((pmd_idx + 1) << PMD_SHIFT) - PAGE_SIZE
                        return True
                    addr = (pmd_idx + 1) << PMD_SHIFT
                    continue
                pvmw.pt = mm.pte_tables.get(pmd_idx)
                pvmw.pte = True
                if pvmw.pt is None:
                    addr = (pmd_idx + 1) << PMD_SHIFT
                    continue
            pt = pvmw.pt
            if pt is None:
                addr = (pmd_idx + 1) << PMD_SHIFT
                continue
            idx = pte_index(addr)
            pte = pt.entries[idx]
            self.cost["pte_reads"] += 1
            if pte_present(pte) and lo <= pte_pfn(pte) < hi:
                pvmw.idx = idx
                pvmw.address = addr
                return True
            addr += PAGE_SIZE
        self.page_vma_mapped_walk_done(pvmw)
        return False

    def page_vma_mapped_walk_done(self, pvmw: Pvmw) -> None:
        if pvmw.ptl is not None:
            spin_unlock(self, pvmw.ptl)
            pvmw.ptl = None
        pvmw.address = pvmw.end

    def page_vma_mapped_walk_restart(self, pvmw: Pvmw) -> None:
        if pvmw.ptl is not None:
            spin_unlock(self, pvmw.ptl)
            pvmw.ptl = None
        pvmw.pmd_idx = -1
        pvmw.address = pvmw.start - PAGE_SIZE

    # -- rmap walks ---------------------------------------------------------
    def rmap_targets(self, folio: Folio) -> list[tuple[VmArea, int]]:
        """(vma, address) pairs rmap_walk_anon() visits, in anon_vma order."""
        out: list[tuple[VmArea, int]] = []
        if folio.anon_vma is None:
            return out
        for vma in list(folio.anon_vma.vmas):
            start = vma_address(vma, folio.index)
            end = start + folio.nr * PAGE_SIZE
            if end <= vma.vm_start or start >= vma.vm_end:
                continue
            out.append((vma, max(start, vma.vm_start)))
        return out

    def try_to_unmap(self, folio: Folio, flags: TTU) -> Yields[None]:
        """try_to_unmap(): rmap_walk with try_to_unmap_one, done once unmapped.

        Context: folio locked, isolated.  Return: nothing, like the kernel.
        """
        for vma, address in self.rmap_targets(folio):
            ret = yield from self.try_to_unmap_one(folio, vma, address, flags)
            if not ret or not folio_mapped(folio):
                break
        self.try_to_unmap_flush()

    #: See :class:`~engine.mm.flags.LockedLargeRef`.
    LOCKED_LARGE_REF = LockedLargeRef.SKIPPED

    def folio_referenced(self, folio: Folio) -> Yields[tuple[int, int]]:
        """folio_referenced(): clear young bits and count the VMAs that had one.

        folio_referenced_one() counts the young PTEs or PMD it clears in one VMA
        and adds one to ``pra->referenced`` if any: the return is the number of
        mappings that referenced the folio, not of young PTEs (D1 mm/rmap.c;
        v5.x page_referenced_one() the same).  A locked mapping ends the walk
        with VM_LOCKED (:attr:`LOCKED_LARGE_REF`).
        Return: (referenced, vm_flags).
        """
        referenced = 0
        vm_flags = 0
        for vma, address in self.rmap_targets(folio):
            pvmw = Pvmw(folio, vma, address)
            young = 0
            locked_ptes = 0
            locked = vma.vm_flags & VM_LOCKED
            while (yield from self.page_vma_mapped_walk(pvmw)):
                if locked:
                    if (self.LOCKED_LARGE_REF is LockedLargeRef.LOCKED or not folio.order
                            or not pvmw.pte):
                        self.page_vma_mapped_walk_done(pvmw)
                        return referenced, vm_flags | VM_LOCKED
                    if self.LOCKED_LARGE_REF is LockedLargeRef.SKIPPED:
                        locked_ptes += 1
                        continue
                mm = vma.mm
                if pvmw.pte:
                    entries = pvmw_table(pvmw).entries
                    pte = entries[pvmw.idx]
                    if pte_young(pte):
                        entries[pvmw.idx] = pte_mkold(pte)
                        young += 1
                else:
                    word = mm.pmd_huge[pvmw.pmd_idx]
                    if pmd_young(word):
                        mm.pmd_huge[pvmw.pmd_idx] = pte_mkold(word)
                        young += 1
            if locked_ptes == folio.nr and folio_within_one_table(folio, vma):
                return referenced, vm_flags | VM_LOCKED
            if young:
                referenced += 1
        return referenced, vm_flags

    # -- pieces of try_to_unmap_one every version shares --------------------
    def ttu_flush_pte(self, flags: TTU, nr: int = 1) -> None:
        """TLB flush of a cleared PTE range: deferred with TTU_BATCH_FLUSH
        (set_tlb_ubc_flush_pending), else immediate (flush_tlb_range)."""
        if flags & TTU_BATCH_FLUSH:
            self.tlb_flush_pending = True
        else:
            self.cost["tlb_flushes"] += 1

    def try_to_unmap_flush(self) -> None:
        if self.tlb_flush_pending:
            self.tlb_flush_pending = False
            self.cost["tlb_flushes"] += 1

    def ttu_swap_pte(self, folio: Folio, vma: VmArea, pvmw: Pvmw, page: int, pteval: int) -> bool:
        """The swapbacked-anon leg of try_to_unmap_one: install a swap entry.

        Return: False (walk_abort) when the folio is not in the swap cache,
        which the kernel WARNs about.
        """
        pt = pvmw_table(pvmw)
        if folio_test_swapbacked(folio) != folio_test_swapcache(folio):
            self.warn(f"try_to_unmap_one: swapbacked {folio_test_swapbacked(folio)} "
                      f"!= swapcache {folio_test_swapcache(folio)}")
            set_pte_at(pt, pvmw.idx, pteval)
            return False
        if self.HAS_ANON_EXCLUSIVE and folio_maybe_dma_pinned(folio):
            # folio_try_share_anon_rmap_pte() fails on a possibly pinned exclusive
            # page: it must stay mapped (6c287605fd56, PG_anon_exclusive, v5.19)
            set_pte_at(pt, pvmw.idx, pteval)
            self.event(TTU_PINNED_ANON_STAYS_MAPPED, folio)
            return False
        slot = folio.swap[page]
        self.swap.dup(slot)
        mm = vma.mm
        mm.rss[MM_ANONPAGES] -= 1
        mm.rss[MM_SWAPENTS] += 1
        set_pte_at(pt, pvmw.idx, swp_entry_to_pte(slot))
        self.folio_remove_rmap_pte(folio, page, 1, vma)
        self.folio_put(folio)
        return True

    def ttu_between_ptes(self, pvmw: Pvmw, nr_pages: int) -> Yields[None]:
        """The point between two PTEs (batches) of try_to_unmap_one()'s walk, where
        lock-free actors (CPU stores, gup-fast, speculative references) may act.

        Only where the folio's range in this VMA goes on past the @nr_pages just
        unmapped: after the last one the walk ends, and what another CPU could do
        there it can as well at the caller's next yield.  So a small folio's walk
        yields nowhere here, whether the version ``continue``s to the walk (v6.15)
        or stops at once (v6.16).
        Context: PTL held.
        """
        if pvmw.address + (nr_pages << PAGE_SHIFT) < pvmw.end:
            yield YieldPoint.BETWEEN_PTES

    def ttu_harvest_dirty(self, folio: Folio, pteval: int) -> None:
        """Move the dirty bit from the cleared PTE to the folio."""
        if pte_dirty(pteval):
            folio_mark_dirty(folio)

    def ttu_vma_locked(self, folio: Folio, vma: VmArea, flags: TTU) -> bool:
        """The mlock check at the top of the walk loop: True means walk_abort."""
        if not flags & TTU_IGNORE_MLOCK and vma.vm_flags & VM_LOCKED:
            if not folio.order:
                folio_set_mlocked(folio)
            return True
        return False

