/*
 * wait: the process tree through fork, wait4 and waitid. Exit codes and deaths by signal in the
 * Linux status word, WNOHANG on a running child, WNOWAIT leaving a child waitable, ECHILD, the
 * selection by pid, by group (setpgid) and of any child, getppid in a child, kill of one process
 * and of a group, setsid, and an orphan's parent changing when its parent dies (to init or the
 * nearest subreaper: only the change is compared).
 */
#include "ut.h"

#include <fenv.h>
#include <signal.h>
#include <sys/wait.h>

/* A child that spins in system calls until it is killed. */
static pid_t spinner(void)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		for (;;)
			rsys0(SYS_sched_yield);
	}
	return pid;
}

static pid_t exiter(int code)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(code);
	return pid;
}

static void exit_codes(void)
{
	int codes[] = { 0, 3, 255, 256 + 7 };
	for (unsigned i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		pid_t pid = exiter(codes[i]);
		int st = -1;
		CHECK(wait4(pid, &st, 0, NULL) == pid);
		CHECK(WIFEXITED(st) && !WIFSIGNALED(st));
		say("exit %d seen as status %#x, code %d\n", codes[i], st, WEXITSTATUS(st));
	}
}

static void signals(void)
{
	/* Killed by its own SIGKILL. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		rsys2(SYS_kill, rsys0(SYS_getpid), SIGKILL);
		_exit(99);
	}
	int st = -1;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFSIGNALED(st) && !WIFEXITED(st));
	say("self-kill: signaled by %d\n", WTERMSIG(st));

	/* abort(): SIGABRT (the core bit depends on the host's core limit: not compared). */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		abort();
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFSIGNALED(st));
	say("abort: signaled by %d\n", WTERMSIG(st));

	/* A running child: WNOHANG finds nothing, then the parent kills it. */
	pid = spinner();
	CHECK(waitpid(pid, &st, WNOHANG) == 0);
	siginfo_t si;
	memset(&si, 0xff, sizeof(si));
	CHECK(waitid(P_PID, pid, &si, WEXITED | WNOHANG) == 0);
	CHECK(si.si_pid == 0 && si.si_signo == 0);
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	say("spinner: WNOHANG found nothing, kill ended it by %d\n", WTERMSIG(st));
	CHECK_ERR(kill(pid, 0), ESRCH);
}

static void waitid_calls(void)
{
	pid_t pid = exiter(5);
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	/* WNOWAIT: seen, left waitable. */
	CHECK(waitid(P_PID, pid, &si, WEXITED | WNOWAIT) == 0);
	CHECK(si.si_pid == pid);
	say("waitid WNOWAIT: signo %d code %d status %d\n", si.si_signo, si.si_code, si.si_status);
	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_ALL, 0, &si, WEXITED) == 0);
	CHECK(si.si_pid == pid);
	say("waitid P_ALL: signo %d code %d (CLD_EXITED %d) status %d\n", si.si_signo, si.si_code, CLD_EXITED, si.si_status);

	pid = spinner();
	CHECK(kill(pid, SIGKILL) == 0);
	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PID, pid, &si, WEXITED) == 0);
	CHECK(si.si_pid == pid);
	say("waitid killed: code %d (CLD_KILLED %d) status %d\n", si.si_code, CLD_KILLED, si.si_status);

	CHECK_ERR(waitid(P_PID, pid, &si, WEXITED), ECHILD);
	CHECK_ERR(waitid(P_ALL, 0, &si, 0), EINVAL);
	CHECK_ERR(waitid(7, 0, &si, WEXITED), EINVAL);
	say("waitid: ECHILD after the reap, EINVAL without an event kind or with a bad idtype\n");
}

static void no_children(void)
{
	int st;
	CHECK_ERR(wait4(-1, &st, 0, NULL), ECHILD);
	CHECK_ERR(wait4(-1, &st, WNOHANG, NULL), ECHILD);
	CHECK_ERR(wait4(getppid(), &st, 0, NULL), ECHILD);
	CHECK_ERR(wait4(-1, &st, 0x100, NULL), EINVAL);
	say("no children: ECHILD (also for the parent's pid), EINVAL for a bad option\n");
}

