/*
 * foliodiff reproducer runtime.  engine/repro/reproducer.py inserts the program's
 * configuration at CONFIG and its operations at OPS; the result is one C99
 * file built with `gcc -static -O2` against libc and the Linux uapi headers.
 *
 * It runs as root on the kernel under test.  It sets the THP policy, runs the
 * program's operations in program order - in as many processes as the
 * program has mms, handing a token from process to process through pipes -
 * takes the kernel's counters tightly around every operation, and at the end
 * prints exactly one line:
 *
 *     FOLIODIFF {"observables": {...}, "kernel": "...", "thp": "...", "deltas": {...}}
 *
 * or, when a syscall fails,
 *
 *     FOLIODIFF {"error": "...", "op": i}
 *
 * and exits nonzero (2 when the kernel lacks a feature the program needs).
 * A per-size mTHP stat file the kernel does not have (none before the
 * per-order stats, v6.10/v6.11) is left out of the observables; "thp" says
 * whether the THP policy went through the per-size knobs (mTHP, v6.8+) or the
 * top-level knob alone.
 * Program addresses are relocated by A(): the layout inside 1 GiB is kept, so
 * PMD and page-table boundaries are where the program put them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/io_uring.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08		/* v6.11, 9651fcedf7b9 */
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#endif

#define PAGE_SIZE 4096UL
#define NMM_MAX 16
#define TOKEN_ABORT (-1)
#define THP_DIR "/sys/kernel/mm/transparent_hugepage"

/*@CONFIG@*/

#define A(x) ((uint64_t)(x) - BASE + TARGET)	/* program address -> real address */
#define P(x) ((uint64_t)(x) - TARGET + BASE)	/* real address -> program address */

struct shared {
	pid_t pid[NMM_MAX];		/* the process of each mm */
	int error_op;			/* op of the first failure */
	int error_code;			/* exit status: 1 failure, 2 unsupported */
	char error[512];
	char unsupported[64];
	int32_t status[NOPS_ALLOC];	/* read/write results: 0 or -EFAULT; madvise: 0 or -errno */
	uint32_t values[NVALUES_ALLOC];	/* the values read ops read */
	long long delta[NOPS_ALLOC][NCOUNTERS];
};

static struct shared *sh;
static int self_mm;			/* model mm id of this process */
static int last_done = -2;		/* last op this process ran */
static int go[NMM_MAX][2];		/* token pipe of each process */
static uint64_t dummy_page;		/* an untouched page: MADV_PAGEOUT on it is lru_add_drain() */
static int counter_present[NCOUNTERS];	/* the kernel has this counter (probe_counters()) */
static int thp_per_size;		/* the THP policy uses hugepages-<size>/enabled (mTHP) */
static const char *khugepaged_state = "none";

/* ---- errors ----------------------------------------------------------- */

static void finish(int code);

static void json_escape(char *dst, size_t cap, const char *src)
{
	size_t n = 0;

	for (; *src && n + 7 < cap; src++) {
		unsigned char c = (unsigned char)*src;

		if (c == '"' || c == '\\') {
			dst[n++] = '\\';
			dst[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
		} else {
			dst[n++] = (char)c;
		}
	}
	dst[n] = 0;
}

static void put_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

static void send_token(int mm, int token)
{
	int32_t t = token;

	put_all(go[mm][1], (const char *)&t, sizeof(t));
}

/*
 * fail(): the operation cannot go on.  The first failure is recorded in the
 * shared page; process 0 prints it, any other process hands it to process 0.
 */
static void __attribute__((noreturn, format(printf, 3, 4)))
fail_code(int code, int op, const char *fmt, ...)
{
	va_list ap;

	if (sh && !sh->error[0]) {
		va_start(ap, fmt);
		vsnprintf(sh->error, sizeof(sh->error), fmt, ap);
		va_end(ap);
		sh->error_op = op;
		sh->error_code = code;
	}
	if (self_mm != 0) {
		send_token(0, TOKEN_ABORT);
		_exit(1);
	}
	finish(code);
	_exit(1);
}

#define fail(op, ...) fail_code(1, op, __VA_ARGS__)
#define fail_errno(op, what) fail(op, "%s: %s (errno %d)", what, strerror(errno), errno)

static void __attribute__((noreturn)) unsupported(int op, const char *feature, const char *why)
{
	if (sh && !sh->unsupported[0])
		snprintf(sh->unsupported, sizeof(sh->unsupported), "%s", feature);
	fail_code(2, op, "unsupported by this kernel: %s (%s)", feature, why);
}

/* ---- small file helpers ------------------------------------------------ */

static ssize_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;

	if (fd < 0)
		return -1;
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	return (ssize_t)len;
}

