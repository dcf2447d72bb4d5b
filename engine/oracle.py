"""Oracles: what must hold after every step, whatever the kernel version.

- No lost data: a page reads what MADV_FREE semantics allow: before a write
  its old contents or zero, after a CPU store or a completed DMA write into a
  pin taken on it exactly what was written.
- Every folio's refcount equals what its mappings, swap cache and named
  holders (isolation, pins, batches, speculative and temporary references)
  account for; swapcache implies swapbacked.
- Per-page mapcounts match the page tables and MM_ANONPAGES matches the
  present anon PTEs, wherever no PTL is held (a holder may be mid-update).
- Once every thread is done, no isolation or temporary reference is left.

A violation raises :class:`Violation`; the runner turns it into the outcome.
"""

from __future__ import annotations

import enum
from collections import Counter

from engine.memory import ZERO_PFN
from engine.mm import MM_ANONPAGES
from engine.pgtable import (HPAGE_PMD_NR, PAGE_SHIFT, is_swap_pte, pte_pfn,
                            pte_present, pte_swp_offset)


class Verdict(str, enum.Enum):
    """How a run ended."""

    OK = "ok"
    DATA_LOSS = "data_loss"
    INVARIANT = "invariant"
    CRASH = "crash"
    HANG = "hang"
    LEAK = "leak"
    #: An exception that is no modelled kernel report: foliodiff's defect, not the kernel's.
    HARNESS = "harness"


class Violation(Exception):
    """An oracle failed: ``kind`` is the verdict, ``field`` what broke."""

    def __init__(self, kind: Verdict, field: str, message: str) -> None:
        self.kind = kind
        self.field = field
        self.message = message
        super().__init__(message)


