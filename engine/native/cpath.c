// SPDX-License-Identifier: GPL-2.0-only
/*
 * The lazyfree unmap of one folio within one VMA, in C: the twin of the
 * Python model's PTE leg of try_to_unmap_one() and of
 * __discard_anon_folio_pmd_locked(), for v6.14, v6.15 and v6.16.
 *
 * Plain C, no Python API: loaded with ctypes by engine/native/loader.py.  Every page
 * table is the 512-entry array('Q') buffer of engine.mm.pgtable.PageTable,
 * passed by address with its length; nothing is copied.  Folio state stays
 * in Python: these functions read the numbers the caller passes (refcount,
 * mapcount, PG_dirty) and return what the caller must apply.
 *
 * try_to_unmap_one() yields between clearing the PTEs and reading the
 * refcount (another CPU may take a reference there), so one walk hit is two
 * calls: ttu_clear() before the yield and ttu_decide() after it.
 *
 * Every table access goes through ptep_get()/set_pte_at() below, which
 * refuse an index outside the table: a scan that would leave it returns
 * -EFAULT with the index in ->fault_idx (what KASAN would report), and the
 * caller raises the same PageTableOutOfBounds the Python model raises.
 */
#include <stdint.h>

/* Bump on any change of a signature, a struct or an enum below. */
#define FOLIODIFF_CPATH_ABI 3

#define EFAULT 14

/* x86-64 shaped PTE bits, as engine/mm/pgtable.py has them. */
#define _PAGE_PRESENT	(1ULL << 0)
#define _PAGE_RW	(1ULL << 1)
#define _PAGE_ACCESSED	(1ULL << 5)
#define _PAGE_DIRTY	(1ULL << 6)
#define PAGE_SHIFT	12
#define PFN_MASK	(((1ULL << 40) - 1) << PAGE_SHIFT)

/* get_and_clear_full_ptes() merges these from every PTE of the batch. */
#define PTE_DIRTY_YOUNG		(_PAGE_DIRTY | _PAGE_ACCESSED)
/* folio_pte_batch(FPB_IGNORE_DIRTY | FPB_IGNORE_SOFT_DIRTY) also ignores young and write. */
#define PTE_BATCH_IGNORE	(_PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_RW)

/* enum ttu_flags: only TTU_HWPOISON changes the lazyfree leg. */
#define TTU_HWPOISON	0x20

/** enum cpath_kernel - which kernel's form of the unmap to run. */
enum cpath_kernel {
	CPATH_V6_14 = 0,	/* per PTE; swapbacked on any failure to discard */
	CPATH_V6_15 = 1,	/* can_batch_unmap_folio_ptes(): whole folio, unbounded scan */
	CPATH_V6_16 = 2,	/* folio_unmap_pte_batch(): bounded by the PMD and the VMA */
};

/** enum cpath_folio_flags - the folio flags the batch decision reads. */
enum cpath_folio_flags {
	CPATH_FOLIO_ANON = 1 << 0,
	CPATH_FOLIO_SWAPBACKED = 1 << 1,
};

/** enum ttu_lazyfree_action - what ttu_decide() did with the cleared batch. */
enum ttu_lazyfree_action {
	TTU_LAZYFREE_DISCARD = 0,		/* goto discard: caller drops rmaps and refs */
	TTU_LAZYFREE_ABORT_DIRTY = 1,		/* restored; caller sets swapbacked */
	TTU_LAZYFREE_ABORT_REF_SWAPBACKED = 2,	/* v6.14: restored; caller sets swapbacked */
	TTU_LAZYFREE_ABORT_REF = 3,		/* restored; folio left lazyfree */
};

