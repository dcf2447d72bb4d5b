"""mmap(2) and munmap(2) (mm/mmap.c, mm/vma.c): VMAs made and unmapped."""

from __future__ import annotations

import errno

from engine.mm.events import MMAP_DROPPABLE
from engine.mm.flags import VM, VM_DROPPABLE, VM_LOCKED, VM_READ, VM_WRITE
from engine.mm.mm_types import AnonVma, MmStruct, VmArea
from engine.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from engine.mm.sched import Yields, down_write, up_write
from engine.mm.state import KernelMixin
from engine.program.format import Mmap, Munmap


class MmapMixin(KernelMixin):
    """mmap(), munmap() and the VMA range helpers they share."""

    def do_munmap(self, mm: MmStruct, start: int, end: int) -> Yields[None]:
        yield from self.vma_adjust_trans_huge(mm, start, end)
        for vma in mm.isolate_range(start, end):
            yield from self.zap_page_range(vma, vma.vm_start, vma.vm_end)
            mm.remove_vma(vma)
            self.oracle.on_unmap(mm.id, vma.vm_start, vma.vm_end)

    def sys_mmap(self, op: Mmap) -> Yields[int]:
        mm = self.current_mm()
        start, end = op.addr, op.addr + op.pages * PAGE_SIZE
        if op.droppable and (not self.HAS_DROPPABLE or op.locked):
            return -errno.EINVAL          # MAP_DROPPABLE unknown, or with MAP_LOCKED
        if op.droppable:
            self.event(MMAP_DROPPABLE)
        yield from down_write(self, mm.mmap_lock)
        try:
            yield from self.do_munmap(mm, start, end)          # MAP_FIXED
            flags = VM_READ | VM_WRITE | int(VM.VM_MAYWRITE)
            if op.droppable:
                flags |= VM_DROPPABLE | int(VM.VM_WIPEONFORK | VM.VM_DONTDUMP | VM.VM_NORESERVE)
            if op.locked:
                flags |= VM_LOCKED
            self.next_anon_vma += 1
            vma = VmArea(mm, start, end, flags, start >> PAGE_SHIFT, AnonVma(self.next_anon_vma), op.order)
            mm.insert_vma(vma)
            self.oracle.on_map(mm.id, start, end, bool(flags & VM_DROPPABLE))
        finally:
            up_write(self, mm.mmap_lock)
        if op.locked:                                          # mm_populate()
            for a in range(start, end, PAGE_SIZE):
                if self.folio_at(mm, a) is None:
                    ret = yield from self.handle_mm_fault(vma, a, True)
                    if ret:
                        return ret
        return 0

    def sys_munmap(self, op: Munmap) -> Yields[int]:
        mm = self.current_mm()
        yield from down_write(self, mm.mmap_lock)
        try:
            yield from self.do_munmap(mm, op.addr, op.addr + op.pages * PAGE_SIZE)
        finally:
            up_write(self, mm.mmap_lock)
        return 0

    def range_mapped(self, mm: MmStruct, start: int, end: int) -> bool:
        pos = start
        for vma in mm.vmas:
            if vma.vm_start <= pos < vma.vm_end:
                pos = vma.vm_end
        return pos >= end
