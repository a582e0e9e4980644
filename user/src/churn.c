/*
 * churn [N]: fork, exit and wait N times (default 1000), one child at a time; each child exits with
 * its round's low byte, which the parent checks. Counts forks, exits seen and reaps: they must be
 * equal, and no child may be left (ECHILD at the end). The kernel's test runs it and checks that
 * every frame and the heap come back.
 */
#include "ut.h"

#include <sys/wait.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	ut_start("churn");
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	long forks = 0, exits = 0, reaped = 0;
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			ut_fail("fork %ld: %s", i, strerror(errno));
		if (pid == 0)
			_exit((int)(i & 0xff));
		forks++;
		int st = -1;
		pid_t got = waitpid(pid, &st, 0);
		if (got != pid)
			ut_fail("waitpid %ld gave %d (%s)", i, (int)got, strerror(errno));
		reaped++;
		if (WIFEXITED(st) && WEXITSTATUS(st) == (int)(i & 0xff))
			exits++;
	}
	int st;
	CHECK_ERR(wait(&st), ECHILD);
	int64_t t1 = ut_now_ns(CLOCK_MONOTONIC);
	say("churn: %ld forks, %ld exits with their code, %ld reaped, none left\n", forks, exits, reaped);
	CHECK(forks == n && exits == n && reaped == n);
	info("%.1f us per fork+exit+wait\n", (double)(t1 - t0) / 1000.0 / (double)(n ? n : 1));
	ut_ok();
}
