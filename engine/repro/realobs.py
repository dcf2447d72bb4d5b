"""What a real kernel shows of a program, predicted from the model.

A translated program (:mod:`engine.repro.reproducer`) runs on a real kernel and
prints the observables that kernel exports, as one ``FOLIODIFF {json}`` line:

- ``vmstat.<name>``: the sum, over the program's operations, of the change of
  /proc/vmstat counter ``<name>`` across each operation
  (:data:`engine.repro.observables.VMSTAT`, where every key's name is defined);
- ``vmstat.<name>.op[i]``: for each madvise operation ``i``, the change of
  the counters of ``PER_OP_VMSTAT`` across that call alone: when the
  per-CPU lazyfree batch moved its folios (6.1's batch of 15 moves 15 small
  folios during a MADV_FREE of 16, a batch of 31 none), which the sums hide;
- ``mthp.<size>.<stat>``: the same for the per-size mTHP counters in
  /sys/kernel/mm/transparent_hugepage/hugepages-<size>/stats
  (``MTHP_STATS``), for each stat file the kernel has: kernels before the
  per-order stats (deb-6.1) have none, and the reproducer then prints no such
  key; the model predicts them only for engines with mTHP (``HAS_MTHP``), so
  a key one side lacks is a difference (:data:`ABSENT`);
- for each process (model mm ``N``) at the end:

  - ``mmN.maps``: its mapped ranges inside the program's regions, as
    ``"0xstart-0xend:rw"`` runs of contiguous VMAs with one protection (the
    kernel may or may not merge adjacent anonymous VMAs; runs do not care);
  - ``mmN.smaps[0xstart].Rss_kB``, ``.LazyFree_kB``, ``.AnonHugePages_kB``:
    /proc/PID/smaps summed over the VMAs of that run;
  - ``mmN.present[0xstart]``: the /proc/PID/pagemap present bit of every page
    of the run, run-length coded (``"1x16,0x496"``);

- ``result[i]``: what read operation ``i`` read (one value per page, or
  -EFAULT), what write operation ``i`` returned (0 or -EFAULT) and what
  madvise operation ``i`` returned (0 or -errno, e.g. -EINVAL for a
  VM_LOCKED VMA under MADV_PAGEOUT).

:func:`predict` computes the same keys from a model run without swap (the
qemu-booted kernels have no swap device), :func:`compare` lists the fields on
which a prediction and an observation differ, and :func:`conformance` names
the scenarios the real-kernel conformance suite runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.corpus.entries import CORPUS_DIR
from engine.errors import PredictionError
from engine.execution.oracle import Verdict
from engine.execution.runner import Runner
from engine.mm.memory import ZERO_PFN
from engine.mm.pgtable import PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT, PTRS_PER_PTE, pte_dirty, pte_pfn, pte_present
from engine.program.format import Program, parse_program
from engine.repro.observables import (
    MTHP_SIZES,
    MTHP_STATS,
    PER_OP_VMSTAT,
    VMSTAT,
    op_delta_keys,
    op_result_keys,
)
from engine.repro.reproducer import analyse

_KB = PAGE_SIZE // 1024


def present_rle(bits: str) -> str:
    """Run-length code a string of '1'/'0' present bits: ``"1110"`` -> ``"1x3,0x1"``."""
    out = []
    i = 0
    while i < len(bits):
        j = i
        while j < len(bits) and bits[j] == bits[i]:
            j += 1
        out.append(f"{bits[i]}x{j - i}")
        i = j
    return ",".join(out)


def vma_runs(vmas: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Merge ``(start, end, prot)`` VMAs into runs: contiguous, one protection."""
    runs: list[list[Any]] = []
    for start, end, prot in sorted(vmas):
        if runs and runs[-1][1] == start and runs[-1][2] == prot:
            runs[-1][1] = end
        else:
            runs.append([start, end, prot])
    return [(start, end, prot) for start, end, prot in runs]