static int write_file(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, value, strlen(value));
	close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -1;
}

/* ---- counters ----------------------------------------------------------- */

static void mthp_path(char *path, size_t cap, int c)
{
	snprintf(path, cap, THP_DIR "/hugepages-%s/stats/%s", mthp_files[c][0], mthp_files[c][1]);
}

/*
 * Which counters this kernel has.  Every /proc/vmstat counter is required (they
 * predate everything modelled); a per-size mTHP stat file is optional: absent,
 * its key is not printed, so that compare() sees it absent here and holds
 * the model to predicting it absent too.
 */
static void probe_counters(void)
{
	char path[256], buf[64];
	int c;

	for (c = 0; c < NVMSTAT; c++)
		counter_present[c] = 1;
	for (c = 0; c < NMTHP; c++) {
		mthp_path(path, sizeof(path), c);
		counter_present[NVMSTAT + c] = read_file(path, buf, sizeof(buf)) >= 0;
	}
}

static void read_counters(long long *out, int op)
{
	static char buf[65536];
	char path[256];
	int c;

	if (read_file("/proc/vmstat", buf, sizeof(buf)) < 0)
		fail_errno(op, "read /proc/vmstat");
	for (c = 0; c < NVMSTAT; c++) {
		size_t len = strlen(vmstat_names[c]);
		const char *p = buf;
		int found = 0;

		while (p && *p) {
			if (!strncmp(p, vmstat_names[c], len) && p[len] == ' ') {
				out[c] = atoll(p + len + 1);
				found = 1;
				break;
			}
			p = strchr(p, '\n');
			if (p)
				p++;
		}
		if (!found)
			unsupported(op, vmstat_names[c], "no such /proc/vmstat counter");
	}
	for (c = 0; c < NMTHP; c++) {
		out[NVMSTAT + c] = 0;
		if (!counter_present[NVMSTAT + c])
			continue;
		mthp_path(path, sizeof(path), c);
		if (read_file(path, buf, sizeof(buf)) < 0)
			fail_errno(op, path);	/* it was there at the start */
		out[NVMSTAT + c] = atoll(buf);
	}
}

/* ---- the THP policy ----------------------------------------------------- */

#define MAX_SAVED 40
static struct { char path[160]; char value[32]; } saved[MAX_SAVED];
static int nsaved;

/* The selected word of a sysfs choice file: "always [madvise] never" -> "madvise". */
static int selected(const char *path, char *out, size_t cap)
{
	char buf[256];
	char *l, *r, *word = buf;
	size_t n;

	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	l = strchr(buf, '[');
	r = l ? strchr(l, ']') : NULL;
	if (l && r) {
		*r = 0;
		word = l + 1;
	} else {
		buf[strcspn(buf, "\n")] = 0;	/* a plain number */
	}
	n = strlen(word);
	if (n >= cap)
		return -1;
	memcpy(out, word, n + 1);
	return 0;
}

static void set_knob(const char *path, const char *value)
{
	if (nsaved >= MAX_SAVED)
		fail(-1, "too many sysfs knobs");
	snprintf(saved[nsaved].path, sizeof(saved[nsaved].path), "%s", path);
	if (selected(path, saved[nsaved].value, sizeof(saved[nsaved].value)) < 0)
		unsupported(-1, "THP sysfs", path);
	nsaved++;
	if (write_file(path, value) < 0)
		fail(-1, "cannot write %s to %s: %s", value, path, strerror(errno));
}

static void restore_knobs(void)
{
	while (nsaved > 0) {
		nsaved--;
		write_file(saved[nsaved].path, saved[nsaved].value);
	}
}

/*
 * The THP policy.  With mTHP (v6.8+, hugepages-<size>/enabled) the top-level
 * knob is madvise and each size gets its setting; without (deb-6.1) the
 * top-level knob gets the 2 MiB setting (THP_TOP_LEVEL) and no region can
 * get a 64 KiB folio: an order-4 region faults small folios, which is what
 * the models without mTHP do.  The regions' MADV_HUGEPAGE/NOHUGEPAGE are the
 * same either way.
 */
