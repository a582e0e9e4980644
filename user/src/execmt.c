/*
 * execmt: execve from a multithreaded process. Three threads spin in system calls while a fourth
 * (not the main thread) execs this program again, passing the pid and the spinners' thread ids.
 * The new image checks that the pid stayed, that every old thread is gone (tgkill answers ESRCH)
 * and that it runs alone. Before that: the error paths that leave the caller intact (ENOENT,
 * E2BIG, EFAULT), vfork + execve and clone(CLONE_VM | CLONE_VFORK) + execve, whose parents go on
 * once the child has exec'd.
 */
#include "ut.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#define SPINNERS 3

static const char *self;
static char clone_stack[64 * 1024] __attribute__((aligned(16)));

/* The child of clone(CLONE_VM | CLONE_VFORK), on its own stack: exec at once, as posix_spawn does. */
static int clone_child(void *arg)
{
	(void)arg;
	char *v[] = { (char *)self, "vforked", NULL };
	execve(self, v, NULL);
	return 1;
}
static atomic_long tids[SPINNERS];
static atomic_int started;

static void *spinner(void *arg)
{
	int i = (int)(intptr_t)arg;
	atomic_store(&tids[i], ut_gettid());
	atomic_fetch_add(&started, 1);
	for (;;)
		rsys0(SYS_sched_yield);
	return NULL;
}

static void *execer(void *arg)
{
	(void)arg;
	char pid[32], t[SPINNERS][32];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	for (int i = 0; i < SPINNERS; i++)
		snprintf(t[i], sizeof(t[i]), "%ld", atomic_load(&tids[i]));
	char *argv[] = { (char *)self, "new-image", pid, t[0], t[1], t[2], NULL };
	char *envp[] = { "EXECMT=1", NULL };
	fflush(stdout);
	execve(self, argv, envp);
	ut_fail("execve from a thread: %s", strerror(errno));
}

static int new_image(int argc, char **argv)
{
	ut_name = "execmt";
	setvbuf(stdout, NULL, _IOLBF, 0);
	CHECK(argc == 3 + SPINNERS);
	say("execmt: the new image runs, environment %s\n", getenv("EXECMT") ? getenv("EXECMT") : "(none)");
	say("execmt: same pid after exec: %s\n", atoi(argv[2]) == getpid() ? "yes" : "no");
	int gone = 0;
	for (int i = 0; i < SPINNERS; i++) {
		long tid = atol(argv[3 + i]);
		if (tid != getpid() && rsys3(SYS_tgkill, getpid(), tid, 0) == -ESRCH)
			gone++;
	}
	say("execmt: old threads gone: %d of %d\n", gone, SPINNERS);
	/* Alone: a fork's child sees one thread, and the image's memory is fresh. */
	int st;
	CHECK(wait4(-1, &st, WNOHANG, NULL) == -1 && errno == ECHILD);
	CHECK(atomic_load(&started) == 0);
	ut_ok();
}

/* Started through a #! line: print the argument list the kernel built. */
static int from_script(int argc, char **argv)
{
	ut_name = "execmt";
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("execmt: #! gave argv:");
	for (int i = 0; i < argc; i++)
		printf(" %s", argv[i]);
	printf("\n");
	ut_ok();
}

/* `execmt scripts DIR`: exec the scripts the kernel's test archive carries in DIR (#! to this
 * program, #! to such a script, a file that is neither, an empty #! line). */
static int scripts(const char *dir)
{
	ut_start("execmt");
	char path[256];
	char *v[] = { path, "last", NULL };
	snprintf(path, sizeof(path), "%s/garbage", dir);
	CHECK_ERR(execve(path, v, NULL), ENOEXEC);
	snprintf(path, sizeof(path), "%s/empty-shebang", dir);
	CHECK_ERR(execve(path, v, NULL), ENOEXEC);
	say("execmt: ENOEXEC for a file that is no program and for an empty #! line\n");
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		snprintf(path, sizeof(path), "%s/script", dir);
		execve(path, v, NULL);
		_exit(1);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	snprintf(path, sizeof(path), "%s/nested", dir);
	fflush(stdout);
	execve(path, v, NULL);
	ut_fail("execve of a nested script: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	self = argv[0];
	if (argc > 1 && strcmp(argv[1], "from-script") == 0)
		return from_script(argc, argv);
	if (argc > 2 && strcmp(argv[1], "scripts") == 0)
		return scripts(argv[2]);
	if (argc > 1 && strcmp(argv[1], "new-image") == 0)
		return new_image(argc, argv);
	if (argc > 1 && strcmp(argv[1], "vforked") == 0)
		_exit(42);
	ut_start("execmt");

	char *none[] = { "x", NULL };
	CHECK_ERR(execve("/nonexistent/program", none, NULL), ENOENT);
	size_t big = 200 * 1024;
	char *huge = malloc(big + 1);
	CHECK(huge);
	memset(huge, 'a', big);
	huge[big] = 0;
	char *too_big[] = { (char *)self, huge, NULL };
	CHECK_ERR(execve(self, too_big, NULL), E2BIG);
	free(huge);
	CHECK_RAW(rsys3(SYS_execve, self, 8, 0), EFAULT);
	CHECK_RAW(rsys3(SYS_execve, 8, none, 0), EFAULT);
	say("execmt: ENOENT, E2BIG, EFAULT leave the caller running\n");

	pid_t pid = vfork();
	if (pid == 0) {
		char *v[] = { (char *)self, "vforked", NULL };
		execve(self, v, NULL);
		_exit(1);
	}
	CHECK(pid > 0);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	say("execmt: vfork + execve: the child's new image exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	pid = clone(clone_child, clone_stack + sizeof(clone_stack), CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
	CHECK(pid > 0);
	CHECK(waitpid(pid, &st, 0) == pid);
	say("execmt: clone(CLONE_VM | CLONE_VFORK) + execve: exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

	pthread_t th;
	for (int i = 0; i < SPINNERS; i++)
		CHECK(pthread_create(&th, NULL, spinner, (void *)(intptr_t)i) == 0);
	while (atomic_load(&started) < SPINNERS)
		sched_yield();
	say("execmt: %d threads spin, one more execs\n", SPINNERS);
	CHECK(pthread_create(&th, NULL, execer, NULL) == 0);
	for (;;)
		rsys0(SYS_sched_yield);
}
