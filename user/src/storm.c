/*
 * storm: T threads per CPU (default 2, argv[2]) pass turns, 10^5 hand-offs in all (argv[1]), in
 * two phases.
 *
 * 1. Local rings: one ring per CPU of the affinity mask, its T threads pinned to that CPU, all
 *    rings at once. Even hand-offs go by futex (the receiver sleeps on its own word), odd ones by
 *    sched_yield (the receiver spins, yielding): nine tenths of the total, shared between rings.
 * 2. A cross ring: T threads per CPU again, thread i pinned to CPU i mod N, so that every hand-off
 *    wakes a sleeper on another CPU: by futex only, the last tenth.
 *
 * Every hand-off is counted by the sender and by the receiver; at the end both sums equal the
 * total, every thread is joined, and every thread received its exact share of its ring.
 *
 * Why the split: a sched_yield hand-off is a local matter (a spinner alone on its CPU yields to
 * nobody), and spinners on N vCPUs emulated on fewer host cores make each hand-off wait for a
 * host time slice. Pinned local rings keep the 10^5 hand-offs at the speed of the switch path
 * under emulation too, while the cross ring keeps the cross-CPU futex wake-ups in the storm.
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>

#include "ut.h"

struct ring;

struct slot {
	volatile int turn; /* 1: this thread holds the turn */
	long sent;
	long received;
	int index;
	int cpu;
	struct ring *ring;
	pthread_t th;
} __attribute__((aligned(64)));

struct ring {
	struct slot *slots;
	int nthreads;
	int futex_only;
	long total;
	volatile long passed; /* hand-offs done, written only by the turn holder */
	volatile int finished;
} __attribute__((aligned(64)));

/*
 * How hand-off n travels: both sides compute it from n alone, so a receiver never sleeps on a
 * futex that its sender will not wake. Each thread alternates between the two ways lap by lap.
 */
static int by_futex(const struct ring *r, long n)
{
	return r->futex_only || (n + n / r->nthreads) % 2 == 0;
}

static void give(struct ring *r, int to, long n)
{
	struct slot *s = &r->slots[to];
	__atomic_store_n(&s->turn, 1, __ATOMIC_RELEASE);
	if (by_futex(r, n))
		CHECK(rsys4(SYS_futex, &s->turn, FUTEX_WAKE_PRIVATE, 1, 0) >= 0);
}

static void *runner(void *arg)
{
	struct slot *me = arg;
	struct ring *r = me->ring;
	int on = ut_pin(me->cpu);
	if (on != me->cpu)
		ut_fail("a thread pinned to CPU %d runs on CPU %d", me->cpu, on);
	/* Thread i receives hand-offs i, i + nthreads, ... (thread 0 starts with the turn). */
	long expect = me->index == 0 ? r->nthreads : me->index;
	for (;;) {
		while (!__atomic_load_n(&me->turn, __ATOMIC_ACQUIRE)) {
			if (__atomic_load_n(&r->finished, __ATOMIC_ACQUIRE))
				return NULL;
			if (by_futex(r, expect)) {
				long e = rsys4(SYS_futex, &me->turn, FUTEX_WAIT_PRIVATE, 0, 0);
				CHECK(e == 0 || e == -EAGAIN || e == -EINTR);
			} else {
				sched_yield();
			}
		}
		me->turn = 0;
		if (__atomic_load_n(&r->finished, __ATOMIC_ACQUIRE))
			return NULL;
		long n = r->passed;
		if (n > 0) {
			if (n != expect)
				ut_fail("thread %d got hand-off %ld, expected %ld", me->index, n, expect);
			me->received++;
			expect += r->nthreads;
		}
		if (n == r->total) {
			__atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
			for (int i = 0; i < r->nthreads; i++) {
				__atomic_store_n(&r->slots[i].turn, 1, __ATOMIC_RELEASE);
				rsys4(SYS_futex, &r->slots[i].turn, FUTEX_WAKE_PRIVATE, INT_MAX, 0);
			}
			return NULL;
		}
		me->sent++;
		__atomic_store_n(&r->passed, n + 1, __ATOMIC_RELEASE);
		give(r, (me->index + 1) % r->nthreads, n + 1);
	}
}

