/*
 * fork: fork + _exit + waitpid, then fork + execve of the tiny program + waitpid, per process.
 * Everything is pinned to CPU 0 (children inherit the pin), so the window on CPU 0 holds the
 * child's whole life. The tiny program is argv[2], default /bin/tiny.
 */
#include <sys/wait.h>

#include "gb.h"

static void wait_ok(pid_t pid)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void fork_exit(void)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(0);
	wait_ok(pid);
}

static const char *tiny;

static void fork_exec(void)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char *argv[] = { (char *)tiny, NULL }, *envp[] = { NULL };
		execve(tiny, argv, envp);
		_exit(127);
	}
	wait_ok(pid);
}

int main(int argc, char **argv)
{
	ut_start("fork");
	long n = gb_iterations(argc, argv, 300);
	tiny = argc > 2 ? argv[2] : "/bin/tiny";
	gb_pin(0);
	for (long i = 0; i < n / 10 + 1; i++)
		fork_exit();
	struct gb_laps laps;
	MARKER_BEGIN(TAG_FORK_EXIT);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++)
			fork_exit();
		gb_lap_done(&laps);
	}
	MARKER_END(TAG_FORK_EXIT);
	gb_laps_row("fork_exit_wait", TAG_FORK_EXIT, &laps, 1);

	for (long i = 0; i < n / 10 + 1; i++)
		fork_exec();
	MARKER_BEGIN(TAG_FORK_EXEC);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++)
			fork_exec();
		gb_lap_done(&laps);
	}
	MARKER_END(TAG_FORK_EXEC);
	gb_laps_row("fork_execve_wait", TAG_FORK_EXEC, &laps, 1);
	ut_ok();
}