def has_mthp_stats(k) -> bool:
    """Whether the kernel that model ``k`` stands for exports the per-size mTHP stats.

    The stats came after anonymous mTHP (v6.8; the per-order split stats
    v6.10/v6.11 [I]); the engines without mTHP (``HAS_MTHP`` False: v5.17, v5.18,
    which deb-6.1 is held to) stand for kernels with none.
    """
    return bool(type(k).HAS_MTHP)


def model_observables(k, program: Program, results: list[Any],
                      op_deltas: dict[int, dict[str, int]] | None = None) -> dict[str, Any]:
    """The observables of a finished model run of ``program`` on kernel ``k``.

    Counters: the model has no background activity, so the sum of per-op
    deltas is the final count; the per-size mTHP stats only for a kernel that
    has them (:func:`has_mthp_stats`); ``op_deltas`` (op index -> model
    counter -> change during that op) gives the per-op keys.  smaps, as smaps_pte_entry()/smaps_pmd_entry()
    and smaps_account() compute it: Rss counts every present page of a normal
    folio (not the zero page); LazyFree counts those of an anon folio that is
    not swapbacked, whose PTE (or PMD) is clean and whose folio is clean;
    AnonHugePages counts PMD-mapped anon THPs.
    Context: after the run.  Return: key -> value.
    """
    obs: dict[str, Any] = {}
    for name, counter in VMSTAT.items():
        obs[f"vmstat.{name}"] = k.counters.get(counter, 0)
    for order in sorted(MTHP_SIZES) if has_mthp_stats(k) else ():
        for stat in MTHP_STATS:
            obs[f"mthp.{MTHP_SIZES[order]}.{stat}"] = k.mthp.get(f"{stat}[{order}]", 0)
    for mm_id in sorted(k.mms):
        mm = k.mms[mm_id]
        if not mm.alive:
            continue
        runs = vma_runs((v.vm_start, v.vm_end, "rw" if v.writable else "r") for v in mm.vmas)
        obs[f"mm{mm_id}.maps"] = [f"{s:#x}-{e:#x}:{p}" for s, e, p in runs]
        for start, end, _ in runs:
            rss = lazy = huge = 0
            bits = []
            for a in range(start, end, PAGE_SIZE):
                pmd_idx = a >> PMD_SHIFT
                word = mm.pmd_huge.get(pmd_idx)
                if word is not None:
                    folio = k.pfn_folio(pte_pfn(word))
                    rss += _KB
                    huge += _KB
                    if folio.anon and not folio.swapbacked and not pte_dirty(word) and not folio.dirty:
                        lazy += _KB
                    bits.append("1")
                    continue
                pt = mm.pte_tables.get(pmd_idx)
                w = pt.entries[(a >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)] if pt is not None else 0
                if not pte_present(w):
                    bits.append("0")
                    continue
                bits.append("1")
                if pte_pfn(w) == ZERO_PFN:
                    continue                    # vm_normal_page() is NULL: not in Rss
                folio = k.pfn_folio(pte_pfn(w))
                rss += _KB
                if folio.anon and not folio.swapbacked and not pte_dirty(w) and not folio.dirty:
                    lazy += _KB
            p = f"mm{mm_id}.smaps[{start:#x}]"
            obs[f"{p}.Rss_kB"] = rss
            obs[f"{p}.LazyFree_kB"] = lazy
            obs[f"{p}.AnonHugePages_kB"] = huge
            obs[f"mm{mm_id}.present[{start:#x}]"] = present_rle("".join(bits))
    for i in op_result_keys(program):
        obs[f"result[{i}]"] = results[i]
    if op_deltas is not None:
        for i in op_delta_keys(program):
            for name in PER_OP_VMSTAT:
                obs[f"vmstat.{name}.op[{i}]"] = op_deltas.get(i, {}).get(VMSTAT[name], 0)
    return obs