static void ring_init(struct ring *r, int nthreads, long total, int futex_only)
{
	r->nthreads = nthreads;
	r->total = total;
	r->futex_only = futex_only;
	r->slots = aligned_alloc(64, sizeof(struct slot) * (size_t)nthreads);
	CHECK(r->slots != NULL);
	memset(r->slots, 0, sizeof(struct slot) * (size_t)nthreads);
	for (int i = 0; i < nthreads; i++) {
		r->slots[i].index = i;
		r->slots[i].ring = r;
	}
	r->slots[0].turn = 1;
}

/* Checks one ring's counts; returns the hand-offs it made. */
static long ring_check(const struct ring *r)
{
	long sent = 0, received = 0;
	for (int i = 0; i < r->nthreads; i++) {
		sent += r->slots[i].sent;
		received += r->slots[i].received;
		/* Hand-offs 1..total, hand-off n to thread n % nthreads. */
		long want = r->total / r->nthreads + (i != 0 && i <= r->total % r->nthreads);
		if (r->slots[i].received != want)
			ut_fail("thread %d received %ld hand-offs, expected %ld", i, r->slots[i].received, want);
	}
	if (sent != r->total || received != r->total)
		ut_fail("a ring sent %ld, received %ld, expected %ld", sent, received, r->total);
	return sent;
}

static void run(struct ring *rings, int nrings)
{
	for (int k = 0; k < nrings; k++)
		for (int i = 0; i < rings[k].nthreads; i++)
			CHECK(pthread_create(&rings[k].slots[i].th, NULL, runner, &rings[k].slots[i]) == 0);
	for (int k = 0; k < nrings; k++)
		for (int i = 0; i < rings[k].nthreads; i++)
			CHECK(pthread_join(rings[k].slots[i].th, NULL) == 0);
}

int main(int argc, char **argv)
{
	ut_start("storm");
	long total = ut_arg(argc, argv, 1, 100000);
	long per_cpu = ut_arg(argc, argv, 2, 2);
	CHECK(total >= 10 && per_cpu >= 1 && per_cpu <= 64);
	int cpus[1024];
	int ncpu = ut_cpus(cpus, 1024);
	int t = (int)per_cpu < 2 ? 2 : (int)per_cpu;
	long cross_total = total / 10;
	long local_total = total - cross_total;

	struct ring *local = calloc((size_t)ncpu, sizeof(struct ring));
	CHECK(local != NULL);
	for (int c = 0; c < ncpu; c++) {
		ring_init(&local[c], t, local_total / ncpu + (c < local_total % ncpu), 0);
		for (int i = 0; i < t; i++)
			local[c].slots[i].cpu = cpus[c];
	}
	struct ring cross;
	ring_init(&cross, t * ncpu < 2 ? 2 : t * ncpu, cross_total, 1);
	for (int i = 0; i < cross.nthreads; i++)
		cross.slots[i].cpu = cpus[i % ncpu];

	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	run(local, ncpu);
	int64_t t1 = ut_now_ns(CLOCK_MONOTONIC);
	run(&cross, 1);
	int64_t t2 = ut_now_ns(CLOCK_MONOTONIC);

	long done = 0;
	for (int c = 0; c < ncpu; c++)
		done += ring_check(&local[c]);
	CHECK(done == local_total);
	done += ring_check(&cross);
	info("%d local rings of %d threads: %ld hand-offs in %lld ms; cross ring of %d threads: %ld in %lld ms\n",
	     ncpu, t, local_total, (long long)(t1 - t0) / 1000000, cross.nthreads, cross_total,
	     (long long)(t2 - t1) / 1000000);
	if (done != total)
		ut_fail("%ld hand-offs made, expected %ld", done, total);
	say("storm: %ld hand-offs by futex and sched_yield in local rings, %ld by futex across CPUs\n",
	    local_total, cross_total);
	say("storm: sent == received == %ld, every thread joined, every thread received its exact share\n", total);
	ut_ok();
}
