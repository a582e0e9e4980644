/*
 * gb.h: what every two-guest benchmark program shares (user/bench/README.md).
 *
 * Each program runs unchanged on Linux and on our kernel: it pins itself, warms up, brackets the
 * timed iterations with the instruction counter's markers (marker.h) on every CPU that takes part,
 * checks that every hand-off was answered, and prints one line per row:
 *
 *     bench ROW tag=T ops=N ns_per_op=X cycles_per_op=Y laps=L ns_per_op_min=A ns_per_op_max=B ns_per_op_all=W
 *
 * ns are CLOCK_MONOTONIC nanoseconds (under TCG: emulation wall time), cycles are user-mode rdtsc
 * ticks (meaningful only under hardware virtualisation). The timed loop runs in L laps (gb_laps
 * below): X and Y are the median lap's per operation, A and B the fastest and slowest lap's ns,
 * W the whole loop's ns over all N operations. The host runner adds the counter's per-vCPU totals
 * for tag T and divides them by N. The calibration loop and hackbench are timed whole (gb_row,
 * L = 1): neither is a loop of like operations.
 */
#ifndef GB_H
#define GB_H

#include <pthread.h>
#include <stdatomic.h>
#include <linux/futex.h>

#include "marker.h"
#include "ut.h"

/* The counter's tags, one per row; the host side (bench/src/guests.rs) knows the same list. */
enum {
	TAG_CALIBRATE = 1,
	TAG_YIELD = 2,
	TAG_FUTEX_1CPU = 3,
	TAG_FUTEX_2CPU = 4,
	TAG_PIPE_1CPU = 5,
	TAG_PIPE_2CPU = 6,
	TAG_GETPPID = 7,
	TAG_MUNMAP_REMOTE = 8,
	TAG_MUNMAP_LOCAL = 9,
	TAG_MMAP_TOUCH = 10,
	TAG_FORK_EXIT = 11,
	TAG_FORK_EXEC = 12,
	TAG_HACKBENCH = 13,
	TAG_HACKBENCH_THREADS = 14,
	TAG_GETPID = 15,
};

/* A marker whose tag is known only at run time: one constant-tag marker per row's tag. */
#define GB_MARK_CASES(KIND) \
	switch (tag) { \
	case TAG_CALIBRATE: MARKER_##KIND(TAG_CALIBRATE); break; \
	case TAG_YIELD: MARKER_##KIND(TAG_YIELD); break; \
	case TAG_FUTEX_1CPU: MARKER_##KIND(TAG_FUTEX_1CPU); break; \
	case TAG_FUTEX_2CPU: MARKER_##KIND(TAG_FUTEX_2CPU); break; \
	case TAG_PIPE_1CPU: MARKER_##KIND(TAG_PIPE_1CPU); break; \
	case TAG_PIPE_2CPU: MARKER_##KIND(TAG_PIPE_2CPU); break; \
	case TAG_GETPPID: MARKER_##KIND(TAG_GETPPID); break; \
	case TAG_MUNMAP_REMOTE: MARKER_##KIND(TAG_MUNMAP_REMOTE); break; \
	case TAG_MUNMAP_LOCAL: MARKER_##KIND(TAG_MUNMAP_LOCAL); break; \
	case TAG_MMAP_TOUCH: MARKER_##KIND(TAG_MMAP_TOUCH); break; \
	case TAG_FORK_EXIT: MARKER_##KIND(TAG_FORK_EXIT); break; \
	case TAG_FORK_EXEC: MARKER_##KIND(TAG_FORK_EXEC); break; \
	case TAG_HACKBENCH: MARKER_##KIND(TAG_HACKBENCH); break; \
	case TAG_HACKBENCH_THREADS: MARKER_##KIND(TAG_HACKBENCH_THREADS); break; \
	case TAG_GETPID: MARKER_##KIND(TAG_GETPID); break; \
	default: ut_fail("no marker for tag %d", tag); \
	}

static inline void gb_begin(int tag) { GB_MARK_CASES(BEGIN) }
static inline void gb_end(int tag) { GB_MARK_CASES(END) }

static inline uint64_t gb_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("lfence; rdtsc; lfence" : "=a"(lo), "=d"(hi) : : "memory");
	return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t gb_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int gb_cpus(void);

/* The CPU the caller runs on now, by the system call (no vDSO on every kernel). */
static inline int gb_current_cpu(void)
{
	unsigned cpu = ~0u;
	if (syscall(SYS_getcpu, &cpu, NULL, NULL) != 0)
		return -1;
	return (int)cpu;
}

/*
 * Pin the calling thread to one CPU and check that it runs there: a kernel that accepts the mask
 * without moving the thread would turn a two-CPU row into a one-CPU one, and the other way round.
 * Returns 0, or -1 with the reason in `why`.
 */
static inline int gb_try_pin(int cpu, char *why, size_t len)
{
	gb_cpus(); /* learnt before the first pin narrows the affinity */
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		snprintf(why, len, "sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
		return -1;
	}
	for (int i = 0; i < 1000; i++) {
		if (gb_current_cpu() == cpu)
			return 0;
		sched_yield();
	}
	snprintf(why, len, "sched_setaffinity(cpu %d) returned 0 but the thread still runs on CPU %d", cpu,
		 gb_current_cpu());
	return -1;
}

