"""GUP pins, DMA into pinned pages and unpin (mm/gup.c).

FOLL_PIN on a small folio adds GUP_PIN_COUNTING_BIAS to its refcount; on a
large folio it adds one reference and one pincount.  gup-fast reads the PTE
without a lock, grabs the folio, then rechecks the PTE and backs off to the
slow path if it changed: the other half of try_to_unmap_one's
"clear PTE; smp_mb; read refcount".
"""

from __future__ import annotations

import errno

from engine.mm.flags import GUP_PIN_COUNTING_BIAS
from engine.mm.folio import Folio, folio_mark_dirty, folio_set_referenced, folio_test_dirty
from engine.mm.huge_memory import folio_lock, folio_unlock
from engine.mm.memory import ZERO_PFN
from engine.mm.mm_types import MmStruct
from engine.mm.pgtable import (
    HPAGE_PMD_NR,
    PAGE_SHIFT,
    PAGE_SIZE,
    pmd_index,
    pmd_mkdirty,
    pmd_mkyoung,
    pmd_pfn,
    pmd_write,
    pte_dirty,
    pte_index,
    pte_pfn,
    pte_present,
    pte_write,
)
from engine.mm.sched import YieldPoint, Yields, down_read, spin_lock, spin_unlock, up_read
from engine.mm.state import KernelMixin
from engine.program.format import DmaWrite, Pin, Unpin