static void identity_and_groups(void)
{
	pid_t me = getpid();
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* The child's parent is the caller of fork. */
		if (getppid() != me)
			_exit(10);
		if (setpgid(0, 0) != 0 || getpgrp() != getpid() || getpgid(0) != getpid())
			_exit(11);
		_exit(0);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st));
	say("child: getppid is the parent, own group by setpgid: code %d\n", WEXITSTATUS(st));

	/* A group of two spinners: selection by group, then kill of the group. */
	pid_t a = spinner();
	CHECK(setpgid(a, a) == 0);
	pid_t b = spinner();
	CHECK(setpgid(b, a) == 0);
	CHECK(getpgid(a) == a && getpgid(b) == a);
	CHECK(waitpid(-a, &st, WNOHANG) == 0);
	CHECK(kill(-a, SIGKILL) == 0);
	int n = 0;
	for (int i = 0; i < 2; i++) {
		pid_t got = waitpid(-a, &st, 0);
		CHECK(got == a || got == b);
		n += WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
	}
	CHECK_ERR(waitpid(-a, &st, 0), ECHILD);
	CHECK_ERR(kill(-a, SIGKILL), ESRCH);
	say("group of 2: %d killed by kill(-pgrp), then ECHILD and ESRCH for the group\n", n);

	/* setsid in a child: a new session and group led by it. */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		pid_t s = setsid();
		if (s != getpid() || getsid(0) != s || getpgrp() != s)
			_exit(20);
		if (setsid() != -1 || errno != EPERM)
			_exit(21);
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid);
	say("setsid in a child: code %d\n", WEXITSTATUS(st));
	/* Linux gives 0 for a session or group whose leader lies outside the caller's pid namespace
	 * (a container started without a session): only the agreement of the two forms is portable. */
	CHECK(getsid(0) >= 0 && getsid(0) == getsid(getpid()));
	CHECK(getpgid(0) >= 0 && getpgid(0) == getpgrp());
	CHECK_ERR(getpgid(-5), ESRCH);
	CHECK_ERR(setpgid(-1, 0), EINVAL);
}

/* The child continues with the forking thread's floating-point state (here its rounding mode). */
static void fork_keeps_fp_state(void)
{
	CHECK(fesetround(FE_UPWARD) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(fegetround() == FE_UPWARD ? 0 : 1);
	CHECK(fesetround(FE_TONEAREST) == 0);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	say("fork: the child keeps the parent's rounding mode: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "no");
}

/* A child forks a grandchild and exits; the grandchild waits until its parent changes, then marks
 * itself by setsid, which the test sees through getsid. */
static void orphan(void)
{
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		pid_t parent = getpid();
		pid_t g = fork();
		if (g < 0)
			_exit(1);
		if (g == 0) {
			while (getppid() == parent)
				rsys0(SYS_sched_yield);
			setsid();
			for (;;)
				rsys0(SYS_sched_yield);
		}
		/* The grandchild's pid, as its distance from ours (pids are handed out upwards). */
		_exit(g > parent && g - parent < 255 ? g - parent : 255);
	}
	int st;
	CHECK(waitpid(child, &st, 0) == child);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 255);
	pid_t g = child + WEXITSTATUS(st);
	CHECK(kill(g, 0) == 0);
	int64_t deadline = ut_now_ns(CLOCK_MONOTONIC) + 20 * 1000000000LL;
	int changed = 0;
	while (g > 0 && ut_now_ns(CLOCK_MONOTONIC) < deadline) {
		if (getsid(g) == g) {
			changed = 1;
			break;
		}
		sched_yield();
	}
	if (g > 0)
		kill(g, SIGKILL);
	CHECK(g > 0);
	say("orphan: its parent changed when its parent exited: %s\n", changed ? "yes" : "no");
	CHECK(changed);
}

int main(void)
{
	ut_start("wait");
	exit_codes();
	signals();
	waitid_calls();
	no_children();
	identity_and_groups();
	fork_keeps_fp_state();
	orphan();
	ut_ok();
}
