"""madvise(2): MADV_FREE, MADV_PAGEOUT and MADV_DONTNEED (mm/madvise.c)."""

from __future__ import annotations

import errno

from engine.mm.events import MADVISE_SKIP_SHARED
from engine.mm.flags import VM_LOCKED
from engine.mm.folio import (
    Folio,
    folio_clear_active,
    folio_clear_dirty,
    folio_clear_referenced,
    folio_clear_swapcache,
    folio_mapcount,
    folio_test_active,
    folio_test_dirty,
    folio_test_lru,
    folio_test_swapcache,
)
from engine.mm.huge_memory import folio_trylock, folio_unlock
from engine.mm.memory import ZERO_PFN
from engine.mm.mm_types import MM_SWAPENTS, VmArea
from engine.mm.pgtable import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PTE_BATCH_IGNORE,
    PTE_DIRTY_YOUNG,
    PTRS_PER_PTE,
    PageTable,
    is_swap_pte,
    pmd_addr_end,
    pmd_index,
    pmd_mkold,
    pmd_pfn,
    pmd_young,
    pte_advance_pfn,
    pte_index,
    pte_mkclean,
    pte_mkold,
    pte_none,
    pte_pfn,
    pte_present,
    pte_swp_offset,
)
from engine.mm.sched import YieldPoint, Yields, down_read, spin_lock, spin_unlock, up_read
from engine.mm.state import KernelMixin
from engine.program.format import Advice, Madvise


def pte_batch_len(folio: Folio, pt: PageTable, idx: int, limit: int) -> int:
    """folio_pte_batch() for madvise: consecutive PTEs mapping consecutive pages of
    ``folio`` from ``idx``, dirty/young/write ignored, at most ``limit`` and never
    past the folio or the table."""
    e = pt.entries
    first = e[idx]
    expect = first & ~PTE_BATCH_IGNORE
    max_nr = min(limit, folio.pfn + folio.nr - pte_pfn(first), PTRS_PER_PTE - idx)
    nr = 1
    while nr < max_nr:
        expect = pte_advance_pfn(expect, 1)
        if e[idx + nr] & ~PTE_BATCH_IGNORE != expect:
            break
        nr += 1
    return nr


