"""Oracles: what must hold after every step, whatever the kernel version.

- No lost data: a page reads what MADV_FREE semantics allow, from its own
  history (:class:`PageShadow`): its last write, or zero while it is
  MADV_FREE'd, written by nobody the kernel hears of since, and holding no
  device write through a pin still held.
- Every folio's refcount equals what its mappings, swap cache and named
  holders (isolation, pins, batches, speculative and temporary references)
  account for; swapcache implies swapbacked.
- Per-page mapcounts match the page tables and MM_ANONPAGES matches the
  present anon PTEs, wherever no PTL is held (a holder may be mid-update).
- Once every thread is done, no isolation or temporary reference is left.
- The page-table check (:mod:`engine.mm.page_table_check`): no present PTE or
  PMD grants more than its VMA allows or lies outside any VMA, none maps a
  freed folio, no page mapped writable is mapped twice.

A violation raises :class:`Violation`; the runner turns it into the outcome.
"""

from __future__ import annotations

import enum
from collections import Counter

from engine.mm.folio import Folio
from engine.mm.memory import ZERO_PFN
from engine.mm.mm_types import MM_ANONPAGES
from engine.mm.page_table_check import PageTableCheck, field_name
from engine.mm.pgtable import (
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    is_swap_pte,
    present_slots,
    pte_pfn,
    pte_present,
    pte_swp_offset,
)


def _seq(folio: Folio) -> int:
    return folio.seq

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


class PageShadow:
    """What user space may read from one page of one mm, from that page's own history.

    ``value`` is its last write, by a CPU or by a device through a pin (0 for a
    page never written).  ``lazy``: MADV_FREE'd and not written since in a way
    the kernel hears of (a CPU store dirties the PTE; a DMA write only through
    an unpin with make_dirty).  ``dma_held``: the pins still held through which
    a device wrote the page; while one is, the kernel (v5.18 on) must keep the
    data, whatever MADV_FREE said.  ``droppable``: a VM_DROPPABLE page, which
    may read zero at any time.

    ``racing``: a MADV_DONTNEED ran while the page was written by another
    thread, so the write may have landed before the zap (and be gone) or after.

    A pin refers to the shadows of the pages it was taken on, not to addresses:
    mremap moves the shadow objects, so the pin follows its page; munmap, a new
    mmap or MADV_DONTNEED replace them, so a later DMA writes a page user space
    no longer sees.
    """

    __slots__ = ("value", "lazy", "droppable", "dma_held", "racing", "written_in_zap")

    def __init__(self, value: int = 0, lazy: bool = False, droppable: bool = False,
                 racing: bool = False) -> None:
        self.value = value
        self.lazy = lazy
        self.droppable = droppable
        self.dma_held: set[str] = set()
        self.racing = racing
        self.written_in_zap = False

    def may_read_zero(self) -> bool:
        return self.droppable or self.racing or (self.lazy and not self.dma_held)

    def copy(self) -> PageShadow:
        """The child's page after fork: same contents, no pin of the parent's."""
        return PageShadow(self.value, self.lazy, self.droppable, self.racing)


class _Mapped:
    """The pages each mm maps, as the oracle heard of them: ranges of page numbers.

    Kept by the oracle itself from the syscalls, never read off the kernel's
    VMAs: a kernel under test that loses track of a mapping must not take
    the oracle along.  A page mapped and never touched has no shadow: it
    reads zero, and its range says what a shadow made for it on first touch
    starts as (droppable; lazy, when a MADV_FREE covered it since it was
    mapped or last zapped).
    """

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        # mm -> sorted, disjoint (lo, hi, droppable, lazy)
        self.ranges: dict[int, list[tuple[int, int, bool, bool]]] = {}

    def find(self, mm: int, vpn: int) -> tuple[int, int, bool, bool] | None:
        for r in self.ranges.get(mm, ()):
            if r[0] <= vpn < r[1]:
                return r
        return None

    def cut(self, mm: int, lo: int, hi: int) -> list[tuple[int, int, bool, bool]]:
        """Unmap [lo, hi); return the pieces that were mapped there."""
        kept, gone = [], []
        for r in self.ranges.get(mm, ()):
            a, b = r[0], r[1]
            if b <= lo or hi <= a:
                kept.append(r)
                continue
            if a < lo:
                kept.append((a, lo) + r[2:])
            if hi < b:
                kept.append((hi, b) + r[2:])
            gone.append((max(a, lo), min(b, hi)) + r[2:])
        self.ranges[mm] = sorted(kept)
        return gone

    def add(self, mm: int, lo: int, hi: int, droppable: bool, lazy: bool = False) -> None:
        self.cut(mm, lo, hi)
        self.ranges[mm] = sorted(self.ranges[mm] + [(lo, hi, droppable, lazy)])

    def set_lazy(self, mm: int, lo: int, hi: int, lazy: bool) -> None:
        """The mapped pages of [lo, hi) start lazy (or not) on first touch."""
        for a, b, droppable, _ in self.cut(mm, lo, hi):
            self.add(mm, a, b, droppable, lazy)

    def copy(self, parent: int, child: int) -> None:
        self.ranges[child] = list(self.ranges.get(parent, ()))


