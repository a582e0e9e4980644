/*
 * sigstorm [N]: one worker thread per CPU (pinned there) blocks again and again in futex waits,
 * nanosleeps and reads of an empty pipe of its own while a sender thread sends each of them N real-time signals (SIGRTMIN, with
 * tgkill) and N more to the process as a whole (SIGRTMIN+1, with kill). Real-time signals queue
 * (none is merged), so conservation holds exactly: every accepted send is handled once, by the
 * thread it names, and the process-wide ones once by some thread. The workers' calls come back
 * with EINTR (no SA_RESTART) or as wake-ups; counts of those depend on timing and are information.
 * A pipe read can end only by a signal (EINTR) until the sending is over, when the sender writes
 * one byte into each pipe to release its reader.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "ut.h"

#define MAX_WORKERS 64

struct worker {
	pthread_t thread;
	atomic_int tid;
	atomic_long sent;      /* accepted tgkill sends */
	atomic_long handled;   /* SIGRTMIN handled in this thread */
	atomic_long handled_p; /* SIGRTMIN+1 handled in this thread */
	atomic_long eintr, woken, pipe_eintr;
	int cpu;
	int pipe[2];
};

static struct worker workers[MAX_WORKERS];
static int nr_workers;
static atomic_int sending_done;
/* The process-wide sends accepted (final once sending_done is set) and handled, by all workers. */
static atomic_long sent_p, handled_p_all;
static volatile int word;
static __thread struct worker *self;

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (si->si_signo != sig || !self)
		ut_fail("handler for %d got si_signo %d (self %p)", sig, si->si_signo, (void *)self);
	if (sig == SIGRTMIN)
		atomic_fetch_add(&self->handled, 1);
	else {
		atomic_fetch_add(&self->handled_p, 1);
		atomic_fetch_add(&handled_p_all, 1);
	}
}

static void *work(void *arg)
{
	struct worker *w = arg;
	self = w;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	sched_setaffinity(0, sizeof set, &set);
	atomic_store(&w->tid, (int)syscall(SYS_gettid));
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	sigaddset(&rt, SIGRTMIN + 1);
	CHECK(pthread_sigmask(SIG_UNBLOCK, &rt, NULL) == 0);
	for (long i = 0; !atomic_load(&sending_done); i++) {
		long r;
		if (i % 3 == 2) {
			char c;
			r = rsys3(SYS_read, w->pipe[0], &c, 1);
			if (r == -EINTR)
				atomic_fetch_add(&w->pipe_eintr, 1);
			else if (r != 1 || !atomic_load(&sending_done))
				ut_fail("a pipe read ended by %ld before the sending was over", r);
		} else if (i % 3 == 0) {
			struct timespec t = { 0, 50 * 1000 * 1000 };
			r = rsys6(SYS_futex, (long)&word, FUTEX_WAIT_PRIVATE, 0, (long)&t, 0, 0);
			CHECK(r == 0 || r == -EINTR || r == -ETIMEDOUT || r == -EAGAIN);
		} else {
			struct timespec t = { 0, 20 * 1000 * 1000 };
			r = rsys6(SYS_nanosleep, (long)&t, 0, 0, 0, 0, 0);
			CHECK(r == 0 || r == -EINTR);
		}
		if (r == -EINTR)
			atomic_fetch_add(&w->eintr, 1);
		else
			atomic_fetch_add(&w->woken, 1);
	}
	/* Every accepted send is final now; whatever is still pending arrives at the next returns
	 * (the process-wide ones at any worker's: all stay until every one is handled). */
	for (int i = 0; i < 1000000 && (atomic_load(&w->handled) < atomic_load(&w->sent) ||
					 atomic_load(&handled_p_all) < atomic_load(&sent_p));
	     i++)
		sched_yield();
	return NULL;
}

int main(int argc, char **argv)
{
	ut_start("sigstorm");
	long n = argc > 1 ? atol(argv[1]) : 2000;
	int cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	nr_workers = cpus < 2 ? 2 : cpus > MAX_WORKERS ? MAX_WORKERS : cpus;
	info("%d workers, %ld signals to each and %ld to the process\n", nr_workers, n, n);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGRTMIN, &sa, NULL) == 0);
	CHECK(sigaction(SIGRTMIN + 1, &sa, NULL) == 0);
	/* The main thread (the sender) never takes them: the process-wide ones go to workers. */
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	sigaddset(&rt, SIGRTMIN + 1);
	CHECK(pthread_sigmask(SIG_BLOCK, &rt, NULL) == 0);
	for (int i = 0; i < nr_workers; i++) {
		workers[i].cpu = i % cpus;
		CHECK(pipe(workers[i].pipe) == 0);
		CHECK(pthread_create(&workers[i].thread, NULL, work, &workers[i]) == 0);
	}
	for (int i = 0; i < nr_workers; i++)
		while (!atomic_load(&workers[i].tid))
			sched_yield();
	long refused = 0;
	for (long k = 0; k < n; k++) {
		for (int i = 0; i < nr_workers; i++) {
			long r = syscall(SYS_tgkill, getpid(), atomic_load(&workers[i].tid), SIGRTMIN);
			if (r == 0)
				atomic_fetch_add(&workers[i].sent, 1);
			else if (errno == EAGAIN)
				refused++;
			else
				ut_fail("tgkill: %s", strerror(errno));
		}
		if (kill(getpid(), SIGRTMIN + 1) == 0)
			atomic_fetch_add(&sent_p, 1);
		else if (errno == EAGAIN)
			refused++;
		else
			ut_fail("kill: %s", strerror(errno));
		if (k % 64 == 0)
			sched_yield();
	}
	atomic_store(&sending_done, 1);
	word = 1;
	syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, MAX_WORKERS, 0, 0, 0);
	for (int i = 0; i < nr_workers; i++)
		CHECK(write(workers[i].pipe[1], "x", 1) == 1);
	for (int i = 0; i < nr_workers; i++)
		CHECK(pthread_join(workers[i].thread, NULL) == 0);
	long handled_p = 0, eintr = 0, woken = 0, sent = 0, pipe_eintr = 0;
	for (int i = 0; i < nr_workers; i++) {
		struct worker *w = &workers[i];
		if (atomic_load(&w->handled) != atomic_load(&w->sent))
			ut_fail("worker %d: %ld sent, %ld handled", i, atomic_load(&w->sent), atomic_load(&w->handled));
		sent += atomic_load(&w->sent);
		handled_p += atomic_load(&w->handled_p);
		eintr += atomic_load(&w->eintr);
		woken += atomic_load(&w->woken);
		pipe_eintr += atomic_load(&w->pipe_eintr);
	}
	info("thread-directed: %ld sent and handled; refused (queue full) %ld; calls interrupted %ld (pipe reads %ld), ended otherwise %ld\n",
	     sent, refused, eintr, pipe_eintr, woken);
	say("every thread-directed signal was handled once, by its thread\n");
	sigset_t pend;
	CHECK(sigpending(&pend) == 0);
	info("process-wide: %ld sent, %ld handled by workers\n", atomic_load(&sent_p), handled_p);
	if (handled_p != atomic_load(&sent_p) || sigismember(&pend, SIGRTMIN + 1))
		ut_fail("process-wide: %ld sent, %ld handled", atomic_load(&sent_p), handled_p);
	say("every process-wide signal was handled once, by a worker\n");
	ut_ok();
}