/** enum pmd_lazyfree_action - what a test of __discard_anon_folio_pmd_locked() says. */
enum pmd_lazyfree_action {
	PMD_LAZYFREE_DISCARD = 0,	/* after the clear: caller finishes the discard */
	PMD_LAZYFREE_REFUSE = 1,	/* v6.14: refused, no flag changed */
	PMD_LAZYFREE_ABORT_DIRTY = 2,	/* v6.15: refused; caller sets swapbacked */
	PMD_LAZYFREE_ABORT_REF = 3,	/* v6.15: refused for an extra reference */
	PMD_LAZYFREE_CLEAR = 4,		/* before the clear: go on, clear the PMD */
};

/**
 * struct ttu_clear_out - what ttu_clear() found and did.
 * @pteval: the first PTE of the batch, dirty and young merged in from all.
 * @nr_pages: PTEs cleared.
 * @fault_idx: the index a scan tried to read outside the table (on -EFAULT).
 * @pte_reads: PTEs read by folio_pte_batch() (the model's cost counter).
 * @pte_clears: PTEs cleared.
 */
struct ttu_clear_out {
	uint64_t pteval;
	int64_t nr_pages;
	int64_t fault_idx;
	int64_t pte_reads;
	int64_t pte_clears;
};

/**
 * struct ttu_decide_out - what the caller must apply after ttu_decide().
 * @anon_delta: change of the mm's MM_ANONPAGES counter.
 * @fault_idx: the index a restore tried to write outside the table (on -EFAULT).
 */
struct ttu_decide_out {
	int64_t anon_delta;
	int64_t fault_idx;
};

/**
 * struct pmd_discard_out - what the caller must apply after a PMD discard test.
 * @set_dirty: mark the folio dirty (a dirty PMD moved its bit to the folio).
 * @set_swapbacked: mark the folio swapbacked.
 */
struct pmd_discard_out {
	int32_t set_dirty;
	int32_t set_swapbacked;
};

/* One PTE table: the caller's buffer and its length (512). */
struct pte_table {
	uint64_t *entries;
	int64_t nr;
	int64_t *fault_idx;
};

static inline int idx_ok(const struct pte_table *pt, int64_t idx)
{
	if (idx >= 0 && idx < pt->nr)
		return 1;
	*pt->fault_idx = idx;
	return 0;
}

static inline uint64_t pte_pfn(uint64_t pte)
{
	return (pte & PFN_MASK) >> PAGE_SHIFT;
}

/**
 * ptep_get() - read PTE @idx of @pt into @pte.
 * Return: 0, or -EFAULT when @idx lies outside the table (nothing read).
 */
static inline int ptep_get(const struct pte_table *pt, int64_t idx, uint64_t *pte)
{
	if (!idx_ok(pt, idx))
		return -EFAULT;
	*pte = pt->entries[idx];
	return 0;
}

/**
 * set_pte_at() - write @pte to PTE @idx of @pt.
 * Return: 0, or -EFAULT when @idx lies outside the table (nothing written).
 */
static inline int set_pte_at(const struct pte_table *pt, int64_t idx, uint64_t pte)
{
	if (!idx_ok(pt, idx))
		return -EFAULT;
	pt->entries[idx] = pte;
	return 0;
}

/**
 * folio_pte_batch() - how many PTEs from @idx map consecutive pages of the folio.
 * @pt: the PTE table.
 * @idx: the first PTE, whose value is @pte.
 * @folio_end_pfn: the pfn after the folio's last page.
 * @max_nr: the most PTEs the caller allows.
 * @reads: PTE reads, counted like the model's cost counter.
 *
 * Dirty, young and write are ignored (FPB_IGNORE_DIRTY; write does not split
 * a batch either).  The scan is bounded only by the folio and @max_nr: v6.15
 * passes the folio size, so it can run off the table, which ptep_get() catches.
 *
 * Return: the batch size (>= 1), or -EFAULT.
 */
