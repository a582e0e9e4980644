/*
 * futex: WAIT/WAKE, REQUEUE, CMP_REQUEUE, WAIT_BITSET/WAKE_BITSET, the PRIVATE flag, timeouts
 * (relative, absolute on CLOCK_MONOTONIC and CLOCK_REALTIME) and the errno paths.
 *
 * Every count printed is made deterministic: a waiter is known to be queued only when a requeue
 * or a wake-up returned it, so the program repeats such calls until it has seen every waiter,
 * whatever the scheduling order.
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>

#include "ut.h"

static long futex(volatile int *uaddr, int op, int val, long timeout_or_val2, volatile int *uaddr2, int val3)
{
	return rsys6(SYS_futex, (long)uaddr, op, val, timeout_or_val2, (long)uaddr2, val3);
}

static void check_not_early(int64_t start, int64_t end, int64_t want_ns, const char *what)
{
	if (end - start < want_ns)
		ut_fail("%s returned %lld ns early", what, (long long)(want_ns - (end - start)));
	info("%s: asked %lld us, took %lld us\n", what, (long long)want_ns / 1000, (long long)(end - start) / 1000);
}

static void test_errors(void)
{
	static volatile int word = 5;
	struct timespec ts = { .tv_sec = 0, .tv_nsec = 20 * 1000 * 1000 };
	CHECK_RAW(futex(&word, FUTEX_WAIT, 4, 0, NULL, 0), EAGAIN);
	CHECK_RAW(futex(&word, FUTEX_WAIT_PRIVATE, 4, 0, NULL, 0), EAGAIN);
	CHECK(futex(&word, FUTEX_WAKE, 1, 0, NULL, 0) == 0);
	CHECK(futex(&word, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0) == 0);
	CHECK_RAW(futex((volatile int *)((char *)&word + 1), FUTEX_WAIT, 5, 0, NULL, 0), EINVAL);
	CHECK_RAW(futex((volatile int *)8, FUTEX_WAIT, 5, 0, NULL, 0), EFAULT);
	CHECK_RAW(futex(&word, FUTEX_WAIT_BITSET, 5, (long)&ts, NULL, 0), EINVAL);
	CHECK_RAW(futex(&word, FUTEX_WAKE_BITSET, 1, 0, NULL, 0), EINVAL);
	struct timespec bad = { .tv_sec = 0, .tv_nsec = 1000000000 };
	CHECK_RAW(futex(&word, FUTEX_WAIT, 5, (long)&bad, NULL, 0), EINVAL);
	bad.tv_sec = -1;
	bad.tv_nsec = 0;
	CHECK_RAW(futex(&word, FUTEX_WAIT, 5, (long)&bad, NULL, 0), EINVAL);
	CHECK_RAW(futex(&word, FUTEX_WAIT, 5, 8, NULL, 0), EFAULT);
	CHECK_RAW(futex(&word, 99, 5, 0, NULL, 0), ENOSYS);
	CHECK_RAW(futex(&word, FUTEX_CMP_REQUEUE, 1, 1, &word, 4), EAGAIN);
	CHECK_RAW(futex(&word, FUTEX_CMP_REQUEUE, -1, 1, &word, 5), EINVAL);
	say("errors: EAGAIN on a changed value, EINVAL misaligned or zero bitset or bad timeout, EFAULT, ENOSYS\n");
}

static void test_timeouts(void)
{
	static volatile int word;
	struct timespec rel = { .tv_sec = 0, .tv_nsec = 20 * 1000 * 1000 };
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	CHECK_RAW(futex(&word, FUTEX_WAIT, 0, (long)&rel, NULL, 0), ETIMEDOUT);
	check_not_early(t0, ut_now_ns(CLOCK_MONOTONIC), 20 * 1000 * 1000, "FUTEX_WAIT relative");

	t0 = ut_now_ns(CLOCK_MONOTONIC);
	CHECK_RAW(futex(&word, FUTEX_WAIT_PRIVATE, 0, (long)&rel, NULL, 0), ETIMEDOUT);
	check_not_early(t0, ut_now_ns(CLOCK_MONOTONIC), 20 * 1000 * 1000, "FUTEX_WAIT_PRIVATE relative");

	struct timespec abs;
	int64_t deadline = ut_now_ns(CLOCK_MONOTONIC) + 20 * 1000 * 1000;
	abs.tv_sec = deadline / 1000000000;
	abs.tv_nsec = deadline % 1000000000;
	t0 = ut_now_ns(CLOCK_MONOTONIC);
	CHECK_RAW(futex(&word, FUTEX_WAIT_BITSET, 0, (long)&abs, NULL, FUTEX_BITSET_MATCH_ANY), ETIMEDOUT);
	CHECK(ut_now_ns(CLOCK_MONOTONIC) >= deadline);
	check_not_early(t0, ut_now_ns(CLOCK_MONOTONIC), deadline - t0, "FUTEX_WAIT_BITSET absolute monotonic");

	deadline = ut_now_ns(CLOCK_REALTIME) + 20 * 1000 * 1000;
	abs.tv_sec = deadline / 1000000000;
	abs.tv_nsec = deadline % 1000000000;
	CHECK_RAW(futex(&word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME, 0, (long)&abs, NULL,
			FUTEX_BITSET_MATCH_ANY), ETIMEDOUT);
	CHECK(ut_now_ns(CLOCK_REALTIME) >= deadline);

	/* A deadline already past times out at once. */
	abs.tv_sec = 1;
	abs.tv_nsec = 0;
	CHECK_RAW(futex(&word, FUTEX_WAIT_BITSET, 0, (long)&abs, NULL, FUTEX_BITSET_MATCH_ANY), ETIMEDOUT);
	CHECK_RAW(futex(&word, FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, 0, (long)&abs, NULL, FUTEX_BITSET_MATCH_ANY),
		  ETIMEDOUT);
	say("timeouts: ETIMEDOUT, never early: relative, absolute monotonic, absolute realtime, past deadline\n");
}