static void set_thp_policy(void)
{
	char path[512], mode[32];
	struct dirent *de;
	DIR *d;
	int i, sizes = 0;

	d = opendir(THP_DIR);
	if (!d)
		unsupported(-1, "THP sysfs", THP_DIR);
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "hugepages-", 10))
			sizes++;
	closedir(d);
	thp_per_size = sizes > 0;
	for (i = 0; thp_per_size && i < NSIZES; i++) {
		snprintf(path, sizeof(path), THP_DIR "/hugepages-%s/enabled", thp_sizes[i][0]);
		if (access(path, W_OK))
			unsupported(-1, "mTHP size", path);
	}
	if (selected(THP_DIR "/khugepaged/max_ptes_none", mode, sizeof(mode)) < 0 || strcmp(mode, "511"))
		unsupported(-1, "khugepaged/max_ptes_none=511",
			    "thp_underused() and the model assume the default");
	set_knob(THP_DIR "/enabled", thp_per_size ? "madvise" : THP_TOP_LEVEL);
	/* the default: MADV_HUGEPAGE regions compact directly for a THP, others do not */
	set_knob(THP_DIR "/defrag", "madvise");
	/* khugepaged must not collapse anything while the program runs */
	set_knob(THP_DIR "/khugepaged/scan_sleep_millisecs", "86400000");
	if (!thp_per_size)
		return;
	d = opendir(THP_DIR);
	if (!d)
		unsupported(-1, "THP sysfs", THP_DIR);
	while ((de = readdir(d))) {
		const char *want = "never";

		if (strncmp(de->d_name, "hugepages-", 10))
			continue;
		snprintf(path, sizeof(path), THP_DIR "/%s/enabled", de->d_name);
		if (access(path, W_OK))
			continue;	/* hugepages-8kB has no enabled file */
		for (i = 0; i < NSIZES; i++)
			if (!strcmp(de->d_name + 10, thp_sizes[i][0]))
				want = thp_sizes[i][1];
		set_knob(path, want);
	}
	closedir(d);
}

/*
 * Put this process's mm on khugepaged's list now, not at the program's first
 * THP fault: when the list is empty khugepaged waits for an mm to be added
 * and scans at once (khugepaged_wait_work()), and a pass during the program
 * collapsed a split THP of h8 on 6.12.  A THP fault in a scratch range,
 * unmapped at once, adds the mm for its lifetime (__khugepaged_enter() sets
 * MMF_VM_HUGEPAGE).  Nothing to do where PMD-sized THPs are off: khugepaged
 * is not running then.
 */
static void register_with_khugepaged(void)
{
	size_t len = 4UL << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *thp;

	if (p == MAP_FAILED)
		fail_errno(-1, "mmap the khugepaged scratch range");
	thp = (char *)(((uintptr_t)p + (2UL << 20) - 1) & ~((uintptr_t)(2UL << 20) - 1));
	madvise(thp, 2UL << 20, MADV_HUGEPAGE);
	*(volatile char *)thp = 1;
	munmap(p, len);
}

/*
 * khugepaged runs one pass whenever scan_sleep_millisecs is written (the
 * store resets its sleep) and whenever its thread is started (enabling a THP
 * size after none was), and a pass starts with lru_add_drain_all() and may
 * collapse a VM_HUGEPAGE range: a forked child's 512 small copies of a THP
 * were seen collapsed on 6.12 when the pass ran while process 0 waited for
 * the child.  So wait for it to go back to sleep ('S', no CPU time for 30 ms)
 * before the program starts; after that nothing here wakes it.  Return: its
 * state for the output: "idle", "busy" (still running after 3 s) or "none".
 */
static const char *quiesce_khugepaged(void)
{
	char path[300], buf[512];
	long long last = -1;
	pid_t pid = 0;
	struct dirent *de;
	DIR *d = opendir("/proc");
	int i, stable = 0;

	if (!d)
		return "none";
	while (!pid && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		if (read_file(path, buf, sizeof(buf)) > 0 && !strcmp(buf, "khugepaged\n"))
			pid = (pid_t)atoi(de->d_name);
	}
	closedir(d);
	if (!pid)
		return "none";
	for (i = 0; i < 300; i++) {
		const char *paren;
		long long ran;

		usleep(10000);
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		if (read_file(path, buf, sizeof(buf)) < 0 || !(paren = strrchr(buf, ')')))
			return "none";		/* the thread was stopped */
		snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
		if (paren[2] != 'S' || read_file(path, buf, sizeof(buf)) < 0) {
			stable = 0;
			continue;
		}
		ran = atoll(buf);		/* ns on the CPU */
		stable = ran == last ? stable + 1 : 0;
		last = ran;
		if (stable >= 3)
			return "idle";
	}
	return "busy";
}

/* ---- the program's regions must be free ------------------------------ */

static void check_layout(void)
{
	static char buf[1 << 16];
	const char *p = buf;

	if (read_file("/proc/self/maps", buf, sizeof(buf)) < 0)
		fail_errno(-1, "read /proc/self/maps");
	while (p && *p) {
		unsigned long long s, e;

		if (sscanf(p, "%llx-%llx", &s, &e) == 2 && s < TARGET + SPAN && e > TARGET)
			fail(-1, "the reproducer's own mapping %llx-%llx lies in the program's relocated "
			     "regions %llx-%llx", s, e, (unsigned long long)TARGET,
			     (unsigned long long)(TARGET + SPAN));
		p = strchr(p, '\n');
		if (p)
			p++;
	}
}

