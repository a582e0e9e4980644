/*
 * sched: sched_yield, sched_getaffinity (it returns the bytes it copied: musl's sysconf counts
 * CPUs with it), sched_setaffinity to each CPU of the mask with getcpu agreeing, the same on
 * another thread of the process by its tid (it moves there and stays), and the errno paths.
 * Nothing printed depends on how many CPUs there are.
 */
#include "ut.h"

#include <pthread.h>

/* The spinner thread: its tid; its target, (round << 16) | CPU, withdrawn (-1) before the affinity
 * call of a round and published only once it has returned; the last round in which it ran on its target; how often it
 * was seen elsewhere after that, in the same round (a real stray: the mask allowed one CPU and it
 * had already run there). The target is read before and after getcpu: a stale CPU number from
 * before a move is never held against the new round, nor a new one against the old. */
static int spinner_tid, spinner_target = -1, spinner_seen_round, spinner_strays, spinner_stop;

static void *spinner(void *arg)
{
	__atomic_store_n(&spinner_tid, (int)ut_gettid(), __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&spinner_stop, __ATOMIC_SEQ_CST)) {
		int target = __atomic_load_n(&spinner_target, __ATOMIC_SEQ_CST);
		unsigned cpu = ~0u;
		if (rsys3(SYS_getcpu, &cpu, 0, 0) != 0)
			ut_fail("getcpu failed");
		/* A move between the two reads of the target makes this sample's CPU belong to
		 * neither round: skip it. */
		if (target < 0 || __atomic_load_n(&spinner_target, __ATOMIC_SEQ_CST) != target)
			continue;
		int round = target >> 16, want = target & 0xffff;
		if ((int)cpu == want)
			__atomic_store_n(&spinner_seen_round, round, __ATOMIC_SEQ_CST);
		else if (__atomic_load_n(&spinner_seen_round, __ATOMIC_SEQ_CST) == round)
			__atomic_fetch_add(&spinner_strays, 1, __ATOMIC_SEQ_CST);
	}
	return arg;
}

/* Moves the spinner to `cpu` through its tid (round `round`, from 1); waits (10 s at most) until
 * it runs there. */
static void move_spinner(int cpu, int round)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	int tid = __atomic_load_n(&spinner_tid, __ATOMIC_SEQ_CST);
	/* No target while the move is under way: the spinner judges nothing until it is published. */
	__atomic_store_n(&spinner_target, -1, __ATOMIC_SEQ_CST);
	CHECK(rsys3(SYS_sched_setaffinity, tid, sizeof(set), &set) == 0);
	cpu_set_t back;
	CPU_ZERO(&back);
	CHECK(rsys3(SYS_sched_getaffinity, tid, sizeof(back), &back) > 0);
	CHECK(CPU_EQUAL(&set, &back));
	__atomic_store_n(&spinner_target, (round << 16) | cpu, __ATOMIC_SEQ_CST);
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	while (__atomic_load_n(&spinner_seen_round, __ATOMIC_SEQ_CST) != round) {
		if (ut_now_ns(CLOCK_MONOTONIC) - t0 > 10 * 1000000000LL)
			ut_fail("the spinner did not reach CPU %d in 10 s after its affinity was set", cpu);
		sched_yield();
	}
}

