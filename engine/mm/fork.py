"""fork(2) (kernel/fork.c): dup_mmap() copies the VMAs; copy_page_range()
(mm/memory.c) copies their page tables."""

from __future__ import annotations

from engine.mm.flags import VM, VM_LOCKED
from engine.mm.mm_types import VmArea
from engine.mm.sched import Yields, down_write, up_write
from engine.mm.state import KernelMixin
from engine.program.format import Fork


class ForkMixin(KernelMixin):
    """fork() of a process' anonymous private memory."""

    def sys_fork(self, op: Fork) -> Yields[int]:
        """fork(): copy VMAs and page tables; share anon folios copy-on-write.

        A folio that may be DMA pinned is copied for the child right away
        (copy_present_page, since 70e806e4e645) so the parent keeps its page.
        """
        parent = self.current_mm()
        child = self.mms[op.child]
        yield from down_write(self, parent.mmap_lock)
        try:
            for vma in list(parent.vmas):
                cv = VmArea(child, vma.vm_start, vma.vm_end, vma.vm_flags, vma.vm_pgoff,
                            vma.anon_vma, vma.order)
                child.insert_vma(cv)
                if vma.vm_flags & int(VM.VM_WIPEONFORK):
                    continue
                if vma.vm_flags & VM_LOCKED:
                    cv.vm_flags &= ~VM_LOCKED       # mlock is not inherited
                yield from self.copy_page_range(vma, cv)
            self.oracle.on_fork(parent.id, child.id)
            child.alive = True
            self.mm_gate(child.id).open = True
        finally:
            up_write(self, parent.mmap_lock)
        return 0
