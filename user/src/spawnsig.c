/*
 * spawnsig: a thread or process exists from the moment clone or fork returns, whether or not it
 * ran yet. Round after round a new thread (raw clone with CLONE_PARENT_SETTID, and
 * pthread_create) or a new process (fork) is sent SIGUSR1 at once with tgkill, tkill
 * (pthread_kill) or tgkill/tkill of the child's pid; every send must succeed and every signal be
 * handled exactly once by its target, which waits for it before it ends.
 *
 * usage: spawnsig [ROUNDS]
 */
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "ut.h"

/* Signals handled, by this process (shared by its threads; a fork child has its own copy). */
static atomic_long hits;

/* Touches nothing but the counter: it also runs on raw clone threads, which have no TLS. */
static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&hits, 1);
}

/* Until the counter reaches *want: raw calls only (no TLS on a raw clone thread). */
static void await_hits(long want)
{
	while (atomic_load(&hits) < want)
		rsys0(SYS_sched_yield);
}

static volatile int clear_word;

static int raw_child(void *arg)
{
	await_hits((long)arg);
	return 0;
}

static void *pthread_child(void *arg)
{
	await_hits((long)arg);
	return NULL;
}

static void wait_cleared(volatile int *word)
{
	for (;;) {
		int v = *word;
		if (v == 0)
			return;
		long r = rsys4(SYS_futex, word, FUTEX_WAIT, v, 0);
		CHECK(r == 0 || r == -EAGAIN || r == -EINTR);
	}
}

static void raw_threads(long rounds)
{
	const unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
				    CLONE_SYSVSEM | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	size_t stack_len = 64 * 1024;
	char *stack = mmap(NULL, stack_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(stack != MAP_FAILED);
	long sent = 0;
	for (long i = 0; i < rounds; i++) {
		long want = atomic_load(&hits) + 1;
		int ptid = 0;
		clear_word = -1;
		int tid = clone(raw_child, stack + stack_len, (int)flags, (void *)want, &ptid, NULL, (int *)&clear_word);
		CHECK(tid > 0 && ptid == tid);
		long r = rsys3(SYS_tgkill, getpid(), tid, SIGUSR1);
		if (r != 0)
			ut_fail("round %ld: tgkill of a new thread gave %ld", i, r);
		sent++;
		wait_cleared(&clear_word);
	}
	CHECK(atomic_load(&hits) == sent);
	munmap(stack, stack_len);
	say("raw clone: %ld threads sent SIGUSR1 by tgkill as clone returned, %ld handled\n", sent, atomic_load(&hits));
}

static void pthreads(long rounds)
{
	long before = atomic_load(&hits), sent = 0;
	for (long i = 0; i < rounds; i++) {
		pthread_t t;
		long want = atomic_load(&hits) + 1;
		CHECK(pthread_create(&t, NULL, pthread_child, (void *)want) == 0);
		int r = pthread_kill(t, SIGUSR1);
		if (r != 0)
			ut_fail("round %ld: pthread_kill of a new thread gave %d", i, r);
		sent++;
		CHECK(pthread_join(t, NULL) == 0);
	}
	CHECK(atomic_load(&hits) - before == sent);
	say("pthread: %ld threads sent SIGUSR1 by pthread_kill as pthread_create returned, %ld handled\n", sent,
	    atomic_load(&hits) - before);
}

static void processes(long rounds)
{
	long sent = 0, handled = 0;
	for (long i = 0; i < rounds; i++) {
		long want = atomic_load(&hits) + 1;
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			await_hits(want);
			_exit(atomic_load(&hits) == want ? 7 : 8);
		}
		/* Half by tkill of the pid, half by tgkill(pid, pid): the child's main thread. */
		long r = (i & 1) ? rsys2(SYS_tkill, pid, SIGUSR1) : rsys3(SYS_tgkill, pid, pid, SIGUSR1);
		if (r != 0)
			ut_fail("round %ld: %s of a new process gave %ld", i, (i & 1) ? "tkill" : "tgkill", r);
		sent++;
		int st = 0;
		CHECK(waitpid(pid, &st, 0) == pid);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 7)
			ut_fail("round %ld: the child ended with status %#x", i, st);
		handled++;
	}
	say("fork: %ld children sent SIGUSR1 by tkill/tgkill of their pid as fork returned, %ld handled once\n", sent, handled);
}

int main(int argc, char **argv)
{
	ut_start("spawnsig");
	long rounds = ut_arg(argc, argv, 1, 200);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	raw_threads(rounds);
	pthreads(rounds);
	processes(rounds);
	ut_ok();
}
