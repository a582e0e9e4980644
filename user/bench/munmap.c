/*
 * munmap: the cost of unmapping one page whose translation another CPU may hold (a remote
 * shootdown), and one only this CPU touched (local). Per munmap.
 *
 * Remote: a second thread on CPU 1 stays running in the address space, touches each new page
 * and reports back, then arms the counter's window on its CPU (MARKER_ARM: the next interrupt it
 * takes, the shootdown, is counted up to its iret) and spins until the next page. The window on
 * CPU 0 holds the munmap alone.
 *
 * Each munmap is timed on its own, the clock read outside its window, and added to its lap
 * (gb_lap_add): the row's time is the median lap's, as in the other programs.
 */
#include <sys/mman.h>

#include "gb.h"

#define PAGE 4096

static _Atomic(volatile char *) page;
static atomic_long touched, stop;

static void *toucher(void *arg)
{
	(void)arg;
	gb_pin(1);
	long seen = 0;
	while (!atomic_load(&stop)) {
		volatile char *p = atomic_load(&page);
		if (p == NULL)
			continue;
		(void)p[0];
		if (seen > 0)
			MARKER_END(TAG_MUNMAP_REMOTE);
		atomic_store(&page, NULL);
		atomic_store(&touched, ++seen);
		MARKER_ARM(TAG_MUNMAP_REMOTE);
	}
	MARKER_END(TAG_MUNMAP_REMOTE);
	return NULL;
}

static char *new_page(void)
{
	char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	p[0] = 1;
	return p;
}

static void remote(long n)
{
	pthread_t t;
	CHECK(pthread_create(&t, NULL, toucher, NULL) == 0);
	long warm = n / 10 + 1;
	struct gb_laps laps;
	gb_laps_init(&laps, n);
	for (long i = 0; i < warm + n; i++) {
		char *p = new_page();
		atomic_store(&page, p);
		while (atomic_load(&touched) != i + 1)
			;
		struct gb_clock a = gb_now();
		if (i >= warm)
			MARKER_BEGIN(TAG_MUNMAP_REMOTE);
		CHECK(munmap(p, PAGE) == 0);
		if (i >= warm)
			MARKER_END(TAG_MUNMAP_REMOTE);
		struct gb_clock b = gb_now();
		if (i >= warm)
			gb_lap_add(&laps, i - warm, a, b);
	}
	atomic_store(&stop, 1);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(atomic_load(&touched) == warm + n);
	gb_laps_row("munmap_remote", TAG_MUNMAP_REMOTE, &laps, 1);
}

static void local(long n)
{
	long warm = n / 10 + 1;
	struct gb_laps laps;
	gb_laps_init(&laps, n);
	for (long i = 0; i < warm + n; i++) {
		char *p = new_page();
		struct gb_clock a = gb_now();
		if (i >= warm)
			MARKER_BEGIN(TAG_MUNMAP_LOCAL);
		CHECK(munmap(p, PAGE) == 0);
		if (i >= warm)
			MARKER_END(TAG_MUNMAP_LOCAL);
		struct gb_clock b = gb_now();
		if (i >= warm)
			gb_lap_add(&laps, i - warm, a, b);
	}
	gb_laps_row("munmap_local", TAG_MUNMAP_LOCAL, &laps, 1);
}

int main(int argc, char **argv)
{
	ut_start("munmap");
	long n = gb_iterations(argc, argv, 2000);
	gb_pin(0);
	if (gb_row_can_use("munmap_remote", 1))
		remote(n);
	local(n);
	ut_ok();
}
