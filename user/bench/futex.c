/*
 * futex: two threads hand a turn back and forth with FUTEX_WAIT/FUTEX_WAKE, first both on CPU 0,
 * then one on CPU 0 and one on CPU 1 (skipped with one CPU). Per hand-off (two per round trip).
 * On two CPUs the partner opens the same tag's window on its own CPU before the first hand-off.
 */
#include "gb.h"

static atomic_int turn;
static long warm_rounds, rounds;
static int partner_cpu, tag;
static atomic_int partner_ready;

/* Iterations from..to: wait for the turn to become `mine`, then give it to the other side. */
static void hand(int mine, long from, long to, int cpu)
{
	for (long i = from; i < to; i++) {
		gb_sample_cpu(i, cpu);
		while (atomic_load(&turn) != mine)
			gb_futex(&turn, FUTEX_WAIT, !mine);
		atomic_store(&turn, !mine);
		gb_futex(&turn, FUTEX_WAKE, 1);
	}
}

static void *partner(void *arg)
{
	(void)arg;
	gb_pin(partner_cpu);
	hand(1, 0, warm_rounds, partner_cpu);
	/* On CPU 0 the main thread's window already counts this CPU; a second Begin would replace it. */
	if (partner_cpu != 0)
		gb_begin(tag);
	atomic_store(&partner_ready, 1);
	hand(1, 0, rounds - warm_rounds, partner_cpu);
	if (partner_cpu != 0)
		gb_end(tag);
	return NULL;
}

static void row(const char *name, int the_tag, int cpu, long n)
{
	long warm = n / 10 + 1;
	atomic_store(&turn, 0);
	atomic_store(&partner_ready, 0);
	tag = the_tag;
	partner_cpu = cpu;
	warm_rounds = warm;
	rounds = warm + n;
	pthread_t t;
	CHECK(pthread_create(&t, NULL, partner, NULL) == 0);
	hand(0, 0, warm, 0);
	while (!atomic_load(&partner_ready))
		sched_yield();
	struct gb_laps laps;
	gb_begin(tag);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		hand(0, gb_lap_first(n, lap), gb_lap_first(n, lap + 1), 0);
		/* The last lap ends with the partner's last hand-off. */
		if (lap == GB_LAPS - 1)
			while (atomic_load(&turn) != 0)
				gb_futex(&turn, FUTEX_WAIT, 1);
		gb_lap_done(&laps);
	}
	gb_end(tag);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(atomic_load(&turn) == 0);
	gb_laps_row(name, tag, &laps, 2);
}

int main(int argc, char **argv)
{
	ut_start("futex");
	long n = gb_iterations(argc, argv, 10000);
	gb_pin(0);
	row("futex_1cpu", TAG_FUTEX_1CPU, 0, n);
	if (gb_row_can_use("futex_2cpu", 1))
		row("futex_2cpu", TAG_FUTEX_2CPU, 1, n);
	ut_ok();
}
