/*
 * sched: sched_yield, sched_getaffinity (it returns the bytes it copied: musl's sysconf counts
 * CPUs with it), sched_setaffinity to each CPU of the mask with getcpu agreeing, and the errno
 * paths. Nothing printed depends on how many CPUs there are.
 */
#include "ut.h"

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

	unsigned cpu = ~0u, node = ~0u;
	CHECK(rsys3(SYS_getcpu, &cpu, &node, 0) == 0);
	CHECK(cpu < 1024 && (mask[cpu / 8] & (1 << (cpu % 8))));
	CHECK(rsys3(SYS_getcpu, 0, 0, 0) == 0);
	CHECK_RAW(rsys3(SYS_getcpu, 8, 0, 0), EFAULT);
	info("getcpu: cpu %u node %u\n", cpu, node);
	say("getcpu: a CPU of the mask; NULL pointers allowed, EFAULT for a bad one\n");
	ut_ok();
}
