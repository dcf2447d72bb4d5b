"""Page-table words and tables, x86-64 shaped.

A PTE is a 64-bit word.  A page table is a 512-entry ``array('Q')`` per PMD,
the same memory the C batched path reads and writes through ctypes.  Every
access made on behalf of a kernel path goes through :func:`ptep_get` /
:func:`set_pte_at`, which refuse an index outside the table: the model's
KASAN.  A huge PMD maps a 2 MiB folio with one word of the same format.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from engine.errors import PageTableOutOfBounds

if TYPE_CHECKING:
    from engine.mm.sched import SpinLock

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PTRS_PER_PTE = 512
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER

_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7
#: A non-present, non-none PTE holding a swap entry (offset in the pfn field).
_PAGE_SWP = 1 << 11
_PFN_SHIFT = 12
_PFN_MASK = ((1 << 40) - 1) << _PFN_SHIFT


def pmd_index(addr: int) -> int:
    """The PMD entry that maps @addr: the model numbers them across the whole
    address space (it has no upper levels), the key of ``mm.pte_tables``."""
    return addr >> PMD_SHIFT


def pte_index(addr: int) -> int:
    """The entry of its PTE table that maps @addr."""
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def pmd_addr_end(addr: int, end: int) -> int:
    """The end of @addr's PMD range, or @end if that comes first."""
    boundary = (addr + PMD_SIZE) & ~(PMD_SIZE - 1)
    return boundary if boundary < end else end


def mk_pte(pfn: int, write: bool, dirty: bool = False, young: bool = True) -> int:
    """mk_pte() + pte_mkwrite/pte_mkdirty/pte_mkyoung as a fault would build it."""
    w = (pfn << _PFN_SHIFT) | _PAGE_PRESENT
    if write:
        w |= _PAGE_RW
    if dirty:
        w |= _PAGE_DIRTY
    if young:
        w |= _PAGE_ACCESSED
    return w


def pte_none(pte: int) -> bool:
    return pte == 0


def pte_present(pte: int) -> bool:
    return bool(pte & _PAGE_PRESENT)


def pte_pfn(pte: int) -> int:
    return (pte & _PFN_MASK) >> _PFN_SHIFT


def pte_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_DIRTY)


def pte_young(pte: int) -> bool:
    return bool(pte & _PAGE_ACCESSED)


def pte_write(pte: int) -> bool:
    return bool(pte & _PAGE_RW)


def pte_mkclean(pte: int) -> int:
    return pte & ~_PAGE_DIRTY


def pte_mkold(pte: int) -> int:
    return pte & ~_PAGE_ACCESSED


def pte_mkdirty(pte: int) -> int:
    return pte | _PAGE_DIRTY


def pte_mkyoung(pte: int) -> int:
    return pte | _PAGE_ACCESSED


def pte_wrprotect(pte: int) -> int:
    return pte & ~_PAGE_RW


def pte_mkwrite(pte: int) -> int:
    return pte | _PAGE_RW


def pte_advance_pfn(pte: int, nr: int) -> int:
    """@pte mapping the page @nr pages on (what set_ptes() and folio_pte_batch() step by)."""
    return pte + (nr << _PFN_SHIFT)


def swp_entry_to_pte(offset: int) -> int:
    """A swap PTE for swap slot ``offset`` (swp_entry_to_pte)."""
    return (offset << _PFN_SHIFT) | _PAGE_SWP


def is_swap_pte(pte: int) -> bool:
    return bool(pte & _PAGE_SWP) and not pte & _PAGE_PRESENT


def pte_swp_offset(pte: int) -> int:
    return (pte & _PFN_MASK) >> _PFN_SHIFT


#: The bits hardware sets on access: get_and_clear_full_ptes() merges them.
PTE_DIRTY_YOUNG = _PAGE_DIRTY | _PAGE_ACCESSED
#: Bits folio_pte_batch() compares once dirty, young and write are masked out.
PTE_BATCH_IGNORE = _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_RW
#: The write bit, which folio_pte_batch_flags(FPB_RESPECT_WRITE) compares (7.0+).
PTE_WRITE = _PAGE_RW
#: The bits of an entry the page-table check reads: present, write and the pfn.
PTE_PRESENT_WRITE_PFN = _PAGE_PRESENT | _PAGE_RW | _PFN_MASK


def pmd_mkhuge(pfn: int, write: bool, dirty: bool = False, young: bool = True) -> int:
    return mk_pte(pfn, write, dirty, young) | _PAGE_PSE


pmd_pfn = pte_pfn
pmd_dirty = pte_dirty
pmd_young = pte_young
pmd_write = pte_write
pmd_mkclean = pte_mkclean
pmd_mkold = pte_mkold
pmd_mkdirty = pte_mkdirty
pmd_mkyoung = pte_mkyoung


class PageTable:
    """One PTE table: 512 PTE words and the split page-table lock (PTL).

    ``entries`` is an ``array('Q')``: its buffer is shared with the C path.
    """

    __slots__ = ("entries", "ptl", "base", "mm_id")

    def __init__(self, base: int, mm_id: int, ptl: SpinLock) -> None:
        self.entries = array("Q", bytes(PTRS_PER_PTE * 8))
        self.base = base          # virtual address the table's entry 0 maps
        self.mm_id = mm_id
        self.ptl = ptl

    def __repr__(self) -> str:
        return f"<pte table mm{self.mm_id} {self.base:#x}>"


def ptep_get(pt: PageTable, idx: int) -> int:
    """Read PTE ``idx`` of ``pt``; an index outside the table is a KASAN report."""
    if idx < 0 or idx >= PTRS_PER_PTE:
        raise PageTableOutOfBounds(idx, repr(pt))
    return pt.entries[idx]


def set_pte_at(pt: PageTable, idx: int, pte: int) -> None:
    """Write PTE ``idx`` of ``pt`` (set_pte_at); bounds-checked like :func:`ptep_get`."""
    if idx < 0 or idx >= PTRS_PER_PTE:
        raise PageTableOutOfBounds(idx, repr(pt))
    pt.entries[idx] = pte


_ZERO_CHUNK = bytes(64)


def present_slots(entries: array[int]) -> list[int]:
    """Indices of the non-zero entries of a PTE table, skipping empty 8-entry chunks."""
    raw = entries.tobytes()
    out: list[int] = []
    for c in range(0, PTRS_PER_PTE * 8, 64):
        if raw[c:c + 64] != _ZERO_CHUNK:
            base = c >> 3
            out.extend(base + i for i in range(8) if entries[base + i])
    return out


def maps_pfn_in(entries: array[int], first: int, count: int, lo: int, hi: int) -> bool:
    """Whether a present entry of ``entries[first:first + count]`` maps a pfn in [@lo, @hi).

    The encoding read in one loop, not an entry's worth of calls: a write
    fault on a large folio asks it of every other mm's entries of the folio.
    """
    lo_w, hi_w = lo << _PFN_SHIFT, hi << _PFN_SHIFT
    for w in entries[first:first + count]:
        if w & _PAGE_PRESENT and lo_w <= w & _PFN_MASK < hi_w:
            return True
    return False
