"""v5.17: before 6c8e2a256915.  A clean lazyfree page is discarded whatever
references it has: a GUP pin taken for O_DIRECT or DMA does not stop it, and
the device then writes into a page nobody maps any more (data loss).
"""

from __future__ import annotations

from engine.kernels.v5_18 import V5_18
from engine.mm.flags import LockedLargeRef
from engine.mm.folio import Folio, folio_test_dirty


class V5_17(V5_18):
    VERSION = "v5.17"
    COMMIT = "8cdf3792526a (mm/rmap.c before 6c8e2a256915)"
    #: The root of the version tree (it subclasses v5.18 for its code, not its history).
    PARENT = None
    HAS_ANON_EXCLUSIVE = False
    #: shrink_page_list()'s "Split file THP" branch took every THP that is not
    #: anon+swapbacked, a lazyfree one too; 820c4e2e6f51 (v5.18) narrowed it.
    SPLITS_LAZYFREE_IN_RECLAIM = True
    LOCKED_LARGE_REF = LockedLargeRef.LOCKED

    def lazyfree_can_discard(self, folio: Folio) -> bool:
        """MADV_FREE page check: only PG_dirty counts."""
        return not folio_test_dirty(folio)
