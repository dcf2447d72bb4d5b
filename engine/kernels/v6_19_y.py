"""v6.19.y: Debian's 6.19.14, mainline v6.19 with the 6.19-stable backport of
29f40594a281 "mm/rmap: fix incorrect pte restoration for lazyfree folios".

The fix was queued for 6.19-stable in March 2026 (docs/kernel-notes.md section
20, P3); no 6.19.14 source was read (Debian's archive no longer has
linux-source-6.19).  The real kernel decided: on Debian's 6.19.14
(linux-binary-6.19.14+deb13-amd64 6.19.14-1~bpo13+1) corpus
``conform-wp-reuse-lazyfree-write-bit`` counts mTHP split_deferred +1 during
MADV_PAGEOUT, the partial first batch that only a batch respecting the write
bit makes, where 6.16.12, 6.17.13 and 6.18.15 count none (section 23).

Everything else is the v6.19 engine, the deferred split scan's retry included
(the same run: split_failed even, two per drop_slab() pass; section 23).
"""

from __future__ import annotations

from engine.kernels.v7_0 import LazyfreeBatchRespectsWrite


class V6_19_Y(LazyfreeBatchRespectsWrite):
    """Debian 6.19.14: v6.19 with the 29f40594a281 backport."""

    VERSION = "v6.19.y"
    COMMIT = "6.19.y stable backport of 29f40594a281"
    PARENT = "v6.19"
    BRANCH = "6.19.y"