static int64_t folio_pte_batch(const struct pte_table *pt, int64_t idx, uint64_t pte,
			       uint64_t folio_end_pfn, int64_t max_nr, int64_t *reads)
{
	uint64_t expected = (pte & ~PTE_BATCH_IGNORE) + (1ULL << PAGE_SHIFT);
	uint64_t cur;
	int64_t nr = 1;

	if ((int64_t)(folio_end_pfn - pte_pfn(pte)) < max_nr)
		max_nr = (int64_t)(folio_end_pfn - pte_pfn(pte));
	while (nr < max_nr) {
		if (ptep_get(pt, idx + nr, &cur))
			return -EFAULT;
		(*reads)++;
		if ((cur & ~PTE_BATCH_IGNORE) != expected)
			break;
		nr++;
		expected += 1ULL << PAGE_SHIFT;
	}
	return nr;
}

static inline int folio_test_lazyfree(uint32_t folio_flags)
{
	return (folio_flags & CPATH_FOLIO_ANON) && !(folio_flags & CPATH_FOLIO_SWAPBACKED);
}

/**
 * can_batch_unmap_folio_ptes() - v6.15 (354dffd29575): the whole folio, from
 * its first page, in one batch.  Not bounded by the table or the VMA: the
 * out-of-bounds scan ddd05742b45b fixed.
 * Return: 1 to batch, 0 not to, or -EFAULT.
 */
static int can_batch_unmap_folio_ptes(const struct pte_table *pt, int64_t idx, uint64_t pte,
				      uint64_t folio_pfn, int64_t folio_nr, uint32_t folio_flags,
				      int64_t *reads)
{
	int64_t nr;

	if (!folio_test_lazyfree(folio_flags))
		return 0;
	if (pte_pfn(pte) != folio_pfn)
		return 0;
	nr = folio_pte_batch(pt, idx, pte, folio_pfn + folio_nr, folio_nr, reads);
	if (nr < 0)
		return -EFAULT;
	return nr == folio_nr;
}

/**
 * folio_unmap_pte_batch() - v6.16 (ddd05742b45b): a batch from any page,
 * within one page table and one VMA, possibly partial.
 * @vma_nr: pages from @idx to the end of the VMA.
 * Return: the batch size (>= 1), or -EFAULT.
 */
static int64_t folio_unmap_pte_batch(const struct pte_table *pt, int64_t idx, uint64_t pte,
				     uint64_t folio_pfn, int64_t folio_nr, uint32_t folio_flags,
				     int64_t vma_nr, uint32_t ttu_flags, int64_t *reads)
{
	/* We may only batch within a single VMA and a single page table. */
	int64_t max_nr = pt->nr - idx;

	if ((ttu_flags & TTU_HWPOISON) || folio_nr == 1)
		return 1;
	if (vma_nr < max_nr)
		max_nr = vma_nr;
	if (!folio_test_lazyfree(folio_flags))
		return 1;
	return folio_pte_batch(pt, idx, pte, folio_pfn + folio_nr, max_nr, reads);
}

/**
 * get_and_clear_full_ptes() - clear @nr PTEs from @idx.
 * Return: 0 with the first PTE, dirty and young OR-ed in from all, in @pteval;
 * or -EFAULT (nothing cleared).
 */
static int get_and_clear_full_ptes(const struct pte_table *pt, int64_t idx, int64_t nr,
				   uint64_t *pteval)
{
	uint64_t pte = 0;
	int64_t i;

	/* Check both ends first: a batch is cleared whole or not at all. */
	if (!idx_ok(pt, idx) || !idx_ok(pt, idx + nr - 1))
		return -EFAULT;
	ptep_get(pt, idx, &pte);
	set_pte_at(pt, idx, 0);
	for (i = 1; i < nr; i++) {
		uint64_t w = 0;

		ptep_get(pt, idx + i, &w);
		set_pte_at(pt, idx + i, 0);
		pte |= w & PTE_DIRTY_YOUNG;
	}
	*pteval = pte;
	return 0;
}

/**
 * set_ptes() - restore @nr PTEs from one value, advancing the pfn.
 * Return: 0, or -EFAULT (nothing written).
 */
