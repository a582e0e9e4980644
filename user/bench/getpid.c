/*
 * getpid: the null system call round trip, per call. The `syscall` instruction is issued inline
 * (no libc wrapper, no errno), and the windows hold only the calls and their loop: one window per
 * lap, the clock read between them, outside. So the kernel instructions per call are the entry,
 * the dispatch to getpid and the return to user mode, and the user ones the loop's few.
 */
#include "gb.h"

static inline long raw_getpid(void)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_getpid) : "rcx", "r11", "memory");
	return ret;
}

int main(int argc, char **argv)
{
	ut_start("getpid");
	long n = gb_iterations(argc, argv, 10000);
	gb_pin(0);
	long pid = raw_getpid();
	if (pid <= 0)
		ut_fail("getpid returned %ld", pid);
	for (long i = 0; i < n / 10 + 1; i++)
		CHECK(raw_getpid() == pid);
	long same = 0;
	struct gb_laps laps;
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		MARKER_BEGIN(TAG_GETPID);
		for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++)
			same += raw_getpid() == pid;
		MARKER_END(TAG_GETPID);
		gb_lap_done(&laps);
	}
	CHECK(same == n);
	gb_laps_row("getpid", TAG_GETPID, &laps, 1);
	ut_ok();
}