static inline void gb_pin(int cpu)
{
	char why[160];
	if (gb_try_pin(cpu, why, sizeof(why)) != 0)
		ut_fail("%s", why);
}

/*
 * Whether the row ROW, which needs this thread able to move to CPU `cpu` and back to CPU 0, can
 * run; if not, it prints "bench-skip ROW why" and the caller leaves the row out.
 */
static inline int gb_row_can_use(const char *row, int cpu)
{
	char why[160];
	if (gb_cpus() <= cpu) {
		printf("bench-skip %s only %d CPU(s)\n", row, gb_cpus());
		return 0;
	}
	if (gb_try_pin(cpu, why, sizeof(why)) != 0) {
		printf("bench-skip %s %s\n", row, why);
		gb_pin(0);
		return 0;
	}
	gb_pin(0);
	return 1;
}

/*
 * Set when a pinned thread, sampling its CPU every 1024 iterations (a getcpu call per 1024
 * operations inside the window), finds itself elsewhere: the kernel ignored the affinity, and a
 * one-CPU row ran on two. The row is then left out with "bench-skip ROW ...".
 */
static atomic_int gb_migrated = -1;

static inline void gb_sample_cpu(long i, int cpu)
{
	if ((i & 1023) == 0) {
		int now = gb_current_cpu();
		if (now != cpu)
			atomic_store(&gb_migrated, now);
	}
}

/* The CPUs this process could run on at its first call (at least one), numbered from 0. */
static inline int gb_cpus(void)
{
	static int n;
	if (n == 0) {
		cpu_set_t set;
		n = sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
	}
	return n;
}

/* The iteration count: argv[1], else the default. */
static inline long gb_iterations(int argc, char **argv, long dflt)
{
	if (argc > 1) {
		long n = strtol(argv[1], NULL, 0);
		if (n > 0)
			return n;
	}
	return dflt;
}

struct gb_clock {
	uint64_t ns, tsc;
};

static inline struct gb_clock gb_now(void)
{
	struct gb_clock c;
	c.ns = gb_ns();
	c.tsc = gb_rdtsc();
	return c;
}

/* The row of a window timed whole: one lap. */
static inline void gb_row(const char *row, int tag, long ops, struct gb_clock start, struct gb_clock end)
{
	double ns = (double)(end.ns - start.ns) / (double)ops;
	printf("bench %s tag=%d ops=%ld ns_per_op=%.1f cycles_per_op=%.1f laps=1 ns_per_op_min=%.1f ns_per_op_max=%.1f "
	       "ns_per_op_all=%.1f\n",
	       row, tag, ops, ns, (double)(end.tsc - start.tsc) / (double)ops, ns, ns, ns);
}

/*
 * Laps: the timed loop runs as GB_LAPS laps of about n / GB_LAPS iterations each, the clock read
 * between laps, and the row reports the median lap's time per operation, with the fastest and the
 * slowest lap beside it. Under TCG one window's time moves by tens of per cent with what the host
 * does meanwhile; the median lap leaves out the laps a host hiccup hit. The markers still bracket
 * the whole loop as before, so the laps add only GB_LAPS - 1 clock reads (and the outer loop's few
 * instructions) to a window of hundreds or thousands of operations.
 *
 *     struct gb_laps laps;
 *     MARKER_BEGIN(TAG);
 *     gb_laps_start(&laps, n);
 *     for (int lap = 0; lap < GB_LAPS; lap++) {
 *         for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++)
 *             work(i);
 *         gb_lap_done(&laps);
 *     }
 *     MARKER_END(TAG);
 *     gb_laps_row("row", TAG, &laps, 1);
 *
 * A loop that times each operation on its own instead (the clock outside a per-operation window)
 * adds each one to its lap with gb_lap_add, and gb_laps_start is not called.
 */
#define GB_LAPS 8

struct gb_laps {
	long n; /* iterations of the whole loop */
	int done; /* laps timed by gb_lap_done */
	struct gb_clock last; /* the clock at the start or the last lap's end */
	struct gb_clock lap[GB_LAPS]; /* each lap's time */
	struct gb_clock whole; /* the whole loop's time */
};

/* The first iteration of lap `lap` of a loop of n (n itself for lap GB_LAPS): a pure function of
 * its arguments, so the compiler keeps the inner loop's bound in a register. */
static inline long gb_lap_first(long n, int lap)
{
	return n * lap / GB_LAPS;
}

/* The lap that iteration i of n falls in: the last lap whose first iteration is at most i. */
static inline int gb_lap_of(long n, long i)
{
	return (int)((GB_LAPS * (i + 1) - 1) / n);
}

static inline void gb_laps_init(struct gb_laps *t, long n)
{
	memset(t, 0, sizeof(*t));
	t->n = n;
}

static inline void gb_laps_start(struct gb_laps *t, long n)
{
	gb_laps_init(t, n);
	t->last = gb_now();
}

