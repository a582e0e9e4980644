/*
 * uttty.h: how the terminal test programs start: a terminal of their own and a session leader
 * on it.
 *
 * The terminal is a new pty where the system has them (the host Linux: the run is then the same
 * wherever it is started, with or without a controlling terminal); on a system without ptys it is
 * /dev/console, which the leader then takes by force (TIOCSCTTY with 1). The leader runs in a
 * child, which makes itself a new session's leader first; the program passes when it exits 0.
 */
#ifndef UTTTY_H
#define UTTTY_H

#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "ut.h"

__attribute__((noreturn, unused)) static void ut_terminal_main(const char *name, int (*leader)(const char *path, int force))
{
	ut_start(name);
	const char *path = "/dev/console";
	int force = 1;
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master >= 0) {
		CHECK(grantpt(master) == 0 && unlockpt(master) == 0);
		path = ptsname(master);
		CHECK(path != NULL);
		force = 0;
	}
	info("terminal %s\n", path);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(leader(path, force));
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ut_ok();
}

#endif
