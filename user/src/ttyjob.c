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
 *   - a group orphaned while one of its members is stopped gets SIGHUP, then SIGCONT;
 *   - tcsetpgrp's checks, in Linux's order: a negative group is EINVAL (even from a caller whose
 *     terminal this is not), a caller whose controlling terminal this is not gets ENOTTY, an id
 *     nobody uses ESRCH (0 too), a group of another session EPERM; a group whose leader has ended
 *     can still be joined, and made the foreground after the leader was reaped while another
 *     member lives (a shell's pipeline `a | b` when a ends first); a plain pid of the session is
 *     taken as a group id, as Linux does; kill(-group, 0) finds a group of zombies, not one whose
 *     members were all reaped.
 * The terminal is a new pty (posix_openpt) where the system has one; on a system without ptys it
 * is /dev/console, taken with TIOCSCTTY's force flag. What a background write prints starts with
 * "# " so that it is never compared. At the end the leader gives the terminal up (TIOCNOTTY).
 */
#include "ut.h"
#include "uttty.h"

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

static const char *errname(int r, int e)
{
	if (r == 0)
		return "done";
	switch (e) {
	case EINVAL: return "EINVAL";
	case ENOTTY: return "ENOTTY";
	case ESRCH: return "ESRCH";
	case EPERM: return "EPERM";
	case EIO: return "EIO";
	default: return strerror(e);
	}
}

/* tcsetpgrp(tty_fd, pgrp): "done" or the errno's name. */
static const char *try_setpgrp(pid_t pgrp)
{
	errno = 0;
	int r = tcsetpgrp(tty_fd, pgrp);
	return errname(r, errno);
}

/* kill(pid, 0): "done" or the errno's name. */
static const char *try_kill(pid_t pid)
{
	errno = 0;
	int r = kill(pid, 0);
	return errname(r, errno);
}

/* The argument and caller checks, and a group of another session. */
static void setpgrp_refusals(void)
{
	say("tcsetpgrp to -1: %s\n", try_setpgrp(-1));
	say("tcsetpgrp to 0: %s\n", try_setpgrp(0));
	int ready[2], done[2];
	CHECK(pipe(ready) == 0 && pipe(done) == 0);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		close(ready[0]);
		close(done[1]);
		/* A session of its own, without a controlling terminal: the terminal is not its own. */
		char r[3] = { setsid() == getpid() ? 'y' : 'n', 0, 0 };
		errno = 0;
		int x = tcsetpgrp(tty_fd, -1);
		r[1] = x == 0 ? 'd' : errno == EINVAL ? 'I' : errno == ENOTTY ? 'T' : '?';
		errno = 0;
		x = tcsetpgrp(tty_fd, getpid());
		r[2] = x == 0 ? 'd' : errno == EINVAL ? 'I' : errno == ENOTTY ? 'T' : '?';
		CHECK(write(ready[1], r, 3) == 3);
		/* Held in its session until the parent has tried its group. */
		CHECK(read(done[0], r, 1) == 0);
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	char r[3] = { 0 };
	CHECK(read(ready[0], r, 3) == 3 && r[0] == 'y');
	say("from another session, tcsetpgrp to -1: %s, to its own group: %s\n", r[1] == 'I' ? "EINVAL" : r[1] == 'T' ? "ENOTTY" : "other",
	    r[2] == 'I' ? "EINVAL" : r[2] == 'T' ? "ENOTTY" : "other");
	say("tcsetpgrp to a group of another session: %s\n", try_setpgrp(c));
	close(done[1]);
	close(ready[0]);
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	say("the foreground unchanged: %s\n", tcgetpgrp(tty_fd) == getpid() ? "yes" : "no");
}

/* A group outlives its leader: `a | b` where a ends (and is reaped) before b asks for the
 * terminal. The leader makes other groups the foreground, so it ignores SIGTTOU meanwhile, and
 * says what it saw once its own group is the foreground again. */
static void setpgrp_leader_gone(void)
{
	set_action(SIGTTOU, SIG_IGN);
	pid_t a = fork();
	CHECK(a >= 0);
	if (a == 0) {
		CHECK(setpgid(0, 0) == 0);
		_exit(0);
	}
	/* a has ended; it is a zombie until reaped below. */
	siginfo_t si;
	CHECK(waitid(P_PID, a, &si, WEXITED | WNOWAIT) == 0 && si.si_pid == a);
	CHECK(getpgid(a) == a);
	const char *zombie_kill = try_kill(-a);
	int ready[2], done[2];
	CHECK(pipe(ready) == 0 && pipe(done) == 0);
	pid_t b = fork();
	CHECK(b >= 0);
	if (b == 0) {
		close(ready[0]);
		close(done[1]);
		errno = 0;
		char r = setpgid(0, a) == 0 ? 'd' : errno == EPERM ? 'P' : '?';
		CHECK(write(ready[1], &r, 1) == 1);
		CHECK(read(done[0], &r, 1) == 0);
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	char joined = 0;
	CHECK(read(ready[0], &joined, 1) == 1);
	int st;
	CHECK(waitpid(a, &st, 0) == a && WIFEXITED(st));
	const char *after_reap = try_setpgrp(a);
	int fg_a = tcgetpgrp(tty_fd) == a;
	const char *plain_pid = try_setpgrp(b);
	int fg_b = tcgetpgrp(tty_fd) == b;
	const char *back = try_setpgrp(getpid());
	close(done[1]);
	close(ready[0]);
	CHECK(waitpid(b, &st, 0) == b && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	const char *all_gone = try_setpgrp(a);
	const char *gone_kill = try_kill(-a);
	set_action(SIGTTOU, SIG_DFL);
	CHECK(tcgetpgrp(tty_fd) == getpid());
	say("kill(-group, 0) while its only member is a zombie: %s\n", zombie_kill);
	say("setpgid into the group of a process that has ended: %s\n", joined == 'd' ? "done" : joined == 'P' ? "EPERM" : "other");
	say("tcsetpgrp to that group after its leader was reaped: %s, the foreground: %s\n", after_reap, fg_a ? "that group" : "another");
	say("tcsetpgrp to a pid of the session that leads no group: %s, the foreground: %s\n", plain_pid, fg_b ? "that id" : "another");
	say("tcsetpgrp back to the leader's group: %s\n", back);
	say("tcsetpgrp to the group once every member was reaped: %s, kill(-group, 0): %s\n", all_gone, gone_kill);
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
	setpgrp_refusals();
	setpgrp_leader_gone();
	CHECK(tcgetpgrp(tty_fd) == getpid());

	/* Give the terminal up; the leader's own group gets the SIGHUP of that. */
	set_action(SIGHUP, SIG_IGN);
	CHECK(ioctl(tty_fd, TIOCNOTTY) == 0);
	return 0;
}

int main(void)
{
	ut_terminal_main("ttyjob", leader);
}
