"""Translate a program into a C reproducer that runs on a real kernel.

:func:`translate` turns a :class:`~engine.program.format.Program` into one C99 file
(:attr:`Reproducer.source`) built with ``gcc -static -O2`` against libc and
the Linux uapi headers only.  Run as root on the kernel under test, it sets
the THP policy that gives each region its folio size, runs the program's
operations in program order (a forked mm is a forked process; the processes
hand a token along pipes so that the global order is kept), and prints the
observables of :mod:`engine.repro.realobs` as one ``FOLIODIFF {json}`` line.

The mapping, operation by operation:

=====================  ==========================================================
``mmap``               mmap(MAP_FIXED | MAP_PRIVATE/MAP_DROPPABLE | MAP_ANONYMOUS),
                       then madvise(MADV_HUGEPAGE/MADV_NOHUGEPAGE) by the THP
                       policy, then mlock() for ``locked`` (MAP_LOCKED would
                       populate before the madvise)
``read``/``write``     a load/store of the 32-bit value at each page start;
                       SIGSEGV is -EFAULT, as the model answers
``madvise``            madvise(), its result (0 or -errno) observed;
                       MADV_PAGEOUT is how user space forces reclaim
``munmap``,            the syscalls (mremap with MREMAP_MAYMOVE|MREMAP_FIXED)
``mremap``,
``mprotect``, ``fork``
``pin``                io_uring IORING_REGISTER_BUFFERS (pin_user_pages_fast
                       with FOLL_WRITE|FOLL_LONGTERM), or with ``pin="vmsplice"``
                       vmsplice() into a pipe (get_user_pages_fast references)
``unpin``              IORING_UNREGISTER_BUFFERS / closing the pipe
``dma_write``          io_uring IORING_OP_READ_FIXED of the value from a pipe
                       into each pinned page: the kernel writes the page
                       through the pin, not through the user PTE
``deferred_split_scan``  ``echo 2 > /proc/sys/vm/drop_caches``: drop_slab() runs
                       every shrinker, deferred_split_scan() among them
``lru_add_drain``      MADV_PAGEOUT of a page nothing touched: madvise_pageout()
                       drains this CPU's folio batches (the reproducer runs on
                       one CPU)
=====================  ==========================================================

What cannot be expressed faithfully raises :class:`NotTranslatable` naming
the operation: a non-empty schedule (preemptions user space cannot force),
ops that do not run strictly one after the other, ``reclaim`` (kswapd over
the LRU tails), speculative references, and situations found by running the
model (:func:`analyse`) where a real kernel would do something the model
does not: a fault the THP policy cannot make allocate the model's folio
size, a folio batch a real kernel would drain, a deferred split queue that
drop_caches would scan further, an unpin that would dirty a clean folio.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import pathlib
import subprocess
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from engine.errors import HarnessError, NotTranslatable, ReproducerBuildError
from engine.kernels import KERNELS, base_version
from engine.mm.folio import folio_mapcount, folio_test_partially_mapped
from engine.mm.huge_memory import split_extra_pins
from engine.program.format import (
    PAGE_SIZE,
    Advice,
    DeferredSplitScan,
    Fork,
    Madvise,
    Mmap,
    Mprotect,
    Mremap,
    Munmap,
    Pin,
    Program,
    Prot,
    Read,
    ThreadKind,
    Unpin,
    Write,
)
from engine.repro.observables import (
    COUNTER_KEYS,
    MTHP_SIZES,
    MTHP_STATS,
    PER_OP_VMSTAT,
    VMSTAT,
    op_delta_keys,
)

#: Where the relocated regions start (1 TiB): far from a static binary at
#: 0x400000, its brk heap, and the mmap area under the stack.
TARGET = 1 << 40
#: Relocation keeps addresses modulo 1 GiB, so every PMD and page-table boundary.
RELOC_ALIGN = 1 << 30
#: The regions must fit below 65 TiB once relocated.
MAX_SPAN = 64 << 40
#: How long process 0 waits for any one operation before giving up.
TIMEOUT_S = 120
#: The kernels whose models are checked by default (those that exist); a
#: reproducer for another kernel is checked against its engine as well
#: (``target``).
DEFAULT_ENGINES = ("v6.12", "v6.14", "v6.15", "v6.16")

CFLAGS = ("-static", "-O2", "-std=c99", "-Wall", "-Wextra")
_RUNTIME = pathlib.Path(__file__).resolve().parent / "runtime.c"
_PMD_PAGES = 512
_MTHP_PAGES = 16


class PinMechanism(str, enum.Enum):
    """How a ``pin`` operation takes its references."""

    IO_URING = "io_uring"   #: IORING_REGISTER_BUFFERS: FOLL_PIN | FOLL_WRITE | FOLL_LONGTERM
    VMSPLICE = "vmsplice"   #: vmsplice() into a pipe: plain references, no FOLL_WRITE


# -- the THP policy --------------------------------------------------------------

@dataclass(frozen=True)
class ThpPolicy:
    """The sysfs THP policy a reproducer sets and the madvise it gives each region.

    ``sizes`` is the ``hugepages-<size>/enabled`` setting of the 64 KiB and
    2 MiB sizes (every other size is set to never, the top-level ``enabled``
    to madvise); ``advice`` the madvise applied to a region of each order.

    A kernel without anonymous mTHP (before v6.8, 19eaf44954df: deb-6.1) has
    no per-size knobs.  There the reproducer sets the top-level ``enabled``
    to the 2 MiB setting (:attr:`top_level`) and gives the regions the same
    madvise; no region can get a 64 KiB folio, so an order-4 region faults
    small folios, as the engines without mTHP (``HAS_MTHP`` False) model it.
    """

    sizes: tuple[tuple[str, str], ...]
    advice: tuple[tuple[int, str], ...]

    def region_advice(self, order: int) -> str | None:
        return dict(self.advice).get(order)

    @property
    def top_level(self) -> str:
        """The top-level ``transparent_hugepage/enabled`` of a kernel without mTHP:
        the 2 MiB setting (on a kernel with mTHP it is madvise, and the
        per-size knobs decide)."""
        return dict(self.sizes)["2048kB"]

    def orders(self, order: int, mthp: bool = True) -> frozenset[int]:
        """The folio orders above 0 the fault path may allocate in a region of ``order``.

        @mthp: whether the kernel has anonymous mTHP (per-size knobs).
        As __thp_vma_allowable_orders() decides for anonymous memory: VM_NOHUGEPAGE
        allows none; a size set to always is allowed everywhere else, one set
        to madvise only in VM_HUGEPAGE regions.  Without mTHP,
        hugepage_vma_check() does the same with the top-level knob for the
        PMD order alone.
        """
        advice = self.region_advice(order)
        if advice == "MADV_NOHUGEPAGE":
            return frozenset()
        sizes = dict(self.sizes) if mthp else {MTHP_SIZES[9]: self.top_level}
        return frozenset(o for o, size in MTHP_SIZES.items()
                         if sizes.get(size) == "always"
                         or (sizes.get(size) == "madvise" and advice == "MADV_HUGEPAGE"))

    def describe(self, mthp: bool = True) -> str:
        advice = ", ".join(f"order {o}: {a}" for o, a in self.advice)
        if not mthp:
            return f"transparent_hugepage/enabled={self.top_level} (no mTHP); {advice}"
        sizes = ", ".join(f"hugepages-{s}={m}" for s, m in self.sizes)
        return f"{sizes}; {advice}"


def _policy(s64: str, s2m: str, advice: dict[int, str]) -> ThpPolicy:
    return ThpPolicy((("64kB", s64), ("2048kB", s2m)),
                     tuple(sorted({0: "MADV_NOHUGEPAGE", **advice}.items())))


def candidate_policies(orders: AbstractSet[int]) -> list[ThpPolicy]:
    """The THP policies that may give regions of ``orders`` their folio sizes, best first.

    One of 64 KiB and 2 MiB can be made region-specific with MADV_HUGEPAGE;
    when the program wants both, the other is enabled everywhere (but in
    MADV_NOHUGEPAGE regions), and :func:`analyse` checks that no fault
    notices.
    """
    want4, want9 = 4 in orders, 9 in orders
    if want4 and want9:
        return [_policy("always", "madvise", {9: "MADV_HUGEPAGE"}),
                _policy("madvise", "always", {4: "MADV_HUGEPAGE"})]
    if want4:
        return [_policy("madvise", "never", {4: "MADV_HUGEPAGE"})]
    if want9:
        return [_policy("never", "madvise", {9: "MADV_HUGEPAGE"})]
    return [_policy("never", "never", {})]


# -- what the model runs tell -----------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """A page fault of a model run that allocated (or mapped the zero page).

    ``pmd`` is the PMD entry before the fault: 'none', 'empty' (a PTE table
    left empty by munmap, mremap or MADV_DONTNEED: Linux may have freed it, in
    free_pgtables() or with CONFIG_PT_RECLAIM) or 'table' (reclaim never frees
    page tables).  ``model`` is what the
    model mapped: 9 (PMD THP), 4, 0, or 'zero'.
    """

    op: int
    addr: int
    order: int
    write: bool
    pmd: str
    suitable9: bool
    block4: bool
    model: Any

    def linux(self, allowed: frozenset[int]) -> Any:
        """What Linux maps for this fault when ``allowed`` are the region's orders.

        __handle_mm_fault(): a none PMD in a PMD-suitable range with PMD-order
        THP allowed takes create_huge_pmd() - a THP on a write fault, the huge
        zero page on a read fault; else do_anonymous_page(): the zero page on a
        read, and on a write alloc_anon_folio() the largest allowed order whose
        aligned range is inside the VMA and has only none PTEs.
        """
        if 9 in allowed and self.suitable9 and self.pmd in ("none", "empty"):
            if self.pmd == "empty":
                return ("a PMD THP if the emptied page table was freed, a small folio if not"
                        if self.write else
                        "the huge zero page if the emptied page table was freed, the zero page if not")
            return 9 if self.write else "huge zero page"
        if not self.write:
            return "zero"
        return 4 if 4 in allowed and self.block4 else 0


def _folio_desc(v: Any) -> str:
    return {9: "a PMD-mapped THP", 4: "a 64 KiB mTHP", 0: "a small folio",
            "zero": "the zero page"}.get(v, str(v))


class _Probe:
    """One model run of a program, watched for what a real kernel would do differently.

    Wraps kernel-instance methods (instance attributes shadow the class's)
    to record faults and to check, before each operation, the conditions the
    module docstring lists.  The first problem per operation is kept.
    """

    def __init__(self, program: Program, engine: str, pin: PinMechanism) -> None:
        from engine.execution.runner import Runner
        self.program = program
        self.pin = pin
        self.runner = Runner(program, engine, chooser=lambda step, runnable, default: default,
                             swap=False)
        self.k = self.runner.k
        self.faults: list[Fault] = []
        self.problems: list[tuple[int, str]] = []
        self.pin_mm: dict[str, int] = {}
        self.zapped: set[tuple[int, int]] = set()     # (mm, pmd index) ranges unmapped or zapped
        self._pending: tuple | None = None
        self._install()

    def current_op(self) -> int:
        """The operation running now: the hooks run inside one."""
        op = self.k.current_op
        if op is None:
            raise HarnessError("a reproducer probe hook ran outside any operation")
        return op

    def problem(self, op: int, reason: str) -> None:
        if not any(i == op for i, _ in self.problems):
            self.problems.append((op, reason))

    # -- hooks ------------------------------------------------------------------
    def _wrap(self, obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        setattr(obj, name, make(getattr(obj, name)))

    def _install(self) -> None:
        k, probe = self.k, self

        def handle_mm_fault(orig):
            def hook(vma, addr, write, mmap_locked=False):
                probe._pending = probe._fault_state(vma, addr)
                return (yield from orig(vma, addr, write, mmap_locked))
            return hook

        def do_anonymous_page(orig):
            def hook(vma, pt, addr, write):
                model = k.anon_folio_order(vma, pt, addr) if write else "zero"
                probe._record(vma, addr, write, model)
                return orig(vma, pt, addr, write)
            return hook

        def do_huge_pmd_anonymous_page(orig):
            def hook(vma, pmd_idx):
                probe._record(vma, pmd_idx << 21, True, 9)
                return (yield from orig(vma, pmd_idx))
            return hook

        def gup_slow_one(orig):
            def hook(mm, a, write, touch):
                if probe.pin is PinMechanism.VMSPLICE:
                    probe.problem(probe.current_op(), f"the model's pin fell back to the GUP slow path at "
                                  f"{a:#x} (the page was absent or not writable); vmsplice's "
                                  f"get_user_pages_fast() without FOLL_WRITE would instead take a "
                                  f"reference on what is mapped there, or fault the zero page in")
                return (yield from orig(mm, a, write, touch))
            return hook

        def start(orig):
            def hook(t):
                probe._before_op(t.ops[t.cursor], t)
                return orig(t)
            return hook

        self._wrap(k, "handle_mm_fault", handle_mm_fault)
        self._wrap(k, "do_anonymous_page", do_anonymous_page)
        self._wrap(k, "do_huge_pmd_anonymous_page", do_huge_pmd_anonymous_page)
        self._wrap(k, "gup_slow_one", gup_slow_one)
        self._wrap(self.runner, "_start", start)

    def _fault_state(self, vma, addr: int) -> tuple:
        mm = vma.mm
        pmd_idx = addr >> 21
        pt = mm.pte_tables.get(pmd_idx)
        if pmd_idx in mm.pmd_huge:
            pmd = "huge"
        elif pt is None:
            pmd = "none"
        elif any(pt.entries) or (mm.id, pmd_idx) not in self.zapped:
            pmd = "table"
        else:
            pmd = "empty"
        start = pmd_idx << 21
        suitable9 = vma.vm_start <= start and start + (2 << 20) <= vma.vm_end
        b = addr & ~(_MTHP_PAGES * PAGE_SIZE - 1)
        block4 = vma.vm_start <= b and b + _MTHP_PAGES * PAGE_SIZE <= vma.vm_end
        if block4 and pt is not None:
            i0 = (b >> 12) & 511
            block4 = not any(pt.entries[i0:i0 + _MTHP_PAGES])
        return (addr, pmd, suitable9, block4)

    def _record(self, vma, addr: int, write: bool, model: Any) -> None:
        pending = self._pending
        if pending is None or pending[0] >> 21 != addr >> 21:
            pending = self._fault_state(vma, addr)
        self.faults.append(Fault(self.current_op(), addr, vma.order, write, pending[1],
                                 pending[2], pending[3], model))

    def _batches(self, which: str) -> dict[int, int]:
        table = self.k.cpu_lru_add if which == "lru_add" else self.k.cpu_lru_lazyfree
        return {cpu: len(b) for cpu, b in table.items() if b}

    def _before_op(self, i: int, t) -> None:
        """The checks made on the state before operation ``i`` runs."""
        k, op = self.k, self.program.ops[i]
        mm = k.mms.get(t.mm_id) if t.mm_id is not None else None
        if isinstance(op, Madvise) and op.advice is not Advice.MADV_DONTNEED:
            # the model drains only this thread's CPU; the real run has one CPU
            for which in ("lru_add", "lazyfree"):
                other = {c: n for c, n in self._batches(which).items() if c != t.cpu}
                if other:
                    self.problem(i, f"{op.advice.value} drains this CPU's folio batches; the model keeps "
                                 f"{sum(other.values())} folio(s) in the lru_{which} batch of "
                                 f"another thread's CPU, which the one-CPU real run would drain too")
        # Linux drains this CPU's batches where the model does not: when VMAs are
        # unmapped (munmap, mremap's old range, a MAP_FIXED mmap over VMAs) and
        # in zap_page_range_single() (MADV_DONTNEED).
        if isinstance(op, Mremap) or (isinstance(op, Madvise) and op.advice is Advice.MADV_DONTNEED):
            drains = True
        elif isinstance(op, Mmap | Munmap) and mm is not None:
            end = op.addr + op.pages * PAGE_SIZE
            drains = any(v.vm_start < end and op.addr < v.vm_end for v in mm.vmas)
        else:
            drains = False
        if drains and mm is not None and isinstance(op, Mmap | Munmap | Mremap | Madvise):
            spans = ((op.addr, op.pages),) + (((op.new_addr, op.pages),) if isinstance(op, Mremap) else ())
            for start, pages in spans:
                for pmd_idx in range(start >> 21, ((start + pages * PAGE_SIZE - 1) >> 21) + 1):
                    self.zapped.add((mm.id, pmd_idx))
        if drains and self._batches("lazyfree"):
            what = ("MADV_DONTNEED (zap_page_range_single())" if isinstance(op, Madvise)
                    else f"{op.op} (vms_clear_ptes() when VMAs go)")
            self.problem(i, f"{what} calls lru_add_drain() on Linux, which would move the "
                         f"{sum(self._batches('lazyfree').values())} folio(s) waiting in the lru_lazyfree "
                         f"batch to the file LRU; the model does not drain there")
        if isinstance(op, Pin):
            self.pin_mm[op.pin] = t.mm_id
        if isinstance(op, Unpin) and op.dirty:
            clean = [f for f, _ in k.pins.get(op.pin, []) if not f.dirty]
            if clean:
                self.problem(i, f"unpin_user_pages_dirty_lock(make_dirty=true) would dirty "
                             f"{len(clean)} clean folio(s); IORING_UNREGISTER_BUFFERS and closing a "
                             f"pipe drop the references without dirtying (only O_DIRECT reads unpin "
                             f"dirty, at I/O completion)")
        if isinstance(op, Fork) and self.pin is PinMechanism.VMSPLICE:
            held = [p for p, m in self.pin_mm.items() if m == t.mm_id and k.pins.get(p)]
            if held:
                self.problem(i, f"fork while vmsplice references {held} are held: the model's "
                             f"FOLL_PIN pins make fork copy the pinned pages for the child "
                             f"(folio_maybe_dma_pinned()), vmsplice's plain references do not")
        if isinstance(op, DeferredSplitScan):
            # drop_slab() scans every queued folio (do_shrink_slab() in batches), and
            # runs every shrinker again while the others free objects ((freed >>
            # shift++) > 1: dentries, inodes, ... which the model does not have).  A
            # folio the scan splits or drops is gone by then, so only the queue
            # length matters - unless a partially mapped folio's split fails (an
            # extra reference, a pin): it goes back on the queue and each pass
            # counts its split_failed again (real 6.12-6.18 counted 2 or 3 for one
            # drop_caches, 6.19 4: docs/kernel-notes.md section 23).
            queued = len(k.deferred_split_queue)
            if queued > op.nr_to_scan:
                self.problem(i, f"{queued} folios are queued for deferred split; drop_caches "
                                f"scans them all, this op only {op.nr_to_scan}")
            # can_split_folio() once the scan holds its reference: no reference
            # beyond the mappings and the swap cache's
            stuck = [f for f in k.deferred_split_queue if folio_test_partially_mapped(f)
                     and folio_mapcount(f) != f.ref - split_extra_pins(f)]
            if stuck:
                self.problem(i, f"{len(stuck)} queued partially mapped folio(s) cannot be split "
                                f"(extra references); drop_caches repeats the shrinkers while "
                                f"others free objects, so it would count their split_failed an "
                                f"unknown number of times, this op once per scan")

    def run(self):
        """Run the program.  Return: its Outcome (problems and faults are on self)."""
        return self.runner.run()


_NO_TRIGGER = {
    "reclaim": "kswapd-style reclaim of the inactive LRU tails has no user-space trigger that "
               "picks the same folios (MADV_PAGEOUT is the reclaim user space can force)",
    "folio_try_get": "a speculative folio_try_get() by a pfn walker has no user-space trigger "
                     "(vmsplice takes GUP references, which fault pages in and are not speculative)",
    "folio_put": "drops a speculative reference, which has no user-space trigger",
}


def _op_json(program: Program, i: int) -> dict[str, Any]:
    return program.ops[i].model_dump(mode="json")


def _fail(program: Program, i: int | None, reason: str) -> NotTranslatable:
    return NotTranslatable(i, _op_json(program, i) if i is not None else None, reason)


def _regions(program: Program) -> list[tuple[int, int]]:
    out = []
    for op in program.ops:
        if isinstance(op, Mmap):
            out.append((op.addr, op.addr + op.pages * PAGE_SIZE))
        elif isinstance(op, Mremap):
            out.append((op.new_addr, op.new_addr + op.pages * PAGE_SIZE))
    return out


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` found: everything the C generator needs besides the program.

    ``owners[i]`` is the mm (process) that runs operation ``i``; ``mms`` the
    processes in creation order; ``base`` the program address relocated to
    :data:`TARGET`; ``span`` the relocated window's size.
    """

    pin: PinMechanism
    policy: ThpPolicy
    owners: tuple[int, ...]
    mms: tuple[int, ...]
    pins: tuple[str, ...]
    pin_owner: tuple[tuple[str, int], ...]
    base: int
    span: int
    engines: tuple[str, ...]


def _static_checks(program: Program, pin: PinMechanism) -> None:
    for i, op in enumerate(program.ops):
        reason = _NO_TRIGGER.get(op.op)
        if reason:
            raise _fail(program, i, reason)
        if isinstance(op, Pin):
            if not op.fast:
                raise _fail(program, i, "pin_user_pages() without the fast path: io_uring and "
                                        "vmsplice both pin through get/pin_user_pages_fast()")
            if not op.write and pin is PinMechanism.IO_URING:
                raise _fail(program, i, "io_uring registers buffers with FOLL_WRITE; a read-only "
                                        "pin translates with pin='vmsplice'")
        if op.op == "dma_write" and pin is PinMechanism.VMSPLICE:
            raise _fail(program, i, "pages spliced into a pipe are only read by the kernel; a "
                                    "device write needs pin='io_uring' (IORING_OP_READ_FIXED)")
        if isinstance(op, Mmap) and op.droppable and op.locked:
            raise _fail(program, i, "MAP_DROPPABLE with MAP_LOCKED: the model refuses it (-EINVAL)")


def _owners(program: Program) -> tuple[tuple[int, ...], dict[str, int]]:
    threads = {t.name: t for t in program.threads}
    pin_owner: dict[str, int] = {}
    owners = []
    for op in program.ops:
        t = threads[op.thread]
        if t.kind is ThreadKind.TASK and t.mm is not None:     # a task has one (check_program)
            owner = t.mm
        else:
            owner = 0
        if isinstance(op, Pin):
            pin_owner[op.pin] = owner
        if op.op in ("unpin", "dma_write"):
            owner = pin_owner[op.pin]       # the process that holds the ring or the pipe
        owners.append(owner)
    return tuple(owners), pin_owner


_SYSCALLS_RETURNING_ZERO = ("mmap", "munmap", "mremap", "mprotect", "fork", "unpin",
                            "dma_write", "lru_add_drain")


def _check_results(program: Program, results: list[Any], engine: str) -> None:
    """A reproducer treats a failing syscall as an error: the model must expect none.

    madvise() is the exception: its result is observed (``result[i]``), so
    a model that fails it predicts what the kernel returns, except over a
    hole, where the model fails before advising anything.
    """
    for i, op in enumerate(program.ops):
        r = results[i]
        if r is None:
            continue            # not reached (the run stopped earlier)
        if isinstance(op, Madvise) and r == -errno.ENOMEM:
            raise _fail(program, i, f"the model ({engine}) returns {r} here, for a hole in the "
                                    f"range, before advising anything; Linux advises the mapped "
                                    f"VMAs first and returns -ENOMEM at the end "
                                    f"(madvise_walk_vmas())")
        if op.op in _SYSCALLS_RETURNING_ZERO and r != 0:
            raise _fail(program, i, f"the model ({engine}) returns {r} here; the reproducer "
                                    f"treats a failing syscall as an error, not as a result")
        if isinstance(op, Pin) and r != op.pages:
            raise _fail(program, i, f"the model ({engine}) pins {r} of {op.pages} pages; io_uring "
                                    f"and vmsplice take all pages or fail")


def _check_sequential(program: Program, ran: list[tuple[str, int]] | None, engine: str) -> None:
    last = -1
    for _, i in ran or []:
        if i < last:
            raise _fail(program, last, f"on {engine} operation {i} still runs after operation {last} "
                                       f"started (a thread waits or blocks): the operations do "
                                       f"not run one after the other, which is all user space "
                                       f"can order")
        last = i


def missing_features(program: Program, engine: str) -> list[str]:
    """What ``program`` needs that the kernel ``engine`` stands for does not have.

    Such a program still translates: on that kernel the reproducer finds the
    feature missing and says "unsupported" (exit 2), which is the right
    verdict there.  Return: one phrase per missing feature.
    """
    k = KERNELS[engine]
    out = []
    if not k.HAS_DROPPABLE and any(isinstance(op, Mmap) and op.droppable for op in program.ops):
        out.append(f"MAP_DROPPABLE (9651fcedf7b9, v6.11): {engine} has no VM_DROPPABLE")
    return out


def analysis_engines(program: Program, engines: tuple[str, ...] | None = None,
                     target: str | None = None) -> tuple[str, ...]:
    """The engines :func:`analyse` runs ``program`` on.

    @engines: default, those of :data:`DEFAULT_ENGINES` that exist.
    @target: the engine of the kernel the reproducer is for; its kernel
        version comes first when it is not among @engines, unless the
        program needs a feature that kernel lacks (:func:`missing_features`).
    """
    out = tuple(engines or [e for e in DEFAULT_ENGINES if e in KERNELS])
    if target is not None:
        target = base_version(target)
        if target not in out and not missing_features(program, target):
            out = (target,) + out
    return out


def analyse(program: Program, *, pin: PinMechanism | str = PinMechanism.IO_URING,
            engines: tuple[str, ...] | None = None, target: str | None = None) -> Analysis:
    """Decide whether ``program`` translates, and how.

    @pin: the mechanism for ``pin`` operations (:class:`PinMechanism`).
    @engines: the kernel models run to check the translation (default: those of
        :data:`DEFAULT_ENGINES` that exist).
    @target: the engine of the kernel the reproducer is for (a catalogue
        kernel's :attr:`KernelSpec.engine`), checked first when it is not
        among @engines; not run when the program needs a feature that kernel
        lacks (:func:`missing_features`: the reproducer says unsupported
        there).
    Context: runs the program once per engine, without swap; each engine's
    faults are held to the THP policy as its kernel applies it (per-size
    knobs with mTHP, the top-level knob without).  Return: the
    :class:`Analysis`.  Raises :class:`NotTranslatable` naming the first
    operation that cannot be reproduced faithfully and why.
    """
    pin = PinMechanism(pin)
    program.check()
    engines = analysis_engines(program, engines, target)
    if program.schedule:
        e = program.schedule[0]
        raise NotTranslatable(e.op, _op_json(program, e.op) if e.op is not None else None,
                              f"the schedule preempts it with thread {e.thread} at its "
                              f"{e.at.value} point #{e.nth}: user space cannot force a "
                              f"preemption between two kernel steps")
    _static_checks(program, pin)
    regions = _regions(program)
    base = min((s for s, _ in regions), default=0) & ~(RELOC_ALIGN - 1)
    span = ((max((e for _, e in regions), default=base + RELOC_ALIGN) - base + RELOC_ALIGN - 1)
            & ~(RELOC_ALIGN - 1))
    if span > MAX_SPAN:
        raise NotTranslatable(None, None, f"the program's regions span {span >> 40} TiB; the "
                                          f"reproducer relocates them to 1 TiB and needs them "
                                          f"within {MAX_SPAN >> 40} TiB")
    owners, pin_owner = _owners(program)
    orders = {op.order for op in program.ops if isinstance(op, Mmap)}
    candidates = candidate_policies(orders)
    failures: dict[int, tuple[int, str]] = {}
    for engine in engines:
        probe = _Probe(program, engine, pin)
        outcome = probe.run()
        _check_sequential(program, probe.runner.ran, engine)
        _check_results(program, outcome.results, engine)
        if probe.problems:
            i, reason = min(probe.problems)
            raise _fail(program, i, f"{reason} (seen on {engine})")
        mthp = KERNELS[engine].HAS_MTHP
        for c, policy in enumerate(candidates):
            if c in failures:
                continue
            for f in probe.faults:
                linux = f.linux(policy.orders(f.order, mthp))
                if linux != f.model:
                    reason = (f"a {'write' if f.write else 'read'} fault at {f.addr:#x} in an "
                              f"order-{f.order} region maps {_folio_desc(f.model)} in the model "
                              f"({engine}); with {policy.describe(mthp)} Linux would map "
                              f"{_folio_desc(linux)}")
                    failures[c] = (f.op, reason)
                    break
    good = [p for c, p in enumerate(candidates) if c not in failures]
    if not good:
        i, _ = min(failures.values())
        reason = "; ".join(r for _, r in failures.values())
        raise _fail(program, i, f"no THP policy gives the model's folio sizes: {reason}")
    mms = (0,) + tuple(op.child for op in program.ops if isinstance(op, Fork))
    pins = tuple(op.pin for op in program.ops if isinstance(op, Pin))
    return Analysis(pin, good[0], owners, mms, pins, tuple(sorted(pin_owner.items())), base, span,
                    engines)


# -- the C source -------------------------------------------------------------------

@dataclass(frozen=True)
class Reproducer:
    """A translated program: C99 source and how it was made.

    ``source`` builds with ``gcc`` and :data:`CFLAGS`; run as root it prints
    one ``FOLIODIFF {json}`` line (see :mod:`engine.repro.realobs`).
    """

    name: str
    source: str
    analysis: Analysis

    @property
    def cflags(self) -> tuple[str, ...]:
        return CFLAGS

    def compile(self, output: str | os.PathLike, cc: str = "gcc") -> pathlib.Path:
        """Build the reproducer into ``output`` with ``cc`` (-static -O2).

        Return: the executable's path.  Raises :class:`ReproducerBuildError` with
        the compiler's messages when the build fails.
        """
        output = pathlib.Path(output)
        src = output.with_suffix(".c")
        src.write_text(self.source)
        proc = subprocess.run([cc, *CFLAGS, "-o", str(output), str(src)], capture_output=True,
                              text=True, check=False)
        if proc.returncode:
            raise ReproducerBuildError([cc, *CFLAGS, str(src)], proc.returncode, proc.stderr)
        return output


def _c_str(s: str) -> str:
    return json.dumps(s)


def _hex(v: int) -> str:
    return f"{v:#x}"


def _op_comment(program: Program, i: int, owner: int) -> str:
    # names and enum values cannot hold "*/" (the schema's patterns), so the JSON is safe here
    text = json.dumps(_op_json(program, i), separators=(", ", ": "))
    return f"/* ops[{i}] (process of mm{owner}): {text} */"


def _op_body(program: Program, a: Analysis, i: int, values: dict[int, int]) -> str:
    op = program.ops[i]
    pin_index = {p: n for n, p in enumerate(a.pins)}
    if isinstance(op, Mmap):
        advice = a.policy.region_advice(op.order)
        return (f"do_mmap({i}, A({_hex(op.addr)}), {op.pages}, {int(op.droppable)}, {int(op.locked)}, "
                f"{advice or 0}, {_c_str(advice or '')});")
    if isinstance(op, Munmap):
        return f"do_munmap({i}, A({_hex(op.addr)}), {op.pages});"
    if isinstance(op, Mremap):
        return f"do_mremap({i}, A({_hex(op.addr)}), {op.pages}, A({_hex(op.new_addr)}));"
    if isinstance(op, Mprotect):
        prot = "PROT_READ | PROT_WRITE" if op.prot is Prot.PROT_READ_WRITE else "PROT_READ"
        return f"do_mprotect({i}, A({_hex(op.addr)}), {op.pages}, {prot});"
    if isinstance(op, Fork):
        return f"do_fork({i}, {op.child});"
    if isinstance(op, Read):
        return f"do_read({i}, A({_hex(op.addr)}), {op.pages}, {values[i]});"
    if isinstance(op, Write):
        return f"do_write({i}, A({_hex(op.addr)}), {op.pages}, {op.value}u);"
    if isinstance(op, Madvise):
        return f"do_madvise({i}, A({_hex(op.addr)}), {op.pages}, {op.advice.value});"
    if isinstance(op, Pin):
        if a.pin is PinMechanism.IO_URING:
            return f"pin_io_uring({i}, {pin_index[op.pin]}, A({_hex(op.addr)}), {op.pages});"
        return f"pin_vmsplice({i}, {pin_index[op.pin]}, A({_hex(op.addr)}), {op.pages});"
    if isinstance(op, Unpin):
        fn = "unpin_io_uring" if a.pin is PinMechanism.IO_URING else "unpin_vmsplice"
        return f"{fn}({i}, {pin_index[op.pin]});"
    if op.op == "dma_write":
        p = next(o for o in program.ops if isinstance(o, Pin) and o.pin == op.pin)
        return f"dma_write({i}, {pin_index[op.pin]}, A({_hex(p.addr)}), {p.pages}, {op.value}u);"
    if isinstance(op, DeferredSplitScan):
        return f"drop_slab({i});"
    if op.op == "lru_add_drain":
        return f"drain_lru({i});"
    raise AssertionError(f"untranslated operation {op.op}")   # _static_checks refused it


def _config(program: Program, a: Analysis, nvalues: int) -> str:
    nops = len(program.ops)
    mthp = [(MTHP_SIZES[o], s) for o in sorted(MTHP_SIZES) for s in MTHP_STATS]
    lines = [
        f"#define NOPS {nops}",
        f"#define NOPS_ALLOC {max(nops, 1)}",
        f"#define NVALUES_ALLOC {max(nvalues, 1)}",
        f"#define NVMSTAT {len(VMSTAT)}",
        f"#define NMTHP {len(mthp)}",
        f"#define NCOUNTERS {len(COUNTER_KEYS)}",
        f"#define NPEROP {len(PER_OP_VMSTAT)}",
        f"#define BASE {_hex(a.base)}ULL",
        f"#define TARGET {_hex(TARGET)}ULL",
        f"#define SPAN {_hex(a.span)}ULL",
        f"#define NRINGS {len(a.pins) if a.pin is PinMechanism.IO_URING else 0}",
        f"#define NRINGS_ALLOC {max(len(a.pins), 1)}",
        f"#define NPINS_ALLOC {max(len(a.pins), 1)}",
        f"#define NMMS {len(a.mms)}",
        f"#define NSIZES {len(a.policy.sizes)}",
        f"#define TIMEOUT_S {TIMEOUT_S}",
        f"#define THP_TOP_LEVEL {_c_str(a.policy.top_level)}	/* a kernel without mTHP */",
        "",
        "static const char *const vmstat_names[NVMSTAT] = { "
        + ", ".join(_c_str(n) for n in VMSTAT) + " };",
        "static const char *const mthp_files[NMTHP][2] = { "
        + ", ".join(f"{{ {_c_str(s)}, {_c_str(f)} }}" for s, f in mthp) + " };",
        "static const char *const counter_keys[NCOUNTERS] = { "
        + ", ".join(_c_str(k) for k in COUNTER_KEYS) + " };",
        "/* counters whose change across each observed op is printed on its own */",
        "static const int per_op_counters[NPEROP] = { "
        + ", ".join(str(COUNTER_KEYS.index(f"vmstat.{n}")) for n in PER_OP_VMSTAT) + " };",
        f"/* THP policy: {a.policy.describe()}; without mTHP: {a.policy.describe(False)} */",
        "static const char *const thp_sizes[NSIZES][2] = { "
        + ", ".join(f"{{ {_c_str(s)}, {_c_str(m)} }}" for s, m in a.policy.sizes) + " };",
        "static const int mm_ids[NMMS] = { " + ", ".join(str(m) for m in a.mms) + " };",
    ]
    return "\n".join(lines)


def translate(program: Program, *, name: str, pin: PinMechanism | str = PinMechanism.IO_URING,
              engines: tuple[str, ...] | None = None, target: str | None = None) -> Reproducer:
    """Translate ``program`` into a C reproducer called ``name``.

    @pin: how ``pin`` operations take references (:class:`PinMechanism`).
    @engines: the kernel models :func:`analyse` checks against.
    @target: the engine of the kernel the reproducer is for, checked as well.
    Return: the :class:`Reproducer`.  Raises :class:`NotTranslatable` (naming
    the operation and the reason) or :class:`ProgramError` for a malformed program.
    """
    a = analyse(program, pin=pin, engines=engines, target=target)
    values: dict[int, int] = {}
    nvalues = 0
    for i, op in enumerate(program.ops):
        if isinstance(op, Read):
            values[i] = nvalues
            nvalues += op.pages
    ops = []
    for i in range(len(program.ops)):
        ops.append(f"{_op_comment(program, i, a.owners[i])}\nstatic void op_{i}(void)\n{{\n"
                   f"\t{_op_body(program, a, i, values)}\n}}\n")
    nops = len(program.ops)
    alloc = max(nops, 1)

    def table(ctype: str, tname: str, items: list[str]) -> str:
        body = ", ".join(items) if items else "0"
        return f"static {ctype} {tname}[{alloc}] = {{ {body} }};"

    tables = [
        "static void (*const op_fn[NOPS_ALLOC])(void) = { "
        + (", ".join(f"op_{i}" for i in range(nops)) if nops else "NULL") + " };",
        table("const int", "op_owner", [str(o) for o in a.owners]),
        "/* result of op i: offset of its values (read), -2 (a status: write or madvise), "
        "-1 (not observed) */",
        table("const int", "op_values",
              [str(values[i]) if i in values else ("-2" if isinstance(op, Write | Madvise) else "-1")
               for i, op in enumerate(program.ops)]),
        table("const int", "op_pages", [str(getattr(op, "pages", 0)) for op in program.ops]),
        "/* 1: the op's own counter changes are observed (vmstat.<name>.op[i]) */",
        table("const int", "op_deltas_observed",
              ["1" if i in op_delta_keys(program) else "0" for i in range(nops)]),
    ]
    runtime = _RUNTIME.read_text()
    program_text = json.dumps(program.to_dict(), separators=(",", ":")).replace("*/", "*\\/")
    header = (f"/* foliodiff reproducer {name}: {nops} operations, {len(a.mms)} process(es), "
              f"pins by {a.pin.value}; checked against the models of {', '.join(a.engines)}.\n"
              f" * Build: gcc {' '.join(CFLAGS)} -o {name} {name}.c   Run as root.\n"
              f" * Program: {program_text}\n */\n")
    source = header + runtime.replace("/*@CONFIG@*/", _config(program, a, nvalues)).replace(
        "/*@OPS@*/", "\n".join(ops) + "\n" + "\n".join(tables) + "\n")
    return Reproducer(name, source, a)


__all__ = ["CFLAGS", "DEFAULT_ENGINES", "Analysis", "Fault", "PinMechanism", "Reproducer",
           "ThpPolicy", "analyse", "analysis_engines", "candidate_policies", "missing_features",
           "translate"]
