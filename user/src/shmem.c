/*
 * shmem [N]: MAP_SHARED anonymous memory stays shared across fork; MAP_PRIVATE stays private.
 *
 *   counters  two children per CPU (each pinned to its CPU) and the parent add 1 to an atomic
 *             counter N times each (default 20000), in a shared page the parent never touched
 *             before the forks, and each child also stores its own count in its slot of that page.
 *             Conservation: the counter is (children + 1) * N and the slots sum to children * N.
 *   handshake the parent writes a word after the fork and the child sees it; the child answers
 *             through the same page and the parent sees that: writes go both ways after the fork.
 *   private   a MAP_PRIVATE page written by the child keeps the parent's bytes in the parent, and
 *             the parent's later write does not reach the child.
 *   again     a child forks a grandchild, which writes the shared page: the first parent sees it.
 *   one side  mprotect(PROT_READ) and munmap in a child leave the parent's mapping writable and
 *             its bytes in place.
 *   moved     a child moves its shared mapping with mremap (grown with MREMAP_MAYMOVE past an
 *             occupied page, then MREMAP_FIXED) and writes through the new address: the parent
 *             sees the writes (the frame moves, it is not copied).
 *   futex     the parent sleeps in FUTEX_WAIT (not private) on a word of a shared page; the child's
 *             FUTEX_WAKE on the same word wakes it: both name one futex across processes.
 *   file      MAP_SHARED without MAP_ANONYMOUS on a bad descriptor: EBADF.
 *
 * The last line is the verdict: "ok shmem" or "FAILED shmem: why". CPU counts are "# " lines.
 */
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "ut.h"

/* Linux's futex operations (linux/futex.h, which the in-kernel tests' build does not have). */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1

#define MAX_CHILDREN 64
#define PAGE 4096

struct counters {
	_Atomic long total;
	long slot[MAX_CHILDREN];
};

static void reap(pid_t pid, const char *what)
{
	int status;
	if (waitpid(pid, &status, 0) != pid)
		ut_fail("%s: waitpid: %s", what, strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		ut_fail("%s: child ended with status %#x", what, status);
}

/* Spin (yielding) until *word == want; 0 on time-out (about 60 s). */
static int await_word(_Atomic long *word, long want)
{
	for (long i = 0; i < 60000000L; i++) {
		if (atomic_load_explicit(word, memory_order_acquire) == want)
			return 1;
		sched_yield();
	}
	return 0;
}

static void counters(const int *cpus, int ncpu, long n)
{
	/* Two pages, neither touched before the forks: a fork must fill them so both sides share. */
	struct counters *c = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED)
		ut_fail("mmap shared: %s", strerror(errno));
	int children = 2 * ncpu < MAX_CHILDREN ? 2 * ncpu : MAX_CHILDREN;
	pid_t pids[MAX_CHILDREN];
	fflush(stdout);
	for (int i = 0; i < children; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			ut_fail("fork %d: %s", i, strerror(errno));
		if (pids[i] == 0) {
			cpu_set_t one;
			CPU_ZERO(&one);
			CPU_SET(cpus[i % ncpu], &one);
			sched_setaffinity(0, sizeof(one), &one);
			for (long r = 0; r < n; r++) {
				atomic_fetch_add_explicit(&c->total, 1, memory_order_relaxed);
				c->slot[i]++;
			}
			_exit(0);
		}
	}
	for (long r = 0; r < n; r++)
		atomic_fetch_add_explicit(&c->total, 1, memory_order_relaxed);
	for (int i = 0; i < children; i++)
		reap(pids[i], "counters");
	long slots = 0;
	for (int i = 0; i < children; i++)
		slots += c->slot[i];
	long want = (long)(children + 1) * n;
	if (c->total != want || slots != (long)children * n)
		ut_fail("counters: total %ld (wanted %ld), slots %ld (wanted %ld)", (long)c->total, want, slots, (long)children * n);
	say("counters: the parent and every child added to one shared counter; totals conserved\n");
	info("shmem counters: %d children on %d CPUs, %ld rounds each\n", children, ncpu, n);
	if (munmap(c, 2 * PAGE) != 0)
		ut_fail("munmap: %s", strerror(errno));
}

