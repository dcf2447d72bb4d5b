"""struct folio, its flag accessors and its reference count.

Flags are plain attributes (``folio.dirty``) behind accessors named like the
kernel's (``folio_test_dirty``, ``folio_set_dirty``): kernel paths use the
accessors and read like mm/ code; the oracles and the outcome, which look at
every folio after every step, read the attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import RefcountUnderflow, UseAfterFree
from engine.mm.flags import LruList
from engine.mm.pgtable import HPAGE_PMD_ORDER

if TYPE_CHECKING:
    from engine.mm.mm_types import AnonVma
    from engine.mm.sched import KThread

#: Flag names in the order outcomes print them.
FOLIO_FLAGS = ("anon", "swapbacked", "swapcache", "dirty", "lru", "active", "referenced",
               "locked", "partially_mapped", "mlocked", "unevictable")


class Folio:
    """A folio of ``1 << order`` pages.

    ``mapcount`` holds the PTE mappings of each page; ``entire_mapcount`` the
    PMD mappings.  folio_mapcount() is their sum, as in the kernel where a
    PMD mapping counts once.
    """

    __slots__ = ("pfn", "order", "nr", "ref", "mapcount", "entire_mapcount", "pincount",
                 "anon", "swapbacked", "swapcache", "dirty", "lru", "active", "referenced",
                 "locked", "lock_owner", "partially_mapped", "mlocked", "unevictable",
                 "on_deferred_list", "lru_list", "data", "swap", "index", "anon_vma",
                 "freed", "extra", "checked", "mm_ids", "seq", "touched", "anon_shared")

    def __init__(self, pfn: int, order: int) -> None:
        self.pfn = pfn
        self.order = order
        self.nr = 1 << order
        self.ref = 1
        self.mapcount = [0] * self.nr
        self.entire_mapcount = 0
        self.pincount = 0
        self.anon = True
        self.swapbacked = True
        self.swapcache = False
        self.dirty = False
        self.lru = False
        self.active = False
        self.referenced = False
        self.locked = False
        self.lock_owner: KThread | None = None
        self.partially_mapped = False
        self.mlocked = False
        self.unevictable = False
        self.on_deferred_list = False
        self.lru_list: LruList | None = None
        self.data = [0] * self.nr
        self.swap: list[int] = []              # swap slot of each page while in swapcache
        self.index = 0                         # linear page index of page 0 (folio->index)
        self.anon_vma: AnonVma | None = None
        self.freed = False
        self.extra: dict[str, int] = {}   # references held for a named reason
        self.checked: int | None = None  # the refcount the oracle last verified
        self.mm_ids: MmIds | None = None   # a large folio's owner tracking (CONFIG_MM_ID)
        #: fork() mapped the folio's pages into a child copy-on-write, clearing their
        #: PG_anon_exclusive (folio_try_dup_anon_rmap_ptes()/_pmd()): one bit for the
        #: folio, since fork shares every mapped page of it at once and only a
        #: large folio's reuse (before v6.15) reads it (MemoryMixin.do_wp_page()).
        self.anon_shared = False
        # Where the folio sits in the kernel's folios (its insertion order), and the
        # kernel's set of folios the refcount oracle must look at again: every
        # change of what it checks (the refcount, through the folio_ref_*()
        # accessors below; holders, mapcounts, swapcache, swapbacked) puts the
        # folio there (Kernel.folio_register()).
        self.seq = 0
        self.touched: dict[Folio, None] | None = None

    def touch(self) -> None:
        """Something the refcount oracle checks changed: look at this folio again."""
        touched = self.touched
        if touched is not None:
            touched[self] = None

    def set_holder(self, why: str, n: int) -> None:
        """The references holder @why holds are @n now (0: none).

        ``extra`` is the model's own account of folio->_refcount beyond the
        mappings, which the refcount oracle checks the count against.  Every
        change of it comes through here, and drops the oracle's stamp
        (``checked``) so that the oracle sums this folio again; rmap changes
        drop it in RmapMixin.rmap_changed().
        """
        if n:
            self.extra[why] = n
        else:
            self.extra.pop(why, None)
        self.checked = None
        self.touch()

    def __repr__(self) -> str:
        return f"<folio pfn={self.pfn:#x} order={self.order} ref={self.ref}>"


class MmIds:
    """A large folio's two MM slots and its "maybe mapped shared" bit
    (folio->_mm_ids and _mm_id_mapcount[2], CONFIG_MM_ID, v6.15).

    Counts are the mappings each slot's MM holds (the kernel stores them
    minus one); an empty slot holds None and 0.  The bit is exact while at
    most two MMs map the folio; a third MM leaves it set until one slot again
    owns every mapping (include/linux/rmap.h of linux-source-7.2, which has
    the 6.15 form: docs/kernel-notes.md section 17).
    """

    __slots__ = ("ids", "counts", "shared", "total")

    def __init__(self, mm_id: int, count: int) -> None:
        # folio_set_large_mapcount(): slot 0 takes the first MM
        self.ids: list[int | None] = [mm_id, None]
        self.counts = [count, 0]
        self.shared = False
        #: _large_mapcount (plus one): folio_mapcount(), kept here as the kernel
        #: keeps it, since every rmap change of a large folio comes through
        self.total = count

    def add(self, mm_id: int, diff: int) -> None:
        """folio_add_return_large_mapcount()."""
        self.total += diff
        ids, counts = self.ids, self.counts
        if ids[0] == mm_id:
            counts[0] += diff
        elif ids[1] == mm_id:
            counts[1] += diff
        elif ids[0] is None:
            ids[0], counts[0] = mm_id, diff
            if self.total != diff:        # other mappings already
                self.shared = True
        elif ids[1] is None:
            ids[1], counts[1] = mm_id, diff
            self.shared = True            # slot 0 certainly has mappings too

    def sub(self, mm_id: int, diff: int) -> None:
        """folio_sub_return_large_mapcount()."""
        self.total -= diff
        ids, counts = self.ids, self.counts
        for s in (0, 1):
            if ids[s] == mm_id:
                counts[s] -= diff
                if counts[s] >= 1:
                    return
                ids[s], counts[s] = None, 0
                break
        if self.total in counts:          # one slot owns every mapping (or none is left)
            self.shared = False


def folio_test_large(folio: Folio) -> bool:
    return folio.order > 0


def folio_test_pmd_mappable(folio: Folio) -> bool:
    return folio.order >= HPAGE_PMD_ORDER


def folio_nr_pages(folio: Folio) -> int:
    return folio.nr


# -- page flags (include/linux/page-flags.h) -----------------------------------------
# Kernel paths test and change a folio's flags only through these, as mm/ code
# does; the oracles and the outcome read the attributes.


def folio_test_anon(folio: Folio) -> bool:
    return folio.anon


def folio_test_swapbacked(folio: Folio) -> bool:
    return folio.swapbacked


def folio_set_swapbacked(folio: Folio) -> None:
    folio.swapbacked = True
    folio.touch()


def folio_clear_swapbacked(folio: Folio) -> None:
    folio.swapbacked = False
    folio.touch()


def folio_test_swapcache(folio: Folio) -> bool:
    return folio.swapcache


def folio_set_swapcache(folio: Folio) -> None:
    folio.swapcache = True
    folio.touch()


def folio_clear_swapcache(folio: Folio) -> None:
    folio.swapcache = False
    folio.touch()


def folio_test_dirty(folio: Folio) -> bool:
    return folio.dirty


def folio_set_dirty(folio: Folio) -> None:
    folio.dirty = True


def folio_mark_dirty(folio: Folio) -> None:
    """folio_mark_dirty() of an anon folio: only sets PG_dirty."""
    folio.dirty = True


def folio_clear_dirty(folio: Folio) -> None:
    folio.dirty = False


def folio_test_lru(folio: Folio) -> bool:
    return folio.lru


def folio_set_lru(folio: Folio) -> None:
    folio.lru = True


def folio_clear_lru(folio: Folio) -> None:
    folio.lru = False


def folio_test_active(folio: Folio) -> bool:
    return folio.active


def folio_set_active(folio: Folio) -> None:
    folio.active = True


def folio_clear_active(folio: Folio) -> None:
    folio.active = False


def folio_set_referenced(folio: Folio) -> None:
    folio.referenced = True


def folio_clear_referenced(folio: Folio) -> None:
    folio.referenced = False


def folio_test_clear_referenced(folio: Folio) -> bool:
    was = folio.referenced
    folio.referenced = False
    return was


def folio_test_mlocked(folio: Folio) -> bool:
    return folio.mlocked


def folio_set_mlocked(folio: Folio) -> None:
    folio.mlocked = True


def folio_test_clear_mlocked(folio: Folio) -> bool:
    was = folio.mlocked
    folio.mlocked = False
    return was


def folio_test_unevictable(folio: Folio) -> bool:
    return folio.unevictable


def folio_test_partially_mapped(folio: Folio) -> bool:
    return folio.partially_mapped


def folio_set_partially_mapped(folio: Folio) -> None:
    folio.partially_mapped = True


def folio_clear_partially_mapped(folio: Folio) -> None:
    folio.partially_mapped = False


def folio_mapcount(folio: Folio) -> int:
    """Total mappings: every PTE plus each PMD mapping counted once."""
    return sum(folio.mapcount) + folio.entire_mapcount


def folio_mapped(folio: Folio) -> bool:
    return folio.entire_mapcount > 0 or any(folio.mapcount)


def folio_maybe_dma_pinned(folio: Folio) -> bool:
    """Large folios keep an exact pincount; small ones infer it from the bias."""
    if folio.order:
        return folio.pincount > 0
    return folio.ref >= 1024


def folio_ref_count(folio: Folio) -> int:
    return folio.ref


def _check_live(folio: Folio, what: str) -> None:
    if folio.freed:
        raise UseAfterFree(f"{what} on freed folio pfn {folio.pfn:#x} (use-after-free)")


def folio_get(folio: Folio, n: int = 1) -> None:
    _check_live(folio, "folio_get")
    if folio.ref <= 0:
        raise RefcountUnderflow(f"folio_get on folio pfn {folio.pfn:#x} with refcount {folio.ref}")
    folio_ref_mod(folio, n)


def folio_try_get(folio: Folio) -> bool:
    """Take a reference unless the count is already zero (being freed)."""
    if folio.freed or folio.ref == 0:
        return False
    folio_ref_inc(folio)
    return True


def folio_ref_sub(folio: Folio, n: int) -> None:
    _check_live(folio, "folio_ref_sub")
    folio_ref_mod(folio, -n)
    if folio.ref <= 0:
        raise RefcountUnderflow(f"folio_ref_sub({n}) drops folio pfn {folio.pfn:#x} to {folio.ref}")


def folio_ref_freeze(folio: Folio, count: int) -> bool:
    """Freeze the count to zero if it is exactly ``count``."""
    if folio.ref != count:
        return False
    folio_set_count(folio, 0)
    return True


def folio_ref_unfreeze(folio: Folio, count: int) -> None:
    folio_set_count(folio, count)


# The plain counter updates of include/linux/page_ref.h.  Kernel paths change
# folio->_refcount only through these (the helpers above use them too): each
# tells the refcount oracle to look at the folio again (a test in
# tests/unit/test_oracle.py holds the model to that).

def folio_set_count(folio: Folio, v: int) -> None:
    folio.ref = v
    folio.touch()


def folio_ref_mod(folio: Folio, nr: int) -> None:
    folio.ref += nr
    folio.touch()


def folio_ref_add(folio: Folio, nr: int) -> None:
    folio_ref_mod(folio, nr)


def folio_ref_inc(folio: Folio) -> None:
    folio_ref_mod(folio, 1)


def folio_ref_dec(folio: Folio) -> None:
    folio_ref_mod(folio, -1)