/* ---- wait and wake between threads ---- */

struct waiter {
	volatile int *word;
	int op;
	int val;
	int bitset;
	long ret;
	volatile int done;
	pthread_t th;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	w->ret = futex(w->word, w->op, w->val, 0, NULL, w->bitset);
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void start_waiter(struct waiter *w, volatile int *word, int op, int bitset)
{
	w->word = word;
	w->op = op;
	w->val = *word;
	w->bitset = bitset;
	w->done = 0;
	CHECK(pthread_create(&w->th, NULL, wait_thread, w) == 0);
}

/* Wakes until `want` waiters were woken, in as many calls as it takes. */
static void wake_until(volatile int *word, int op, int want, int bitset)
{
	int woken = 0;
	while (woken < want) {
		long r = futex(word, op, want - woken, 0, NULL, bitset);
		CHECK(r >= 0 && r <= want - woken);
		woken += (int)r;
		if (woken < want)
			sched_yield();
	}
}

static void test_wait_wake(void)
{
	static volatile int word;
	struct waiter w[3];
	for (int i = 0; i < 3; i++)
		start_waiter(&w[i], &word, i == 1 ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, 0);
	/* Two private waiters and one shared: each kind is woken by its own kind of wake. */
	wake_until(&word, FUTEX_WAKE_PRIVATE, 2, 0);
	wake_until(&word, FUTEX_WAKE, 1, 0);
	for (int i = 0; i < 3; i++) {
		CHECK(pthread_join(w[i].th, NULL) == 0);
		CHECK(w[i].ret == 0);
	}
	CHECK(futex(&word, FUTEX_WAKE, INT_MAX, 0, NULL, 0) == 0);
	say("wait/wake: three waiters, woken one call at a time, each wait returned 0\n");
}

static void test_requeue(void)
{
	static volatile int a, b, c;
	struct waiter w[3];
	for (int i = 0; i < 3; i++)
		start_waiter(&w[i], &a, FUTEX_WAIT_PRIVATE, 0);
	/* CMP_REQUEUE with nothing to wake moves every queued waiter from a to b. */
	int moved = 0;
	while (moved < 3) {
		long r = futex(&a, FUTEX_CMP_REQUEUE_PRIVATE, 0, INT_MAX, &b, 0);
		CHECK(r >= 0 && r <= 3 - moved);
		moved += (int)r;
		if (moved < 3)
			sched_yield();
	}
	CHECK(futex(&a, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0) == 0);
	say("cmp_requeue: all three waiters moved, none left behind\n");

	CHECK_RAW(futex(&b, FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, &c, 1), EAGAIN);
	for (int i = 0; i < 3; i++)
		CHECK(w[i].done == 0);
	say("cmp_requeue: EAGAIN when the value differs, nobody woken\n");

	/* REQUEUE counts the woken and the requeued. */
	CHECK(futex(&b, FUTEX_REQUEUE_PRIVATE, 1, 1, &c, 0) == 2);
	int done = 0;
	while (done != 1) {
		done = 0;
		for (int i = 0; i < 3; i++)
			done += __atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE);
		CHECK(done <= 1);
		if (done != 1)
			sched_yield();
	}
	say("requeue: returned 2 (one woken, one moved), exactly one waiter done\n");
	/* One waiter is left on b and one on c. A requeued waiter that wakes spuriously waits again on
	 * the word it first waited on (Linux's futex_wait retries with its own address; seen once under
	 * heavy load), so a waiter missing from b or c must be on a: the two left are woken, each once. */
	long on_b = futex(&b, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0);
	long on_c = futex(&c, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0);
	CHECK(on_b >= 0 && on_b <= 1 && on_c >= 0 && on_c <= 1);
	long woken = on_b + on_c;
	while (woken < 2) {
		long r = futex(&a, FUTEX_WAKE_PRIVATE, 2 - (int)woken, 0, NULL, 0);
		CHECK(r >= 0 && r <= 2 - woken);
		woken += r;
		if (woken < 2)
			sched_yield();
	}
	if (on_b + on_c < 2)
		info("requeue: %ld waiter(s) had gone back to the first word\n", 2 - on_b - on_c);
	for (int i = 0; i < 3; i++) {
		CHECK(pthread_join(w[i].th, NULL) == 0);
		CHECK(w[i].ret == 0);
	}
	say("requeue: one waiter left on each word, each woken there\n");
}