static void handshake_private_again(void)
{
	_Atomic long *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	long *pv = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || pv == MAP_FAILED)
		ut_fail("mmap: %s", strerror(errno));
	atomic_store(&sh[0], 1);
	pv[0] = 100;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		ut_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* The parent's write after the fork arrives here... */
		if (!await_word(&sh[1], 7))
			_exit(10);
		/* ...but not its write to the private page. */
		if (pv[0] != 100)
			_exit(11);
		pv[0] = 200;
		atomic_store_explicit(&sh[2], 8, memory_order_release);
		/* A grandchild shares the page too. */
		pid_t g = fork();
		if (g < 0)
			_exit(12);
		if (g == 0) {
			atomic_store_explicit(&sh[3], 9, memory_order_release);
			pv[1] = 300;
			_exit(0);
		}
		int status;
		if (waitpid(g, &status, 0) != g || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			_exit(13);
		_exit(pv[1] == 0 ? 0 : 14);
	}
	atomic_store_explicit(&sh[1], 7, memory_order_release);
	pv[0] = 150;
	if (!await_word(&sh[2], 8))
		ut_fail("handshake: the child's answer never arrived");
	reap(pid, "handshake");
	if (atomic_load(&sh[3]) != 9)
		ut_fail("again: the grandchild's write is missing (%ld)", (long)atomic_load(&sh[3]));
	if (pv[0] != 150 || pv[1] != 0)
		ut_fail("private: the parent's page holds %ld, %ld (wanted 150, 0)", pv[0], pv[1]);
	say("handshake: writes cross the fork both ways through MAP_SHARED\n");
	say("private: MAP_PRIVATE writes stay on their side\n");
	say("again: a grandchild's write reaches the first parent\n");
	munmap((void *)sh, PAGE);
	munmap(pv, PAGE);
}

static void one_side(void)
{
	long *sh = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		ut_fail("mmap: %s", strerror(errno));
	sh[0] = 5;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		ut_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		if (mprotect(sh, PAGE, PROT_READ) != 0)
			_exit(20);
		if (sh[0] != 5)
			_exit(21);
		sh[PAGE / sizeof(long)] = 6; /* the second page is still writable here */
		if (munmap(sh, 2 * PAGE) != 0)
			_exit(22);
		_exit(0);
	}
	reap(pid, "one side");
	sh[0] += 10; /* still writable in the parent */
	if (sh[0] != 15 || sh[PAGE / sizeof(long)] != 6)
		ut_fail("one side: the parent holds %ld, %ld (wanted 15, 6)", sh[0], sh[PAGE / sizeof(long)]);
	say("one side: a child's mprotect and munmap leave the parent's mapping as it was\n");
	munmap(sh, 2 * PAGE);
}

static void moved(void)
{
	long *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		ut_fail("mmap: %s", strerror(errno));
	sh[0] = 1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		ut_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* Occupy the next page (or find it occupied) so that growing must move. */
		void *next = (char *)sh + PAGE;
		void *blocker = mmap(next, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (blocker == MAP_FAILED && errno != EEXIST)
			_exit(40);
		long *p = mremap(sh, PAGE, 2 * PAGE, MREMAP_MAYMOVE);
		if (p == MAP_FAILED || p == sh || p[0] != 1)
			_exit(41);
		p[0] = 2;
		void *target = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (target == MAP_FAILED)
			_exit(42);
		long *q = mremap(p, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);
		if (q != target || q[0] != 2)
			_exit(43);
		q[0] = 3;
		_exit(0);
	}
	reap(pid, "moved");
	if (sh[0] != 3)
		ut_fail("moved: the parent holds %ld (wanted 3): a moved shared page was copied", sh[0]);
	say("moved: writes through a shared mapping moved by mremap reach the other process\n");
	munmap(sh, PAGE);
}

static long futex_call(void *word, int op, int val, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static void futex_across(void)
{
	_Atomic int *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		ut_fail("mmap: %s", strerror(errno));
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		ut_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* Wake until one waiter was there (the parent may not sleep yet); about 60 s at most. */
		for (long i = 0; i < 600000L; i++) {
			if (futex_call(&sh[0], FUTEX_WAKE, 1, NULL) == 1)
				_exit(0);
			usleep(100);
		}
		_exit(30);
	}
	/* The word stays 0: only a wake ends this wait, or the time-out (which fails). */
	struct timespec limit = { .tv_sec = 90, .tv_nsec = 0 };
	long r = futex_call(&sh[0], FUTEX_WAIT, 0, &limit);
	if (r != 0)
		ut_fail("futex: the wait returned %ld (%s), not woken by the child", r, strerror(errno));
	reap(pid, "futex");
	say("futex: a wake in the child reaches a waiter in the parent through a shared word\n");
	munmap((void *)sh, PAGE);
}

int main(int argc, char **argv)
{
	ut_start("shmem");
	long n = ut_arg(argc, argv, 1, 20000);
	static int cpus[MAX_CHILDREN];
	int ncpu = ut_cpus(cpus, MAX_CHILDREN);
	CHECK(ncpu > 0);
	counters(cpus, ncpu, n);
	handshake_private_again();
	one_side();
	moved();
	futex_across();
	CHECK_ERR(mmap(NULL, PAGE, PROT_READ, MAP_SHARED, -1, 0), EBADF);
	say("file: MAP_SHARED of a bad descriptor is EBADF\n");
	ut_ok();
}
