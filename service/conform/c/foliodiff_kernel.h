/*
 * foliodiff_kernel.h - what the seed benchmarks read from and write to a real kernel.
 *
 * Included at the top of each benchmark program (service/conform/seed.py
 * pastes it in, since the guest build is one translation unit on stdin).
 * Every reader returns -1 for a counter the kernel does not export, so that
 * an older kernel gives "null" figures instead of wrong ones.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage"

/* The first number in @path, or -1 if it cannot be read. */
static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* The counter @name of /proc/vmstat, or -1. */
static long vmstat(const char *name)
{
	FILE *f = fopen("/proc/vmstat", "r");
	char key[128];
	long v, found = -1;

	if (!f)
		return -1;
	while (fscanf(f, "%127s %ld", key, &v) == 2) {
		if (!strcmp(key, name)) {
			found = v;
			break;
		}
	}
	fclose(f);
	return found;
}

/* The per-size mTHP statistic @stat of hugepages-@kb kB, or -1. */
static long mthp_stat(int kb, const char *stat)
{
	char path[256];

	snprintf(path, sizeof(path), THP_SYSFS "/hugepages-%dkB/stats/%s", kb, stat);
	return read_long(path);
}

static int write_str(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fputs(s, f) >= 0;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

/*
 * Set the THP policy: the top-level "enabled" to @top, hugepages-@kb kB to
 * @policy and every other size that has an "enabled" file to "never"
 * (hugepages-8kB has none). Return: 0, or -1 if a write failed.
 */
static int thp_policy(const char *top, int kb, const char *policy)
{
	DIR *d = opendir(THP_SYSFS);
	struct dirent *e;
	char path[512];
	int size, err = 0;

	if (write_str(THP_SYSFS "/enabled", top))
		err = -1;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (sscanf(e->d_name, "hugepages-%dkB", &size) != 1)
			continue;
		snprintf(path, sizeof(path), THP_SYSFS "/%s/enabled", e->d_name);
		if (access(path, F_OK))
			continue;
		if (write_str(path, size == kb ? policy : "never"))
			err = -1;
	}
	closedir(d);
	return err;
}

/* Whether hugepages-@kb kB can be enabled on this kernel (mTHP sysfs exists). */
static int mthp_size_exists(int kb)
{
	char path[256];

	snprintf(path, sizeof(path), THP_SYSFS "/hugepages-%dkB/enabled", kb);
	return access(path, F_OK) == 0;
}

/* Field @field (e.g. "Rss:") in kB of the mapping that contains @addr, from /proc/self/smaps; -1 if absent. */
static long smaps_kb(const void *addr, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long lo, hi, a = (unsigned long)addr;
	int inside = 0;
	long v = -1;
	size_t n = strlen(field);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			inside = lo <= a && a < hi;
			continue;
		}
		if (inside && !strncmp(line, field, n)) {
			v = strtol(line + n, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

static double ms_of(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* @len bytes of anonymous memory aligned to @align (the rest of the reservation is unmapped). */
static char *map_aligned(size_t len, size_t align)
{
	char *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t start;

	if (raw == MAP_FAILED)
		return NULL;
	start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
	if (start > (uintptr_t)raw)
		munmap(raw, start - (uintptr_t)raw);
	munmap((char *)start + len, (uintptr_t)raw + align - start);
	return (char *)start;
}

/* Print benchmark @bench's error record for the failed call @what (errno says why); return 1 for main. */
static int bench_error(const char *bench, const char *what)
{
	printf("FOLIODIFF {\"bench\": \"%s\", \"error\": \"%s: %s\"}\n", bench, what, strerror(errno));
	return 1;
}

/*
 * madvise(MADV_PAGEOUT) over [@p, @p + @len), timed with CLOCK_MONOTONIC
 * (@wall_ms) and CLOCK_PROCESS_CPUTIME_ID (@cpu_ms, what the changelogs'
 * clock() measures). Return: madvise's result.
 */
static int pageout_timed(char *p, size_t len, double *wall_ms, double *cpu_ms)
{
	double t0 = ms_of(CLOCK_MONOTONIC), c0 = ms_of(CLOCK_PROCESS_CPUTIME_ID);
	int ret = madvise(p, len, MADV_PAGEOUT);

	*cpu_ms = ms_of(CLOCK_PROCESS_CPUTIME_ID) - c0;
	*wall_ms = ms_of(CLOCK_MONOTONIC) - t0;
	return ret;
}
