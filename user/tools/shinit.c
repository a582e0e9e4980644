/*
 * shinit: the /init of `make run`. It makes the console the controlling terminal of a new session
 * (so Ctrl-C and Ctrl-\ reach the shell's foreground job), sets the environment a login shell
 * expects, and replaces itself with busybox's sh as a login shell (`-sh`, which reads
 * /etc/profile). The shell is then process 1: when it exits, init has ended and the kernel powers
 * off, saying with which status.
 *
 * Why not busybox init with an inittab: it starts the shell with fork, respawns it, and never
 * ends, so neither `exit` nor a script's last line would end a boot; this way a session typed
 * into the console (or piped into it by a test harness) ends the machine when the shell does.
 * The cost: orphans are reaped by the shell (ash waits for any child), not by a dedicated init.
 *
 * argv[1..], when given, are passed to the shell (`init=/init -- -c 'echo hi'`).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	setsid();
	/* Linux gives a session leader the terminal it opens without O_NOCTTY; TIOCSCTTY says it
	 * outright, for a console that was already open as fds 0-2. */
	ioctl(0, TIOCSCTTY, 0);
	pid_t pgrp = getpgrp();
	ioctl(0, TIOCSPGRP, &pgrp);
	static char *envp[] = { "HOME=/", "PATH=/bin", "SHELL=/bin/sh", "TERM=linux", "USER=root", NULL };
	char *args[64];
	int n = 0;
	args[n++] = "-sh";
	for (int i = 1; i < argc && n < 63; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	execve("/bin/sh", args, envp);
	int err = errno;
	/* The applet link itself may be what failed (a loader that does not follow links): busybox
	 * picks its applet from argv[0], "-sh" included. */
	execve("/bin/busybox", args, envp);
	fprintf(stderr, "init: cannot run /bin/sh: %s; /bin/busybox: %s\n", strerror(err), strerror(errno));
	return 127;
}