class Oracle:
    """Shadow of what user space may observe, plus the kernel-state invariants."""

    def __init__(self, kernel, per_step: bool = True) -> None:
        self.k = kernel
        self.per_step = per_step
        # (mm, vpn) -> the page user space sees there, once something touched it;
        # a mapped page without one reads zero (see _Mapped)
        self.pages: dict[tuple[int, int], PageShadow] = {}
        self.mapped = _Mapped()
        # pin -> the shadow of each page it holds, in the kernel's order (None: unmapped)
        self.pinned: dict[str, list[PageShadow | None]] = {}
        # (mm, lo, hi) of each MADV_FREE or MADV_DONTNEED in progress: another
        # thread's store there may land before or after the page is done
        self.freeing: list[tuple[int, int, int]] = []
        self.zapping: list[tuple[int, int, int]] = []
        self._pt_cache: dict[int, tuple[bytes, Counter, int]] = {}
        self._last_seen: tuple | None = None
        self.ptc = PageTableCheck(kernel, self._page_table_violation)

    # -- shadows ---------------------------------------------------------------
    @staticmethod
    def _covers(ranges: list[tuple[int, int, int]], mm: int, vpn: int) -> bool:
        return any(m == mm and lo <= vpn < hi for m, lo, hi in ranges)

    def shadow(self, mm: int, vpn: int) -> PageShadow | None:
        """The page's shadow, made on first touch; None where nothing is mapped."""
        key = (mm, vpn)
        shadow = self.pages.get(key)
        if shadow is None:
            r = self.mapped.find(mm, vpn)
            if r is None:
                return None
            # a page a DONTNEED in progress covers may lose a store to its zap
            zapping = self.zapping
            shadow = self.pages[key] = PageShadow(
                lazy=r[3], droppable=r[2], racing=bool(zapping) and self._covers(zapping, mm, vpn))
        return shadow

    def _keys(self, mm: int, start: int, end: int) -> list[tuple[int, int]]:
        """The shadowed pages of ``mm`` in [start, end), by address: whichever of the
        range and the shadows is shorter is walked."""
        lo, hi = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        pages = self.pages
        if hi - lo <= len(pages):
            return [(mm, v) for v in range(lo, hi) if (mm, v) in pages]
        return sorted(k for k in pages if k[0] == mm and lo <= k[1] < hi)

    # -- user-visible events -----------------------------------------------
    def on_map(self, mm: int, start: int, end: int, droppable: bool = False) -> None:
        for key in self._keys(mm, start, end):
            del self.pages[key]
        self.mapped.add(mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT, droppable)

    def on_unmap(self, mm: int, start: int, end: int) -> None:
        for key in self._keys(mm, start, end):
            del self.pages[key]
        self.mapped.cut(mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT)

    def on_dontneed(self, mm: int, start: int, end: int) -> None:
        """MADV_DONTNEED begins: until it ends a page reads its contents or zero."""
        self.zapping.append((mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT))
        for key in self._keys(mm, start, end):
            self.pages[key].racing = True

    def on_dontneed_done(self, mm: int, start: int, end: int) -> None:
        """MADV_DONTNEED ended: a new zero page replaces each one (what a pin still
        holds is no longer seen), unless another thread stored to it meanwhile,
        maybe after its zap: then that value or zero."""
        self.zapping.remove((mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT))
        self.mapped.set_lazy(mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT, False)
        pages = self.pages
        for key in self._keys(mm, start, end):
            old = pages[key]
            if old.written_in_zap:
                pages[key] = PageShadow(old.value, droppable=old.droppable, racing=True)
            else:
                del pages[key]

    def on_move(self, mm: int, old: int, new: int, length: int) -> None:
        """mremap: each page, with its contents and the pins on it, moves to ``new``."""
        pages = self.pages
        delta = (new - old) >> PAGE_SHIFT
        lo, hi = old >> PAGE_SHIFT, (old + length) >> PAGE_SHIFT
        moved = [(key[1] + delta, pages.pop(key)) for key in self._keys(mm, old, old + length)]
        for key in self._keys(mm, new, new + length):
            del pages[key]
        for vpn, shadow in moved:
            pages[(mm, vpn)] = shadow
        pieces = self.mapped.cut(mm, lo, hi)
        self.mapped.cut(mm, lo + delta, hi + delta)
        for a, b, droppable, lazy in pieces:
            self.mapped.add(mm, a + delta, b + delta, droppable, lazy)

    def on_fork(self, parent: int, child: int) -> None:
        pages = self.pages
        for (mm, vpn), shadow in list(pages.items()):
            if mm == parent:
                pages[(child, vpn)] = shadow.copy()
        self.mapped.copy(parent, child)
        from engine.mm.flags import VM
        for vma in self.k.mms[child].vmas:
            if vma.vm_flags & int(VM.VM_WIPEONFORK):
                for key in self._keys(child, vma.vm_start, vma.vm_end):
                    del pages[key]
                self.mapped.set_lazy(child, vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT,
                                     False)

    def on_write(self, mm: int, addr: int, value: int) -> None:
        """A CPU store: the PTE is dirty now, so the kernel knows of it.  A MADV_FREE
        of the page still in progress may clear that dirty bit after the store (the
        free then comes last), and a MADV_DONTNEED may zap the page after it."""
        vpn = addr >> PAGE_SHIFT
        shadow = self.pages.get((mm, vpn)) or self.shadow(mm, vpn)
        if shadow is not None:
            shadow.value = value
            freeing, zapping = self.freeing, self.zapping
            shadow.lazy = bool(freeing) and self._covers(freeing, mm, vpn)
            if zapping and self._covers(zapping, mm, vpn):
                shadow.written_in_zap = True
            else:
                shadow.racing = False

    def on_madv_free(self, mm: int, start: int, end: int) -> None:
        """MADV_FREE begins: user space gives up the contents, whoever wrote them (a
        device write before it no longer holds the page; one after it does).  A
        page never touched reads zero either way."""
        self.freeing.append((mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT))
        self.mapped.set_lazy(mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT, True)
        for key in self._keys(mm, start, end):
            shadow = self.pages[key]
            shadow.lazy = True
            shadow.dma_held.clear()

    def on_madv_free_done(self, mm: int, start: int, end: int) -> None:
        """MADV_FREE ended: a store from now on keeps the page."""
        self.freeing.remove((mm, start >> PAGE_SHIFT, end >> PAGE_SHIFT))

    def on_pin(self, name: str, mm: int, addr: int) -> None:
        self.pinned.setdefault(name, []).append(self.shadow(mm, addr >> PAGE_SHIFT))

    def on_dma_write(self, name: str, index: int, value: int) -> None:
        """The device wrote page ``index`` of pin ``name``: the page the pin was taken
        on, wherever it is mapped now (or nowhere user space looks)."""
        held = self.pinned.get(name, ())
        shadow = held[index] if index < len(held) else None
        if shadow is not None:
            shadow.value = value
            shadow.dma_held.add(name)

    def on_unpin(self, name: str, dirty: bool) -> None:
        """Unpin.  With make_dirty the kernel learns of the device's writes: a page
        the device wrote is no longer lazyfree.  Without it the kernel never does:
        a page MADV_FREE'd before them may be discarded again ("GUP users must mark
        the folio dirty if there was a modification", faeb2831b517)."""
        for shadow in self.pinned.pop(name, ()):
            if shadow is not None and name in shadow.dma_held:
                shadow.dma_held.discard(name)
                if dirty:
                    shadow.lazy = False

    def on_read(self, mm: int, addr: int, value: int) -> None:
        self._check_value(mm, addr >> PAGE_SHIFT, value, "read")

    def _check_value(self, mm: int, vpn: int, value: int, how: str) -> None:
        shadow = self.pages.get((mm, vpn))
        if shadow is None:
            # never touched: zero, if mapped at all
            if not value or self.mapped.find(mm, vpn) is None:
                return
            want, may_zero = 0, False
        else:
            want, may_zero = shadow.value, shadow.may_read_zero()
        if value != want and not (value == 0 and may_zero):
            allowed = f"{want} or 0" if may_zero else f"{want}"
            raise Violation(Verdict.DATA_LOSS, f"mm{mm}.data[{vpn << PAGE_SHIFT:#x}]",
                            f"{how} of mm{mm} page {vpn << PAGE_SHIFT:#x} returned {value}, "
                            f"allowed {allowed}")

    # -- invariants -----------------------------------------------------------
    def check_step(self) -> None:
        """After every scheduling step: the refcount and flag invariants, and the
        page-table check (incremental: see :mod:`engine.mm.page_table_check`)."""
        if self.per_step:
            if self.k.folios_touched:
                self.check_folios()
            self.ptc.check()

    def page_table_check_free(self, folio) -> None:
        """free_folio() freed @folio: the page-table check looks for entries still
        mapping it (page_table_check_free())."""
        if self.per_step:
            self.ptc.page_table_check_free(folio.pfn, folio.nr)

    @staticmethod
    def _page_table_violation(check: str, loc, message: str) -> Violation:
        return Violation(Verdict.INVARIANT, field_name(loc, check),
                         f"page_table_check: {check}: {message}")

    def check_op(self) -> None:
        """After every completed operation: also the page-table invariants (a full
        table scan is too dear for every step; a broken mapcount outlives the step)."""
        if self.per_step:
            self.check_page_tables()

    def check_folios(self) -> None:
        # Only the folios something checked here changed for since the last
        # check: the refcount, the named holders, a mapcount, swapcache or
        # swapbacked (Folio.touched; a new folio is touched too).  A folio whose
        # refcount is 0 is frozen for freeing or splitting: it is checked when
        # its count is set again.  In the order of the kernel's folios, so that
        # of two folios broken at one step the same one is reported as when
        # every folio was looked at after every step.
        k = self.k
        touched = k.folios_touched
        if not touched:
            return
        live = k.folios
        folios = sorted((f for f in touched if live.get(f.pfn) is f), key=_seq)
        touched.clear()
        for i, folio in enumerate(folios):
            try:
                self._check_folio(folio)
            except Violation:
                # Still to be looked at, this one too, should the run go on.
                touched.update(dict.fromkeys(folios[i:]))
                raise

    @staticmethod
    def _check_folio(folio: Folio) -> None:
        """The refcount and flag invariants of one live folio (see check_folios())."""
        ref = folio.ref
        if ref == 0:
            return                          # frozen for freeing or splitting
        if folio.checked == ref and not folio.swapcache:
            return
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
        if folio.order and folio.order < HPAGE_PMD_ORDER and folio.entire_mapcount:
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
            for lock in mm.pmd_ptl.values():
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
        self.ptc.check(force=True)
        for folio in self.k.folios.values():
            stray = {w: n for w, n in folio.extra.items() if w in ("temp", "isolate")}
            if stray:
                raise Violation(Verdict.LEAK, "folio.refcount",
                                f"folio pfn {folio.pfn:#x} still holds {stray} after all threads ended")
            if folio.ref == 0:
                raise Violation(Verdict.LEAK, "folio.refcount",
                                f"folio pfn {folio.pfn:#x} frozen at refcount 0 but never freed")
        self.check_contents()

    def _readable(self) -> list[tuple[int, int]]:
        """The pages check_contents() reads, by mm and address: every shadowed page,
        and every other page a live mm maps that a page table gives contents to
        (only those can read anything but zero)."""
        k = self.k
        keys = set(self.pages)
        for mm_id, mm in k.mms.items():
            if not mm.alive:
                continue
            find = self.mapped.find
            for pmd_idx in mm.pmd_huge:
                base = pmd_idx * HPAGE_PMD_NR
                keys.update((mm_id, base + i) for i in range(HPAGE_PMD_NR)
                            if find(mm_id, base + i) is not None)
            for pmd_idx, pt in mm.pte_tables.items():
                base = pmd_idx * HPAGE_PMD_NR
                keys.update((mm_id, base + i) for i in present_slots(pt.entries)
                            if find(mm_id, base + i) is not None)
        return sorted(keys)

    def check_contents(self) -> None:
        """Every page user space could read holds an allowed value (read without faulting)."""
        try:
            if self._contents_allowed():
                return
        except Exception:  # noqa: BLE001 - the ordered walk below meets it where it reports it
            pass
        mms = self.k.mms
        for (mm_id, vpn) in self._readable():
            mm = mms.get(mm_id)
            if mm is None or not mm.alive:
                continue
            self._check_value(mm_id, vpn, self.contents(mm, vpn), "final contents")

    def _contents_allowed(self) -> bool:
        """Whether :meth:`check_contents` would pass, read table by table.

        The same pages and values as its walk page by page (shadowed pages,
        then the present ones no shadow covers, which may read only zero), in
        a fraction of the calls; False (or an exception) says the walk must
        run, to report the first violation in its order.
        """
        k = self.k
        pages, find, contents = self.pages, self.mapped.find, self.contents
        pfn_folio, contents_at = k.pfn_folio, self.contents_at
        mms = k.mms
        for (mm_id, vpn), shadow in pages.items():
            mm = mms.get(mm_id)
            if mm is None or not mm.alive:
                continue
            v = contents(mm, vpn)
            if v != shadow.value and not (v == 0 and shadow.may_read_zero()):
                return False
        for mm_id, mm in mms.items():
            if not mm.alive:
                continue
            huge = mm.pmd_huge
            for pmd_idx, word in huge.items():
                data = pfn_folio(pte_pfn(word)).data
                base = pmd_idx * HPAGE_PMD_NR
                for i in range(HPAGE_PMD_NR):
                    if (data[i] and (mm_id, base + i) not in pages
                            and find(mm_id, base + i) is not None):
                        return False
            for pmd_idx, pt in mm.pte_tables.items():
                if pmd_idx in huge:
                    continue                    # the walk reads the huge PMD: done above
                base = pmd_idx * HPAGE_PMD_NR
                for i in present_slots(pt.entries):
                    vpn = base + i
                    if (mm_id, vpn) in pages or find(mm_id, vpn) is None:
                        continue
                    if contents_at(("pte", pt, i), vpn):
                        return False
        return True

    def contents(self, mm, vpn: int) -> int:
        """What a load from page @vpn of @mm would return, without faulting: the
        mapped page's data, the swapped-out copy, or zero (no page, or the zero page)."""
        return self.contents_at(self.k.lookup_pte(mm, vpn << PAGE_SHIFT), vpn)

    def contents_at(self, hit, vpn: int) -> int:
        """:meth:`contents` of page @vpn where the walk already found @hit
        (:meth:`Kernel.lookup_pte`)."""
        k = self.k
        if hit is None:
            return 0
        if hit[0] == "pmd":
            return k.pfn_folio(pte_pfn(hit[1])).data[vpn & (HPAGE_PMD_NR - 1)]
        w = hit[1].entries[hit[2]]
        if pte_present(w):
            pfn = pte_pfn(w)
            if pfn == ZERO_PFN:
                return 0
            folio = k.pfn_folio(pfn)
            return folio.data[pfn - folio.pfn]
        if is_swap_pte(w):
            slot = pte_swp_offset(w)
            cached = k.swapcache_lookup(slot)
            return (cached.data[cached.swap.index(slot)] if cached is not None
                    else k.swap.data.get(slot, 0))
        return 0