/* ---- CPU loads and stores ---------------------------------------------- */

static sigjmp_buf segv_env;
static volatile sig_atomic_t segv_armed;

static void on_segv(int sig)
{
	if (segv_armed) {
		segv_armed = 0;
		siglongjmp(segv_env, 1);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A load or store of the 32-bit value at the start of each page; -EFAULT on SIGSEGV. */
static int cpu_access(uint64_t addr, int pages, int write, uint32_t value, uint32_t *out)
{
	int i;

	if (sigsetjmp(segv_env, 1))
		return -EFAULT;
	segv_armed = 1;
	for (i = 0; i < pages; i++) {
		volatile uint32_t *p = (volatile uint32_t *)(uintptr_t)(addr + (uint64_t)i * PAGE_SIZE);

		if (write)
			*p = value;
		else
			out[i] = *p;
	}
	segv_armed = 0;
	return 0;
}

static __attribute__((unused)) void do_read(int op, uint64_t addr, int pages, int voff)
{
	sh->status[op] = cpu_access(addr, pages, 0, 0, &sh->values[voff]);
}

static __attribute__((unused)) void do_write(int op, uint64_t addr, int pages, uint32_t value)
{
	sh->status[op] = cpu_access(addr, pages, 1, value, NULL);
}

/* ---- address-space syscalls --------------------------------------------- */

static __attribute__((unused)) void do_mmap(int op, uint64_t addr, int pages, int droppable, int locked, int advice,
		    const char *advice_name)
{
	size_t len = (size_t)pages * PAGE_SIZE;
	int flags = MAP_FIXED | MAP_ANONYMOUS | (droppable ? MAP_DROPPABLE : MAP_PRIVATE);
	void *p = mmap((void *)(uintptr_t)addr, len, PROT_READ | PROT_WRITE, flags, -1, 0);

	if (p == MAP_FAILED) {
		if (droppable && (errno == EINVAL || errno == EOPNOTSUPP)) {
			char why[128];

			snprintf(why, sizeof(why), "mmap(MAP_DROPPABLE): %s; the flag came in v6.11, 9651fcedf7b9",
				 strerror(errno));
			unsupported(op, "MAP_DROPPABLE", why);
		}
		fail_errno(op, "mmap");
	}
	/* before any fault: the madvise picks the region's folio size */
	if (advice && madvise(p, len, advice))
		fail(op, "madvise(%s): %s", advice_name, strerror(errno));
	/* MAP_LOCKED would populate before the madvise; mlock() populates after it */
	if (locked && mlock(p, len))
		fail_errno(op, "mlock");
}

static __attribute__((unused)) void do_munmap(int op, uint64_t addr, int pages)
{
	if (munmap((void *)(uintptr_t)addr, (size_t)pages * PAGE_SIZE))
		fail_errno(op, "munmap");
}

static __attribute__((unused)) void do_mremap(int op, uint64_t addr, int pages, uint64_t new_addr)
{
	size_t len = (size_t)pages * PAGE_SIZE;
	long r = syscall(SYS_mremap, addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new_addr);

	if (r == -1 || (uint64_t)r != new_addr)
		fail_errno(op, "mremap");
}

static __attribute__((unused)) void do_mprotect(int op, uint64_t addr, int pages, int prot)
{
	if (mprotect((void *)(uintptr_t)addr, (size_t)pages * PAGE_SIZE, prot))
		fail_errno(op, "mprotect");
}

/* The result is observed: 0, or -errno (-EINVAL for a VM_LOCKED VMA, can_madv_lru_vma()). */
static __attribute__((unused)) void do_madvise(int op, uint64_t addr, int pages, int advice)
{
	sh->status[op] = madvise((void *)(uintptr_t)addr, (size_t)pages * PAGE_SIZE, advice) ? -errno : 0;
}

/* lru_add_drain(): madvise_pageout() drains this CPU's folio batches before
 * walking the range; the range is one page nothing ever touched. */
static __attribute__((unused)) void drain_lru(int op)
{
	if (madvise((void *)(uintptr_t)dummy_page, PAGE_SIZE, MADV_PAGEOUT))
		fail_errno(op, "madvise(MADV_PAGEOUT) of the drain page");
}

/* deferred_split_scan(): drop_slab() runs every shrinker, the deferred split one included. */
static __attribute__((unused)) void drop_slab(int op)
{
	if (write_file("/proc/sys/vm/drop_caches", "2"))
		fail_errno(op, "write 2 to /proc/sys/vm/drop_caches");
}

/* ---- pins: io_uring registered buffers --------------------------------- */

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static struct ring rings[NRINGS_ALLOC];
/* The pipe a DMA write reads its value from. A pipe with data in it is read
 * inline, so the request (and, from 6.13, its reference on the registered
 * buffer) is freed before io_uring_enter() returns; a memfd read may be punted
 * to io-wq, whose request is freed later by task work, and then the buffer can
 * stay pinned after IORING_UNREGISTER_BUFFERS returns. */
static int dma_pipe[2] = { -1, -1 };

static void ring_init(struct ring *r)
{
	struct io_uring_params p;
	size_t sq_sz, cq_sz;
	char *sq, *cq;

	memset(&p, 0, sizeof(p));
	r->fd = (int)syscall(__NR_io_uring_setup, 8, &p);
	if (r->fd < 0) {
		if (errno == ENOSYS || errno == EPERM)
			unsupported(-1, "io_uring", strerror(errno));
		fail_errno(-1, "io_uring_setup");
	}
	sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (cq_sz > sq_sz)
			sq_sz = cq_sz;
		cq_sz = sq_sz;
	}
	sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		fail_errno(-1, "mmap io_uring SQ ring");
	cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		cq = mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			  IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			fail_errno(-1, "mmap io_uring CQ ring");
	}
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		fail_errno(-1, "mmap io_uring SQEs");
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
}

/* pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM) of the range, held until unregistered. */
static __attribute__((unused)) void pin_io_uring(int op, int ring, uint64_t addr, int pages)
{
	struct iovec iov = { (void *)(uintptr_t)addr, (size_t)pages * PAGE_SIZE };

	if (syscall(__NR_io_uring_register, rings[ring].fd, IORING_REGISTER_BUFFERS, &iov, 1))
		fail_errno(op, "io_uring_register(IORING_REGISTER_BUFFERS)");
}

/* Unpins synchronously (closing the ring would free the buffers later, from a worker). */
static __attribute__((unused)) void unpin_io_uring(int op, int ring)
{
	if (syscall(__NR_io_uring_register, rings[ring].fd, IORING_UNREGISTER_BUFFERS, NULL, 0))
		fail_errno(op, "io_uring_register(IORING_UNREGISTER_BUFFERS)");
}

/* The kernel writes @value into each page through the pin, not through the
 * user PTE: IORING_OP_READ_FIXED of 4 bytes from a pipe into the registered buffer. */
static __attribute__((unused)) void dma_write(int op, int ring, uint64_t addr, int pages, uint32_t value)
{
	struct ring *r = &rings[ring];
	int i;

	for (i = 0; i < pages; i++) {
		unsigned tail = *r->sq_tail, head;
		struct io_uring_sqe *sqe = &r->sqes[tail & *r->sq_mask];
		struct io_uring_cqe *cqe;
		int res;

		if (write(dma_pipe[1], &value, sizeof(value)) != (ssize_t)sizeof(value))
			fail_errno(op, "write to the DMA pipe");
		memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = IORING_OP_READ_FIXED;
		sqe->fd = dma_pipe[0];
		sqe->off = (uint64_t)-1;
		sqe->addr = addr + (uint64_t)i * PAGE_SIZE;
		sqe->len = sizeof(value);
		sqe->buf_index = 0;
		sqe->user_data = (uint64_t)i;
		r->sq_array[tail & *r->sq_mask] = tail & *r->sq_mask;
		__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
		if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) != 1)
			fail_errno(op, "io_uring_enter(READ_FIXED)");
		head = *r->cq_head;
		if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
			fail(op, "io_uring: no completion for READ_FIXED of page %d", i);
		cqe = &r->cqes[head & *r->cq_mask];
		res = cqe->res;
		__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
		if (res != (int)sizeof(value))
			fail(op, "io_uring READ_FIXED into page %d: res %d (%s)", i, res,
			     res < 0 ? strerror(-res) : "short");
	}
}

/* ---- pins: vmsplice into a pipe ----------------------------------------- */

static int pin_pipe[NPINS_ALLOC][2];

/* get_user_pages_fast() without FOLL_WRITE: one folio reference per page,
 * held by the pipe's buffers until the pipe is closed. */
