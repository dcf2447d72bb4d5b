"""mprotect(2) (mm/mprotect.c): mprotect_fixup() and change_protection()."""

from __future__ import annotations

import errno

from engine.mm.flags import VM_READ, VM_WRITE
from engine.mm.mm_types import VmArea
from engine.mm.pgtable import PAGE_SIZE, PMD_SHIFT, pmd_index, pte_index, pte_present, pte_wrprotect
from engine.mm.sched import Yields, down_write, spin_lock, spin_unlock, up_write
from engine.mm.state import KernelMixin
from engine.program.format import Mprotect

#: The VM_READ/VM_WRITE bits of each protection a program can ask for.
_FLAG_MAP = {"r": VM_READ, "rw": VM_READ | VM_WRITE}


class MprotectMixin(KernelMixin):
    """mprotect() on anonymous private memory."""

    def sys_mprotect(self, op: Mprotect) -> Yields[int]:
        """mprotect(2): mprotect_fixup() on each VMA of the range.

        mprotect_fixup() returns at once for a VMA that already has the new
        flags (``newflags == oldflags``; mm/mprotect.c, the same from v5.17 to
        v6.16): no VMA split, no change_protection(), so no huge PMD split.
        Real 6.12.117 and 6.16.12 keep a THP PMD-mapped through an mprotect()
        of part of it to the protection it has.  A VMA that changes is split
        at the range (a huge PMD it covers in part is split first:
        vma_adjust_trans_huge(), change_pmd_range()) and write-protected when
        made read-only.
        Context: takes mmap_lock for writing.  Return: 0 or -ENOMEM.
        """
        mm = self.current_mm()
        start, end = op.addr, op.addr + op.pages * PAGE_SIZE
        newbits = _FLAG_MAP[op.prot.value]
        yield from down_write(self, mm.mmap_lock)
        try:
            if not self.range_mapped(mm, start, end):
                return -errno.ENOMEM
            for vma in [v for v in mm.vmas if v.vm_start < end and start < v.vm_end]:
                if vma.vm_flags & (VM_READ | VM_WRITE) == newbits:
                    continue                            # newflags == oldflags
                lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
                yield from self.vma_adjust_trans_huge(mm, lo, hi)
                for part in mm.isolate_range(lo, hi):
                    part.vm_flags = (part.vm_flags & ~(VM_READ | VM_WRITE)) | newbits
                    if not newbits & VM_WRITE:
                        yield from self.change_protection(part)
        finally:
            up_write(self, mm.mmap_lock)
        return 0

    def change_protection(self, vma: VmArea) -> Yields[None]:
        """Write-protect every present PTE / PMD of ``vma``."""
        mm = vma.mm
        for pmd_idx in range(pmd_index(vma.vm_start), pmd_index(vma.vm_end - 1) + 1):
            lock = mm.ptl(pmd_idx)
            yield from spin_lock(self, lock)
            try:
                if pmd_idx in mm.pmd_huge:
                    mm.pmd_huge[pmd_idx] = pte_wrprotect(mm.pmd_huge[pmd_idx])
                    continue
                pt = mm.pte_tables.get(pmd_idx)
                if pt is None:
                    continue
                lo = max(vma.vm_start, pmd_idx << PMD_SHIFT)
                hi = min(vma.vm_end, (pmd_idx + 1) << PMD_SHIFT)
                for a in range(lo, hi, PAGE_SIZE):
                    i = pte_index(a)
                    if pte_present(pt.entries[i]):
                        pt.entries[i] = pte_wrprotect(pt.entries[i])
            finally:
                spin_unlock(self, lock)
        self.cost["tlb_flushes"] += 1
