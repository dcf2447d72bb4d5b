"""Swap slots: a swap device that really stores what swapbacked folios held."""

from __future__ import annotations


class SwapDevice:
    """One swap area: slot -> (stored value, swap count)."""

    #: total_swap_pages while the area is on: large enough never to fill.
    PAGES = 1 << 30

    def __init__(self) -> None:
        self.next_offset = 1
        self.data: dict[int, int] = {}
        self.count: dict[int, int] = {}

    def alloc(self, nr: int) -> list[int]:
        slots = list(range(self.next_offset, self.next_offset + nr))
        self.next_offset += nr
        for s in slots:
            self.count[s] = 0
            self.data[s] = 0
        return slots

    def dup(self, slot: int) -> None:
        """swap_duplicate(): one more PTE refers to the slot."""
        self.count[slot] += 1

    def free(self, slot: int) -> None:
        """swap_free(): one PTE fewer; the slot goes once nothing uses it."""
        self.count[slot] -= 1

    def release(self, slot: int) -> None:
        self.count.pop(slot, None)
        self.data.pop(slot, None)

    def in_use(self) -> int:
        return len(self.count)
