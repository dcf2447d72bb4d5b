"""The page-table check: what CONFIG_PAGE_TABLE_CHECK (mm/page_table_check.c)
and KASAN would report about the page tables, after every scheduling step.

Four checks, each named in the violation's field
(``mm<N>.pte[<addr>].page_table_check.<check>``, or ``.pmd[...]`` for a huge PMD):

- ``no_vma``: a present PTE or PMD where the mm has no VMA;
- ``vma_write``: a present PTE or PMD with the write bit in a VMA without
  VM_WRITE (the MMU obeys the PTE, engine/mm/memory.py ``cpu_access``: a store
  through it would succeed where the VMA says SIGSEGV);
- ``freed_folio``: a present PTE or PMD mapping a page of a freed folio
  (page_table_check_free() finds the page still counted as mapped);
- ``writable_shared``: a page mapped writable that another PTE or PMD, of the
  same mm or another, maps too (page_table_check_set() BUG_ONs an anon page
  whose anon_map_count exceeds one with a writable mapping; an anon-exclusive
  page mapped writable by two mms is its case).

The check reads the kernel's page tables and VMAs, like the kernel's own.
It is incremental, so that it can run after every step:

- it keeps what it last saw of every PTE table (its bytes, and the same
  without the accessed and dirty bits the MMU sets on every access), of
  every huge PMD and of every mm's VMAs; only the entries whose present,
  write or pfn bits changed since are indexed again and checked, and an mm
  whose VMAs changed has all its entries checked against them;
- a folio freed since the last check has its pages looked up in the index;
- kernel paths change those bits and VMAs only under a lock (the PTL, the
  PMD lock, mmap_lock for writing), so while the kernel released no such
  lock (``Kernel.unlocks``) and freed no folio since the last look, the
  tables are not looked at; the check at the end of a run always looks.

A state no lock excludes is checked: while some PTL is held, or some mm's
mmap_lock is held for writing (mmap, munmap, mprotect, mremap and fork
change VMAs and tables in several steps), the check waits for the next step
where none is.  The first violation in (mm, address) order is reported, an
entry's checks in the order of :data:`CHECKS`, then the folios freed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.mm.flags import VM_WRITE
from engine.mm.memory import ZERO_PFN
from engine.mm.mm_types import MmStruct
from engine.mm.pgtable import (
    HPAGE_PMD_NR,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PTE_DIRTY_YOUNG,
    PTE_PRESENT_WRITE_PFN,
    PTRS_PER_PTE,
    pte_pfn,
    pte_present,
    pte_write,
)

if TYPE_CHECKING:
    from engine.mm.state import KernelState

_SEEN = PTE_PRESENT_WRITE_PFN
_TABLE_BYTES = PTRS_PER_PTE * 8
_EMPTY = bytes(_TABLE_BYTES)
_NOTHING = (None, _EMPTY)
#: Byte 0 of a little-endian PTE word without the accessed and dirty bits (both in
#: byte 0), which the MMU sets on every access and no check reads.
_CLEAR_YOUNG_DIRTY = bytes(b & ~PTE_DIRTY_YOUNG for b in range(256))

#: The checks, in the order one entry is checked.
CHECKS = ("no_vma", "vma_write", "freed_folio", "writable_shared")

# An entry of the index: (mm id, address, is a huge PMD).
Loc = tuple[int, int, bool]


def field_name(loc: Loc, check: str) -> str:
    """The outcome field a violation of @check at @loc is reported under."""
    mm_id, addr, huge = loc
    return f"mm{mm_id}.{'pmd' if huge else 'pte'}[{addr:#x}].page_table_check.{check}"


def _without_young_dirty(raw: bytes) -> bytes:
    """@raw, a PTE table's bytes, with every entry's accessed and dirty bits cleared."""
    masked = bytearray(raw)
    masked[::8] = raw[::8].translate(_CLEAR_YOUNG_DIRTY)
    return bytes(masked)


class _Seen:
    """What the check last indexed of one mm."""

    __slots__ = ("tables", "huge", "vmas", "present")

    def __init__(self) -> None:
        # pmd index -> the PTE table's bytes, and the same without young and dirty
        self.tables: dict[int, tuple[bytes, bytes]] = {}
        # pmd index -> the huge PMD word (present, write and pfn bits)
        self.huge: dict[int, int] = {}
        # the VMAs: [(start, end, vm_flags)]
        self.vmas: list[tuple[int, int, int]] = []
        # (address, is a huge PMD) -> (pfn, writable): every present entry
        self.present: dict[tuple[int, bool], tuple[int, bool]] = {}


class PageTableCheck:
    """The index of what the page tables map, and the four checks over it.

    :meth:`check` raises ``report(check, loc, message)``'s exception (the
    oracle's :class:`~engine.execution.oracle.Violation`) for the first violation in
    (mm, address) order.
    """

    def __init__(self, kernel: KernelState, report: Callable[[str, Loc, str], Exception]) -> None:
        self.k = kernel
        self.report = report
        self._mms: dict[int, _Seen] = {}
        # pfn -> the PTEs that map it: loc -> writable
        self._by_pfn: dict[int, dict[Loc, bool]] = {}
        # head pfn of a PMD-mapped folio -> the PMDs that map it: loc -> writable
        self._by_head: dict[int, dict[Loc, bool]] = {}
        # folios freed since the last check: (first pfn, number of pages)
        self._freed: list[tuple[int, int]] = []
        # the kernel's count of lock releases when the index was last refreshed
        self._unlocks = -1

    # -- what the kernel tells -------------------------------------------------
    def page_table_check_free(self, pfn: int, nr: int) -> None:
        """A folio of @nr pages from @pfn was freed: no entry may map it now."""
        self._freed.append((pfn, nr))

    # -- the index ----------------------------------------------------------------
    def _set(self, seen: _Seen, loc: Loc, word: int, touched: list[Loc]) -> None:
        """Index the entry at @loc as holding @word now (not present: nothing)."""
        key = (loc[1], loc[2])
        index = self._by_head if loc[2] else self._by_pfn
        old = seen.present.pop(key, None)
        if old is not None:
            holders = index[old[0]]
            if len(holders) == 1:
                del index[old[0]]
            else:
                del holders[loc]
        if pte_present(word):
            pfn, writable = pte_pfn(word), pte_write(word)
            seen.present[key] = (pfn, writable)
            now = index.get(pfn)
            if now is None:
                index[pfn] = {loc: writable}
            else:
                now[loc] = writable
            touched.append(loc)

    def _diff(self, seen: _Seen, mm_id: int, base: int, old: bytes, now: bytes,
              touched: list[Loc]) -> None:
        """Index the entries of one PTE table that differ between @old and @now
        (both without young and dirty): the 512-byte blocks that differ, their
        64-byte runs of eight entries that differ, their entries."""
        from_bytes = int.from_bytes
        for b in range(0, _TABLE_BYTES, 512):
            if old[b:b + 512] == now[b:b + 512]:
                continue
            for c in range(b, b + 512, 64):
                if old[c:c + 64] == now[c:c + 64]:
                    continue
                for j in range(c, c + 64, 8):
                    n, o = now[j:j + 8], old[j:j + 8]
                    if n != o:
                        w = from_bytes(n, "little")
                        if (w ^ from_bytes(o, "little")) & _SEEN:
                            self._set(seen, (mm_id, base + (j << (PAGE_SHIFT - 3)), False),
                                      w & _SEEN, touched)

    def _refresh(self, mm: MmStruct, seen: _Seen, touched: list[Loc]) -> bool:
        """Index what changed in @mm's tables into @touched (the entries present
        now whose checked bits changed).  Return: whether the mm's VMAs changed."""
        mm_id = mm.id
        huge_now = mm.pmd_huge
        huge_seen = seen.huge
        for pmd_idx, word in huge_now.items():
            word &= _SEEN
            if huge_seen.get(pmd_idx) != word:
                huge_seen[pmd_idx] = word
                self._set(seen, (mm_id, pmd_idx << PMD_SHIFT, True), word, touched)
        if len(huge_seen) != len(huge_now):
            for pmd_idx in [i for i in huge_seen if i not in huge_now]:
                del huge_seen[pmd_idx]
                self._set(seen, (mm_id, pmd_idx << PMD_SHIFT, True), 0, touched)
        tables_seen = seen.tables
        pte_tables = mm.pte_tables
        for pmd_idx, pt in pte_tables.items():
            # a huge PMD is what the MMU walks; a PTE table beside it maps nothing
            raw = pt.entries.tobytes() if pmd_idx not in huge_now else _EMPTY
            old = tables_seen.get(pmd_idx, _NOTHING)
            if old[0] == raw:
                continue
            now = _without_young_dirty(raw)
            tables_seen[pmd_idx] = (raw, now)
            if now != old[1]:
                self._diff(seen, mm_id, pmd_idx << PMD_SHIFT, old[1], now, touched)
        if len(tables_seen) != len(pte_tables):
            for pmd_idx in [i for i in tables_seen if i not in pte_tables]:
                self._diff(seen, mm_id, pmd_idx << PMD_SHIFT, tables_seen.pop(pmd_idx)[1],
                           _EMPTY, touched)
        vmas = [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas]
        if vmas == seen.vmas:
            return False
        seen.vmas = vmas
        return True

    # -- the checks ---------------------------------------------------------------
    def check(self, force: bool = False) -> bool:
        """Index what changed since the last check and check it: each entry
        whose checked bits changed (all of an mm's entries when its VMAs
        changed), then each folio freed since.

        A kernel path changes an entry's present, write or pfn bits, and a
        VMA, only under a lock (the PTL, the PMD lock, mmap_lock for writing):
        while no such lock was released since the last refresh and no folio
        was freed, nothing the checks read changed, and the tables are not
        looked at (unless @force: the check at the end of a run).

        Return: False when a held lock deferred the check.
        """
        k = self.k
        unlocks = k.unlocks
        if unlocks == self._unlocks and not self._freed and not force:
            return True
        mms_now = k.mms
        for mm in mms_now.values():
            if mm.mmap_lock.writer is not None:
                return False
            for lock in mm.pmd_ptl.values():
                if lock.owner is not None:
                    return False
        touched: list[Loc] = []
        recheck: list[Loc] = []
        mms = self._mms
        for mm_id, mm in mms_now.items():
            if not mm.alive:
                continue
            seen = mms.get(mm_id)
            if seen is None:
                seen = mms[mm_id] = _Seen()
            if self._refresh(mm, seen, touched):
                recheck.extend((mm_id,) + key for key in seen.present)
        self._unlocks = unlocks
        freed = self._freed
        if not touched and not recheck and not freed:
            return True
        self._freed = []
        if recheck:
            changed = set(touched)
            for loc in sorted(changed.union(recheck)):
                self._check_entry(loc, loc in changed)
        else:
            touched.sort()
            for loc in touched:
                self._check_entry(loc, True)
        for pfn, nr in sorted(freed):
            self._check_freed(pfn, nr)
        return True

    def _check_entry(self, loc: Loc, changed: bool) -> None:
        """The checks of one entry: against its VMAs always; whether it maps a
        live folio, mapped writable by it alone, when it changed."""
        mm_id, addr, huge = loc
        seen = self._mms[mm_id]
        pfn, writable = seen.present[(addr, huge)]
        # no_vma, vma_write: the VMAs over the entry's range allow what it grants
        end = addr + (PMD_SIZE if huge else PAGE_SIZE)
        pos = addr
        for start, vend, flags in seen.vmas:
            if vend <= pos:
                continue
            if start > pos:
                break
            if writable and not flags & VM_WRITE:
                raise self.report("vma_write", loc,
                                  f"mm{mm_id} {_what(huge)} at {addr:#x} maps pfn {pfn:#x} "
                                  f"writable in VMA {start:#x}-{vend:#x} without VM_WRITE")
            pos = vend
            if pos >= end:
                break
        if pos < end:
            raise self.report("no_vma", loc, f"mm{mm_id} {_what(huge)} at {addr:#x} maps pfn "
                                             f"{pfn:#x} where no VMA is ({pos:#x})")
        if not changed or pfn == ZERO_PFN:
            return
        # freed_folio: it maps a live folio
        if not self._live(pfn):
            self._report_freed(loc, pfn)
        # writable_shared: a page mapped writable is mapped once
        by_pfn, by_head = self._by_pfn, self._by_head
        for p in (range(pfn, pfn + HPAGE_PMD_NR) if huge else (pfn,)):
            ptes = by_pfn.get(p)
            pmds = by_head.get(p & ~(HPAGE_PMD_NR - 1))
            if (len(ptes) if ptes else 0) + (len(pmds) if pmds else 0) > 1:
                self._check_shared(p, {**(ptes or {}), **(pmds or {})})

    def _live(self, pfn: int) -> bool:
        folios = self.k.folios
        for mask in (0, 15, 511):
            folio = folios.get(pfn & ~mask)
            if folio is not None and folio.pfn <= pfn < folio.pfn + folio.nr and not folio.freed:
                return True
        return False

    def _check_freed(self, pfn: int, nr: int) -> None:
        """freed_folio, for a folio freed since: nothing maps any of its pages."""
        holders = self._by_head.get(pfn)
        if holders:
            self._report_freed(min(holders), pfn)
        by_pfn = self._by_pfn
        for p in range(pfn, pfn + nr):
            holders = by_pfn.get(p)
            if holders:
                self._report_freed(min(holders), p)

    def _report_freed(self, loc: Loc, pfn: int) -> None:
        mm_id, addr, huge = loc
        raise self.report("freed_folio", loc, f"mm{mm_id} {_what(huge)} at {addr:#x} maps pfn "
                                              f"{pfn:#x} of a freed folio")

    def _check_shared(self, pfn: int, maps: dict[Loc, bool]) -> None:
        """writable_shared: @maps, all that map @pfn, hold no writable mapping."""
        writers = sorted(m for m, writable in maps.items() if writable)
        if writers:
            w = writers[0]
            others = ", ".join(f"mm{m} {a:#x}" for m, a, h in sorted(maps) if (m, a, h) != w)
            raise self.report("writable_shared", w,
                              f"mm{w[0]} {_what(w[2])} at {w[1]:#x} maps pfn {pfn:#x} "
                              f"writable, and {others} map it too")


def _what(huge: bool) -> str:
    return "PMD" if huge else "PTE"