static int set_ptes(const struct pte_table *pt, int64_t idx, uint64_t pte, int64_t nr)
{
	int64_t i;

	if (!idx_ok(pt, idx) || !idx_ok(pt, idx + nr - 1))
		return -EFAULT;
	for (i = 0; i < nr; i++)
		set_pte_at(pt, idx + i, pte + ((uint64_t)i << PAGE_SHIFT));
	return 0;
}

/**
 * foliodiff_cpath_abi() - the ABI version this library was built with.
 * The loader refuses a library whose answer differs from the one it expects.
 */
uint32_t foliodiff_cpath_abi(void)
{
	return FOLIODIFF_CPATH_ABI;
}

/**
 * ttu_clear() - the first half of a walk hit of try_to_unmap_one(): pick the
 * batch and clear it.
 * @table: the PTE table's buffer.
 * @nr_entries: its length.
 * @idx: the PTE the walk stopped at.
 * @folio_pfn: the folio's first pfn.
 * @folio_nr: its pages.
 * @folio_flags: enum cpath_folio_flags.
 * @vma_nr: pages from @idx to the end of the VMA (v6.16 bounds the batch by it).
 * @ttu_flags: enum ttu_flags.
 * @kernel: enum cpath_kernel.
 * @out: the batch (see struct ttu_clear_out).
 *
 * Context: the caller holds the PTL (in the model).
 * Return: the number of PTEs cleared, or -EFAULT when a read would leave the
 * table (then nothing was cleared and @out->fault_idx names the index).
 */
int64_t ttu_clear(uint64_t *table, int64_t nr_entries, int64_t idx, uint64_t folio_pfn,
		  int64_t folio_nr, uint32_t folio_flags, int64_t vma_nr, uint32_t ttu_flags,
		  int32_t kernel, struct ttu_clear_out *out)
{
	struct pte_table pt = { table, nr_entries, &out->fault_idx };
	uint64_t pte;
	int64_t nr = 1;

	out->pte_reads = 0;
	out->pte_clears = 0;
	out->nr_pages = 0;
	if (ptep_get(&pt, idx, &pte))
		return -EFAULT;
	if (kernel == CPATH_V6_15 && folio_nr > 1 && !(ttu_flags & TTU_HWPOISON)) {
		int ok = can_batch_unmap_folio_ptes(&pt, idx, pte, folio_pfn, folio_nr,
						    folio_flags, &out->pte_reads);
		if (ok < 0)
			return -EFAULT;
		nr = ok ? folio_nr : 1;
	} else if (kernel == CPATH_V6_16) {
		nr = folio_unmap_pte_batch(&pt, idx, pte, folio_pfn, folio_nr, folio_flags,
					   vma_nr, ttu_flags, &out->pte_reads);
		if (nr < 0)
			return -EFAULT;
	}
	if (get_and_clear_full_ptes(&pt, idx, nr, &out->pteval))
		return -EFAULT;
	out->pte_clears = nr;
	out->nr_pages = nr;
	return nr;
}

/**
 * ttu_decide() - the second half of a lazyfree walk hit, after the yield:
 * discard the batch, or restore it.
 * @table: the PTE table's buffer.
 * @nr_entries: its length.
 * @idx: the first PTE of the batch ttu_clear() cleared.
 * @nr: its size.
 * @pteval: the merged PTE ttu_clear() returned.
 * @ref_count: folio_ref_count(), read after the PTEs were cleared.
 * @map_count: folio_mapcount(), read with it.
 * @folio_dirty: folio_test_dirty().
 * @droppable: the VMA is VM_DROPPABLE.
 * @kernel: enum cpath_kernel.
 * @out: the MM_ANONPAGES change.
 *
 * The only references of a discardable folio are the isolation's and the
 * mappings' (dropped by discard:).  v6.14 discards a clean folio (a droppable
 * one even when dirty) and otherwise restores the PTE and makes the folio
 * swapbacked unless droppable.  From v6.15 (faeb2831b517) only a redirtied,
 * non-droppable folio becomes swapbacked; an extra reference just restores.
 *
 * Return: enum ttu_lazyfree_action, or -EFAULT.
 */
