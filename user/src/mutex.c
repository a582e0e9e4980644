/*
 * mutex: pthread mutex and condition variable under contention across every CPU.
 *
 * Part one: 2 threads per CPU (at least 4) each add 1 under one mutex, argv[1] times (default
 * 100000); the counter must equal the increments. Part two: producers and consumers share a
 * bounded queue guarded by a mutex and two condition variables; every item produced is consumed
 * once, checked by count and by the sum of the values.
 */
#include <pthread.h>

#include "ut.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;
static long per_thread;
static pthread_barrier_t start;

static void *adder(void *arg)
{
	(void)arg;
	/* All adders start together, so the lock is contended from the first increment. */
	pthread_barrier_wait(&start);
	for (long i = 0; i < per_thread; i++) {
		CHECK(pthread_mutex_lock(&lock) == 0);
		counter++;
		CHECK(pthread_mutex_unlock(&lock) == 0);
	}
	return NULL;
}

#define QLEN 16
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER, not_full = PTHREAD_COND_INITIALIZER;
static long queue[QLEN];
static int qhead, qcount, producers_left;
static long items_per_producer;

struct tally {
	long count;
	long sum;
};

static void *producer(void *arg)
{
	long base = (long)arg * items_per_producer;
	for (long i = 1; i <= items_per_producer; i++) {
		pthread_mutex_lock(&qlock);
		while (qcount == QLEN)
			pthread_cond_wait(&not_full, &qlock);
		queue[(qhead + qcount) % QLEN] = base + i;
		qcount++;
		pthread_cond_signal(&not_empty);
		pthread_mutex_unlock(&qlock);
	}
	pthread_mutex_lock(&qlock);
	producers_left--;
	pthread_cond_broadcast(&not_empty);
	pthread_mutex_unlock(&qlock);
	return NULL;
}

static void *consumer(void *arg)
{
	struct tally *t = arg;
	for (;;) {
		pthread_mutex_lock(&qlock);
		while (qcount == 0 && producers_left > 0)
			pthread_cond_wait(&not_empty, &qlock);
		if (qcount == 0) {
			pthread_mutex_unlock(&qlock);
			return NULL;
		}
		long v = queue[qhead];
		qhead = (qhead + 1) % QLEN;
		qcount--;
		pthread_cond_signal(&not_full);
		pthread_mutex_unlock(&qlock);
		t->count++;
		t->sum += v;
	}
}

int main(int argc, char **argv)
{
	ut_start("mutex");
	per_thread = ut_arg(argc, argv, 1, 100000);
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	int nthreads = 2 * ncpu < 4 ? 4 : 2 * ncpu;
	pthread_t *th = calloc((size_t)nthreads * 2, sizeof(*th));
	CHECK(th != NULL);

	CHECK(pthread_barrier_init(&start, NULL, (unsigned)nthreads) == 0);
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	for (int i = 0; i < nthreads; i++)
		CHECK(pthread_create(&th[i], NULL, adder, NULL) == 0);
	for (int i = 0; i < nthreads; i++)
		CHECK(pthread_join(th[i], NULL) == 0);
	info("%d threads, %ld increments each, %lld ms\n", nthreads, per_thread,
	     (long long)(ut_now_ns(CLOCK_MONOTONIC) - t0) / 1000000);
	if (counter != per_thread * nthreads)
		ut_fail("counter %ld, increments %ld", counter, per_thread * nthreads);
	say("mutex: the counter equals the increments\n");

	/* As many producers as consumers, each half of the threads. */
	int half = nthreads / 2;
	items_per_producer = per_thread;
	producers_left = half;
	struct tally *tallies = calloc((size_t)half, sizeof(*tallies));
	CHECK(tallies != NULL);
	for (int i = 0; i < half; i++) {
		CHECK(pthread_create(&th[i], NULL, producer, (void *)(long)i) == 0);
		CHECK(pthread_create(&th[half + i], NULL, consumer, &tallies[i]) == 0);
	}
	for (int i = 0; i < 2 * half; i++)
		CHECK(pthread_join(th[i], NULL) == 0);
	long count = 0, sum = 0;
	for (int i = 0; i < half; i++) {
		count += tallies[i].count;
		sum += tallies[i].sum;
	}
	long n = items_per_producer * half;
	if (count != n || sum != n * (n + 1) / 2)
		ut_fail("consumed %ld items summing %ld, produced %ld summing %ld", count, sum, n, n * (n + 1) / 2);
	say("condvar: every item produced was consumed once (count and sum)\n");
	ut_ok();
}
