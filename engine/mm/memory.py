"""Faults, user loads and stores, zapping and copying page tables (mm/memory.c).

handle_mm_fault(), do_anonymous_page(), do_wp_page(), do_swap_page(),
zap_pte_range() and copy_page_range(), reduced to what anonymous private
memory needs.  The syscalls that change VMAs are in the modules of their
kernel files: mmap.py, mremap.py, mprotect.py and fork.py.
"""

from __future__ import annotations

import errno
from typing import Literal

from engine.errors import HarnessError
from engine.mm.events import ALLOC_MTHP, WP_COPY_SHARED_LARGE, WP_REUSE_PINNED, WP_REUSE_SHARED_LARGE
from engine.mm.flags import VM_LOCKED
from engine.mm.folio import (
    Folio,
    folio_mapcount,
    folio_mark_dirty,
    folio_maybe_dma_pinned,
    folio_ref_inc,
    folio_set_count,
    folio_set_dirty,
    folio_set_mlocked,
    folio_test_swapcache,
)
from engine.mm.mm_types import MM_ANONPAGES, MM_SWAPENTS, MmStruct, VmArea
from engine.mm.pgtable import (
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PTE_DIRTY_YOUNG,
    PageTable,
    is_swap_pte,
    maps_pfn_in,
    mk_pte,
    pmd_addr_end,
    pmd_index,
    pmd_pfn,
    pmd_write,
    pte_dirty,
    pte_index,
    pte_mkdirty,
    pte_mkold,
    pte_mkwrite,
    pte_mkyoung,
    pte_none,
    pte_pfn,
    pte_present,
    pte_swp_offset,
    pte_write,
    pte_wrprotect,
)
from engine.mm.sched import YieldPoint, Yields, down_read, spin_lock, spin_unlock, up_read
from engine.mm.state import KernelMixin

#: pfn of the shared zero page: read faults map it, it is no folio.
ZERO_PFN = 1

#: What the MMU's walk finds at an address (:meth:`MemoryMixin.lookup_pte`): a
#: huge PMD's word, or a PTE table and the index of the address's entry in it.
PteLookup = tuple[Literal["pmd"], int] | tuple[Literal["pte"], PageTable, int] | None


