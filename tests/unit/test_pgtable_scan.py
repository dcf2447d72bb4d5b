"""maps_pfn_in(): one loop over a table's entries, as pte_present() and pte_pfn() read them."""

from __future__ import annotations

import random
from array import array

from engine.mm.pgtable import PTRS_PER_PTE, maps_pfn_in, mk_pte, pte_pfn, pte_present


def _reference(entries: array, first: int, count: int, lo: int, hi: int) -> bool:
    return any(pte_present(w) and lo <= pte_pfn(w) < hi for w in entries[first:first + count])


def test_it_finds_exactly_the_present_entries_mapping_the_range():
    rng = random.Random(5)
    for _ in range(300):
        entries = array("Q", [0] * PTRS_PER_PTE)
        for i in rng.sample(range(PTRS_PER_PTE), rng.randint(0, 40)):
            w = mk_pte(rng.randint(0x100, 0x400), rng.random() < 0.5, dirty=rng.random() < 0.5,
                       young=rng.random() < 0.5)
            entries[i] = w if rng.random() < 0.8 else w & ~1     # some not present
        first = rng.randrange(PTRS_PER_PTE)
        count = rng.randint(0, PTRS_PER_PTE - first)
        lo = rng.randint(0x100, 0x400)
        hi = lo + rng.choice((1, 16, 512))
        assert maps_pfn_in(entries, first, count, lo, hi) == _reference(entries, first, count, lo, hi)


def test_the_range_ends_are_half_open():
    entries = array("Q", [0] * PTRS_PER_PTE)
    entries[3] = mk_pte(0x200, True, dirty=False, young=False)
    assert maps_pfn_in(entries, 0, 4, 0x200, 0x201)
    assert not maps_pfn_in(entries, 0, 3, 0x200, 0x201)      # entry 3 outside the slice
    assert not maps_pfn_in(entries, 0, 4, 0x201, 0x210)      # pfn below the range
    assert not maps_pfn_in(entries, 0, 4, 0x1f0, 0x200)      # pfn at the range's end
