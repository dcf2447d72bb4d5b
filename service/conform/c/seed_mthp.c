/*
 * seed_mthp.c - the seed series' 3/4 benchmark on a real kernel.
 *
 * "mm: Support batched unmap for lazyfree large folios during reclamation":
 * map MIB MiB of anonymous memory as 64 KiB mTHPs (hugepages-64kB=always,
 * every other size never), write it, MADV_FREE it, and time MADV_PAGEOUT
 * of the whole range, reading the 64 KiB split_deferred counter and
 * pglazyfreed around the call. Before the series every lazyfree mTHP is
 * unmapped one PTE at a time and queued for deferred split (+1 each);
 * after it, none is. REPEAT runs, one "FOLIODIFF {json}" line each.
 *
 * Needs MIB and REPEAT defined (service/conform/seed.py does).
 */
#define MTHP_KB 64

int main(void)
{
	size_t len = (size_t)MIB << 20;
	int run;

	if (!mthp_size_exists(MTHP_KB)) {
		printf("FOLIODIFF {\"bench\": \"mthp\", \"unsupported\": "
		       "\"no " THP_SYSFS "/hugepages-64kB: this kernel has no mTHP\"}\n");
		return 0;
	}
	if (thp_policy("always", MTHP_KB, "always"))
		return bench_error("mthp", "setting the THP policy");
	for (run = 0; run < REPEAT; run++) {
		long alloc0, alloc1, sd0, sd1, lf0, lf1, rss_free, lazy_free, rss_after;
		double wall_ms, cpu_ms;
		char *p = map_aligned(len, MTHP_KB << 10);

		if (!p)
			return bench_error("mthp", "mmap");
		alloc0 = mthp_stat(MTHP_KB, "anon_fault_alloc");
		memset(p, 1, len);
		alloc1 = mthp_stat(MTHP_KB, "anon_fault_alloc");
		if (madvise(p, len, MADV_FREE))
			return bench_error("mthp", "MADV_FREE");
		rss_free = smaps_kb(p, "Rss:");
		lazy_free = smaps_kb(p, "LazyFree:");
		sd0 = mthp_stat(MTHP_KB, "split_deferred");
		lf0 = vmstat("pglazyfreed");
		if (pageout_timed(p, len, &wall_ms, &cpu_ms))
			return bench_error("mthp", "MADV_PAGEOUT");
		sd1 = mthp_stat(MTHP_KB, "split_deferred");
		lf1 = vmstat("pglazyfreed");
		rss_after = smaps_kb(p, "Rss:");
		printf("FOLIODIFF {\"bench\": \"mthp\", \"run\": %d, \"mib\": %d, \"folios\": %ld, "
		       "\"rss_kb_before\": %ld, \"lazyfree_kb_before\": %ld, "
		       "\"split_deferred\": %ld, \"pglazyfreed\": %ld, \"rss_kb_after\": %ld, "
		       "\"pageout_ms\": %.3f, \"pageout_cpu_ms\": %.3f}\n",
		       run, MIB, alloc0 < 0 ? -1 : alloc1 - alloc0, rss_free, lazy_free,
		       sd0 < 0 ? -1 : sd1 - sd0, lf0 < 0 ? -1 : lf1 - lf0, rss_after,
		       wall_ms, cpu_ms);
		fflush(stdout);
		munmap(p, len);
	}
	return 0;
}
