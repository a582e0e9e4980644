/*
 * clonevm: clone(CLONE_VM) without CLONE_THREAD makes a process of its own (its pid, SIGCHLD to
 * its parent, a zombie that wait4 reaps) that runs in its parent's memory: the child's writes,
 * and a page it maps, are the parent's; the parent's writes made while the child runs are the
 * child's; the child's CLONE_CHILD_CLEARTID word is cleared and woken in the parent's memory; a
 * private futex wake from the child reaches a wait in the parent. Then CLONE_VM | CLONE_VFORK (the
 * parent goes on after the child's end, its writes done) and vfork() (the same through the call).
 * Then the descriptor table: with CLONE_FILES the child's opens and closes are the parent's, without
 * it they are not; an execve in a CLONE_FILES child leaves the parent's close-on-exec descriptor
 * open (the child's table becomes its own first).
 * Then the signal actions: with CLONE_SIGHAND the child's sigaction is the parent's and the
 * parent's the child's, and a handler the parent installs after the clone runs when the child
 * takes the signal; without it each keeps its own; an execve in a CLONE_SIGHAND child starts its
 * image with the caught signal at its default (the ignored one stays ignored) and leaves the
 * parent's handler installed (the child's table becomes its own first).
 *
 * SIGCHLD is blocked and taken with sigtimedwait after each wait, with the child's pid in it.
 */
#include "ut.h"

#include <linux/futex.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

static char stack[64 * 1024] __attribute__((aligned(16)));

/* Written by the children, read by the parent (and the other way). */
static volatile long shared_word;
static volatile long child_pid_seen, child_ppid_seen;
static char *volatile child_page;
static atomic_int go, ready;
static volatile int clear_word;
static volatile int futex_word;

/* The children run on the parent's memory and TLS: raw system calls only, no libc state. */
static int plain_child(void *arg)
{
	long *heap = arg;
	child_pid_seen = rsys0(SYS_getpid);
	child_ppid_seen = rsys0(SYS_getppid);
	shared_word = 0x1234;
	heap[0] = 42;
	heap[1] = 43;
	char *p = (char *)rsys6(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((long)p < 0 && (long)p > -4096)
		return 90;
	memcpy(p, "mapped by the child", 20);
	child_page = p;
	atomic_store(&ready, 1);
	/* The parent writes while this child runs, then lets it go on. */
	while (!atomic_load(&go))
		rsys0(SYS_sched_yield);
	if (shared_word != 0x5678)
		return 91;
	/* Wake the parent's private futex wait on a word of the shared memory. */
	futex_word = 1;
	rsys3(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1);
	return 5;
}

static int vfork_child(void *arg)
{
	(void)arg;
	shared_word = 0xabcd;
	return 6;
}

static void take_sigchld_code(pid_t pid, const char *what, int code)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	siginfo_t si;
	struct timespec ts = { 10, 0 };
	int s = sigtimedwait(&set, &si, &ts);
	if (s != SIGCHLD)
		ut_fail("%s: no SIGCHLD (%d, %s)", what, s, strerror(errno));
	CHECK(si.si_pid == pid && si.si_code == code);
}

static void take_sigchld(pid_t pid, const char *what)
{
	take_sigchld_code(pid, what, CLD_EXITED);
}

static void plain(void)
{
	long *heap = malloc(2 * sizeof(long));
	CHECK(heap != NULL);
	heap[0] = heap[1] = 0;
	shared_word = 0;
	clear_word = -1;
	pid_t me = getpid();
	int ctid = 0;
	pid_t pid = clone(plain_child, stack + sizeof(stack), CLONE_VM | CLONE_CHILD_CLEARTID | CLONE_PARENT_SETTID | SIGCHLD,
			  heap, &ctid, NULL, (int *)&clear_word);
	CHECK(pid > 0);
	CHECK(ctid == pid);
	while (!atomic_load(&ready))
		sched_yield();
	CHECK(shared_word == 0x1234 && heap[0] == 42 && heap[1] == 43);
	CHECK(child_pid_seen == pid && child_pid_seen != me && child_ppid_seen == me);
	CHECK(strcmp(child_page, "mapped by the child") == 0);
	say("clone(CLONE_VM): own pid, parent's pid as ppid; its writes to data and heap and its new mapping are the parent's\n");
	shared_word = 0x5678;
	atomic_store(&go, 1);
	while (futex_word == 0) {
		long r = rsys4(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, 0);
		CHECK(r == 0 || r == -EAGAIN || r == -EINTR);
	}
	say("clone(CLONE_VM): the parent's write reached the child, the child's private futex wake the parent\n");
	while (clear_word != 0) {
		long r = rsys4(SYS_futex, &clear_word, FUTEX_WAIT, clear_word, 0);
		CHECK(r == 0 || r == -EAGAIN || r == -EINTR);
	}
	int st = -1;
	CHECK(wait4(pid, &st, 0, NULL) == pid);
	CHECK(WIFEXITED(st));
	take_sigchld(pid, "clone(CLONE_VM)");
	CHECK_ERR(kill(pid, 0), ESRCH);
	say("clone(CLONE_VM): CHILD_CLEARTID cleared in the parent's memory, SIGCHLD, wait4 reaped exit %d\n", WEXITSTATUS(st));
	CHECK(munmap(child_page, 4096) == 0);
	free(heap);
}