int32_t ttu_decide(uint64_t *table, int64_t nr_entries, int64_t idx, int64_t nr,
		   uint64_t pteval, int64_t ref_count, int64_t map_count, int32_t folio_dirty,
		   int32_t droppable, int32_t kernel, struct ttu_decide_out *out)
{
	struct pte_table pt = { table, nr_entries, &out->fault_idx };

	out->anon_delta = 0;
	if (kernel == CPATH_V6_14) {
		if (ref_count == 1 + map_count && (!folio_dirty || droppable)) {
			out->anon_delta = -1;
			return TTU_LAZYFREE_DISCARD;
		}
		if (set_pte_at(&pt, idx, pteval))
			return -EFAULT;
		if (droppable)
			return TTU_LAZYFREE_ABORT_REF;
		return folio_dirty ? TTU_LAZYFREE_ABORT_DIRTY : TTU_LAZYFREE_ABORT_REF_SWAPBACKED;
	}
	if (folio_dirty && !droppable) {
		/* redirtied through a PTE or a GUP reference obtained earlier */
		if (set_ptes(&pt, idx, pteval, nr))
			return -EFAULT;
		return TTU_LAZYFREE_ABORT_DIRTY;
	}
	if (ref_count != 1 + map_count) {
		/* GUP or speculative: act as if nothing happened, come back later */
		if (set_ptes(&pt, idx, pteval, nr))
			return -EFAULT;
		return TTU_LAZYFREE_ABORT_REF;
	}
	out->anon_delta = -nr;
	return TTU_LAZYFREE_DISCARD;
}

/**
 * pmd_discard_check() - __discard_anon_folio_pmd_locked() before its clear.
 * @pmd: the PMD word.
 * @folio_dirty: folio_test_dirty().
 * @droppable: the VMA is VM_DROPPABLE.
 * @kernel: CPATH_V6_14 (735ecdfaf4e8 form) or CPATH_V6_15 (2f9b43d617e2 form).
 * @out: the folio flags to set.
 *
 * v6.14 refuses a dirty folio or PMD and changes no flag.  v6.15 moves a
 * dirty PMD's bit to the folio and makes a dirty, non-droppable folio
 * swapbacked instead of letting the caller split the PMD.
 *
 * Context: PMD lock held (in the model).  Return: PMD_LAZYFREE_CLEAR to go
 * on, else the refusal (enum pmd_lazyfree_action).
 */
int32_t pmd_discard_check(uint64_t pmd, int32_t folio_dirty, int32_t droppable, int32_t kernel,
			  struct pmd_discard_out *out)
{
	out->set_dirty = 0;
	out->set_swapbacked = 0;
	if (kernel == CPATH_V6_14)
		return (folio_dirty || (pmd & _PAGE_DIRTY)) ? PMD_LAZYFREE_REFUSE : PMD_LAZYFREE_CLEAR;
	if (pmd & _PAGE_DIRTY)
		out->set_dirty = folio_dirty = 1;
	if (folio_dirty && !droppable) {
		out->set_swapbacked = 1;
		return PMD_LAZYFREE_ABORT_DIRTY;
	}
	return PMD_LAZYFREE_CLEAR;
}

/**
 * pmd_discard_decide() - __discard_anon_folio_pmd_locked() after its clear.
 * @cleared: the word pmdp_huge_clear_flush() returned (the MMU may have set
 *	dirty in it since pmd_discard_check() read the PMD).
 * @ref_count: folio_ref_count(), read after the barrier that pairs with GUP-fast.
 * @map_count: folio_mapcount().
 * @folio_dirty: folio_test_dirty().
 * @droppable: the VMA is VM_DROPPABLE.
 * @kernel: CPATH_V6_14 or CPATH_V6_15.
 * @out: the folio flags to set.
 *
 * The dirty test again, on @cleared, then the refcount: the only references
 * must be isolation's and the mappings'.  On refusal the caller restores
 * @cleared.
 *
 * Context: PMD lock held (in the model).  Return: PMD_LAZYFREE_DISCARD or the
 * refusal (enum pmd_lazyfree_action).
 */