class GupMixin(KernelMixin):
    """pin_user_pages(_fast), unpin_user_pages_dirty_lock, device DMA."""

    def try_grab_folio(self, folio: Folio) -> bool:
        """try_grab_folio_fast(folio, 1, FOLL_PIN)."""
        if folio.freed or folio.ref == 0:
            return False
        if folio.order:
            self.ref_get(folio, "pin")
            folio.pincount += 1
        else:
            self.ref_get(folio, "pin", GUP_PIN_COUNTING_BIAS)
        return True

    def gup_put_folio(self, folio: Folio) -> None:
        """Drop one FOLL_PIN grab."""
        if folio.order:
            folio.pincount -= 1
            self.ref_put(folio, "pin")
        else:
            self.ref_put(folio, "pin", GUP_PIN_COUNTING_BIAS)

    def pin_user_pages(self, op: Pin) -> Yields[int]:
        """pin_user_pages_fast() when ``op.fast``, else pin_user_pages().

        Return: the number of pages pinned, or -EFAULT if none could be.
        """
        mm = self.current_mm()
        got: list[tuple[Folio, int]] = []
        self.pins[op.pin] = got
        write = op.write
        start = 0
        if op.fast:
            for i in range(op.pages):
                a = op.addr + i * PAGE_SIZE
                hit = yield from self.gup_fast_one(mm, a, write)
                if hit is None:
                    break
                got.append(hit)
                self.oracle.on_pin(op.pin, mm.id, a)
                start = i + 1
        if start < op.pages:
            # the slow path, which pin_user_pages_fast() falls back to with FOLL_TOUCH
            touch = op.fast
            yield from down_read(self, mm.mmap_lock)
            try:
                for i in range(start, op.pages):
                    a = op.addr + i * PAGE_SIZE
                    hit = yield from self.gup_slow_one(mm, a, write, touch)
                    if hit is None:
                        break
                    got.append(hit)
                    self.oracle.on_pin(op.pin, mm.id, a)
            finally:
                up_read(self, mm.mmap_lock)
        return len(got) if got else -errno.EFAULT

    def gup_fast_one(self, mm: MmStruct, a: int, write: bool) -> Yields[tuple[Folio, int] | None]:
        """gup_fast_pte_range() for one page.  Return: (folio, page) or None to fall back."""
        pmd_idx = pmd_index(a)
        word = mm.pmd_huge.get(pmd_idx)
        if word is not None:
            if write and not pmd_write(word):
                return None
            folio = self.pfn_folio(pmd_pfn(word))
            yield YieldPoint.GUP_FAST_READ
            if not self.try_grab_folio(folio):
                return None
            yield YieldPoint.GUP_FAST_GRABBED
            if mm.pmd_huge.get(pmd_idx) != word:
                self.gup_put_folio(folio)
                return None
            folio_set_referenced(folio)
            return folio, (a >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)
        pt = mm.pte_tables.get(pmd_idx)
        if pt is None:
            return None
        idx = pte_index(a)
        pte = pt.entries[idx]
        if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN or (write and not pte_write(pte)):
            return None
        folio = self.pfn_folio(pte_pfn(pte))
        yield YieldPoint.GUP_FAST_READ          # lockless read ... grab
        if not self.try_grab_folio(folio):
            return None
        yield YieldPoint.GUP_FAST_GRABBED       # grab (full barrier) ... recheck the PTE
        if pt.entries[idx] != pte or mm.pte_tables.get(pmd_idx) is not pt:
            self.gup_put_folio(folio)
            return None
        folio_set_referenced(folio)
        return folio, pte_pfn(pte) - folio.pfn

    def gup_slow_one(self, mm: MmStruct, a: int, write: bool,
                     touch: bool) -> Yields[tuple[Folio, int] | None]:
        """__get_user_pages() for one page: follow_page under the PTL, else fault."""
        for _ in range(3):
            vma = mm.find_vma(a)
            if vma is None or (write and not vma.writable):
                return None
            pmd_idx = pmd_index(a)
            lock = mm.ptl(pmd_idx)
            yield from spin_lock(self, lock)
            try:
                word = mm.pmd_huge.get(pmd_idx)
                if word is not None and (pmd_write(word) or not write):
                    folio = self.pfn_folio(pmd_pfn(word))
                    if self.try_grab_folio(folio):
                        if touch:
                            # follow_huge_pmd() -> touch_pmd(): young, and dirty
                            # for FOLL_WRITE (pmdp_set_access_flags())
                            word = pmd_mkyoung(word)
                            mm.pmd_huge[pmd_idx] = pmd_mkdirty(word) if write else word
                        return folio, (a >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)
                pt = mm.pte_tables.get(pmd_idx)
                if word is None and pt is not None:
                    idx = pte_index(a)
                    pte = pt.entries[idx]
                    if (pte_present(pte) and pte_pfn(pte) != ZERO_PFN
                            and (pte_write(pte) or not write)):
                        folio = self.pfn_folio(pte_pfn(pte))
                        if self.try_grab_folio(folio):
                            if touch and write and not pte_dirty(pte) and not folio_test_dirty(folio):
                                folio_mark_dirty(folio)         # follow_page_pte() with FOLL_TOUCH
                            return folio, pte_pfn(pte) - folio.pfn
            finally:
                spin_unlock(self, lock)
            # faultin_page(): the caller already holds mmap_lock for read
            ret = yield from self.handle_mm_fault(vma, a, write, mmap_locked=True)
            if ret:
                return None
        return None

    def unpin_user_pages_dirty_lock(self, op: Unpin) -> Yields[int]:
        """unpin_user_pages_dirty_lock(pages, npages, make_dirty)."""
        got = self.pins.pop(op.pin, None)
        if got is None:
            return -errno.EINVAL
        for n, (folio, _page) in enumerate(got):
            if n:
                yield YieldPoint.BETWEEN_PAGES
            if op.dirty and not folio_test_dirty(folio):
                yield from folio_lock(self, folio)
                folio_mark_dirty(folio)
                folio_unlock(self, folio)
            self.gup_put_folio(folio)
        return 0

    def dma_write(self, op: DmaWrite) -> Yields[int]:
        """A device writes ``op.value`` into every pinned page."""
        got = self.pins.get(op.pin)
        if got is None:
            return -errno.EINVAL
        for n, (folio, page) in enumerate(got):
            if n:
                yield YieldPoint.BETWEEN_PAGES
            folio.data[page] = op.value
            self.oracle.on_dma_write(op.pin, n, op.value)
        return 0
