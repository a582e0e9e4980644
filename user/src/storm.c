/*
 * storm: T threads per CPU (default 2, argv[2]) pass one turn around a ring, 10^5 hand-offs in
 * all (argv[1]). Even hand-offs go by futex (the receiver sleeps on its own word), odd ones by
 * sched_yield (the receiver spins, yielding). Every hand-off is counted by the sender and by the
 * receiver; at the end both sums equal the total, every thread is joined, and every thread
 * received its share of the ring exactly.
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>

#include "ut.h"

struct slot {
	volatile int turn; /* 1: this thread holds the turn */
	long sent;
	long received;
	int index;
	pthread_t th;
} __attribute__((aligned(64)));

static struct slot *slots;
static int nthreads;
static long total;
static volatile long passed; /* hand-offs done, written only by the turn holder */
static volatile int finished;

/*
 * How hand-off n travels: both sides compute it from n alone, so a receiver never sleeps on a
 * futex that its sender will not wake. Each thread alternates between the two ways lap by lap.
 */
static int by_futex(long n)
{
	return (n + n / nthreads) % 2 == 0;
}

static void give(int to, long n)
{
	struct slot *s = &slots[to];
	__atomic_store_n(&s->turn, 1, __ATOMIC_RELEASE);
	if (by_futex(n))
		CHECK(rsys4(SYS_futex, &s->turn, FUTEX_WAKE_PRIVATE, 1, 0) >= 0);
}

static void *runner(void *arg)
{
	struct slot *me = arg;
	/* Thread i receives hand-offs i, i + nthreads, i + 2 * nthreads, ... (thread 0 starts with the turn). */
	long expect = me->index == 0 ? nthreads : me->index;
	for (;;) {
		while (!__atomic_load_n(&me->turn, __ATOMIC_ACQUIRE)) {
			if (__atomic_load_n(&finished, __ATOMIC_ACQUIRE))
				return NULL;
			if (by_futex(expect)) {
				long r = rsys4(SYS_futex, &me->turn, FUTEX_WAIT_PRIVATE, 0, 0);
				CHECK(r == 0 || r == -EAGAIN || r == -EINTR);
			} else {
				sched_yield();
			}
		}
		me->turn = 0;
		if (__atomic_load_n(&finished, __ATOMIC_ACQUIRE))
			return NULL;
		long n = passed;
		if (n > 0) {
			if (n != expect)
				ut_fail("thread %d got hand-off %ld, expected %ld", me->index, n, expect);
			me->received++;
			expect += nthreads;
		}
		if (n == total) {
			__atomic_store_n(&finished, 1, __ATOMIC_RELEASE);
			for (int i = 0; i < nthreads; i++) {
				__atomic_store_n(&slots[i].turn, 1, __ATOMIC_RELEASE);
				rsys4(SYS_futex, &slots[i].turn, FUTEX_WAKE_PRIVATE, INT_MAX, 0);
			}
			return NULL;
		}
		me->sent++;
		__atomic_store_n(&passed, n + 1, __ATOMIC_RELEASE);
		give((me->index + 1) % nthreads, n + 1);
	}
}

int main(int argc, char **argv)
{
	ut_start("storm");
	total = ut_arg(argc, argv, 1, 100000);
	long per_cpu = ut_arg(argc, argv, 2, 2);
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	nthreads = (int)(per_cpu * ncpu);
	if (nthreads < 2)
		nthreads = 2;
	slots = calloc((size_t)nthreads, sizeof(*slots));
	CHECK(slots != NULL);
	for (int i = 0; i < nthreads; i++)
		slots[i].index = i;
	slots[0].turn = 1;
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	for (int i = 0; i < nthreads; i++)
		CHECK(pthread_create(&slots[i].th, NULL, runner, &slots[i]) == 0);
	for (int i = 0; i < nthreads; i++)
		CHECK(pthread_join(slots[i].th, NULL) == 0);
	int64_t t1 = ut_now_ns(CLOCK_MONOTONIC);

	long sent = 0, received = 0;
	for (int i = 0; i < nthreads; i++) {
		sent += slots[i].sent;
		received += slots[i].received;
		/* Hand-offs 1..total, hand-off n to thread n % nthreads. */
		long want = total / nthreads + (i != 0 && i <= total % nthreads);
		if (slots[i].received != want)
			ut_fail("thread %d received %ld hand-offs, expected %ld", i, slots[i].received, want);
	}
	info("%d threads on %d CPUs, %ld hand-offs in %lld ms\n", nthreads, ncpu, total, (long long)(t1 - t0) / 1000000);
	if (sent != total || received != total)
		ut_fail("sent %ld, received %ld, expected %ld", sent, received, total);
	say("storm: %ld hand-offs by futex and sched_yield, sent == received == %ld\n", total, total);
	say("storm: every thread joined, every thread received its exact share\n");
	ut_ok();
}