static inline void gb_lap_done(struct gb_laps *t)
{
	struct gb_clock now = gb_now();
	CHECK(t->done < GB_LAPS);
	t->lap[t->done].ns = now.ns - t->last.ns;
	t->lap[t->done].tsc = now.tsc - t->last.tsc;
	t->whole.ns += t->lap[t->done].ns;
	t->whole.tsc += t->lap[t->done].tsc;
	t->done++;
	t->last = now;
}

/* Iteration i took from a to b. */
static inline void gb_lap_add(struct gb_laps *t, long i, struct gb_clock a, struct gb_clock b)
{
	struct gb_clock *lap = &t->lap[gb_lap_of(t->n, i)];
	lap->ns += b.ns - a.ns, lap->tsc += b.tsc - a.tsc;
	t->whole.ns += b.ns - a.ns, t->whole.tsc += b.tsc - a.tsc;
}

/* The median of v[0..len) (len > 0; the mean of the middle two for an even len); sorts v. */
static inline double gb_median(double *v, int len)
{
	for (int i = 1; i < len; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double x = v[j];
			v[j] = v[j - 1], v[j - 1] = x;
		}
	return len % 2 ? v[len / 2] : (v[len / 2 - 1] + v[len / 2]) / 2;
}

/*
 * Print the row of a lap-timed loop whose every iteration is `per` operations, or its skip line
 * when a thread was found off its CPU. Laps of no iteration (n < GB_LAPS) are left out.
 */
static inline void gb_laps_row(const char *row, int tag, const struct gb_laps *t, long per)
{
	int cpu = atomic_exchange(&gb_migrated, -1);
	if (cpu >= 0) {
		printf("bench-skip %s a pinned thread was found on CPU %d: the kernel did not keep the affinity\n", row, cpu);
		return;
	}
	double ns[GB_LAPS], tsc[GB_LAPS];
	int laps = 0;
	for (int lap = 0; lap < GB_LAPS; lap++) {
		long ops = (gb_lap_first(t->n, lap + 1) - gb_lap_first(t->n, lap)) * per;
		if (ops == 0)
			continue;
		ns[laps] = (double)t->lap[lap].ns / (double)ops;
		tsc[laps] = (double)t->lap[lap].tsc / (double)ops;
		laps++;
	}
	CHECK(laps > 0);
	long ops = t->n * per;
	double ns_median = gb_median(ns, laps), tsc_median = gb_median(tsc, laps);
	printf("bench %s tag=%d ops=%ld ns_per_op=%.1f cycles_per_op=%.1f laps=%d ns_per_op_min=%.1f "
	       "ns_per_op_max=%.1f ns_per_op_all=%.1f\n",
	       row, tag, ops, ns_median, tsc_median, laps, ns[0], ns[laps - 1], (double)t->whole.ns / (double)ops);
}

static inline long gb_futex(atomic_int *addr, int op, int val)
{
	return syscall(SYS_futex, addr, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
}

/* Wait until *addr != old. */
static inline void gb_futex_wait_change(atomic_int *addr, int old)
{
	while (atomic_load(addr) == old)
		gb_futex(addr, FUTEX_WAIT, old);
}

/*
 * A window holder: a thread pinned to CPU `cpu` that opens the window `tag` there and sleeps in a
 * futex until gb_hold_end(), so everything that runs on that CPU meanwhile is counted, whoever
 * runs it. Windows are per vCPU, not per thread.
 */
struct gb_holder {
	pthread_t thread;
	int cpu, tag;
	atomic_int ready, done;
};

static void *gb_holder_main(void *arg)
{
	struct gb_holder *h = arg;
	gb_pin(h->cpu);
	gb_begin(h->tag);
	atomic_store(&h->ready, 1);
	gb_futex(&h->ready, FUTEX_WAKE, 1);
	gb_futex_wait_change(&h->done, 0);
	gb_end(h->tag);
	return NULL;
}

/* Open the window `tag` on every allowed CPU but `self_cpu` and return once all are open. */
static inline struct gb_holder *gb_hold_begin(int tag, int self_cpu)
{
	int n = gb_cpus();
	struct gb_holder *h = calloc((size_t)n, sizeof(*h));
	CHECK(h != NULL);
	for (int cpu = 0; cpu < n; cpu++) {
		h[cpu].cpu = cpu;
		h[cpu].tag = tag;
		if (cpu == self_cpu)
			continue;
		CHECK(pthread_create(&h[cpu].thread, NULL, gb_holder_main, &h[cpu]) == 0);
		gb_futex_wait_change(&h[cpu].ready, 0);
	}
	return h;
}

static inline void gb_hold_end(struct gb_holder *h, int self_cpu)
{
	int n = gb_cpus();
	for (int cpu = 0; cpu < n; cpu++) {
		if (cpu == self_cpu)
			continue;
		atomic_store(&h[cpu].done, 1);
		gb_futex(&h[cpu].done, FUTEX_WAKE, 1);
		CHECK(pthread_join(h[cpu].thread, NULL) == 0);
	}
	free(h);
}

#endif