class Oracle:
    """Shadow of what user space may observe, plus the kernel-state invariants."""

    def __init__(self, kernel, per_step: bool = True) -> None:
        self.k = kernel
        self.per_step = per_step
        # (mm, vpn) -> (value, may_read_zero)
        self.expect: dict[tuple[int, int], tuple[int, bool]] = {}
        # (mm, vpn) -> generation, bumped when user space itself replaces the page
        self.epoch: dict[tuple[int, int], int] = {}
        self.pinned: dict[str, list[tuple[int, int, int]]] = {}
        # pages of VM_DROPPABLE mappings: dropped at any time by design, zero always allowed
        self.droppable: set[tuple[int, int]] = set()
        # (pin, page index) -> (mm, vpn, value written, the page could read zero before)
        self.dma_written: dict[tuple[str, int], tuple[int, int, int, bool]] = {}
        self._pt_cache: dict[int, tuple[bytes, Counter, int]] = {}
        self._last_seen: tuple | None = None

    # -- user-visible events -----------------------------------------------
    def on_map(self, mm: int, start: int, end: int, droppable: bool = False) -> None:
        for vpn in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            self.expect[(mm, vpn)] = (0, False)
            self._bump((mm, vpn))
            if droppable:
                self.droppable.add((mm, vpn))
            else:
                self.droppable.discard((mm, vpn))

    def on_unmap(self, mm: int, start: int, end: int) -> None:
        for vpn in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            self.expect.pop((mm, vpn), None)
            self.droppable.discard((mm, vpn))
            self._bump((mm, vpn))

    def on_dontneed(self, mm: int, start: int, end: int) -> None:
        for vpn in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            if (mm, vpn) in self.expect:
                self.expect[(mm, vpn)] = (0, False)
            self._bump((mm, vpn))

    def on_move(self, mm: int, old: int, new: int, length: int) -> None:
        """mremap: contents, generations and pins follow the pages to ``new``."""
        delta = (new - old) >> PAGE_SHIFT
        lo, hi = old >> PAGE_SHIFT, (old + length) >> PAGE_SHIFT
        for vpn in range(lo, hi):
            val = self.expect.pop((mm, vpn), None)
            if val is not None:
                self.expect[(mm, vpn + delta)] = val
            if (mm, vpn) in self.droppable:
                self.droppable.discard((mm, vpn))
                self.droppable.add((mm, vpn + delta))
            self.epoch[(mm, vpn + delta)] = self.epoch.get((mm, vpn), 0)
        for name, pages in self.pinned.items():
            self.pinned[name] = [(m, v + delta, e) if m == mm and lo <= v < hi else (m, v, e)
                                 for m, v, e in pages]
        for vpn in range(lo, hi):
            self._bump((mm, vpn))

    def on_fork(self, parent: int, child: int) -> None:
        for (mm, vpn), val in list(self.expect.items()):
            if mm == parent:
                self.expect[(child, vpn)] = val
        self.droppable |= {(child, vpn) for mm, vpn in self.droppable if mm == parent}
        mm = self.k.mms[child]
        from engine.flags import VM
        for vma in mm.vmas:
            if vma.vm_flags & int(VM.VM_WIPEONFORK):
                for vpn in range(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT):
                    self.expect[(child, vpn)] = (0, False)

    def on_write(self, mm: int, addr: int, value: int) -> None:
        """A CPU store."""
        self._written(mm, addr >> PAGE_SHIFT, value)

    def _written(self, mm: int, vpn: int, value: int) -> None:
        """``value`` is what the page holds now; a VM_DROPPABLE page may still read zero."""
        self.expect[(mm, vpn)] = (value, (mm, vpn) in self.droppable)

    def on_madv_free(self, mm: int, start: int, end: int) -> None:
        for vpn in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            val = self.expect.get((mm, vpn))
            if val is not None:
                self.expect[(mm, vpn)] = (val[0], True)

    def on_pin(self, name: str, mm: int, addr: int) -> None:
        key = (mm, addr >> PAGE_SHIFT)
        self.pinned.setdefault(name, []).append((mm, key[1], self.epoch.get(key, 0)))

    def on_unpin(self, name: str, dirty: bool) -> None:
        """Unpin.  Without make_dirty the kernel never learns of the device's writes:
        a page MADV_FREE'd before them may be discarded again ("GUP users must mark
        the folio dirty if there was a modification", faeb2831b517)."""
        for index in range(len(self.pinned.pop(name, ()))):
            rec = self.dma_written.pop((name, index), None)
            if rec is None or dirty:
                continue
            mm, vpn, value, may_zero_before = rec
            if may_zero_before and self.expect.get((mm, vpn)) == (value, False):
                self.expect[(mm, vpn)] = (value, True)

    def on_dma_write(self, name: str, index: int, value: int) -> None:
        """The device wrote page ``index`` of pin ``name``: a write to the page the pin
        was taken on, unless user space has since replaced that page itself."""
        pages = self.pinned.get(name, ())
        if index < len(pages):
            mm, vpn, epoch = pages[index]
            if self.epoch.get((mm, vpn), 0) == epoch and (mm, vpn) in self.expect:
                before = self.dma_written.get((name, index))
                may_zero = before[3] if before else self.expect[(mm, vpn)][1]
                self._written(mm, vpn, value)
                self.dma_written[(name, index)] = (mm, vpn, value, may_zero)

    def on_read(self, mm: int, addr: int, value: int) -> None:
        self._check_value(mm, addr >> PAGE_SHIFT, value, "read")

    def _bump(self, key: tuple[int, int]) -> None:
        self.epoch[key] = self.epoch.get(key, 0) + 1

    def _check_value(self, mm: int, vpn: int, value: int, how: str) -> None:
        exp = self.expect.get((mm, vpn))
        if exp is None:
            return
        want, may_zero = exp
        if value != want and not (may_zero and value == 0):
            allowed = f"{want} or 0" if may_zero else f"{want}"
            raise Violation(Verdict.DATA_LOSS, f"mm{mm}.data[{vpn << PAGE_SHIFT:#x}]",
                            f"{how} of mm{mm} page {vpn << PAGE_SHIFT:#x} returned {value}, "
                            f"allowed {allowed}")

    # -- invariants -----------------------------------------------------------
    def check_step(self) -> None:
        """After every scheduling step: the refcount and flag invariants."""
        if self.per_step:
            self.check_folios()

    def check_op(self) -> None:
        """After every completed operation: also the page-table invariants (a full
        table scan is too dear for every step; a broken mapcount outlives the step)."""
        if self.per_step:
            self.check_page_tables()

    def check_folios(self) -> None:
        # Mapcounts and named holders change only through rmap updates, a split and
        # ref_get()/ref_put(), which clear the folio's stamp: a folio whose refcount
        # is as last verified is fine.  A global rmap generation in the stamp made
        # every update re-sum the mapcounts of every folio, most of a run's time.
        for folio in self.k.folios.values():
            ref = folio.ref
            if ref == 0:
                continue                    # frozen for freeing or splitting
            if folio.checked == ref and not folio.swapcache:
                continue
            extra = folio.extra
            held = sum(extra.values()) if extra else 0
            expected = sum(folio.mapcount) + folio.entire_mapcount + held
            if ref != expected:
                raise Violation(Verdict.INVARIANT, "folio.refcount",
                                f"folio pfn {folio.pfn:#x} refcount {ref} != {expected} "
                                f"(mappings {sum(folio.mapcount) + folio.entire_mapcount}, "
                                f"holders {dict(folio.extra)})")
            if folio.swapcache and not folio.swapbacked:
                raise Violation(Verdict.INVARIANT, "folio.swapcache",
                                f"folio pfn {folio.pfn:#x} in swapcache but not swapbacked")
            if folio.order and folio.order < 9 and folio.entire_mapcount:
                raise Violation(Verdict.INVARIANT, "folio.entire_mapcount",
                                f"folio pfn {folio.pfn:#x} of order {folio.order} PMD-mapped")
            folio.checked = ref

    def _table_counts(self, pt) -> tuple[Counter, int]:
        raw = pt.entries.tobytes()
        cached = self._pt_cache.get(id(pt))
        if cached is not None and cached[0] == raw:
            return cached[1], cached[2]
        counts: Counter = Counter()
        anon = 0
        for w in pt.entries:
            if w and pte_present(w):
                pfn = pte_pfn(w)
                if pfn != ZERO_PFN:
                    counts[pfn] += 1
                    anon += 1
        self._pt_cache[id(pt)] = (raw, counts, anon)
        return counts, anon

    def _fingerprint(self) -> tuple:
        """Everything check_page_tables() reads: when it is unchanged since the
        last clean check, the check cannot fail now."""
        k = self.k
        parts: list = [k.cost["rmap_updates"], len(k.folios)]
        for mm in k.mms.values():
            parts.append(mm.rss[MM_ANONPAGES])
            parts.extend(pt.entries.tobytes() for pt in mm.pte_tables.values())
            parts.append(tuple(mm.pmd_huge.items()))
        return tuple(parts)

    def check_page_tables(self) -> None:
        """Mapcounts against page tables, MM_ANONPAGES against present anon PTEs."""
        fp = self._fingerprint()
        if fp == self._last_seen:
            return
        if self._check_page_tables():
            self._last_seen = fp

    def _check_page_tables(self) -> bool:
        """Return: False when some PTL was held and part of the check was skipped."""
        k = self.k
        per_pfn: Counter = Counter()
        pmd_maps: Counter = Counter()
        busy = False
        for mm in k.mms.values():
            anon = 0
            mm_busy = False
            for pmd_idx, lock in mm.pmd_ptl.items():
                if lock.owner is not None:
                    mm_busy = True
                    break
            if mm_busy:
                busy = True
                continue
            for pt in mm.pte_tables.values():
                counts, n = self._table_counts(pt)
                per_pfn.update(counts)
                anon += n
            for word in mm.pmd_huge.values():
                pmd_maps[pte_pfn(word)] += 1
                anon += HPAGE_PMD_NR
            if anon != mm.rss[MM_ANONPAGES]:
                raise Violation(Verdict.INVARIANT, "mm.MM_ANONPAGES",
                                f"mm{mm.id} MM_ANONPAGES {mm.rss[MM_ANONPAGES]} but {anon} "
                                f"present anon pages mapped")
        if busy:
            return False
        for folio in k.folios.values():
            mc = folio.mapcount
            base = folio.pfn
            for i in range(folio.nr):
                if mc[i] != per_pfn.get(base + i, 0):
                    raise Violation(Verdict.INVARIANT, "folio.mapcount",
                                    f"page {i} of folio pfn {base:#x}: mapcount {mc[i]} but "
                                    f"{per_pfn.get(base + i, 0)} PTEs map it")
            if folio.entire_mapcount != pmd_maps.get(base, 0):
                raise Violation(Verdict.INVARIANT, "folio.entire_mapcount",
                                f"folio pfn {base:#x}: entire mapcount {folio.entire_mapcount} "
                                f"but {pmd_maps.get(base, 0)} PMDs map it")
        return True

    def check_end(self) -> None:
        """After every thread finished: invariants, no stray references, no lost data."""
        self.check_folios()
        self.check_page_tables()
        for folio in self.k.folios.values():
            stray = {w: n for w, n in folio.extra.items() if w in ("temp", "isolate")}
            if stray:
                raise Violation(Verdict.LEAK, "folio.refcount",
                                f"folio pfn {folio.pfn:#x} still holds {stray} after all threads ended")
            if folio.ref == 0:
                raise Violation(Verdict.LEAK, "folio.refcount",
                                f"folio pfn {folio.pfn:#x} frozen at refcount 0 but never freed")
        self.check_contents()

    def check_contents(self) -> None:
        """Every page user space could read holds an allowed value (read without faulting)."""
        k = self.k
        for (mm_id, vpn) in sorted(self.expect):
            mm = k.mms.get(mm_id)
            if mm is None or not mm.alive:
                continue
            addr = vpn << PAGE_SHIFT
            hit = k.lookup_pte(mm, addr)
            if hit is None:
                value = 0
            elif hit[0] == "pmd":
                folio = k.pfn_folio(pte_pfn(hit[1]))
                value = folio.data[vpn & (HPAGE_PMD_NR - 1)]
            else:
                w = hit[1].entries[hit[2]]
                if pte_present(w):
                    pfn = pte_pfn(w)
                    if pfn == ZERO_PFN:
                        value = 0
                    else:
                        folio = k.pfn_folio(pfn)
                        value = folio.data[pfn - folio.pfn]
                elif is_swap_pte(w):
                    slot = pte_swp_offset(w)
                    cached = k.swapcache_lookup(slot)
                    value = (cached.data[cached.swap.index(slot)] if cached is not None
                             else k.swap.data.get(slot, 0))
                else:
                    value = 0
            self._check_value(mm_id, vpn, value, "final contents")

