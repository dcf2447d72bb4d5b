"""mm_struct, vm_area_struct and anon_vma: the address space of a process."""

from __future__ import annotations

from engine.mm.flags import VM_DROPPABLE, VM_LOCKED, VM_WRITE
from engine.mm.pgtable import PAGE_SHIFT, PMD_SHIFT, PageTable
from engine.mm.sched import RwSem, SpinLock

MM_ANONPAGES = "MM_ANONPAGES"
MM_SWAPENTS = "MM_SWAPENTS"


class AnonVma:
    """The anon_vma an anonymous folio points to; its VMAs are what rmap walks.

    The model keeps one anon_vma per lineage: fork adds the child's VMAs to the
    parent's.  Walking a VMA that does not map the folio finds nothing, so the
    extra VMAs cost time, not correctness.
    """

    __slots__ = ("id", "vmas")

    def __init__(self, id_: int) -> None:
        self.id = id_
        self.vmas: list[VmArea] = []


class VmArea:
    """vm_area_struct: [vm_start, vm_end) with flags, pgoff and a folio order policy."""

    __slots__ = ("mm", "vm_start", "vm_end", "vm_flags", "vm_pgoff", "anon_vma", "order")

    def __init__(self, mm: MmStruct, start: int, end: int, flags: int, pgoff: int,
                 anon_vma: AnonVma, order: int) -> None:
        self.mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.vm_pgoff = pgoff
        self.anon_vma = anon_vma
        self.order = order        # largest anon folio order the fault path allocates here

    @property
    def droppable(self) -> bool:
        return bool(self.vm_flags & VM_DROPPABLE)

    @property
    def locked(self) -> bool:
        return bool(self.vm_flags & VM_LOCKED)

    @property
    def writable(self) -> bool:
        return bool(self.vm_flags & VM_WRITE)

    def __repr__(self) -> str:
        return f"<vma mm{self.mm.id} {self.vm_start:#x}-{self.vm_end:#x}>"


def vma_address(vma: VmArea, index: int) -> int:
    """The user address of linear page ``index`` in ``vma`` (may lie outside it)."""
    return vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)


def linear_page_index(vma: VmArea, address: int) -> int:
    return vma.vm_pgoff + ((address - vma.vm_start) >> PAGE_SHIFT)


class MmStruct:
    """mm_struct: VMAs, page tables (PTE tables and huge PMDs), rss counters, mmap_lock."""

    def __init__(self, id_: int) -> None:
        self.id = id_
        self.vmas: list[VmArea] = []
        self.pte_tables: dict[int, PageTable] = {}    # pmd index -> PTE table
        self.pmd_huge: dict[int, int] = {}            # pmd index -> huge PMD word
        self.pmd_ptl: dict[int, SpinLock] = {}        # pmd index -> split PTL
        self.deposited: dict[int, PageTable] = {}     # pmd index -> deposited PTE table
        self.rss = {MM_ANONPAGES: 0, MM_SWAPENTS: 0}
        self.mmap_lock = RwSem(f"mm{id_}.mmap_lock")
        self.alive = False

    def find_vma(self, addr: int) -> VmArea | None:
        for vma in self.vmas:
            if vma.vm_start <= addr < vma.vm_end:
                return vma
        return None

    def ptl(self, pmd_idx: int) -> SpinLock:
        lock = self.pmd_ptl.get(pmd_idx)
        if lock is None:
            lock = self.pmd_ptl[pmd_idx] = SpinLock(f"mm{self.id}.ptl[{pmd_idx:#x}]")
        return lock

    def pte_alloc(self, pmd_idx: int) -> PageTable:
        pt = self.pte_tables.get(pmd_idx)
        if pt is None:
            pt = PageTable(pmd_idx << PMD_SHIFT, self.id, self.ptl(pmd_idx))
            self.pte_tables[pmd_idx] = pt
        return pt

    def insert_vma(self, vma: VmArea) -> None:
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.vm_start)
        if vma not in vma.anon_vma.vmas:
            vma.anon_vma.vmas.append(vma)

    def remove_vma(self, vma: VmArea) -> None:
        self.vmas.remove(vma)
        if vma in vma.anon_vma.vmas:
            vma.anon_vma.vmas.remove(vma)

    def split_vma(self, vma: VmArea, addr: int) -> VmArea:
        """Split ``vma`` at ``addr``; return the upper part (__split_vma)."""
        new = VmArea(self, addr, vma.vm_end, vma.vm_flags,
                     linear_page_index(vma, addr), vma.anon_vma, vma.order)
        vma.vm_end = addr
        self.insert_vma(new)
        return new

    def isolate_range(self, start: int, end: int) -> list[VmArea]:
        """Split VMAs so that [start, end) is covered by whole VMAs; return them."""
        for vma in list(self.vmas):
            if vma.vm_start < start < vma.vm_end:
                self.split_vma(vma, start)
        for vma in list(self.vmas):
            if vma.vm_start < end < vma.vm_end:
                self.split_vma(vma, end)
        return [v for v in self.vmas if start <= v.vm_start and v.vm_end <= end]