def _watch_op_deltas(runner) -> Callable[[], dict[int, dict[str, int]]]:
    """Record the model counters of :data:`PER_OP_VMSTAT` at each operation's start.

    Context: before ``runner.run()``; the operations of a translatable program
    run one after the other (:func:`engine.repro.reproducer.analyse` checks it), so
    an operation's change is what its counters did until the next one started.
    Return: a function giving op index -> counter -> change, once the run is over.
    """
    counters = [VMSTAT[n] for n in PER_OP_VMSTAT]
    starts: list[tuple[int, list[int]]] = []
    orig = runner._start

    def start(t):
        starts.append((t.ops[t.cursor], [runner.k.counters.get(c, 0) for c in counters]))
        return orig(t)

    runner._start = start

    def deltas() -> dict[int, dict[str, int]]:
        ends = [v for _, v in starts[1:]] + [[runner.k.counters.get(c, 0) for c in counters]]
        return {i: {c: e - b for c, b, e in zip(counters, before, end, strict=True)}
                for (i, before), end in zip(starts, ends, strict=True)}
    return deltas


def predict(program: Program, engine_id: str, *, swap: bool = False, check: bool = True,
            per_step_oracles: bool = True, **translate_options: Any) -> dict[str, Any]:
    """The observables kernel ``engine_id`` predicts for ``program`` on a real kernel.

    @swap: whether the real machine has a swap area (the qemu conformance
        kernels have none, so the default is False: see Kernel.swapoff).
    @check: first check that the program translates with ``translate_options``
        (as :func:`engine.repro.reproducer.translate` takes them), on ``engine_id``
        as well as the default engines, so that a prediction is only made for
        what a reproducer can observe.
    @per_step_oracles: False skips the invariant checks after each step and
        operation (the data and end-of-run oracles still hold the run to
        account): what a benchmark-sized program needs, as bench-c runs them.
    Return: key -> value, with the keys the reproducer prints.  Raises
    :class:`NotTranslatable` (when checking) or :class:`PredictionError` when
    the model run ends in a crash or a broken oracle.
    """
    if check:
        analyse(program, **{"target": engine_id, **translate_options})
    runner = Runner(program, engine_id, swap=swap, per_step_oracles=per_step_oracles)
    op_deltas = _watch_op_deltas(runner)
    outcome = runner.run()
    if outcome.verdict is not Verdict.OK:
        crash = outcome.crash
        raise PredictionError(runner.engine, outcome.verdict.value,
                              crash.op_index if crash else None,
                              crash.message if crash else "")
    return model_observables(runner.k, program, outcome.results, op_deltas())


@dataclass(frozen=True)
class FieldDifference:
    """One observable on which a prediction and a real kernel disagree.

    A key one side lacks shows as :data:`ABSENT` on that side.
    """

    field: str
    predicted: Any
    observed: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "predicted": self.predicted, "observed": self.observed}


#: What a side shows for a key it does not have.
ABSENT = "<absent>"


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v))


def compare(predicted: dict[str, Any], observed: dict[str, Any]) -> list[FieldDifference]:
    """Field by field differences between a prediction and a real observation.

    Return: one :class:`FieldDifference` per differing or one-sided key,
    sorted by key; empty when they agree.
    """
    out = []
    for key in sorted(set(predicted) | set(observed)):
        p = _norm(predicted[key]) if key in predicted else ABSENT
        o = _norm(observed[key]) if key in observed else ABSENT
        if p != o:
            out.append(FieldDifference(key, p, o))
    return out


def parse_output(text: str) -> dict[str, Any]:
    """The JSON of the last ``FOLIODIFF {json}`` line a reproducer printed.

    Raises :class:`ValueError` naming what is missing when no such line is there.
    """
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("FOLIODIFF "):
            try:
                return json.loads(line[len("FOLIODIFF "):])
            except json.JSONDecodeError as exc:
                raise ValueError(f"FOLIODIFF line is not JSON ({exc}): {line[:120]!r}") from None
    raise ValueError("output has no FOLIODIFF line")


# -- the conformance suite -------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """A conformance scenario: a program and the translate options to run it with."""

    name: str
    program: Program
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _corpus(name: str) -> tuple[Program, str]:
    data = json.loads((CORPUS_DIR / f"{name}.json").read_text())
    return parse_program(data["program"]), data.get("description", "")


