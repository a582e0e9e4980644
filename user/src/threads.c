/*
 * threads: pthread_create/join through musl's clone, thread ids, and the raw clone flags that
 * musl relies on: CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID (the exit clears the word and wakes a
 * futex waiter on it) and set_tid_address (which moves that word).
 */
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>

#include "ut.h"

#define NTHREADS 8

struct seen {
	long tid;
	long pid;
	int index;
};

static void *worker(void *arg)
{
	struct seen *s = arg;
	s->tid = ut_gettid();
	s->pid = getpid();
	return (void *)(long)(s->index * 3 + 1);
}

/* Raw clone children run without a thread pointer of their own: raw system calls only. */
static volatile int child_ran[2];
static volatile int clear_word[2];
static volatile int moved_word;
static volatile long moved_ret;

static int child_plain(void *arg)
{
	(void)arg;
	child_ran[0] = 1;
	return 0;
}

static int child_moves_clear(void *arg)
{
	(void)arg;
	moved_ret = rsys1(SYS_set_tid_address, &moved_word);
	child_ran[1] = 1;
	return 0;
}

/* Waits until the kernel clears *word at the thread's exit, as pthread_join does. */
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

static void test_raw_clone(void)
{
	const unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
				    CLONE_SYSVSEM | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	size_t stack_len = 64 * 1024;
	char *stack = mmap(NULL, 2 * stack_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(stack != MAP_FAILED);

	int ptid = 0;
	clear_word[0] = -1;
	int tid = clone(child_plain, stack + stack_len, (int)flags, NULL, &ptid, NULL, (int *)&clear_word[0]);
	CHECK(tid > 0);
	CHECK(ptid == tid);
	wait_cleared(&clear_word[0]);
	CHECK(child_ran[0] == 1);
	say("clone: PARENT_SETTID wrote the tid, CHILD_CLEARTID cleared it and woke the waiter\n");

	moved_word = -1;
	clear_word[1] = -1;
	tid = clone(child_moves_clear, stack + 2 * stack_len, (int)flags, NULL, NULL, NULL, (int *)&clear_word[1]);
	CHECK(tid > 0);
	wait_cleared(&moved_word);
	CHECK(child_ran[1] == 1);
	CHECK(moved_ret == tid);
	CHECK(clear_word[1] == -1);
	say("set_tid_address: returns the tid and moves the word cleared at exit\n");
	munmap(stack, 2 * stack_len);
}

int main(void)
{
	ut_start("threads");
	pthread_t th[NTHREADS];
	struct seen seen[NTHREADS];
	long main_tid = ut_gettid();
	CHECK(main_tid == getpid());

	for (int i = 0; i < NTHREADS; i++) {
		seen[i].index = i;
		CHECK(pthread_create(&th[i], NULL, worker, &seen[i]) == 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		void *ret;
		CHECK(pthread_join(th[i], &ret) == 0);
		CHECK((long)ret == i * 3 + 1);
	}
	for (int i = 0; i < NTHREADS; i++) {
		CHECK(seen[i].pid == getpid());
		CHECK(seen[i].tid != main_tid && seen[i].tid > 0);
		for (int j = 0; j < i; j++)
			CHECK(seen[i].tid != seen[j].tid);
	}
	say("pthread: %d threads joined with their return values\n", NTHREADS);
	say("gettid: every thread has its own, getpid is the same in all\n");

	/* A second round reuses what the first one freed: stacks, TLS, tids. */
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&th[i], NULL, worker, &seen[i]) == 0);
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_join(th[i], NULL) == 0);
	say("pthread: a second round joined too\n");

	pthread_attr_t attr;
	CHECK(pthread_attr_init(&attr) == 0);
	CHECK(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0);
	CHECK(pthread_create(&th[0], &attr, worker, &seen[0]) == 0);
	say("pthread: a detached thread started\n");

	test_raw_clone();
	ut_ok();
}
