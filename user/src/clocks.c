/*
 * clocks: clock_gettime on MONOTONIC (never goes back), REALTIME (a plausible date), THREAD and
 * PROCESS CPU time (they grow under a busy loop, not during a sleep, and the process clock keeps
 * the time of threads that ended); nanosleep and clock_nanosleep, relative and
 * TIMER_ABSTIME, never return early; EINVAL and EFAULT paths. The durations are printed as
 * information only.
 */
#include "ut.h"

#include <pthread.h>

#define MS (1000 * 1000LL)

static void check_not_early(int64_t start, int64_t end, int64_t want, const char *what)
{
	if (end - start < want)
		ut_fail("%s returned %lld ns early", what, (long long)(want - (end - start)));
	info("%s: asked %lld us, took %lld us\n", what, (long long)want / 1000, (long long)(end - start) / 1000);
}

static struct timespec ts_of(int64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
	return ts;
}

static int64_t raw_now(clockid_t clock)
{
	struct timespec ts;
	CHECK(rsys2(SYS_clock_gettime, clock, &ts) == 0);
	CHECK(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Runs until its own CPU time has grown by 20 ms, then ends. */
static void *busy_thread(void *arg)
{
	int64_t t0 = raw_now(CLOCK_THREAD_CPUTIME_ID);
	volatile uint64_t sink = 0;
	while (raw_now(CLOCK_THREAD_CPUTIME_ID) - t0 < 20 * MS)
		for (int i = 0; i < 10000; i++)
			sink += (uint64_t)i * i;
	(void)sink;
	return arg;
}

int main(void)
{
	ut_start("clocks");

	int64_t last = raw_now(CLOCK_MONOTONIC);
	for (int i = 0; i < 100000; i++) {
		int64_t now = i % 2 ? raw_now(CLOCK_MONOTONIC) : ut_now_ns(CLOCK_MONOTONIC);
		if (now < last)
			ut_fail("CLOCK_MONOTONIC went back by %lld ns", (long long)(last - now));
		last = now;
	}
	say("CLOCK_MONOTONIC: 100000 reads, never backwards\n");

	int64_t real = raw_now(CLOCK_REALTIME);
	/* 2020-01-01 and 2100-01-01 */
	CHECK(real / 1000000000 > 1577836800LL && real / 1000000000 < 4102444800LL);
	info("CLOCK_REALTIME: %lld s since the epoch\n", (long long)(real / 1000000000));
	say("CLOCK_REALTIME: between 2020 and 2100\n");

	int64_t thread0 = raw_now(CLOCK_THREAD_CPUTIME_ID), proc0 = raw_now(CLOCK_PROCESS_CPUTIME_ID);
	int64_t mono0 = raw_now(CLOCK_MONOTONIC);
	volatile uint64_t sink = 0;
	while (raw_now(CLOCK_THREAD_CPUTIME_ID) - thread0 < 30 * MS)
		for (int i = 0; i < 10000; i++)
			sink += (uint64_t)i * i;
	int64_t thread1 = raw_now(CLOCK_THREAD_CPUTIME_ID), proc1 = raw_now(CLOCK_PROCESS_CPUTIME_ID);
	int64_t mono1 = raw_now(CLOCK_MONOTONIC);
	CHECK(thread1 - thread0 >= 30 * MS);
	CHECK(proc1 - proc0 >= thread1 - thread0 - 1 * MS);
	CHECK(mono1 - mono0 >= thread1 - thread0 - 1 * MS);
	info("busy loop: thread CPU %lld us, process CPU %lld us, wall %lld us\n", (long long)(thread1 - thread0) / 1000,
	     (long long)(proc1 - proc0) / 1000, (long long)(mono1 - mono0) / 1000);
	say("CPU-time clocks: thread and process time grew under a busy loop, no faster than wall time\n");

	thread0 = raw_now(CLOCK_THREAD_CPUTIME_ID);
	mono0 = raw_now(CLOCK_MONOTONIC);
	struct timespec nap = ts_of(100 * MS);
	CHECK(nanosleep(&nap, NULL) == 0);
	thread1 = raw_now(CLOCK_THREAD_CPUTIME_ID);
	mono1 = raw_now(CLOCK_MONOTONIC);
	CHECK(mono1 - mono0 >= 100 * MS);
	if (thread1 - thread0 >= 50 * MS)
		ut_fail("a 100 ms sleep was charged %lld us of thread CPU time", (long long)(thread1 - thread0) / 1000);
	info("100 ms sleep: thread CPU %lld us\n", (long long)(thread1 - thread0) / 1000);
	say("CPU-time clocks: a sleeping thread's time does not grow with the wall clock\n");

	proc0 = raw_now(CLOCK_PROCESS_CPUTIME_ID);
	pthread_t busy[2];
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&busy[i], NULL, busy_thread, NULL) == 0);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_join(busy[i], NULL) == 0);
	proc1 = raw_now(CLOCK_PROCESS_CPUTIME_ID);
	if (proc1 - proc0 < 40 * MS - 1 * MS)
		ut_fail("two threads that each ran 20 ms and ended added only %lld us to the process clock",
			(long long)(proc1 - proc0) / 1000);
	info("two ended threads of 20 ms each: process CPU grew by %lld us\n", (long long)(proc1 - proc0) / 1000);
	say("CPU-time clocks: the process clock keeps the time of its ended threads\n");
	CHECK_RAW(rsys4(SYS_clock_nanosleep, CLOCK_THREAD_CPUTIME_ID, 0, &nap, 0), EOPNOTSUPP);
	say("clock_nanosleep: EOPNOTSUPP on the thread CPU-time clock\n");

	struct timespec ts = ts_of(10 * MS);
	int64_t t0 = raw_now(CLOCK_MONOTONIC);
	CHECK(nanosleep(&ts, NULL) == 0);
	check_not_early(t0, raw_now(CLOCK_MONOTONIC), 10 * MS, "nanosleep");

	t0 = raw_now(CLOCK_MONOTONIC);
	CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) == 0);
	check_not_early(t0, raw_now(CLOCK_MONOTONIC), 10 * MS, "clock_nanosleep monotonic relative");

	t0 = raw_now(CLOCK_MONOTONIC);
	struct timespec abs = ts_of(t0 + 10 * MS);
	CHECK(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL) == 0);
	CHECK(raw_now(CLOCK_MONOTONIC) >= t0 + 10 * MS);
	check_not_early(t0, raw_now(CLOCK_MONOTONIC), 10 * MS, "clock_nanosleep monotonic absolute");

	int64_t r0 = raw_now(CLOCK_REALTIME);
	abs = ts_of(r0 + 10 * MS);
	CHECK(clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &abs, NULL) == 0);
	CHECK(raw_now(CLOCK_REALTIME) >= r0 + 10 * MS);

	abs = ts_of(1000);
	CHECK(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL) == 0);
	ts = ts_of(0);
	CHECK(nanosleep(&ts, NULL) == 0);
	say("sleeps: nanosleep, clock_nanosleep relative and TIMER_ABSTIME, none early; past deadlines return at once\n");

	struct timespec bad = { .tv_sec = 0, .tv_nsec = 1000000000 };
	CHECK_RAW(rsys2(SYS_nanosleep, &bad, 0), EINVAL);
	bad.tv_nsec = -1;
	CHECK_RAW(rsys2(SYS_nanosleep, &bad, 0), EINVAL);
	bad.tv_sec = -1;
	bad.tv_nsec = 0;
	CHECK_RAW(rsys2(SYS_nanosleep, &bad, 0), EINVAL);
	bad.tv_sec = 0;
	bad.tv_nsec = 1000000000;
	CHECK_RAW(rsys4(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &bad, 0), EINVAL);
	CHECK_RAW(rsys4(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, &bad, 0), EINVAL);
	CHECK_RAW(rsys4(SYS_clock_nanosleep, 12345, 0, &ts, 0), EINVAL);
	CHECK_RAW(rsys2(SYS_nanosleep, 8, 0), EFAULT);
	say("sleeps: EINVAL for tv_nsec out of range, negative seconds or a bad clock; EFAULT\n");

	CHECK_RAW(rsys2(SYS_clock_gettime, 12345, &ts), EINVAL);
	CHECK_RAW(rsys2(SYS_clock_gettime, CLOCK_MONOTONIC, 8), EFAULT);
	CHECK_RAW(rsys2(SYS_clock_gettime, CLOCK_REALTIME, 0xffff800000000000UL), EFAULT);
	say("clock_gettime: EINVAL for a bad clock, EFAULT for a bad pointer\n");
	(void)sink;
	ut_ok();
}
