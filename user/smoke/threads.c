/* Threads: a mutex-protected counter incremented by many threads (the total must equal the
 * increments), a condition-variable hand-off between two threads counted on both sides, a timed
 * wait that must time out, and pthread_join of every thread (which needs the kernel's
 * CLONE_CHILD_CLEARTID write and futex wake). Prints a verdict; exits 0 only if all hold. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define THREADS 8
#define INCREMENTS 20000
#define ROUNDS 2000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *adder(void *arg)
{
	(void)arg;
	for (int i = 0; i < INCREMENTS; i++) {
		pthread_mutex_lock(&lock);
		counter++;
		pthread_mutex_unlock(&lock);
		if (i % 1000 == 0)
			sched_yield();
	}
	return 0;
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn;
static long passes[2];

static void *player(void *arg)
{
	int me = (int)(long)arg;
	for (int r = 0; r < ROUNDS; r++) {
		pthread_mutex_lock(&m);
		while (turn != me)
			pthread_cond_wait(&cv, &m);
		passes[me]++;
		turn = 1 - me;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&m);
	}
	return 0;
}

int main(void)
{
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], 0, adder, 0) != 0)
			return 10;
	for (int i = 0; i < THREADS; i++)
		if (pthread_join(t[i], 0) != 0)
			return 11;
	printf("threads: counter %ld of %d\n", counter, THREADS * INCREMENTS);

	pthread_t a, b;
	if (pthread_create(&a, 0, player, (void *)0L) || pthread_create(&b, 0, player, (void *)1L))
		return 12;
	pthread_join(a, 0);
	pthread_join(b, 0);
	printf("threads: hand-offs %ld and %ld of %d each\n", passes[0], passes[1], ROUNDS);

	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += 10 * 1000 * 1000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&m);
	int r = pthread_cond_timedwait(&cv, &m, &until);
	pthread_mutex_unlock(&m);
	printf("threads: timed wait %s\n", r == ETIMEDOUT ? "timed out" : "did not time out");

	int ok = counter == (long)THREADS * INCREMENTS && passes[0] == ROUNDS && passes[1] == ROUNDS && r == ETIMEDOUT;
	printf("threads: %s\n", ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}
