/*
 * forkcow [N]: copy-on-write fork under writers. One writer thread per CPU but one keeps writing
 * generations into its own pages (each pass writes every word of its region in order, then
 * publishes the generation in another page) while the main thread forks N times (default 1000).
 *
 * Each child (one thread: only async-signal-safe code, raw system calls) checks that it sees the
 * parent's memory at the fork: every writer's region holds the published generation g or g + 1,
 * never increasing along the region (the writer was stopped mid-pass at most), and the quiet pages
 * hold the pattern the parent wrote before the first fork. Then it writes its own marker over all
 * of it and reads it back. The parent checks after each fork that no marker reached its memory,
 * and its checker reads each region's last word after its published generation: never older (a
 * stale translation of a page copied on another CPU would show an older value). Every 16th child
 * forks a grandchild from its still-shared pages, which checks the same (a second fork must keep
 * the pages copy-on-write). Information lines give the time per fork and, from this kernel's own
 * call SYS_KERNEL_TLB_COUNTERS (ENOSYS on Linux), the TLB work per fork.
 */
#include "ut.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* abi::SYS_KERNEL_TLB_COUNTERS: (changes, shootdown IPIs, changes without an IPI) since boot;
 * ENOSYS on Linux. Information only: what a fork costs in TLB work. */
#define SYS_KERNEL_TLB_COUNTERS 0x4b540001L

#define MAX_WRITERS 16
#define REGION_WORDS (3 * 4096 / 8)
#define QUIET_WORDS (2 * 4096 / 8)
#define MARKER 0xC0DE000000000000ull

struct region {
	_Alignas(4096) volatile uint64_t words[REGION_WORDS];
};
struct published {
	_Alignas(4096) _Atomic uint64_t gen;
};

static struct region regions[MAX_WRITERS];
static struct published published[MAX_WRITERS];
static _Alignas(4096) volatile uint64_t quiet[QUIET_WORDS];
static atomic_int stop;
static int writers;

static void *writer(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t gen = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		gen++;
		for (int k = 0; k < REGION_WORDS; k++)
			regions[t].words[k] = gen;
		atomic_store_explicit(&published[t].gen, gen, memory_order_release);
		/* Every eighth pass a 0.2 ms nap: the writer's CPU goes idle with the space loaded, so
		 * forks also meet CPUs that catch up after a wake-up instead of taking the IPI, and a
		 * host with fewer cores than emulated CPUs can run the forking thread meanwhile. */
		if (gen % 8 == 0) {
			struct timespec nap = { 0, 200000 };
			nanosleep(&nap, NULL);
		}
	}
	return NULL;
}

static uint64_t quiet_value(int k) { return 0x5157000000000000ull | (uint64_t)k; }

static int child_checks(uint64_t id, int depth);

/* Every 16th child forks once more while its pages are still shared with the parent (a fork of
 * copy-on-write pages must keep them copy-on-write): the grandchild runs the same checks, and the
 * child then finds none of the grandchild's writes in its own memory. */
static int refork(uint64_t id)
{
	long pid = rsys0(SYS_fork);
	if (pid < 0)
		return 20;
	if (pid == 0)
		rsys1(SYS_exit_group, child_checks(id | (1ull << 40), 1));
	int st = 0;
	if (rsys4(SYS_wait4, pid, &st, 0, 0) != pid || !WIFEXITED(st))
		return 21;
	return WEXITSTATUS(st) ? 30 + WEXITSTATUS(st) % 10 : 0;
}

/* The child's checks; its exit code says which failed (0: none). */
static int child_checks(uint64_t id, int depth)
{
	for (int t = 0; t < writers; t++) {
		uint64_t g = atomic_load_explicit(&published[t].gen, memory_order_relaxed);
		uint64_t prev = regions[t].words[0];
		if (prev != g && prev != g + 1)
			return 10;
		for (int k = 1; k < REGION_WORDS; k++) {
			uint64_t v = regions[t].words[k];
			if (v > prev || (v != g && v != g + 1))
				return 11;
			prev = v;
		}
	}
	for (int k = 0; k < QUIET_WORDS; k++)
		if (quiet[k] != quiet_value(k))
			return 12;
	if (depth == 0 && id % 16 == 0) {
		int r = refork(id);
		/* Again, after the grandchild wrote its copy: this memory must be as it was. */
		return r ? r : child_checks(id, 1);
	}
	/* Its own writes, everywhere, read back. */
	for (int t = 0; t < writers; t++)
		for (int k = 0; k < REGION_WORDS; k++)
			regions[t].words[k] = MARKER | id;
	for (int k = 0; k < QUIET_WORDS; k++)
		quiet[k] = MARKER | id;
	for (int t = 0; t < writers; t++)
		for (int k = 0; k < REGION_WORDS; k++)
			if (regions[t].words[k] != (MARKER | id))
				return 13;
	for (int k = 0; k < QUIET_WORDS; k++)
		if (quiet[k] != (MARKER | id))
			return 14;
	return 0;
}

