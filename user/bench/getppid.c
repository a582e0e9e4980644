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
	MARKER_BEGIN(TAG_GETPPID);
	struct gb_clock start = gb_now();
	for (long i = 0; i < n; i++)
		same += syscall(SYS_getppid) == ppid;
	struct gb_clock end = gb_now();
	MARKER_END(TAG_GETPPID);
	CHECK(same == n);
	gb_row("getppid", TAG_GETPPID, n, start, end);
	ut_ok();
}