class MadviseMixin(KernelMixin):
    """madvise() advice handlers."""

    #: v5.x–v6.9: both PTE walkers split every PTE-mapped THP they meet, even
    #: one the range covers whole, and a THP they cannot split (shared, locked
    #: elsewhere, or the split fails) ends the walk of that PMD's range
    #: (``goto out`` / ``break``).  v6.10 (K10) splits only a folio the range
    #: covers in part, and skips one it cannot split.
    MADVISE_SPLITS_EVERY_PTE_MAPPED_THP = False

    def folio_maybe_mapped_shared(self, folio: Folio) -> bool:
        """folio_likely_mapped_shared() before the MM-owner tracking of v6.15
        (include/linux/mm.h of 6.12.117; v5.x tested total_mapcount() != 1 of a
        PMD-mapped THP, the same answer there): a large folio mapped more than
        once is shared when PMD-mapped or mapped more times than it has pages,
        else guessed from page 0 alone - a false negative when page 0 is
        mapped once and another page by another MM."""
        mapcount = folio_mapcount(folio)
        if not folio.order:
            return mapcount > 1
        if mapcount <= 1:
            return False
        if folio.entire_mapcount or mapcount > folio.nr:
            return True
        return folio.mapcount[0] > 1

    def madvise_folio_shared(self, folio: Folio, page: int) -> bool:
        """Whether a PTE walker leaves large @folio alone as shared, found at its
        page @page."""
        return self.folio_maybe_mapped_shared(folio)

    def sys_madvise(self, op: Madvise) -> Yields[int]:
        mm = self.current_mm()
        start, end = op.addr, op.addr + op.pages * PAGE_SIZE
        yield from down_read(self, mm.mmap_lock)
        try:
            if not self.range_mapped(mm, start, end):
                return -errno.ENOMEM
            vmas = [v for v in mm.vmas if v.vm_start < end and start < v.vm_end]
            # madvise_walk_vmas() visits the VMAs in order and returns the first
            # error at once: can_madv_lru_vma() (PAGEOUT) and
            # madvise_dontneed_free_valid_vma() (FREE, DONTNEED) refuse a
            # VM_LOCKED VMA with -EINVAL, once the VMAs before it are done.
            ret = 0
            locked = next((i for i, v in enumerate(vmas) if v.vm_flags & VM_LOCKED), None)
            if locked is not None:
                ret = -errno.EINVAL
                end = vmas[locked].vm_start
                vmas = vmas[:locked]
                if not vmas:
                    return ret
            if op.advice is not Advice.MADV_DONTNEED:
                self.lru_add_drain()
            # The oracle hears the advice for the whole range and the whole call:
            # another thread's store may land before or after the page is done.
            if op.advice is Advice.MADV_FREE:
                self.oracle.on_madv_free(mm.id, start, end)
                done = self.oracle.on_madv_free_done
            elif op.advice is Advice.MADV_DONTNEED:
                self.oracle.on_dontneed(mm.id, start, end)
                done = self.oracle.on_dontneed_done
            else:
                done = None
            try:
                folios: list[Folio] = []
                for vma in vmas:
                    lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
                    if op.advice is Advice.MADV_DONTNEED:
                        yield from self.zap_page_range(vma, lo, hi)
                    elif op.advice is Advice.MADV_FREE:
                        yield from self.madvise_free_range(vma, lo, hi)
                    else:
                        yield from self.madvise_pageout_range(vma, lo, hi, folios)
            finally:
                if done is not None:
                    done(mm.id, start, end)
            if folios:
                yield from self.reclaim_pages(folios)
            return ret
        finally:
            up_read(self, mm.mmap_lock)

    # -- MADV_FREE --------------------------------------------------------
    def madvise_free_range(self, vma: VmArea, addr: int, end: int) -> Yields[None]:
        """madvise_free_single_vma(): walk the PMDs of [addr, end)."""
        mm = vma.mm
        while addr < end:
            next_ = pmd_addr_end(addr, end)
            pmd_idx = pmd_index(addr)
            if pmd_idx in mm.pmd_huge:
                handled = yield from self.madvise_free_huge_pmd(vma, pmd_idx, addr, next_)
                if handled:
                    addr = next_
                    continue
            if pmd_idx in mm.pte_tables:
                yield from self.madvise_free_pte_range(vma, mm.pte_tables[pmd_idx], addr, next_)
            addr = next_

    def madvise_free_pte_range(self, vma: VmArea, pt: PageTable, addr: int,
                               end: int) -> Yields[None]:
        """madvise_free_pte_range(): lazyfree each folio wholly covered; split or skip
        a large folio covered in part.  Context: PTL, dropped around a split."""
        mm = vma.mm
        e = pt.entries
        yield from spin_lock(self, pt.ptl)
        try:
            while addr < end:
                idx = pte_index(addr)
                pte = e[idx]
                if pte_none(pte):
                    addr += PAGE_SIZE
                    continue
                if is_swap_pte(pte):
                    slot = pte_swp_offset(pte)
                    e[idx] = 0
                    mm.rss[MM_SWAPENTS] -= 1
                    self.swap.free(slot)
                    if not self.swap.count.get(slot) and self.swapcache_lookup(slot) is None:
                        self.swap.release(slot)
                    addr += PAGE_SIZE
                    continue
                pfn = pte_pfn(pte)
                if pfn == ZERO_PFN:
                    addr += PAGE_SIZE
                    continue
                folio = self.pfn_folio(pfn)
                nr = 1
                if folio.order:
                    nr = pte_batch_len(folio, pt, idx, (end - addr) >> PAGE_SHIFT)
                    if nr < folio.nr or self.MADVISE_SPLITS_EVERY_PTE_MAPPED_THP:
                        split = yield from self.madvise_split_folio(folio, pt, pfn - folio.pfn)
                        if vma.mm.pte_tables.get(pmd_index(addr)) is not pt:
                            break
                        if not split:
                            if self.MADVISE_SPLITS_EVERY_PTE_MAPPED_THP:
                                break
                            addr += nr * PAGE_SIZE
                        continue                      # reprocess as small folios
                if folio_test_swapcache(folio) or folio_test_dirty(folio):
                    if not folio_trylock(self, folio):
                        addr += nr * PAGE_SIZE
                        continue
                    if folio_mapcount(folio) != folio.nr or (folio_test_swapcache(folio)
                                                             and not self.folio_free_swap(folio)):
                        folio_unlock(self, folio)
                        addr += nr * PAGE_SIZE
                        continue
                    folio_clear_dirty(folio)
                    folio_unlock(self, folio)
                young_or_dirty = False
                for i in range(idx, idx + nr):
                    w = e[i]
                    if w & PTE_DIRTY_YOUNG:
                        e[i] = pte_mkold(pte_mkclean(w))
                        young_or_dirty = True
                if young_or_dirty:
                    self.cost["tlb_flushes"] += 1
                self.folio_mark_lazyfree(folio)
                addr += nr * PAGE_SIZE
                if addr < end:
                    yield YieldPoint.BETWEEN_FOLIOS    # lock-free CPUs may act between folios
        finally:
            spin_unlock(self, pt.ptl)

    def madvise_split_folio(self, folio: Folio, pt: PageTable, page: int) -> Yields[bool]:
        """Split a large folio found at its page @page, as both PTE walkers do
        (one the range covers only in part; v5.x any).

        Context: PTL held on entry and on return; dropped around split_folio().
        Return: True when split (reprocess the range as small folios); False when
        the folio is shared, locked elsewhere or could not be split.
        """
        if self.madvise_folio_shared(folio, page):
            self.event(MADVISE_SKIP_SHARED, folio)
            return False
        if not folio_trylock(self, folio):
            return False
        self.temp_get(folio)
        spin_unlock(self, pt.ptl)
        ok = yield from self.split_folio(folio)
        folio_unlock(self, folio)
        self.temp_put(folio)
        yield from spin_lock(self, pt.ptl)
        return ok

    def folio_free_swap(self, folio: Folio) -> bool:
        """folio_free_swap(): drop the swap copy if no swap PTE still needs it."""
        if any(self.swap.count.get(s) for s in folio.swap):
            return False
        for s in folio.swap:
            self.swap.release(s)
        folio.swap = []
        folio_clear_swapcache(folio)
        self.ref_put(folio, "swapcache", folio.nr)
        return True

    # -- MADV_PAGEOUT -------------------------------------------------------
    def madvise_pageout_range(self, vma: VmArea, addr: int, end: int,
                              out: list[Folio]) -> Yields[None]:
        """madvise_cold_or_pageout_pte_range(pageout=true): isolate what the range maps."""
        mm = vma.mm
        while addr < end:
            next_ = pmd_addr_end(addr, end)
            pmd_idx = pmd_index(addr)
            if pmd_idx in mm.pmd_huge:
                lock = mm.ptl(pmd_idx)
                yield from spin_lock(self, lock)
                word = mm.pmd_huge.get(pmd_idx)
                if word is not None:
                    folio = self.pfn_folio(pmd_pfn(word))
                    if next_ - addr != PMD_SIZE:
                        if not self.folio_maybe_mapped_shared(folio) and folio_trylock(self, folio):
                            self.temp_get(folio)
                            spin_unlock(self, lock)
                            yield from self.split_folio(folio)
                            folio_unlock(self, folio)
                            self.temp_put(folio)
                        else:
                            spin_unlock(self, lock)
                            addr = next_
                            continue
                    else:
                        if folio_mapcount(folio) == 1:
                            if pmd_young(word):
                                mm.pmd_huge[pmd_idx] = pmd_mkold(word)
                            folio_clear_referenced(folio)
                            if self.folio_isolate_lru(folio):
                                out.append(folio)
                        spin_unlock(self, lock)
                        addr = next_
                        continue
                else:
                    spin_unlock(self, lock)
            pt = mm.pte_tables.get(pmd_idx)
            if pt is not None:
                yield from self.madvise_pageout_pte_range(vma, pt, addr, next_, out)
            addr = next_

    def madvise_pageout_pte_range(self, vma: VmArea, pt: PageTable, addr: int, end: int,
                                  out: list[Folio]) -> Yields[None]:
        """The PTE part of madvise_cold_or_pageout_pte_range(pageout=true).

        A large folio the range covers in part is split (if not shared);
        then a folio not on an LRU list, or mapped anywhere but here, is
        skipped: ``folio_mapcount(folio) != folio_nr_pages(folio)`` since
        "mm: madvise: avoid split during MADV_PAGEOUT and MADV_COLD" (v6.10),
        ``!= 1`` for small folios since "mm: do not allow MADV_PAGEOUT for CoW
        pages" (v5.6); read in v6.12- and v6.16-era mm/madvise.c.  So a
        fork-shared folio is neither aged nor isolated: real 6.12.117 and
        6.16.12 keep a fork-shared mTHP mapped.
        Context: mmap_lock (read); takes the PTL, dropped around a split.
        """
        e = pt.entries
        yield from spin_lock(self, pt.ptl)
        try:
            while addr < end:
                idx = pte_index(addr)
                pte = e[idx]
                if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN:
                    addr += PAGE_SIZE
                    continue
                folio = self.pfn_folio(pte_pfn(pte))
                nr = 1
                if folio.order:
                    nr = pte_batch_len(folio, pt, idx, (end - addr) >> PAGE_SHIFT)
                    if nr < folio.nr or self.MADVISE_SPLITS_EVERY_PTE_MAPPED_THP:
                        split = yield from self.madvise_split_folio(folio, pt,
                                                                    pte_pfn(pte) - folio.pfn)
                        if vma.mm.pte_tables.get(pmd_index(addr)) is not pt:
                            break
                        if not split:
                            if self.MADVISE_SPLITS_EVERY_PTE_MAPPED_THP:
                                break
                            addr += nr * PAGE_SIZE
                        continue                      # reprocess as small folios
                if not folio_test_lru(folio) or folio_mapcount(folio) != folio.nr:
                    # "Do not interfere with other mappings of this folio and
                    # non-LRU folio": a folio mapped anywhere else (fork) is
                    # left alone; the large folio is fully mapped here, so a
                    # mapcount of nr pages means exclusive.
                    addr += nr * PAGE_SIZE
                    continue
                for i in range(idx, idx + nr):
                    e[i] = pte_mkold(e[i])
                folio_clear_referenced(folio)
                if folio_test_active(folio):
                    folio_clear_active(folio)
                if self.folio_isolate_lru(folio):
                    out.append(folio)
                addr += nr * PAGE_SIZE
        finally:
            spin_unlock(self, pt.ptl)
