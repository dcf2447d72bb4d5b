"""Kernel flag sets, with the kernel's member names.

The hot paths test plain ``int`` values (``TTU_BATCH_FLUSH & flags``); the
``IntFlag`` classes exist so that outcomes and messages print kernel names.
"""

from __future__ import annotations

import enum
from typing import cast


class TTU(enum.IntFlag):
    """enum ttu_flags (include/linux/rmap.h)."""

    TTU_SPLIT_HUGE_PMD = 0x4
    TTU_IGNORE_MLOCK = 0x8
    TTU_SYNC = 0x10
    TTU_HWPOISON = 0x20
    TTU_BATCH_FLUSH = 0x40
    TTU_RMAP_LOCKED = 0x80


class VM(enum.IntFlag):
    """vm_area_struct.vm_flags bits the model uses (include/linux/mm.h)."""

    VM_READ = 0x1
    VM_WRITE = 0x2
    VM_MAYWRITE = 0x20
    VM_LOCKED = 0x2000
    VM_WIPEONFORK = 0x2000000
    VM_DONTDUMP = 0x4000000
    VM_NORESERVE = 0x200000
    VM_DROPPABLE = 1 << 40


class FOLL(enum.IntFlag):
    """GUP flags (include/linux/mm_types.h, mm/internal.h)."""

    FOLL_WRITE = 0x01
    FOLL_GET = 0x04
    FOLL_TOUCH = 0x80000
    FOLL_PIN = 0x100000
    FOLL_FAST_ONLY = 0x200000
    FOLL_LONGTERM = 0x100


class FPB(enum.IntFlag):
    """fpb_t, the flags of folio_pte_batch_flags() (mm/internal.h, 6.17+).

    Before 6.17 the flags said what to ignore (FPB_IGNORE_DIRTY,
    FPB_IGNORE_SOFT_DIRTY), and the write bit was ignored always (since
    "mm/memory: ignore writable bit in folio_pte_batch()", v6.9); from 6.17
    they say what to respect, and no flag (what folio_pte_batch() passes)
    ignores dirty, soft-dirty, write and young alike: the model's form of
    both.  The model has no soft-dirty bit, so FPB_RESPECT_SOFT_DIRTY
    changes nothing it compares; it is passed where the kernel passes it.
    The merge flags are listed for the kernel's names; the model's callers
    merge dirty and young themselves (get_and_clear_full_ptes()).
    """

    FPB_RESPECT_DIRTY = 1 << 0
    FPB_RESPECT_SOFT_DIRTY = 1 << 1
    FPB_RESPECT_WRITE = 1 << 2
    FPB_MERGE_WRITE = 1 << 3
    FPB_MERGE_YOUNG_DIRTY = 1 << 4


#: No flag: what folio_pte_batch() passes (6.17+).
FPB_NONE = FPB(0)


class FolioRef(enum.Enum):
    """enum folio_references (mm/vmscan.c)."""

    FOLIOREF_RECLAIM = 0
    FOLIOREF_RECLAIM_CLEAN = 1
    FOLIOREF_KEEP = 2
    FOLIOREF_ACTIVATE = 3


class LockedLargeRef(enum.Enum):
    """What folio_referenced_one() makes of a PTE of a large folio in a VM_LOCKED VMA."""

    #: before 5.18: any mapping in a VM_LOCKED VMA reports VM_LOCKED
    LOCKED = 0
    #: 5.18 (Hugh Dickins' mlock rework) to 6.6: only a small folio or a PMD
    #: mapping does; a PTE of a large folio is referenced like any other
    COUNTED = 1
    #: 6.7+ (Yin Fengwei, "mm: handle large folio when large folio in VM_LOCKED
    #: VMA range"): its young bit is not read; VM_LOCKED when the folio lies
    #: whole in the VMA, in one page table, and every page was found mapped
    SKIPPED = 2


class LruList(enum.IntEnum):
    """enum lru_list (include/linux/mmzone.h)."""

    LRU_INACTIVE_ANON = 0
    LRU_ACTIVE_ANON = 1
    LRU_INACTIVE_FILE = 2
    LRU_ACTIVE_FILE = 3
    LRU_UNEVICTABLE = 4


# Plain-int copies for the hot paths: IntFlag's operators run Python code on
# every test, an int's do not.  The TTU ones are typed as the flag set (a
# cast: the values stay ints) so that ``flags: TTU`` says what a parameter
# holds; TTU(flags) prints their kernel names.
TTU_SPLIT_HUGE_PMD = cast(TTU, int(TTU.TTU_SPLIT_HUGE_PMD))
TTU_IGNORE_MLOCK = cast(TTU, int(TTU.TTU_IGNORE_MLOCK))
TTU_SYNC = cast(TTU, int(TTU.TTU_SYNC))
TTU_HWPOISON = cast(TTU, int(TTU.TTU_HWPOISON))
TTU_BATCH_FLUSH = cast(TTU, int(TTU.TTU_BATCH_FLUSH))
VM_READ = int(VM.VM_READ)
VM_WRITE = int(VM.VM_WRITE)
VM_LOCKED = int(VM.VM_LOCKED)
VM_DROPPABLE = int(VM.VM_DROPPABLE)
FOLL_WRITE = int(FOLL.FOLL_WRITE)
FOLL_PIN = int(FOLL.FOLL_PIN)
FOLL_TOUCH = int(FOLL.FOLL_TOUCH)

GUP_PIN_COUNTING_BIAS = 1024
