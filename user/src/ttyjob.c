/*
 * ttyjob: job control at a terminal. A child makes a session and takes a terminal as its
 * controlling one (TIOCSCTTY), so its group is the foreground; then children in a background group
 * of that session read, write and change the terminal:
 *   - a read stops the group with SIGTTIN; with SIGTTIN ignored or blocked it fails with EIO; with
 *     a handler (no SA_RESTART) it ends in EINTR after the handler ran;
 *   - a write goes through, until TOSTOP is set: then it stops with SIGTTOU, unless SIGTTOU is
 *     blocked or ignored;
 *   - tcsetpgrp and tcsetattr stop with SIGTTOU, and go through with SIGTTOU ignored;
 *   - a process of an orphaned group (its group's parent gone) gets EIO for a read and a TOSTOP
 *     write instead of a stop;
 *   - a group orphaned while one of its members is stopped gets SIGHUP, then SIGCONT.
 * The terminal is a new pty (posix_openpt) where the system has one; on a system without ptys it
 * is /dev/console, taken with TIOCSCTTY's force flag. What a background write prints starts with
 * "# " so that it is never compared. At the end the leader gives the terminal up (TIOCNOTTY).
 */
#include "ut.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static int tty_fd = -1;
static volatile sig_atomic_t handled;

static void on_sig(int sig)
{
	(void)sig;
	handled++;
}

enum { R_EIO = 10, R_EINTR = 11, R_DONE = 12, R_OTHER = 13 };

static int result_of(long r)
{
	if (r >= 0)
		return R_DONE;
	if (errno == EIO)
		return R_EIO;
	if (errno == EINTR)
		return handled ? R_EINTR : R_OTHER;
	return R_OTHER;
}

static void set_action(int sig, void (*h)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = h;
	CHECK(sigaction(sig, &sa, NULL) == 0);
}

static void block(int sig)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, sig);
	CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
}

static int do_read(void)
{
	char c;
	return result_of(read(tty_fd, &c, 1));
}

static int do_write(void)
{
	static const char line[] = "# a background write\n";
	return result_of(write(tty_fd, line, sizeof(line) - 1));
}

static int do_setpgrp(void)
{
	/* To the group that is the foreground already: nothing changes when it goes through. */
	return result_of(tcsetpgrp(tty_fd, getppid()));
}

static int do_setattr(void)
{
	struct termios t;
	CHECK(tcgetattr(tty_fd, &t) == 0);
	return result_of(tcsetattr(tty_fd, TCSANOW, &t));
}

enum setup { DEFAULT, IGNORED, BLOCKED, HANDLED };

/* Runs `op` in a new background group after `setup` of `sig`; says how it ended. */
static void background(const char *what, int sig, enum setup setup, int (*op)(void))
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		CHECK(setpgid(0, 0) == 0);
		if (setup == IGNORED)
			set_action(sig, SIG_IGN);
		else if (setup == BLOCKED)
			block(sig);
		else if (setup == HANDLED)
			set_action(sig, on_sig);
		_exit(op());
	}
	setpgid(pid, pid);
	int st = 0;
	CHECK(waitpid(pid, &st, WUNTRACED) == pid);
	if (WIFSTOPPED(st)) {
		say("%s: stopped by %s\n", what, strsignal(WSTOPSIG(st)));
		CHECK(kill(pid, SIGKILL) == 0);
		CHECK(waitpid(pid, &st, 0) == pid);
		CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		return;
	}
	CHECK(WIFEXITED(st));
	const char *how = WEXITSTATUS(st) == R_EIO ? "EIO" : WEXITSTATUS(st) == R_EINTR ? "EINTR after the handler"
			: WEXITSTATUS(st) == R_DONE ? "done" : "something else";
	say("%s: %s\n", what, how);
}