static __attribute__((unused)) void pin_vmsplice(int op, int pin, uint64_t addr, int pages)
{
	size_t want = (size_t)pages * PAGE_SIZE, size = 16 * PAGE_SIZE;
	struct iovec iov = { (void *)(uintptr_t)addr, want };

	if (pipe(pin_pipe[pin]))
		fail_errno(op, "pipe");
	while (size < want)
		size <<= 1;
	if (fcntl(pin_pipe[pin][1], F_SETPIPE_SZ, (int)size) < 0)
		fail_errno(op, "fcntl(F_SETPIPE_SZ)");
	while (iov.iov_len) {
		ssize_t n = vmsplice(pin_pipe[pin][1], &iov, 1, SPLICE_F_NONBLOCK);

		if (n <= 0)
			fail_errno(op, "vmsplice");
		iov.iov_base = (char *)iov.iov_base + n;
		iov.iov_len -= (size_t)n;
	}
}

static __attribute__((unused)) void unpin_vmsplice(int op, int pin)
{
	if (close(pin_pipe[pin][0]) || close(pin_pipe[pin][1]))
		fail_errno(op, "close the vmsplice pipe");
	pin_pipe[pin][0] = pin_pipe[pin][1] = -1;
}

/* ---- fork and the token ------------------------------------------------- */

static void run_ops(int first);
static void child_end(void) __attribute__((noreturn));

static __attribute__((unused)) void do_fork(int op, int child)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	int i;

	if (pid < 0)
		fail_errno(op, "fork");
	if (pid) {
		sh->pid[child] = pid;
		return;
	}
	self_mm = child;
	last_done = -2;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	/* the parent's vmsplice pipes are its own references, not this process's */
	for (i = 0; i < NPINS_ALLOC; i++) {
		if (pin_pipe[i][0] >= 0) {
			close(pin_pipe[i][0]);
			close(pin_pipe[i][1]);
			pin_pipe[i][0] = pin_pipe[i][1] = -1;
		}
	}
	run_ops(op + 1);
	child_end();
}

static int reap_unexpected(void)
{
	int status;
	pid_t pid = waitpid(-1, &status, WNOHANG);

	return pid > 0 ? (int)pid : 0;
}

/* Wait for the token that lets this process run op @want (process 0: or an abort). */
static void wait_token(int want)
{
	int waited = 0;

	for (;;) {
		struct pollfd pfd = { go[self_mm][0], POLLIN, 0 };
		int32_t t;
		int n = poll(&pfd, 1, 1000);

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0) {
			if (self_mm == 0) {
				int dead = reap_unexpected();

				if (dead)
					fail(want, "process %d exited while op %d was due", dead, want);
			}
			if (++waited > TIMEOUT_S)
				fail(want, "timed out after %d s waiting for op %d", TIMEOUT_S, want);
			continue;
		}
		if (read(go[self_mm][0], &t, sizeof(t)) != (ssize_t)sizeof(t))
			fail_errno(want, "read token");
		if (t == TOKEN_ABORT && self_mm == 0)
			finish(sh->error_code ? sh->error_code : 1);
		if (t != want)
			fail(want, "token %d arrived while waiting for op %d", t, want);
		return;
	}
}

/*@OPS@*/

static void run_ops(int first)
{
	long long before[NCOUNTERS], after[NCOUNTERS];
	int i, c;

	for (i = first; i < NOPS; i++) {
		if (op_owner[i] != self_mm)
			continue;
		if (last_done != i - 1)
			wait_token(i);
		read_counters(before, i);
		op_fn[i]();
		read_counters(after, i);
		for (c = 0; c < NCOUNTERS; c++)
			sh->delta[i][c] = after[c] - before[c];
		last_done = i;
		if (i + 1 < NOPS) {
			if (op_owner[i + 1] != self_mm)
				send_token(op_owner[i + 1], i + 1);
		} else if (self_mm != 0) {
			send_token(0, NOPS);
		}
	}
}

static void child_end(void)
{
	for (;;)
		pause();	/* process 0 kills it after reading its smaps */
}

/* ---- the observation ---------------------------------------------------- */

static char *out;
static size_t out_len, out_cap;

static void __attribute__((format(printf, 1, 2))) emit(const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < out_cap - out_len) {
			out_len += (size_t)n;
			return;
		}
		out = mremap(out, out_cap, out_cap * 2, MREMAP_MAYMOVE);
		if (out == MAP_FAILED)
			_exit(3);
		out_cap *= 2;
	}
}