class MemoryMixin(KernelMixin):
    """User memory: faults, loads and stores, zapping and copying page tables."""

    # -- helpers -------------------------------------------------------------------
    def current_mm(self) -> MmStruct:
        """current->mm: the mm of the task running now.

        Context: a task's operation (programs give kernel threads no mm).
        """
        mm_id = self.current.mm_id
        if mm_id is None:
            raise HarnessError(f"thread {self.current.name} has no mm")
        return self.mms[mm_id]

    def new_folio_mapped(self, folio: Folio, vma: VmArea) -> None:
        """After a fault maps a new folio: mlock it or put it on the LRU."""
        if vma.vm_flags & VM_LOCKED:
            folio_set_mlocked(folio)
        self.folio_add_lru(folio)

    def lookup_pte(self, mm: MmStruct, addr: int) -> PteLookup:
        """Hardware-style lockless walk.  Return: ('pmd', word) | ('pte', pt, idx) | None."""
        pmd_idx = pmd_index(addr)
        word = mm.pmd_huge.get(pmd_idx)
        if word is not None:
            return ("pmd", word)
        pt = mm.pte_tables.get(pmd_idx)
        if pt is None:
            return None
        return ("pte", pt, pte_index(addr))

    def folio_at(self, mm: MmStruct, addr: int) -> tuple[Folio, int] | None:
        """(folio, page index) mapped at ``addr``, if a present mapping exists."""
        hit = self.lookup_pte(mm, addr)
        if hit is None:
            return None
        if hit[0] == "pmd":
            folio = self.pfn_folio(pmd_pfn(hit[1]))
            return folio, (addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)
        pte = hit[1].entries[hit[2]]
        if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN:
            return None
        pfn = pte_pfn(pte)
        folio = self.pfn_folio(pfn)
        return folio, pfn - folio.pfn

    # -- CPU loads and stores ------------------------------------------------------
    def cpu_access(self, addr: int, pages: int, value: int | None) -> Yields[list[int] | int]:
        """Loads (``value`` None) or stores over a range, page by page.

        The MMU first: an access through a present PTE or PMD (writable, for a
        store) goes through in hardware, which sets young (and dirty), without
        any lock and without looking at the VMA.  Only a fault consults the
        VMA, as do_user_addr_fault() does: no VMA, or a store to a VMA without
        VM_WRITE (access_error()), is SIGSEGV; anything else goes to
        handle_mm_fault().  So a PTE that grants more than its VMA (v6.15's
        batch restore, kernel-notes section 20) is obeyed, as on hardware.
        Return: values read, or 0 for stores; -EFAULT on SIGSEGV.
        """
        mm = self.current_mm()
        write = value is not None
        out: list[int] = []
        for i in range(pages):
            a = addr + i * PAGE_SIZE
            if i:
                yield YieldPoint.BETWEEN_PAGES      # another CPU may act between two pages
            while True:
                if self.hw_access(mm, a, value, out):
                    break
                vma = mm.find_vma(a)
                if vma is None or (write and not vma.writable):
                    return -errno.EFAULT
                ret = yield from self.handle_mm_fault(vma, a, write)
                if ret:
                    return ret
        return out if not write else 0

    def hw_access(self, mm: MmStruct, a: int, value: int | None, out: list[int]) -> bool:
        """One access through the MMU.  Return: False if it must fault."""
        pmd_idx = pmd_index(a)
        word = mm.pmd_huge.get(pmd_idx)
        if word is not None:
            if value is not None and not pmd_write(word):
                return False
            folio = self.pfn_folio(pmd_pfn(word))
            page = (a >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)
            word = pte_mkyoung(word)
            if value is not None:
                word = pte_mkdirty(word)
                folio.data[page] = value
                self.oracle.on_write(mm.id, a, value)
            else:
                self.oracle.on_read(mm.id, a, folio.data[page])
                out.append(folio.data[page])
            mm.pmd_huge[pmd_idx] = word
            return True
        pt = mm.pte_tables.get(pmd_idx)
        if pt is None:
            return False
        idx = pte_index(a)
        pte = pt.entries[idx]
        if not pte_present(pte):
            return False
        pfn = pte_pfn(pte)
        if value is not None:
            if not pte_write(pte):
                return False
            folio = self.pfn_folio(pfn)
            folio.data[pfn - folio.pfn] = value
            pt.entries[idx] = pte | PTE_DIRTY_YOUNG       # set by the MMU on a store
            self.oracle.on_write(mm.id, a, value)
            return True
        if pfn == ZERO_PFN:
            v = 0
        else:
            folio = self.pfn_folio(pfn)
            v = folio.data[pfn - folio.pfn]
        pt.entries[idx] = pte_mkyoung(pte)
        self.oracle.on_read(mm.id, a, v)
        out.append(v)
        return True

    # -- faults --------------------------------------------------------------------
    def handle_mm_fault(self, vma: VmArea, addr: int, write: bool,
                        mmap_locked: bool = False) -> Yields[int]:
        """handle_mm_fault() under mmap_lock (read), taken here unless the caller
        (GUP) already holds it.  Return: 0 or -errno."""
        mm = vma.mm
        if not mmap_locked:
            yield from down_read(self, mm.mmap_lock)
        try:
            if mm.find_vma(addr) is not vma:
                return 0                      # the VMA changed: retry the access
            pmd_idx = pmd_index(addr)
            word = mm.pmd_huge.get(pmd_idx)
            if word is not None:
                if write and not pmd_write(word):
                    # do_huge_pmd_wp_page(): a shared THP falls back to PTEs
                    yield from self.split_huge_pmd(vma, pmd_idx)
                else:
                    return 0
            if (pmd_idx not in mm.pte_tables and pmd_idx not in mm.pmd_huge and write
                    and vma.order == HPAGE_PMD_ORDER and self.thp_vma_suitable(vma, pmd_idx)):
                yield from self.do_huge_pmd_anonymous_page(vma, pmd_idx)
                return 0
            pt = mm.pte_alloc(pmd_idx)
            yield from spin_lock(self, pt.ptl)
            try:
                if mm.pmd_huge.get(pmd_idx) is not None or mm.pte_tables.get(pmd_idx) is not pt:
                    return 0
                idx = pte_index(addr)
                pte = pt.entries[idx]
                if pte_none(pte):
                    self.do_anonymous_page(vma, pt, addr, write)
                elif is_swap_pte(pte):
                    self.do_swap_page(vma, pt, idx, addr)
                elif write and not pte_write(pte):
                    self.do_wp_page(vma, pt, idx, addr)
                else:
                    pt.entries[idx] = pte_mkdirty(pte_mkyoung(pte)) if write else pte_mkyoung(pte)
                return 0
            finally:
                spin_unlock(self, pt.ptl)
        finally:
            if not mmap_locked:
                up_read(self, mm.mmap_lock)

    def anon_folio_order(self, vma: VmArea, pt: PageTable, addr: int) -> int:
        """alloc_anon_folio(): the largest enabled order whose aligned range is
        inside the VMA and has only none PTEs; else 0."""
        order = vma.order
        if order == HPAGE_PMD_ORDER or not self.HAS_MTHP:
            return 0
        nr = 1 << order
        start = addr & ~(nr * PAGE_SIZE - 1)
        if start < vma.vm_start or start + nr * PAGE_SIZE > vma.vm_end:
            return 0
        i0 = pte_index(start)
        e = pt.entries
        for i in range(i0, i0 + nr):
            if e[i]:
                return 0
        return order

    def do_anonymous_page(self, vma: VmArea, pt: PageTable, addr: int, write: bool) -> None:
        """Map a fresh zero-filled folio, or the zero page for a read fault.  Context: PTL."""
        if not write:
            pt.entries[pte_index(addr)] = mk_pte(ZERO_PFN, False)
            return
        order = self.anon_folio_order(vma, pt, addr)
        folio = self.folio_alloc(order)
        if order:
            self.event(ALLOC_MTHP, folio)
        nr = folio.nr
        start = addr & ~(nr * PAGE_SIZE - 1)
        i0 = pte_index(start)
        for i in range(nr):
            pt.entries[i0 + i] = mk_pte(folio.pfn + i, vma.writable, dirty=True, young=True)
        folio_set_count(folio, nr)        # one reference per PTE mapping
        self.folio_add_new_anon_rmap(folio, vma, start, pmd=False)
        vma.mm.rss[MM_ANONPAGES] += nr
        self.new_folio_mapped(folio, vma)

    def do_wp_page(self, vma: VmArea, pt: PageTable, idx: int, addr: int) -> None:
        """Write fault on a present read-only PTE: reuse an exclusive folio or copy.

        Context: PTL.  A large folio is reused only if this is its only mapping
        user (the model's stand-in for PageAnonExclusive); else the page is
        copied into a new small folio (wp_page_copy).  A pinned folio's other
        references do not count against reuse: GUP pins only exclusive anon
        pages (unsharing first), and do_wp_page() reuses a PageAnonExclusive
        page "without further checks" (mm/memory.c since 6c287605fd56), so a
        pinned page is never copied away from its pin.  Before it (v5.17) the
        page count decided, and a write fault copied a pinned page.
        """
        pte = pt.entries[idx]
        pfn = pte_pfn(pte)
        if pfn != ZERO_PFN:
            folio = self.pfn_folio(pfn)
            mapped = folio_mapcount(folio)
            # a swap-cache folio whose slots other PTEs still use is shared too
            # (folio_free_swap() fails, so wp_can_reuse_anon_folio() says no)
            shared_swap = folio_test_swapcache(folio) and any(self.swap.count.get(s) for s in folio.swap)
            mine = (max(folio.mapcount) <= 1 and not folio.entire_mapcount
                    and not shared_swap and self.mapped_only_in(folio, vma.mm))
            only_mappings = folio.ref - (folio.nr if folio_test_swapcache(folio) else 0) == mapped
            # pinned, hence PageAnonExclusive: whatever other references it has
            pinned = self.HAS_ANON_EXCLUSIVE and "pin" in folio.extra
            shared_large = bool(folio.order and folio.anon_shared and not pinned)
            if shared_large and mine and only_mappings and not self.WP_REUSES_SHARED_LARGE_ANON:
                # Before v6.15 wp_can_reuse_anon_folio() refuses a large folio: only
                # PG_anon_exclusive, which fork cleared, would have let it be reused.
                mine = False
                self.event(WP_COPY_SHARED_LARGE, folio)
            if mine and (only_mappings or pinned):
                if not only_mappings:
                    self.event(WP_REUSE_PINNED, folio)       # v5.17 copied it
                elif shared_large:
                    self.event(WP_REUSE_SHARED_LARGE, folio)
                pt.entries[idx] = pte_mkwrite(pte_mkdirty(pte_mkyoung(pte)))
                return
            value = folio.data[pfn - folio.pfn]
        else:
            folio, value = None, 0
        new = self.folio_alloc(0)
        new.data[0] = value
        pt.entries[idx] = mk_pte(new.pfn, True, dirty=True, young=True)
        self.folio_add_new_anon_rmap(new, vma, addr, pmd=False)
        self.new_folio_mapped(new, vma)
        if folio is not None:
            self.folio_remove_rmap_pte(folio, pfn - folio.pfn, 1, vma)
            self.folio_put(folio)
        else:
            vma.mm.rss[MM_ANONPAGES] += 1

    def mapped_only_in(self, folio: Folio, mm: MmStruct) -> bool:
        """Whether no PTE of another mm maps a page of @folio, where rmap would look:
        the folio's pages' worth of entries from each of its other mms' rmap
        addresses (a huge PMD there is no PTE mapping it).

        Read table by table (a write fault on a large folio asks this once per
        page it copies or reuses: page by page it was quadratic in the folio).
        """
        lo, hi = folio.pfn, folio.pfn + folio.nr
        span = folio.nr * PAGE_SIZE
        for vma, address in self.rmap_targets(folio):
            other = vma.mm
            if other is mm:
                continue
            end = address + span
            while address < end:
                pmd_idx = pmd_index(address)
                stop = pmd_addr_end(address, end)
                pt = other.pte_tables.get(pmd_idx) if pmd_idx not in other.pmd_huge else None
                if pt is not None and maps_pfn_in(pt.entries, pte_index(address),
                                                  (stop - address) >> PAGE_SHIFT, lo, hi):
                    return False
                address = stop
        return True

    def do_swap_page(self, vma: VmArea, pt: PageTable, idx: int, addr: int) -> None:
        """Swap in one page into a new small folio and free the slot.  Context: PTL."""
        slot = pte_swp_offset(pt.entries[idx])
        folio = self.swapcache_lookup(slot)
        mm = vma.mm
        if folio is not None:
            # Still in the swap cache: map the cached page again, writable only if
            # this PTE is the slot's last user (else a write must copy: a forked
            # child still refers to the same slot).
            page = folio.swap.index(slot)
            exclusive = self.swap.count.get(slot, 0) == 1 and not folio_mapcount(folio)
            pt.entries[idx] = mk_pte(folio.pfn + page, vma.writable and exclusive, dirty=False,
                                     young=True)
            folio_ref_inc(folio)
            self.folio_add_anon_rmap_ptes(folio, page, 1, vma)
            self.swap.free(slot)
        else:
            folio = self.folio_alloc(0)
            folio.data[0] = self.swap.data.get(slot, 0)
            # the slot is freed below, so the folio is the only copy: dirty
            folio_set_dirty(folio)
            pt.entries[idx] = mk_pte(folio.pfn, vma.writable, dirty=True, young=True)
            self.folio_add_new_anon_rmap(folio, vma, addr, pmd=False)
            self.new_folio_mapped(folio, vma)
            self.swap.free(slot)
            if not self.swap.count.get(slot):
                self.swap.release(slot)
            self.count("PSWPIN")
        mm.rss[MM_SWAPENTS] -= 1
        mm.rss[MM_ANONPAGES] += 1

    def swapcache_lookup(self, slot: int) -> Folio | None:
        for folio in self.swapcache_folios():
            if slot in folio.swap:
                return folio
        return None

    def swapcache_folios(self) -> list[Folio]:
        return [f for f in self.folios.values() if folio_test_swapcache(f)]

    # -- zapping -------------------------------------------------------------------
    def zap_page_range(self, vma: VmArea, start: int, end: int) -> Yields[None]:
        """zap_page_range_single(): unmap [start, end) of ``vma``, freeing what goes."""
        mm = vma.mm
        addr = start
        while addr < end:
            pmd_idx = pmd_index(addr)
            next_ = min(end, (pmd_idx + 1) << PMD_SHIFT)
            if pmd_idx in mm.pmd_huge:
                if addr == pmd_idx << PMD_SHIFT and next_ - addr == PMD_SIZE:
                    if (yield from self.zap_huge_pmd(vma, pmd_idx)):
                        addr = next_
                        continue
                else:
                    yield from self.split_huge_pmd(vma, pmd_idx)
            pt = mm.pte_tables.get(pmd_idx)
            if pt is not None:
                yield from spin_lock(self, pt.ptl)
                try:
                    self.zap_pte_range(vma, pt, addr, next_)
                finally:
                    spin_unlock(self, pt.ptl)
            addr = next_

    def zap_pte_range(self, vma: VmArea, pt: PageTable, addr: int, end: int) -> None:
        mm = vma.mm
        e = pt.entries
        for a in range(addr, end, PAGE_SIZE):
            idx = pte_index(a)
            pte = e[idx]
            if pte_none(pte):
                continue
            e[idx] = 0
            self.cost["pte_clears"] += 1
            if pte_present(pte):
                pfn = pte_pfn(pte)
                if pfn == ZERO_PFN:
                    continue
                folio = self.pfn_folio(pfn)
                if pte_dirty(pte):
                    folio_mark_dirty(folio)
                mm.rss[MM_ANONPAGES] -= 1
                self.folio_remove_rmap_pte(folio, pfn - folio.pfn, 1, vma)
                self.folio_put(folio)
            elif is_swap_pte(pte):
                slot = pte_swp_offset(pte)
                mm.rss[MM_SWAPENTS] -= 1
                self.swap.free(slot)
                if not self.swap.count.get(slot) and self.swapcache_lookup(slot) is None:
                    self.swap.release(slot)
        self.cost["tlb_flushes"] += 1

    # -- copying at fork -----------------------------------------------------------
    def copy_page_range(self, src: VmArea, dst: VmArea) -> Yields[None]:
        pmm, cmm = src.mm, dst.mm
        for pmd_idx in range(pmd_index(src.vm_start), pmd_index(src.vm_end - 1) + 1):
            if pmd_idx in pmm.pmd_huge:
                # copy_huge_pmd(): the PMD is read again under its lock; reclaim may
                # have discarded it meanwhile (then there is nothing to copy)
                lock = pmm.ptl(pmd_idx)
                yield from spin_lock(self, lock)
                word = pmm.pmd_huge.get(pmd_idx)
                folio = self.pfn_folio(pmd_pfn(word)) if word is not None else None
                if word is None or folio is None or folio_maybe_dma_pinned(folio):
                    spin_unlock(self, lock)
                    if folio is not None:
                        yield from self.split_huge_pmd(src, pmd_idx)     # then copy by PTE
                else:
                    try:
                        word = pte_wrprotect(word)
                        pmm.pmd_huge[pmd_idx] = word
                        cmm.pmd_huge[pmd_idx] = pte_mkold(word)
                        cmm.deposited[pmd_idx] = PageTable(pmd_idx << PMD_SHIFT, cmm.id,
                                                           cmm.ptl(pmd_idx))
                        folio_ref_inc(folio)
                        folio.anon_shared = True      # folio_try_dup_anon_rmap_pmd()
                        self.folio_add_anon_rmap_pmd(folio, dst)
                        cmm.rss[MM_ANONPAGES] += HPAGE_PMD_NR
                    finally:
                        spin_unlock(self, lock)
                    continue
            spt = pmm.pte_tables.get(pmd_idx)
            if spt is None:
                continue
            yield from spin_lock(self, spt.ptl)
            try:
                dpt = cmm.pte_alloc(pmd_idx)
                lo = max(src.vm_start, pmd_idx << PMD_SHIFT)
                hi = min(src.vm_end, (pmd_idx + 1) << PMD_SHIFT)
                for a in range(lo, hi, PAGE_SIZE):
                    i = pte_index(a)
                    pte = spt.entries[i]
                    if pte_none(pte):
                        continue
                    if is_swap_pte(pte):
                        self.swap.dup(pte_swp_offset(pte))
                        dpt.entries[i] = pte
                        cmm.rss[MM_SWAPENTS] += 1
                        continue
                    pfn = pte_pfn(pte)
                    if pfn == ZERO_PFN:
                        dpt.entries[i] = pte
                        continue
                    folio = self.pfn_folio(pfn)
                    page = pfn - folio.pfn
                    if folio_maybe_dma_pinned(folio):
                        new = self.folio_alloc(0)
                        new.data[0] = folio.data[page]
                        dpt.entries[i] = mk_pte(new.pfn, dst.writable, dirty=True, young=True)
                        self.folio_add_new_anon_rmap(new, dst, a, pmd=False)
                        self.new_folio_mapped(new, dst)
                    else:
                        pte = pte_wrprotect(pte)
                        spt.entries[i] = pte
                        dpt.entries[i] = pte_mkold(pte)
                        folio_ref_inc(folio)
                        folio.anon_shared = True      # folio_try_dup_anon_rmap_pte()
                        self.folio_add_anon_rmap_ptes(folio, page, 1, dst)
                    cmm.rss[MM_ANONPAGES] += 1
            finally:
                spin_unlock(self, spt.ptl)
        self.cost["tlb_flushes"] += 1
