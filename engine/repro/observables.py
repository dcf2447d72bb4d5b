"""The observables a reproducer prints and a prediction computes: their keys.

Shared by the C generator (:mod:`engine.repro.reproducer`, which bakes the
counter names and per-operation keys into the C program) and the predictor
(:mod:`engine.repro.realobs`, which computes the same keys from a model run
and runs the generator's analysis first), so that neither imports the other
for its names; what each key means is described in :mod:`engine.repro.realobs`.
"""

from __future__ import annotations

from engine.program.format import Program

#: /proc/vmstat counter -> the model counter it is predicted from.
VMSTAT: dict[str, str] = {
    "pglazyfree": "PGLAZYFREE",
    "pglazyfreed": "PGLAZYFREED",
    "thp_split_pmd": "THP_SPLIT_PMD",
    "thp_deferred_split_page": "THP_DEFERRED_SPLIT_PAGE",
    "thp_split_page": "THP_SPLIT_PAGE",
    # split_huge_page_to_list_to_order()'s common exit counts a failed split of a
    # PMD-order folio (since v4.5; issue 15 item 9); 0 until the model counts it
    "thp_split_page_failed": "THP_SPLIT_PAGE_FAILED",
}
#: /proc/vmstat counters also observed per madvise operation (``vmstat.<name>.op[i]``).
PER_OP_VMSTAT = ("pglazyfree",)
#: folio order -> its hugepages-<size> directory name.
MTHP_SIZES: dict[int, str] = {4: "64kB", 9: "2048kB"}
#: per-size stats files read: split, split_failed and split_deferred came with the
#: per-order split counters (v6.10/v6.11 [I]); none exists on deb-6.1.  A file the
#: kernel lacks is left out of the observation, not read as 0.
MTHP_STATS = ("split_deferred", "split", "split_failed")
#: smaps fields reported per run, as ``<field>_kB``.
SMAPS_FIELDS = ("Rss", "LazyFree", "AnonHugePages")

#: Counter keys, in the order the reproducer reads them.
COUNTER_KEYS: tuple[str, ...] = tuple(f"vmstat.{n}" for n in VMSTAT) + tuple(
    f"mthp.{MTHP_SIZES[o]}.{s}" for o in sorted(MTHP_SIZES) for s in MTHP_STATS)

#: Operations whose result the reproducer observes.
OBSERVED_RESULTS = ("read", "write", "madvise")

def op_result_keys(program: Program) -> list[int]:
    """Indices of the operations whose result is observed (reads, writes, madvise)."""
    return [i for i, op in enumerate(program.ops) if op.op in OBSERVED_RESULTS]

def op_delta_keys(program: Program) -> list[int]:
    """Indices of the operations whose own counter deltas are observed (madvise)."""
    return [i for i, op in enumerate(program.ops) if op.op == "madvise"]