static void test_bitset(void)
{
	static volatile int word;
	struct waiter w1, w2;
	start_waiter(&w1, &word, FUTEX_WAIT_BITSET_PRIVATE, 0x1);
	start_waiter(&w2, &word, FUTEX_WAIT_BITSET_PRIVATE, 0x6);
	CHECK(futex(&word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, 0, NULL, 0x8) == 0);
	wake_until(&word, FUTEX_WAKE_BITSET_PRIVATE, 1, 0x4);
	CHECK(pthread_join(w2.th, NULL) == 0);
	CHECK(w2.ret == 0);
	CHECK(w1.done == 0);
	wake_until(&word, FUTEX_WAKE_BITSET_PRIVATE, 1, 0x1);
	CHECK(pthread_join(w1.th, NULL) == 0);
	CHECK(w1.ret == 0);
	say("bitset: a wake reaches only waiters whose bits it shares\n");
}

/* ---- a timeout racing a wake leaves nothing queued ---- */

static volatile int race_a, race_b, race_looped, race_release;

static void *race_thread(void *arg)
{
	(void)arg;
	struct timespec tiny = { 0, 1000 };
	for (int i = 0; i < 2000; i++) {
		/* Timed waits on two words in turn: a wake that takes this waiter just as its timeout
		 * fires must be over before the next wait begins, or that wait leaves its entry behind. */
		long r = futex(&race_a, FUTEX_WAIT_PRIVATE, 0, (long)&tiny, NULL, 0);
		CHECK(r == 0 || r == -ETIMEDOUT || r == -EAGAIN);
		r = futex(&race_b, FUTEX_WAIT_PRIVATE, 0, (long)&tiny, NULL, 0);
		CHECK(r == 0 || r == -ETIMEDOUT || r == -EAGAIN);
	}
	__atomic_store_n(&race_looped, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&race_release, __ATOMIC_ACQUIRE))
		sched_yield();
	return NULL;
}

static void test_timeout_race(void)
{
	pthread_t th;
	CHECK(pthread_create(&th, NULL, race_thread, NULL) == 0);
	while (!__atomic_load_n(&race_looped, __ATOMIC_ACQUIRE)) {
		CHECK(futex(&race_a, FUTEX_WAKE_PRIVATE, 1, 0, NULL, 0) >= 0);
		CHECK(futex(&race_b, FUTEX_WAKE_PRIVATE, 1, 0, NULL, 0) >= 0);
		/* On one CPU a wake does not preempt this loop: without the yield the woken waiter
		 * would wait for the end of this thread's slice, once per wait. */
		sched_yield();
	}
	/* The waiter is alive and in no wait: a wake on either word must find nobody. */
	CHECK(futex(&race_a, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0) == 0);
	CHECK(futex(&race_b, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0) == 0);
	__atomic_store_n(&race_release, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(th, NULL) == 0);
	CHECK(futex(&race_a, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0) == 0);
	CHECK(futex(&race_b, FUTEX_WAKE_PRIVATE, INT_MAX, 0, NULL, 0) == 0);
	say("timeout race: 4000 timed waits raced by wakes, afterwards no waiter left queued\n");
}

int main(void)
{
	ut_start("futex");
	test_errors();
	test_timeouts();
	test_wait_wake();
	test_requeue();
	test_bitset();
	test_timeout_race();
	ut_ok();
}
