/*
 * yield: two threads pinned to one CPU pass a turn with sched_yield. Each thread waits for the
 * turn counter to reach its parity (calling sched_yield until it does), then advances it; the row
 * is per hand-off of the turn (two per round trip): one switch when the kernel switches at every
 * yield, more yields when it lets the yielding thread run on.
 */
#include "gb.h"

static atomic_long turn;
static long rounds;

/* Iterations from..to of this thread's loop: i counts on across laps, so the CPU sample stays one
 * per 1024 iterations of the whole loop. */
static void pass(long parity, long from, long to)
{
	for (long i = from; i < to; i++) {
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
	pass(1, 0, rounds);
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
	pass(0, 0, warm);
	struct gb_laps laps;
	MARKER_BEGIN(TAG_YIELD);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		pass(0, gb_lap_first(n, lap), gb_lap_first(n, lap + 1));
		/* The last lap ends with the partner's last hand-off. */
		if (lap == GB_LAPS - 1)
			while (atomic_load(&turn) != 2 * rounds)
				sched_yield();
		gb_lap_done(&laps);
	}
	MARKER_END(TAG_YIELD);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(atomic_load(&turn) == 2 * rounds);
	gb_laps_row("yield_1cpu", TAG_YIELD, &laps, 2);
	ut_ok();
}