int32_t pmd_discard_decide(uint64_t cleared, int64_t ref_count, int64_t map_count,
			   int32_t folio_dirty, int32_t droppable, int32_t kernel,
			   struct pmd_discard_out *out)
{
	int32_t action = pmd_discard_check(cleared, folio_dirty, droppable, kernel, out);

	if (action != PMD_LAZYFREE_CLEAR)
		return action;
	if (ref_count != map_count + 1)
		return kernel == CPATH_V6_14 ? PMD_LAZYFREE_REFUSE : PMD_LAZYFREE_ABORT_REF;
	return PMD_LAZYFREE_DISCARD;
}

/** enum cpath_call_op - which entry point a recorded call went to. */
enum cpath_call_op {
	CPATH_CALL_CLEAR = 0,
	CPATH_CALL_DECIDE = 1,
	CPATH_CALL_PMD_CHECK = 2,
	CPATH_CALL_PMD_DECIDE = 3,
};

/**
 * struct cpath_call - one call the engine made, as recorded by the benchmark.
 * @table: the PTE table's buffer (unused by the PMD calls).
 * @pmd: the PMD word of CPATH_CALL_PMD_CHECK, the cleared word of
 *	CPATH_CALL_PMD_DECIDE.
 *
 * The other fields are the arguments of ttu_clear(), ttu_decide(),
 * pmd_discard_check() or pmd_discard_decide() of the same names.
 */
struct cpath_call {
	uint64_t table;
	int64_t nr_entries;
	int64_t idx;
	int64_t folio_nr;
	int64_t vma_nr;
	int64_t nr;
	int64_t ref_count;
	int64_t map_count;
	uint64_t folio_pfn;
	uint64_t pteval;
	uint64_t pmd;
	uint32_t folio_flags;
	uint32_t ttu_flags;
	int32_t kernel;
	int32_t op;
	int32_t folio_dirty;
	int32_t droppable;
};

/**
 * cpath_replay() - make @n recorded calls again, in order, without leaving C.
 *
 * For foliodiff bench-c only: it measures the unmap work of the C code
 * without the ctypes crossing of each call.  The caller restores the tables
 * to their state before the recorded calls first.
 *
 * Return: a checksum of what the calls returned (nr, pteval, actions), to be
 * compared with the engine's run.
 */
int64_t cpath_replay(const struct cpath_call *calls, int64_t n)
{
	struct ttu_clear_out clear_out;
	struct ttu_decide_out decide_out;
	struct pmd_discard_out pmd_out;
	uint64_t sum = 0;
	int64_t i;

	for (i = 0; i < n; i++) {
		const struct cpath_call *c = &calls[i];
		uint64_t *table = (uint64_t *)(uintptr_t)c->table;

		switch (c->op) {
		case CPATH_CALL_CLEAR:
			sum += (uint64_t)ttu_clear(table, c->nr_entries, c->idx, c->folio_pfn,
						   c->folio_nr, c->folio_flags, c->vma_nr,
						   c->ttu_flags, c->kernel, &clear_out);
			sum += clear_out.pteval;
			break;
		case CPATH_CALL_DECIDE:
			sum += (uint64_t)ttu_decide(table, c->nr_entries, c->idx, c->nr, c->pteval,
						    c->ref_count, c->map_count, c->folio_dirty,
						    c->droppable, c->kernel, &decide_out);
			break;
		case CPATH_CALL_PMD_CHECK:
			sum += (uint64_t)pmd_discard_check(c->pmd, c->folio_dirty, c->droppable,
							   c->kernel, &pmd_out);
			break;
		case CPATH_CALL_PMD_DECIDE:
			sum += (uint64_t)pmd_discard_decide(c->pmd, c->ref_count, c->map_count,
							    c->folio_dirty, c->droppable, c->kernel,
							    &pmd_out);
			break;
		}
	}
	return (int64_t)sum;
}