/* A process whose group is orphaned: its group's only other member, its parent, has ended. */
static void orphaned(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t mid = fork();
	CHECK(mid >= 0);
	if (mid == 0) {
		CHECK(setpgid(0, 0) == 0);
		pid_t me = getpid();
		pid_t g = fork();
		CHECK(g >= 0);
		if (g == 0) {
			/* Until the parent's exit has handed this process to init. */
			while (getppid() == me)
				sched_yield();
			unsigned char r[2] = { (unsigned char)do_read(), (unsigned char)do_write() };
			CHECK(write(p[1], r, 2) == 2);
			_exit(0);
		}
		_exit(0);
	}
	close(p[1]);
	int st;
	CHECK(waitpid(mid, &st, 0) == mid);
	unsigned char r[2];
	CHECK(read(p[0], r, 2) == 2);
	close(p[0]);
	say("orphaned group: read %s, TOSTOP write %s\n", r[0] == R_EIO ? "EIO" : "not EIO", r[1] == R_EIO ? "EIO" : "not EIO");
}

static int hup_fd = -1;

static void on_hup(int sig)
{
	(void)sig;
	char c = 'H';
	CHECK(write(hup_fd, &c, 1) == 1);
}

/* A group orphaned while one of its members is stopped: every member gets SIGHUP, then SIGCONT
 * (nobody is left to continue it). The stopped one here handles SIGHUP and says so. */
static void orphaned_stopped(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t mid = fork();
	CHECK(mid >= 0);
	if (mid == 0) {
		CHECK(setpgid(0, 0) == 0);
		pid_t g = fork();
		CHECK(g >= 0);
		if (g == 0) {
			hup_fd = p[1];
			set_action(SIGHUP, on_hup);
			CHECK(kill(getpid(), SIGSTOP) == 0);
			char c = 'C';
			CHECK(write(p[1], &c, 1) == 1);
			_exit(0);
		}
		int st;
		CHECK(waitpid(g, &st, WUNTRACED) == g);
		CHECK(WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP);
		_exit(0);
	}
	close(p[1]);
	int st;
	CHECK(waitpid(mid, &st, 0) == mid);
	char r[3] = { 0 };
	size_t got = 0;
	for (ssize_t n; got < 2 && (n = read(p[0], r + got, 2 - got)) > 0; got += (size_t)n)
		;
	close(p[0]);
	say("orphaned while stopped: %s\n", strcmp(r, "HC") == 0 ? "SIGHUP handled, then continued" : "not hung up and continued");
}

static int leader(const char *path, int force)
{
	CHECK(setsid() == getpid());
	tty_fd = open(path, O_RDWR | O_NOCTTY);
	CHECK(tty_fd >= 0);
	CHECK(ioctl(tty_fd, TIOCSCTTY, force) == 0);
	CHECK(tcgetpgrp(tty_fd) == getpid());
	say("session leader: took the terminal, its group is the foreground\n");

	background("background read", SIGTTIN, DEFAULT, do_read);
	background("background read, SIGTTIN ignored", SIGTTIN, IGNORED, do_read);
	background("background read, SIGTTIN blocked", SIGTTIN, BLOCKED, do_read);
	background("background read, SIGTTIN caught", SIGTTIN, HANDLED, do_read);
	background("background write", SIGTTOU, DEFAULT, do_write);

	struct termios t, saved;
	CHECK(tcgetattr(tty_fd, &t) == 0);
	saved = t;
	t.c_lflag |= TOSTOP;
	CHECK(tcsetattr(tty_fd, TCSANOW, &t) == 0);
	background("TOSTOP: background write", SIGTTOU, DEFAULT, do_write);
	background("TOSTOP: background write, SIGTTOU blocked", SIGTTOU, BLOCKED, do_write);
	background("TOSTOP: background write, SIGTTOU ignored", SIGTTOU, IGNORED, do_write);
	background("background tcsetpgrp", SIGTTOU, DEFAULT, do_setpgrp);
	background("background tcsetpgrp, SIGTTOU ignored", SIGTTOU, IGNORED, do_setpgrp);
	background("background tcsetattr", SIGTTOU, DEFAULT, do_setattr);
	background("background tcsetattr, SIGTTOU blocked", SIGTTOU, BLOCKED, do_setattr);
	orphaned();
	orphaned_stopped();
	CHECK(tcsetattr(tty_fd, TCSANOW, &saved) == 0);
	CHECK(tcgetpgrp(tty_fd) == getpid());

	/* Give the terminal up; the leader's own group gets the SIGHUP of that. */
	set_action(SIGHUP, SIG_IGN);
	CHECK(ioctl(tty_fd, TIOCNOTTY) == 0);
	return 0;
}

int main(void)
{
	ut_start("ttyjob");
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