int main(void)
{
	ut_start("sched");
	for (int i = 0; i < 1000; i++)
		CHECK(sched_yield() == 0);
	say("sched_yield: 1000 calls returned 0\n");

	unsigned char mask[128];
	memset(mask, 0xff, sizeof(mask));
	long bytes = rsys3(SYS_sched_getaffinity, 0, sizeof(mask), mask);
	CHECK(bytes >= 8 && bytes % 8 == 0 && bytes <= (long)sizeof(mask));
	int nr = 0;
	for (long i = 0; i < bytes; i++)
		nr += __builtin_popcount(mask[i]);
	CHECK(nr >= 1);
	CHECK(nr == sysconf(_SC_NPROCESSORS_ONLN));
	info("sched_getaffinity copied %ld bytes, %d CPUs in the mask\n", bytes, nr);
	say("sched_getaffinity: returns the bytes copied, a multiple of 8; sysconf agrees\n");
	CHECK(rsys3(SYS_sched_getaffinity, ut_gettid(), sizeof(mask), mask) == bytes);
	CHECK_RAW(rsys3(SYS_sched_getaffinity, 0, 7, mask), EINVAL);
	CHECK_RAW(rsys3(SYS_sched_getaffinity, 0, 4, mask), EINVAL);
	CHECK_RAW(rsys3(SYS_sched_getaffinity, 0, sizeof(mask), 8), EFAULT);
	CHECK_RAW(rsys3(SYS_sched_getaffinity, 0x3fffffff, sizeof(mask), mask), ESRCH);
	say("sched_getaffinity: EINVAL for a short or odd size, EFAULT, ESRCH\n");

	int cpus[1024];
	int n = ut_cpus(cpus, 1024);
	CHECK(n == nr);
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < n; i++) {
			int got = ut_pin(cpus[i]);
			if (got != cpus[i])
				ut_fail("pinned to CPU %d, getcpu says %d", cpus[i], got);
			unsigned char now[128];
			memset(now, 0, sizeof(now));
			CHECK(rsys3(SYS_sched_getaffinity, 0, sizeof(now), now) == bytes);
			for (int c = 0; c < (int)sizeof(now) * 8; c++)
				CHECK(!!(now[c / 8] & (1 << (c % 8))) == (c == cpus[i]));
		}
	say("sched_setaffinity: pinned to each CPU of the mask in turn, getcpu agreed\n");

	unsigned char empty[128] = { 0 };
	CHECK_RAW(rsys3(SYS_sched_setaffinity, 0, sizeof(empty), empty), EINVAL);
	empty[127] = 0x80; /* CPU 1023: no such CPU here */
	CHECK_RAW(rsys3(SYS_sched_setaffinity, 0, sizeof(empty), empty), EINVAL);
	CHECK_RAW(rsys3(SYS_sched_setaffinity, 0, sizeof(mask), 8), EFAULT);
	CHECK_RAW(rsys3(SYS_sched_setaffinity, 0x3fffffff, sizeof(mask), mask), ESRCH);
	CHECK(rsys3(SYS_sched_setaffinity, 0, bytes, mask) == 0);
	say("sched_setaffinity: EINVAL for an empty mask or absent CPUs, EFAULT, ESRCH; mask restored\n");

	/* Another thread's affinity, by its tid: it moves to each CPU in turn, and once there it is
	 * never seen elsewhere. */
	pthread_t th;
	CHECK(pthread_create(&th, NULL, spinner, NULL) == 0);
	while (!__atomic_load_n(&spinner_tid, __ATOMIC_SEQ_CST))
		sched_yield();
	for (int i = n - 1; i >= 0; i--) {
		move_spinner(cpus[i], n - i);
		struct timespec stay = { 0, 20 * 1000000 };
		nanosleep(&stay, NULL);
	}
	__atomic_store_n(&spinner_stop, 1, __ATOMIC_SEQ_CST);
	CHECK(pthread_join(th, NULL) == 0);
	if (spinner_strays)
		ut_fail("the spinner ran %d times off the one CPU it was allowed", spinner_strays);
	say("sched_setaffinity on another thread: it moved to each CPU in turn and stayed there\n");

	unsigned cpu = ~0u, node = ~0u;
	CHECK(rsys3(SYS_getcpu, &cpu, &node, 0) == 0);
	CHECK(cpu < 1024 && (mask[cpu / 8] & (1 << (cpu % 8))));
	CHECK(rsys3(SYS_getcpu, 0, 0, 0) == 0);
	CHECK_RAW(rsys3(SYS_getcpu, 8, 0, 0), EFAULT);
	info("getcpu: cpu %u node %u\n", cpu, node);
	say("getcpu: a CPU of the mask; NULL pointers allowed, EFAULT for a bad one\n");
	ut_ok();
}
