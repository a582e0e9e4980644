/*
 * yield: two threads pinned to one CPU pass a turn with sched_yield. Each thread waits for the
 * turn counter to reach its parity (calling sched_yield until it does), then advances it; the row
 * is per hand-off of the turn (two per round trip): one switch when the kernel switches at every
 * yield, more yields when it lets the yielding thread run on.
 */
#include "gb.h"

static atomic_long turn;
static long rounds;

static void pass(long parity, long n)
{
	for (long i = 0; i < n; i++) {
		gb_sample_cpu(i, 0);
		while ((atomic_load(&turn) & 1) != parity)
			sched_yield();
		atomic_fetch_add(&turn, 1);
	}
}

static void *partner(void *arg)
{
	(void)arg;
	gb_pin(0);
	pass(1, rounds);
	return NULL;
}

int main(int argc, char **argv)
{
	ut_start("yield");
	long n = gb_iterations(argc, argv, 10000), warm = n / 10 + 1;
	rounds = warm + n;
	gb_pin(0);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, partner, NULL) == 0);
	pass(0, warm);
	MARKER_BEGIN(TAG_YIELD);
	struct gb_clock start = gb_now();
	pass(0, n);
	while (atomic_load(&turn) != 2 * rounds)
		sched_yield();
	struct gb_clock end = gb_now();
	MARKER_END(TAG_YIELD);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(atomic_load(&turn) == 2 * rounds);
	gb_row_checked("yield_1cpu", TAG_YIELD, 2 * n, start, end);
	ut_ok();
}