/* The parent's checks: no marker anywhere, the quiet pages intact, no region older than its
 * published generation. Returns a failure number or 0. */
static int parent_checks(void)
{
	for (int t = 0; t < writers; t++) {
		uint64_t g = atomic_load_explicit(&published[t].gen, memory_order_acquire);
		uint64_t last = regions[t].words[REGION_WORDS - 1];
		if (last < g)
			return 1;
		for (int k = 0; k < REGION_WORDS; k += 64)
			if (regions[t].words[k] & MARKER)
				return 2;
	}
	for (int k = 0; k < QUIET_WORDS; k++)
		if (quiet[k] != quiet_value(k))
			return 3;
	return 0;
}

/* A page read-only at the fork and made writable afterwards, in the child and then in the parent:
 * each write stays in its own process. */
static void mprotect_after_fork(void)
{
	volatile uint64_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(page != MAP_FAILED);
	page[0] = 1;
	CHECK(mprotect((void *)page, 4096, PROT_READ) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (mprotect((void *)page, 4096, PROT_READ | PROT_WRITE) != 0)
			_exit(1);
		page[0] = 2;
		_exit(page[0] == 2 ? 0 : 2);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(page[0] == 1);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* Parked until the parent has written. */
		for (int i = 0; i < 1000 && page[0] == 1; i++)
			rsys0(SYS_sched_yield);
		_exit(page[0] == 1 ? 0 : 3);
	}
	CHECK(mprotect((void *)page, 4096, PROT_READ | PROT_WRITE) == 0);
	page[0] = 3;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st));
	say("forkcow: a page read-only at the fork, made writable on one side: the other keeps its value: %s\n",
	    WEXITSTATUS(st) == 0 && page[0] == 3 ? "yes" : "no");
	munmap((void *)page, 4096);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	ut_start("forkcow");
	mprotect_after_fork();
	int cpus[64];
	int ncpu = ut_cpus(cpus, 64);
	writers = ncpu > 1 ? ncpu - 1 : 1;
	if (writers > MAX_WRITERS)
		writers = MAX_WRITERS;
	for (int k = 0; k < QUIET_WORDS; k++)
		quiet[k] = quiet_value(k);
	pthread_t th[MAX_WRITERS];
	for (int t = 0; t < writers; t++)
		CHECK(pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t) == 0);
	/* Every writer has published once before the first fork. */
	for (int t = 0; t < writers; t++)
		while (atomic_load(&published[t].gen) == 0)
			sched_yield();
	uint64_t tlb0[3], tlb1[3];
	int counted = rsys1(SYS_KERNEL_TLB_COUNTERS, tlb0) == 0;
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	long good = 0;
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			ut_fail("fork %ld: %s", i, strerror(errno));
		if (pid == 0)
			_exit(child_checks((uint64_t)i + 1, 0));
		int st = -1;
		if (waitpid(pid, &st, 0) != pid)
			ut_fail("waitpid %ld: %s", i, strerror(errno));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			ut_fail("child %ld: status %#x (check %d failed)", i, st, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		int bad = parent_checks();
		if (bad)
			ut_fail("after fork %ld the parent's check %d failed", i, bad);
		good++;
	}
	int64_t t1 = ut_now_ns(CLOCK_MONOTONIC);
	counted = counted && rsys1(SYS_KERNEL_TLB_COUNTERS, tlb1) == 0;
	atomic_store(&stop, 1);
	uint64_t gens = 0;
	for (int t = 0; t < writers; t++) {
		CHECK(pthread_join(th[t], NULL) == 0);
		gens += atomic_load(&published[t].gen);
	}
	CHECK(parent_checks() == 0);
	say("forkcow: %ld forks under writers, %ld children saw the parent's memory and only their own writes\n", n, good);
	info("%d writers, %llu generations written, %.1f us per fork+check+wait\n", writers, (unsigned long long)gens,
	     (double)(t1 - t0) / 1000.0 / (double)(n ? n : 1));
	if (counted)
		info("per fork, all processes: %.1f mapping changes needing TLB work, %.1f of them without an IPI, "
		     "%.1f shootdown IPIs\n",
		     (double)(tlb1[0] - tlb0[0]) / (double)(n ? n : 1), (double)(tlb1[2] - tlb0[2]) / (double)(n ? n : 1),
		     (double)(tlb1[1] - tlb0[1]) / (double)(n ? n : 1));
	else
		info("TLB work not counted by this kernel\n");
	ut_ok();
}