def _conformance() -> dict[str, Scenario]:
    # (corpus name, scenario suffix, translate options)
    table = [
        ("h1-clean-mthp-reclaim", "", {}),
        ("conform-h1-eight-mthp", "", {}),
        ("h3-redirty-pte0", "", {}),
        ("h3-redirty-pte3", "", {}),
        ("h4-small-redirty", "", {}),
        ("conform-h5-dma-pageout", "", {"pin": "io_uring"}),
        ("h7-droppable-small-dirty", "", {}),
        ("h7-droppable-mthp-dirty", "", {}),
        ("h8-pmd-thp-redirty", "", {}),
        ("h9-pmd-thp-pinned", "+io_uring", {"pin": "io_uring"}),
        ("h9-pmd-thp-pinned", "+vmsplice", {"pin": "vmsplice"}),
        ("conform-h10-pmd-thp-clean", "", {}),
        ("conform-h11-pmd-droppable-dirty", "", {}),
        ("conform-mremap-straddle-pageout", "", {}),
        ("h13-partial-madv-free", "", {}),
        ("vmsplice-style-extra-ref", "+io_uring", {"pin": "io_uring"}),
        ("vmsplice-style-extra-ref", "+vmsplice", {"pin": "vmsplice"}),
        ("fork-shared-mthp", "", {}),
        ("conform-pmd-thp-swapbacked-pageout", "", {}),
        ("conform-split-zero-filled", "", {}),
        ("conform-split-dirty-harvest", "", {}),
        ("conform-mprotect-same-prot-thp", "", {}),
        ("conform-dma-unregister-pageout", "", {"pin": "io_uring"}),
        ("conform-vma-boundary-lazyfree-pageout", "", {}),
        ("madv-pageout-locked-vma", "", {}),
        ("conform-pmd-thp-pinned-split-failed", "", {"pin": "io_uring"}),
        ("conform-pte-mapped-thp-madv-free-whole", "", {"pin": "io_uring"}),
        ("split-failed-pinned-mthp", "", {"pin": "io_uring"}),
        ("mapped-shared-disjoint-halves", "", {}),
        ("conform-wp-reuse-lazyfree-write-bit", "", {}),
    ]
    out = {}
    for name, suffix, options in table:
        program, description = _corpus(name)
        out[name + suffix] = Scenario(name + suffix, program, dict(options), description)
    return out


_conformance_cache: dict[str, Scenario] = {}


def conformance() -> dict[str, Scenario]:
    """The conformance scenarios, name -> :class:`Scenario`, read from corpus/ on first use.

    The section-H scenarios user space can express, clean discard (H1), a
    redirtied 16-page folio (H3), extra references by vmsplice and by
    io_uring, redirtied and clean PMD-mapped THPs (H8, H10) and a fork-shared
    mTHP; and what folio splits do (split_deferred, the dirty bit, zero-filled
    pages to the zero page), mprotect() to the same protection, a DMA
    write lost after IORING_UNREGISTER_BUFFERS, MADV_PAGEOUT's -EINVAL on a
    VM_LOCKED VMA, a failed split of a pinned THP counted (thp_split_page_failed,
    split_failed; of a pinned mTHP too) and a whole PTE-mapped THP that
    MADV_FREE splits before v6.10; and a fork-shared mTHP whose two MMs keep
    disjoint halves, which v6.15's MM-owner tracking calls shared and 6.12's
    guess from page 0 does not; after v6.16 (issue 19), a lazyfree mTHP whose
    PTEs differ in the write bit (a fork-shared folio reused by one write: one
    batch before 7.0 and on Debian's 6.19.14, two after 29f40594a281).  Every
    one translates with its options.
    """
    if not _conformance_cache:
        _conformance_cache.update(_conformance())
    return _conformance_cache


def __getattr__(name: str) -> Any:
    """``CONFORMANCE``: :func:`conformance`, as a module attribute computed on first
    use (PEP 562; so not listed in ``__all__``)."""
    if name == "CONFORMANCE":
        return conformance()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ABSENT", "FieldDifference", "PredictionError", "Scenario", "compare", "conformance",
           "has_mthp_stats", "model_observables", "parse_output", "predict", "present_rle",
           "vma_runs"]
