/*
 * pipe: two processes pass one byte back and forth over two pipes, first both on CPU 0 (every
 * hand-off switches address space), then parent on CPU 0 and child on CPU 1 (skipped with one
 * CPU). Per hand-off (two per round trip). Every byte sent is checked when it comes back.
 */
#include <sys/wait.h>

#include "gb.h"

static void put(int fd, char c)
{
	if (write(fd, &c, 1) != 1)
		ut_fail("pipe write: %s", strerror(errno));
}

static char get(int fd)
{
	char c;
	if (read(fd, &c, 1) != 1)
		ut_fail("pipe read: %s", strerror(errno));
	return c;
}

static void row(const char *name, int tag, int child_cpu, long n)
{
	long warm = n / 10 + 1;
	int down[2], up[2];
	CHECK(pipe(down) == 0 && pipe(up) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		gb_pin(child_cpu);
		for (long i = 0; i < warm; i++)
			put(up[1], (char)(get(down[0]) + 1));
		if (child_cpu != 0)
			gb_begin(tag);
		put(up[1], 'r');
		for (long i = 0; i < n; i++) {
			gb_sample_cpu(i, child_cpu);
			put(up[1], (char)(get(down[0]) + 1));
		}
		if (child_cpu != 0)
			gb_end(tag);
		/* The parent cannot see this process's sample: exit 2 says the child left its CPU. */
		_exit(atomic_load(&gb_migrated) >= 0 ? 2 : 0);
	}
	for (long i = 0; i < warm; i++) {
		put(down[1], (char)i);
		CHECK(get(up[0]) == (char)(i + 1));
	}
	CHECK(get(up[0]) == 'r');
	long answered = 0;
	struct gb_laps laps;
	gb_begin(tag);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++) {
			gb_sample_cpu(i, 0);
			put(down[1], (char)i);
			answered += get(up[0]) == (char)(i + 1);
		}
		gb_lap_done(&laps);
	}
	gb_end(tag);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	if (WEXITSTATUS(status) == 2)
		atomic_store(&gb_migrated, child_cpu == 0 ? 1 : 0);
	else
		CHECK(WEXITSTATUS(status) == 0);
	CHECK(answered == n);
	close(down[0]), close(down[1]), close(up[0]), close(up[1]);
	gb_laps_row(name, tag, &laps, 2);
}

int main(int argc, char **argv)
{
	ut_start("pipe");
	long n = gb_iterations(argc, argv, 10000);
	gb_pin(0);
	row("pipe_1cpu", TAG_PIPE_1CPU, 0, n);
	if (gb_row_can_use("pipe_2cpu", 1))
		row("pipe_2cpu", TAG_PIPE_2CPU, 1, n);
	ut_ok();
}
