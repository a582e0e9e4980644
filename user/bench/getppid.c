/* getppid: the null system call, per call. */
#include "gb.h"

int main(int argc, char **argv)
{
	ut_start("getppid");
	long n = gb_iterations(argc, argv, 10000);
	gb_pin(0);
	long ppid = syscall(SYS_getppid);
	if (ppid < 0)
		ut_fail("getppid: %s", strerror(errno));
	for (long i = 0; i < n / 10 + 1; i++)
		CHECK(syscall(SYS_getppid) == ppid);
	long same = 0;
	struct gb_laps laps;
	MARKER_BEGIN(TAG_GETPPID);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++)
			same += syscall(SYS_getppid) == ppid;
		gb_lap_done(&laps);
	}
	MARKER_END(TAG_GETPPID);
	CHECK(same == n);
	gb_laps_row("getppid", TAG_GETPPID, &laps, 1);
	ut_ok();
}
