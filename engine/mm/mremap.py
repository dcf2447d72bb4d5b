"""mremap(2) (mm/mremap.c): move_vma() and move_page_tables()."""

from __future__ import annotations

import errno

from engine.mm.mm_types import VmArea
from engine.mm.pgtable import PAGE_SIZE, PMD_SIZE, pmd_index, pte_index
from engine.mm.sched import Yields, down_write, spin_lock, spin_unlock, up_write
from engine.mm.state import KernelMixin
from engine.program.format import Mremap


class MremapMixin(KernelMixin):
    """mremap(MREMAP_MAYMOVE|MREMAP_FIXED)."""

    def sys_mremap(self, op: Mremap) -> Yields[int]:
        """mremap(MREMAP_MAYMOVE|MREMAP_FIXED): move_vma() + move_page_tables()."""
        mm = self.current_mm()
        old, new, length = op.addr, op.new_addr, op.pages * PAGE_SIZE
        if new < old + length and old < new + length:
            return -errno.EINVAL
        yield from down_write(self, mm.mmap_lock)
        try:
            vma = mm.find_vma(old)
            if vma is None or old + length > vma.vm_end:
                return -errno.EFAULT
            yield from self.do_munmap(mm, new, new + length)
            yield from self.vma_adjust_trans_huge(mm, old, old + length)
            vmas = mm.isolate_range(old, old + length)
            src = vmas[0]
            moved = VmArea(mm, new, new + length, src.vm_flags, src.vm_pgoff, src.anon_vma, src.order)
            yield from self.move_page_tables(src, old, moved, new, length)
            mm.remove_vma(src)
            mm.insert_vma(moved)
            self.oracle.on_move(mm.id, old, new, length)
        finally:
            up_write(self, mm.mmap_lock)
        return 0

    def move_page_tables(self, src: VmArea, old: int, dst: VmArea, new: int,
                         length: int) -> Yields[None]:
        mm = src.mm
        off = 0
        while off < length:
            a, b = old + off, new + off
            spmd = pmd_index(a)
            if spmd in mm.pmd_huge:
                whole = a & (PMD_SIZE - 1) == 0 and b & (PMD_SIZE - 1) == 0 and length - off >= PMD_SIZE
                if whole and pmd_index(b) not in mm.pte_tables:
                    # move_huge_pmd(): the PMD and its deposited table move together
                    lock = mm.ptl(spmd)
                    yield from spin_lock(self, lock)
                    try:
                        mm.pmd_huge[pmd_index(b)] = mm.pmd_huge.pop(spmd)
                        if spmd in mm.deposited:
                            mm.deposited[pmd_index(b)] = mm.deposited.pop(spmd)
                    finally:
                        spin_unlock(self, lock)
                    off += PMD_SIZE
                    continue
                yield from self.split_huge_pmd(src, spmd)
            spt = mm.pte_tables.get(spmd)
            if spt is not None:
                dpt = mm.pte_alloc(pmd_index(b))
                yield from spin_lock(self, spt.ptl)
                second = dpt.ptl if dpt.ptl is not spt.ptl else None
                if second is not None:
                    yield from spin_lock(self, second)
                try:
                    si = pte_index(a)
                    di = pte_index(b)
                    dpt.entries[di] = spt.entries[si]
                    spt.entries[si] = 0
                finally:
                    if second is not None:
                        spin_unlock(self, second)
                    spin_unlock(self, spt.ptl)
            off += PAGE_SIZE
        self.cost["tlb_flushes"] += 1
