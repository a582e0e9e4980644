/*
 * stress [threads|procs|all] [N]: load every CPU and check that nothing was lost.
 *
 *   threads  two threads per CPU, each pinned to its CPU for the first half of its N rounds and
 *            free to migrate (any CPU, with sched_yield) for the second half. Every round adds 1 to
 *            the thread's own counter, to one shared atomic counter, and, under a pthread mutex, to
 *            a plain counter. Conservation: the three totals are each threads * N.
 *   procs    one process per CPU (fork), each doing N rounds on an atomic counter in a MAP_SHARED
 *            page and sending its own count to the parent through a pipe; the parent reaps every
 *            child (each must exit 0). Conservation: children started == reaped, the counts read
 *            from the pipe sum to the shared counter and to procs * N.
 *   all      threads, then procs (the default). N defaults to 10^5.
 *
 * The last line is the verdict: "ok stress" (with a "# stress: PASSED ..." summary above it) or
 * "FAILED stress: why". CPU counts and rates are "# " lines: the compared lines do not depend on
 * the machine.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "ut.h"

#define MAX_CPUS 512

struct worker {
	int cpu;
	long rounds;
	long mine;
	pthread_t th;
} __attribute__((aligned(64)));

static long shared_atomic;
static long locked_total;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static cpu_set_t all_cpus;

static void *thread_body(void *arg)
{
	struct worker *w = arg;
	ut_pin(w->cpu);
	for (long i = 0; i < w->rounds; i++) {
		if (i == w->rounds / 2 && sched_setaffinity(0, sizeof(all_cpus), &all_cpus) != 0)
			ut_fail("sched_setaffinity(all): %s", strerror(errno));
		w->mine++;
		__atomic_fetch_add(&shared_atomic, 1, __ATOMIC_RELAXED);
		pthread_mutex_lock(&lock);
		locked_total++;
		pthread_mutex_unlock(&lock);
		if (i % 1024 == 0)
			sched_yield();
	}
	return NULL;
}

static void stress_threads(const int *cpus, int ncpu, long n)
{
	int nthreads = 2 * ncpu;
	struct worker *w = calloc(nthreads, sizeof(*w));
	CHECK(w != NULL);
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	for (int i = 0; i < nthreads; i++) {
		w[i].cpu = cpus[i % ncpu];
		w[i].rounds = n;
		int e = pthread_create(&w[i].th, NULL, thread_body, &w[i]);
		if (e)
			ut_fail("pthread_create %d: %s", i, strerror(e));
	}
	long sum = 0;
	for (int i = 0; i < nthreads; i++) {
		int e = pthread_join(w[i].th, NULL);
		if (e)
			ut_fail("pthread_join %d: %s", i, strerror(e));
		if (w[i].mine != n)
			ut_fail("thread %d counted %ld rounds of %ld", i, w[i].mine, n);
		sum += w[i].mine;
	}
	int64_t ms = (ut_now_ns(CLOCK_MONOTONIC) - t0) / 1000000;
	long want = (long)nthreads * n;
	if (sum != want || shared_atomic != want || locked_total != want)
		ut_fail("threads: per-thread sum %ld, atomic %ld, locked %ld, wanted %ld", sum, shared_atomic, locked_total, want);
	say("threads: every thread ran its rounds; per-thread, atomic and locked totals agree\n");
	info("stress threads: %d threads on %d CPUs, %ld rounds each, %ld total, %lld ms\n", nthreads, ncpu, n, want, (long long)ms);
	free(w);
}

static void stress_procs(const int *cpus, int ncpu, long n)
{
	long *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counter == MAP_FAILED)
		ut_fail("mmap shared: %s", strerror(errno));
	int fds[2];
	if (pipe(fds) != 0)
		ut_fail("pipe: %s", strerror(errno));
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	int started = 0;
	fflush(stdout);
	for (int i = 0; i < ncpu; i++) {
		pid_t pid = fork();
		if (pid < 0)
			ut_fail("fork %d: %s", i, strerror(errno));
		if (pid == 0) {
			close(fds[0]);
			cpu_set_t one;
			CPU_ZERO(&one);
			CPU_SET(cpus[i], &one);
			sched_setaffinity(0, sizeof(one), &one);
			long mine = 0;
			for (long r = 0; r < n; r++) {
				__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
				mine++;
			}
			/* One write of 8 bytes: atomic on a pipe (under PIPE_BUF). */
			_exit(write(fds[1], &mine, sizeof(mine)) == sizeof(mine) ? 0 : 2);
		}
		started++;
	}
	close(fds[1]);
	long reported = 0, got, reports = 0;
	ssize_t r;
	while ((r = read(fds[0], &got, sizeof(got))) == sizeof(got)) {
		reported += got;
		reports++;
	}
	if (r != 0)
		ut_fail("pipe read returned %zd (%s)", r, r < 0 ? strerror(errno) : "short");
	close(fds[0]);
	int reaped = 0;
	for (;;) {
		int status;
		pid_t pid = wait(&status);
		if (pid < 0) {
			if (errno != ECHILD)
				ut_fail("wait: %s", strerror(errno));
			break;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			ut_fail("child %d ended with status %#x", pid, status);
		reaped++;
	}
	int64_t ms = (ut_now_ns(CLOCK_MONOTONIC) - t0) / 1000000;
	long want = (long)started * n;
	if (reaped != started || reports != started || reported != want || *counter != want)
		ut_fail("procs: started %d, reaped %d, reports %ld, reported %ld, shared %ld, wanted %ld",
			started, reaped, reports, reported, *counter, want);
	say("procs: every child was reaped; reported and shared totals agree\n");
	info("stress procs: %d processes, %ld rounds each, %ld total, %lld ms\n", started, n, want, (long long)ms);
	munmap(counter, 4096);
}

int main(int argc, char **argv)
{
	ut_start("stress");
	const char *mode = argc > 1 ? argv[1] : "all";
	long n = ut_arg(argc, argv, 2, 100000);
	int threads = !strcmp(mode, "threads") || !strcmp(mode, "all");
	int procs = !strcmp(mode, "procs") || !strcmp(mode, "all");
	if (!threads && !procs)
		ut_fail("usage: stress [threads|procs|all] [N]");
	static int cpus[MAX_CPUS];
	int ncpu = ut_cpus(cpus, MAX_CPUS);
	CHECK(ncpu > 0);
	CPU_ZERO(&all_cpus);
	for (int i = 0; i < ncpu; i++)
		CPU_SET(cpus[i], &all_cpus);
	info("stress: %s, %d CPUs, N=%ld\n", mode, ncpu, n);
	if (threads)
		stress_threads(cpus, ncpu, n);
	if (procs)
		stress_procs(cpus, ncpu, n);
	info("stress: PASSED\n");
	ut_ok();
}