static void vforks(void)
{
	shared_word = 0;
	pid_t pid = clone(vfork_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
	CHECK(pid > 0);
	/* CLONE_VFORK: the child has ended before clone returns here; its write is done. */
	CHECK(shared_word == 0xabcd);
	int st = -1;
	CHECK(waitpid(pid, &st, 0) == pid);
	take_sigchld(pid, "CLONE_VFORK");
	say("clone(CLONE_VM | CLONE_VFORK): the write was there when the parent went on; exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

	shared_word = 0;
	pid = vfork();
	if (pid == 0) {
		shared_word = 0xbeef;
		_exit(7);
	}
	CHECK(pid > 0);
	CHECK(shared_word == 0xbeef);
	CHECK(waitpid(pid, &st, 0) == pid);
	take_sigchld(pid, "vfork");
	say("vfork: the child's write was there when the parent went on; exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static volatile int files_fds[2];
static volatile int files_victim;

static int files_child(void *arg)
{
	(void)arg;
	int p[2];
	if (pipe(p) != 0)
		return 1;
	files_fds[0] = p[0];
	files_fds[1] = p[1];
	if (write(p[1], "f", 1) != 1)
		return 2;
	/* The parent's descriptor: closed for both when the table is shared. */
	return close(files_victim) == 0 ? 0 : 3;
}

static int exec_child(void *arg)
{
	(void)arg;
	char *argv[] = { "true", NULL };
	execve("/bin/true", argv, NULL);
	_exit(127);
}

static void files(int share)
{
	const char *how = share ? "clone(CLONE_VM | CLONE_FILES)" : "clone(CLONE_VM)";
	files_victim = dup(1);
	CHECK(files_victim >= 0);
	files_fds[0] = files_fds[1] = -1;
	pid_t pid = clone(files_child, stack + sizeof(stack), CLONE_VM | (share ? CLONE_FILES : 0) | SIGCHLD, NULL);
	CHECK(pid > 0);
	int st = -1;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	take_sigchld(pid, how);
	char c = 0;
	int pipe_seen = fcntl(files_fds[0], F_GETFD) >= 0 && read(files_fds[0], &c, 1) == 1 && c == 'f';
	int victim_open = fcntl(files_victim, F_GETFD) >= 0;
	say("%s: the child's pipe is the parent's: %s; the child's close closed the parent's descriptor: %s\n", how,
	    pipe_seen ? "yes" : "no", victim_open ? "no" : "yes");
	if (pipe_seen) {
		CHECK(close(files_fds[0]) == 0 && close(files_fds[1]) == 0);
	}
	if (victim_open)
		CHECK(close(files_victim) == 0);
}

/* The actions: the children use raw rt_sigaction (the kernel's struct k_sigaction). */
struct ksa {
	unsigned long handler, flags, restorer, mask;
};

static atomic_int sh_step;
static volatile long sh_seen_usr2, sh_handled_pid;
static volatile sig_atomic_t sh_handled;

/* Runs in the child on the child's stack: raw calls only. */
static void on_usr2(int sig)
{
	(void)sig;
	sh_handled_pid = rsys0(SYS_getpid);
	sh_handled++;
}

static int sighand_child(void *arg)
{
	(void)arg;
	/* Step 1: SIGUSR1 ignored here; the parent looks whether that is its action too. */
	struct ksa ign = { (unsigned long)SIG_IGN, 0, 0, 0 };
	if (rsys4(SYS_rt_sigaction, SIGUSR1, (long)&ign, 0, 8) != 0)
		return 1;
	atomic_store(&sh_step, 1);
	/* Step 2: the parent has installed a handler for SIGUSR2; read it, then take the signal. */
	while (atomic_load(&sh_step) != 2)
		rsys0(SYS_sched_yield);
	struct ksa old;
	if (rsys4(SYS_rt_sigaction, SIGUSR2, 0, (long)&old, 8) != 0)
		return 2;
	sh_seen_usr2 = old.handler == (unsigned long)on_usr2;
	rsys2(SYS_kill, rsys0(SYS_getpid), SIGUSR2);
	return 0;
}

static void sighand(int share)
{
	const char *how = share ? "clone(CLONE_VM | CLONE_SIGHAND)" : "clone(CLONE_VM)";
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
	atomic_store(&sh_step, 0);
	sh_seen_usr2 = 0;
	sh_handled = 0;
	sh_handled_pid = 0;
	pid_t pid = clone(sighand_child, stack + sizeof(stack), CLONE_VM | (share ? CLONE_SIGHAND : 0) | SIGCHLD, NULL);
	CHECK(pid > 0);
	while (atomic_load(&sh_step) != 1)
		sched_yield();
	struct sigaction sa;
	CHECK(sigaction(SIGUSR1, NULL, &sa) == 0);
	int child_ign_seen = sa.sa_handler == SIG_IGN;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2;
	CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
	atomic_store(&sh_step, 2);
	int st = -1;
	CHECK(waitpid(pid, &st, 0) == pid);
	take_sigchld_code(pid, how, WIFSIGNALED(st) ? CLD_KILLED : CLD_EXITED);
	say("%s: the child's SIG_IGN is the parent's action: %s; the parent's new handler is the child's: %s\n", how,
	    child_ign_seen ? "yes" : "no", sh_seen_usr2 ? "yes" : "no");
	const char *end = WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR2 ? "killed by SIGUSR2"
			  : WIFEXITED(st) && WEXITSTATUS(st) == 0 && sh_handled == 1 && sh_handled_pid == pid ? "the handler ran in the child"
			  : "something else";
	say("%s: the child's SIGUSR2: %s\n", how, end);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
}

static const char *self;

static int sighand_exec_child(void *arg)
{
	(void)arg;
	char *argv[] = { (char *)self, "dispositions", NULL };
	execve(self, argv, NULL);
	_exit(127);
}

/* The new image of sighand_exec: its exit status says what it found (1: SIGUSR1 ignored, 2:
 * SIGUSR2 at its default). */
static int dispositions(void)
{
	struct sigaction a, b;
	if (sigaction(SIGUSR1, NULL, &a) != 0 || sigaction(SIGUSR2, NULL, &b) != 0)
		return 100;
	return (a.sa_handler == SIG_IGN ? 1 : 0) | (b.sa_handler == SIG_DFL ? 2 : 0);
}

static void sighand_exec(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2;
	CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
	signal(SIGUSR1, SIG_IGN);
	pid_t pid = clone(sighand_exec_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | CLONE_SIGHAND | SIGCHLD, NULL);
	CHECK(pid > 0);
	int st = -1;
	CHECK(waitpid(pid, &st, 0) == pid);
	take_sigchld(pid, "CLONE_SIGHAND execve");
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	CHECK(sigaction(SIGUSR2, NULL, &sa) == 0);
	say("clone(CLONE_VM | CLONE_VFORK | CLONE_SIGHAND) + execve: the new image's ignored SIGUSR1 %s, its caught SIGUSR2 %s; "
	    "the parent's handler still installed: %s\n",
	    code >= 0 && code < 4 && (code & 1) ? "stays ignored" : "changed",
	    code >= 0 && code < 4 && (code & 2) ? "back at the default" : "not at the default",
	    sa.sa_handler == on_usr2 ? "yes" : "no");
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
}

static void files_exec(void)
{
	int fd = fcntl(1, F_DUPFD_CLOEXEC, 0);
	CHECK(fd >= 0);
	pid_t pid = clone(exec_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, NULL);
	CHECK(pid > 0);
	int st = -1;
	CHECK(waitpid(pid, &st, 0) == pid);
	take_sigchld(pid, "CLONE_FILES execve");
	say("clone(CLONE_VM | CLONE_VFORK | CLONE_FILES) + execve: exit %d; the parent's close-on-exec descriptor still open: %s\n",
	    WIFEXITED(st) ? WEXITSTATUS(st) : -1, fcntl(fd, F_GETFD) == FD_CLOEXEC ? "yes" : "no");
	CHECK(close(fd) == 0);
}

int main(int argc, char **argv)
{
	self = argv[0];
	if (argc > 1 && strcmp(argv[1], "dispositions") == 0)
		return dispositions();
	ut_start("clonevm");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
	plain();
	vforks();
	files(1);
	files(0);
	files_exec();
	sighand(1);
	sighand(0);
	sighand_exec();
	ut_ok();
}
