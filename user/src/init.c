/*
 * init: the demonstration that `make run` boots into. Two busy threads are pinned to every CPU
 * of the mask; each notices when it was preempted (a gap of more than 2 ms between two looks at
 * CLOCK_MONOTONIC that are microseconds apart in its own work). Every half second the main
 * thread prints one progress line per CPU; after argv[1] seconds (default 5) it stops them,
 * joins them, and checks that every thread ran and was preempted at least once.
 *
 * The progress lines start with "# ": they are the show, not something to compare.
 */
#include <pthread.h>

#include "ut.h"

#define GAP_NS (2 * 1000 * 1000)

struct worker {
	int cpu;
	int on_cpu;
	volatile uint64_t work;
	volatile uint64_t preemptions;
	pthread_t th;
} __attribute__((aligned(64)));

static volatile int stop;

static void *busy(void *arg)
{
	struct worker *w = arg;
	w->on_cpu = ut_pin(w->cpu);
	int64_t last = ut_now_ns(CLOCK_MONOTONIC);
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		for (int i = 0; i < 4096; i++)
			__asm__ volatile("" ::: "memory");
		w->work++;
		int64_t now = ut_now_ns(CLOCK_MONOTONIC);
		if (now - last > GAP_NS)
			w->preemptions++;
		last = now;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	ut_start("init");
	long seconds = ut_arg(argc, argv, 1, 5);
	int cpus[1024];
	int ncpu = ut_cpus(cpus, 1024);
	int n = 2 * ncpu;
	struct worker *w = aligned_alloc(64, sizeof(*w) * (size_t)n);
	CHECK(w != NULL);
	memset(w, 0, sizeof(*w) * (size_t)n);
	info("init: pid %d, %d CPUs, two busy threads on each for %ld s\n", getpid(), ncpu, seconds);
	for (int i = 0; i < n; i++) {
		w[i].cpu = cpus[i / 2];
		CHECK(pthread_create(&w[i].th, NULL, busy, &w[i]) == 0);
	}
	for (long tick = 1; tick <= seconds * 2; tick++) {
		struct timespec half = { .tv_sec = 0, .tv_nsec = 500 * 1000 * 1000 };
		nanosleep(&half, NULL);
		for (int c = 0; c < ncpu; c++)
			info("t=%ld.%ld s cpu %d: thread A %llu units, %llu preemptions; thread B %llu units, %llu preemptions\n",
			     tick / 2, (tick % 2) * 5, cpus[c], (unsigned long long)w[2 * c].work,
			     (unsigned long long)w[2 * c].preemptions, (unsigned long long)w[2 * c + 1].work,
			     (unsigned long long)w[2 * c + 1].preemptions);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < n; i++)
		CHECK(pthread_join(w[i].th, NULL) == 0);
	for (int i = 0; i < n; i++) {
		if (w[i].on_cpu != w[i].cpu)
			ut_fail("a thread pinned to CPU %d ran on CPU %d", w[i].cpu, w[i].on_cpu);
		if (w[i].work == 0 || w[i].preemptions == 0)
			ut_fail("the thread %d on CPU %d did %llu units, was preempted %llu times", i & 1, w[i].cpu,
				(unsigned long long)w[i].work, (unsigned long long)w[i].preemptions);
	}
	say("init: two threads on every CPU ran, and every one of them was preempted\n");
	ut_ok();
}
