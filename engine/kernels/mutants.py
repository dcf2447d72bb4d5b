"""Model mutants: a kernel version with one piece of a fix taken out.

The fuzz benchmark times how fast each fuzzer tells a mutant from its
unmutated twin (mutation analysis of the fuzzers, not of the model): a
bound that no fuzzer ever exercises is a bound whose removal no campaign
would notice.  Mutants are not engines a user picks: :func:`register` adds
them to the engine table for the benchmark's own processes only.
"""

from __future__ import annotations

from engine.kernels.v6_16 import V6_16
from engine.mm.pgtable import PMD_SIZE
from engine.mm.rmap import Pvmw


class V6_16NoVmaBound(V6_16):
    """v6.16 whose folio_unmap_pte_batch() is bounded by the page table only:
    ``pmd_addr_end(addr, vma->vm_end)`` with the VMA end taken out."""

    VERSION = "v6.16-no-vma-bound"
    BASE_VERSION = "v6.16"

    def unmap_pte_batch_end(self, pvmw: Pvmw) -> int:
        return (pvmw.address | (PMD_SIZE - 1)) + 1


#: Mutant engine id -> the version it is a mutant of.
MUTANTS: dict[str, str] = {k.VERSION: k.BASE_VERSION for k in (V6_16NoVmaBound,)}


def register() -> None:
    """Make the mutants resolvable as engines (rules answer as their base version)."""
    from engine import kernels
    kernels.KERNELS.update({k.VERSION: k for k in (V6_16NoVmaBound,)})
    kernels.BASES.update(MUTANTS)
