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
	MARKER_BEGIN(TAG_FORK_EXIT);
	struct gb_clock start = gb_now();
	for (long i = 0; i < n; i++)
		fork_exit();
	struct gb_clock end = gb_now();
	MARKER_END(TAG_FORK_EXIT);
	gb_row("fork_exit_wait", TAG_FORK_EXIT, n, start, end);

	for (long i = 0; i < n / 10 + 1; i++)
		fork_exec();
	MARKER_BEGIN(TAG_FORK_EXEC);
	start = gb_now();
	for (long i = 0; i < n; i++)
		fork_exec();
	end = gb_now();
	MARKER_END(TAG_FORK_EXEC);
	gb_row("fork_execve_wait", TAG_FORK_EXEC, n, start, end);
	ut_ok();
}
