/*
 * seed_pmd.c - the seed series' 4/4 benchmark on a real kernel.
 *
 * "mm: Avoid splitting pmd for lazyfree pmd-mapped THP in try_to_unmap":
 * map THPS PMD-sized THPs (2 MiB aligned, THP always, hugepages-2048kB
 * always, every other size never), write them, MADV_FREE them, write one
 * byte in each again (redirty), and time MADV_PAGEOUT, reading thp_split_pmd
 * around the call. Before the series each redirtied THP has its PMD split
 * on the way to being found dirty (+1 each); after it, none. Then check
 * that every redirtied byte and its neighbour survived. REPEAT runs, one
 * "FOLIODIFF {json}" line each.
 *
 * Needs THPS and REPEAT defined (service/conform/seed.py does).
 */
#define PMD_SIZE_B (2UL << 20)

int main(void)
{
	size_t len = (size_t)THPS * PMD_SIZE_B;
	int run;

	if (thp_policy("always", 2048, "always"))
		return bench_error("pmd", "setting the THP policy");
	for (run = 0; run < REPEAT; run++) {
		long split0, split1, dsp0, dsp1, lf0, lf1, thp_kb, thp_kb_after, lost = 0;
		double wall_ms, cpu_ms;
		char *p = map_aligned(len, PMD_SIZE_B);
		size_t i;

		if (!p)
			return bench_error("pmd", "mmap");
		madvise(p, len, MADV_HUGEPAGE);
		memset(p, 1, len);
		thp_kb = smaps_kb(p, "AnonHugePages:");
		if (madvise(p, len, MADV_FREE))
			return bench_error("pmd", "MADV_FREE");
		for (i = 0; i < THPS; i++)
			p[i * PMD_SIZE_B] = 2;
		split0 = vmstat("thp_split_pmd");
		dsp0 = vmstat("thp_deferred_split_page");
		lf0 = vmstat("pglazyfreed");
		if (pageout_timed(p, len, &wall_ms, &cpu_ms))
			return bench_error("pmd", "MADV_PAGEOUT");
		split1 = vmstat("thp_split_pmd");
		dsp1 = vmstat("thp_deferred_split_page");
		lf1 = vmstat("pglazyfreed");
		thp_kb_after = smaps_kb(p, "AnonHugePages:");
		for (i = 0; i < THPS; i++)
			lost += p[i * PMD_SIZE_B] != 2 || p[i * PMD_SIZE_B + 4096] != 1;
		printf("FOLIODIFF {\"bench\": \"pmd\", \"run\": %d, \"thps\": %d, \"folios\": %ld, "
		       "\"thp_split_pmd\": %ld, \"thp_deferred_split_page\": %ld, \"pglazyfreed\": %ld, "
		       "\"anon_huge_kb_after\": %ld, \"thps_lost_data\": %ld, "
		       "\"pageout_ms\": %.3f, \"pageout_cpu_ms\": %.3f}\n",
		       run, THPS, thp_kb < 0 ? -1 : thp_kb / 2048, split0 < 0 ? -1 : split1 - split0,
		       dsp0 < 0 ? -1 : dsp1 - dsp0, lf0 < 0 ? -1 : lf1 - lf0, thp_kb_after, lost,
		       wall_ms, cpu_ms);
		fflush(stdout);
		munmap(p, len);
	}
	return 0;
}