static char *slurp(const char *path, size_t *len)
{
	size_t cap = 1 << 20;
	char *buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*len = 0;
	if (buf == MAP_FAILED || fd < 0)
		return NULL;
	for (;;) {
		ssize_t n;

		if (*len + 4096 >= cap) {
			buf = mremap(buf, cap, cap * 2, MREMAP_MAYMOVE);
			if (buf == MAP_FAILED)
				return NULL;
			cap *= 2;
		}
		n = read(fd, buf + *len, cap - 1 - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		*len += (size_t)n;
	}
	close(fd);
	buf[*len] = 0;
	return buf;
}

struct vma_stat {
	unsigned long long start, end;
	int writable;
	long long kb[3];		/* Rss, LazyFree, AnonHugePages */
};

#define MAX_VMAS 8192
static struct vma_stat vmas[MAX_VMAS];

static void observe_mm(int mm, pid_t pid)
{
	static const char *const fields[3] = { "Rss:", "LazyFree:", "AnonHugePages:" };
	static const char *const names[3] = { "Rss_kB", "LazyFree_kB", "AnonHugePages_kB" };
	char path[64];
	size_t len;
	char *text, *line;
	int n = 0, cur = -1, i, f, first;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	text = slurp(path, &len);
	if (!text)
		fail_errno(-1, "read smaps");
	for (line = text; line && *line; ) {
		char *next = strchr(line, '\n');
		unsigned long long s, e;
		char perms[8];

		if (next)
			*next++ = 0;
		if (sscanf(line, "%llx-%llx %7s", &s, &e, perms) == 3 && strchr(line, '-') < strchr(line, ' ')) {
			cur = -1;
			if (s >= TARGET && e <= TARGET + SPAN) {
				if (n == MAX_VMAS)
					fail(-1, "more than %d VMAs", MAX_VMAS);
				cur = n++;
				memset(&vmas[cur], 0, sizeof(vmas[cur]));
				vmas[cur].start = s;
				vmas[cur].end = e;
				vmas[cur].writable = perms[1] == 'w';
			}
		} else if (cur >= 0) {
			for (f = 0; f < 3; f++)
				if (!strncmp(line, fields[f], strlen(fields[f])))
					vmas[cur].kb[f] = atoll(line + strlen(fields[f]));
		}
		line = next;
	}
	/* runs: contiguous VMAs with one protection */
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	{
		int pm = open(path, O_RDONLY | O_CLOEXEC);
		int r0;

		if (pm < 0)
			fail_errno(-1, "open pagemap");
		emit(", \"mm%d.maps\": [", mm);
		first = 1;
		for (r0 = 0; r0 < n; ) {
			int r1 = r0 + 1;

			while (r1 < n && vmas[r1].start == vmas[r1 - 1].end && vmas[r1].writable == vmas[r0].writable)
				r1++;
			emit("%s\"0x%llx-0x%llx:%s\"", first ? "" : ", ", (unsigned long long)P(vmas[r0].start),
			     (unsigned long long)P(vmas[r1 - 1].end), vmas[r0].writable ? "rw" : "r");
			first = 0;
			r0 = r1;
		}
		emit("]");
		for (r0 = 0; r0 < n; ) {
			int r1 = r0 + 1;
			long long kb[3] = { 0, 0, 0 };
			unsigned long long a, start = vmas[r0].start, end;
			int bit = -1;
			long run = 0;

			while (r1 < n && vmas[r1].start == vmas[r1 - 1].end && vmas[r1].writable == vmas[r0].writable)
				r1++;
			end = vmas[r1 - 1].end;
			for (i = r0; i < r1; i++)
				for (f = 0; f < 3; f++)
					kb[f] += vmas[i].kb[f];
			for (f = 0; f < 3; f++)
				emit(", \"mm%d.smaps[0x%llx].%s\": %lld", mm, (unsigned long long)P(start), names[f], kb[f]);
			emit(", \"mm%d.present[0x%llx]\": \"", mm, (unsigned long long)P(start));
			first = 1;
			for (a = start; a < end; a += PAGE_SIZE) {
				uint64_t ent;
				int b;

				if (pread(pm, &ent, sizeof(ent), (off_t)(a / PAGE_SIZE * sizeof(ent))) != (ssize_t)sizeof(ent))
					fail_errno(-1, "read pagemap");
				b = (int)(ent >> 63);
				if (b != bit && run) {
					emit("%s%dx%ld", first ? "" : ",", bit, run);
					first = 0;
					run = 0;
				}
				bit = b;
				run++;
			}
			if (run)
				emit("%s%dx%ld", first ? "" : ",", bit, run);
			emit("\"");
			r0 = r1;
		}
		close(pm);
	}
}

static void observe_and_print(void)
{
	long long total[NCOUNTERS];
	struct utsname u;
	char esc[256];
	int i, c, k, first;

	out_cap = 1 << 20;
	out = mmap(NULL, out_cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (out == MAP_FAILED)
		fail_errno(-1, "mmap output buffer");
	memset(total, 0, sizeof(total));
	for (i = 0; i < NOPS; i++)
		for (c = 0; c < NCOUNTERS; c++)
			total[c] += sh->delta[i][c];
	emit("FOLIODIFF {\"observables\": {");
	first = 1;
	for (c = 0; c < NCOUNTERS; c++) {
		if (!counter_present[c])
			continue;
		emit("%s\"%s\": %lld", first ? "" : ", ", counter_keys[c], total[c]);
		first = 0;
	}
	for (k = 0; k < NMMS; k++)
		observe_mm(mm_ids[k], sh->pid[mm_ids[k]]);
	for (i = 0; i < NOPS; i++) {
		if (op_values[i] == -1)
			continue;
		if (op_values[i] == -2 || sh->status[i]) {	/* a status, or a faulting read */
			emit(", \"result[%d]\": %d", i, (int)sh->status[i]);
			continue;
		}
		emit(", \"result[%d]\": [", i);
		for (k = 0; k < op_pages[i]; k++)
			emit("%s%u", k ? ", " : "", sh->values[op_values[i] + k]);
		emit("]");
	}
	for (i = 0; i < NOPS; i++) {
		if (!op_deltas_observed[i])
			continue;
		for (k = 0; k < NPEROP; k++)
			emit(", \"%s.op[%d]\": %lld", counter_keys[per_op_counters[k]], i,
			     sh->delta[i][per_op_counters[k]]);
	}
	uname(&u);
	json_escape(esc, sizeof(esc), u.release);
	emit("}, \"kernel\": \"%s\", \"thp\": \"%s\", \"khugepaged\": \"%s\", \"deltas\": {",
	     esc, thp_per_size ? "per-size" : "top-level", khugepaged_state);
	first = 1;
	for (i = 0; i < NOPS; i++) {
		int any = 0;

		for (c = 0; c < NCOUNTERS; c++) {
			if (!counter_present[c] || !sh->delta[i][c])
				continue;
			if (!any)
				emit("%s\"%d\": {", first ? "" : ", ", i);
			emit("%s\"%s\": %lld", any ? ", " : "", counter_keys[c], sh->delta[i][c]);
			any = 1;
			first = 0;
		}
		if (any)
			emit("}");
	}
	emit("}}\n");
	put_all(1, out, out_len);
}

/* ---- process 0's end --------------------------------------------------- */

static void kill_children(void)
{
	int m;

	for (m = 1; m < NMM_MAX; m++)
		if (sh && sh->pid[m] > 0)
			kill(sh->pid[m], SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

/* Print the error (if any), put the system back, exit. */
static void finish(int code)
{
	if (code) {
		char msg[1200], feat[140];

		json_escape(msg, sizeof(msg), sh ? sh->error : "setup failed");
		if (sh && sh->unsupported[0]) {
			json_escape(feat, sizeof(feat), sh->unsupported);
			dprintf(1, "FOLIODIFF {\"error\": \"%s\", \"unsupported\": \"%s\", \"op\": %d}\n",
				msg, feat, sh->error_op);
		} else {
			dprintf(1, "FOLIODIFF {\"error\": \"%s\", \"op\": %d}\n", msg, sh ? sh->error_op : -1);
		}
	}
	kill_children();
	restore_knobs();
	exit(code);
}

int main(void)
{
	cpu_set_t set;
	int m, i, cpu;
	struct sigaction sa;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		fail_errno(-1, "mmap shared page");
	}
	sh->error_op = -1;
	if (geteuid() != 0)
		unsupported(-1, "root", "the reproducer writes THP sysfs knobs and drop_caches");
	/* one CPU: the model's per-CPU folio batches are checked to be this CPU's */
	cpu = sched_getcpu();
	CPU_ZERO(&set);
	CPU_SET(cpu < 0 ? 0 : cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fail_errno(-1, "sched_setaffinity");
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_segv;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	for (m = 0; m < NMM_MAX; m++)
		if (pipe(go[m]))
			fail_errno(-1, "pipe");
	for (i = 0; i < NPINS_ALLOC; i++)
		pin_pipe[i][0] = pin_pipe[i][1] = -1;
	for (i = 0; i < NRINGS; i++)
		ring_init(&rings[i]);
	if (NRINGS) {
		if (pipe(dma_pipe))
			fail_errno(-1, "pipe for DMA writes");
	}
	{
		void *p = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			fail_errno(-1, "mmap the drain page");
		dummy_page = (uint64_t)(uintptr_t)p;
	}
	sh->pid[0] = getpid();
	set_thp_policy();
	register_with_khugepaged();
	khugepaged_state = quiesce_khugepaged();
	probe_counters();
	check_layout();
	self_mm = 0;
	last_done = -1;
	run_ops(0);
	if (last_done != NOPS - 1)
		wait_token(NOPS);
	observe_and_print();
	finish(0);
	return 0;
}
