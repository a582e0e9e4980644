/* mmap: map 16 anonymous pages, write each (a page fault apiece), unmap them. Per round. */
#include <sys/mman.h>

#include "gb.h"

#define PAGE 4096
#define PAGES 16

static long round_trip(void)
{
	char *p = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	long sum = 0;
	for (int i = 0; i < PAGES; i++) {
		p[i * PAGE] = (char)i;
		sum += p[i * PAGE];
	}
	CHECK(munmap(p, PAGES * PAGE) == 0);
	return sum;
}

int main(int argc, char **argv)
{
	ut_start("mmap");
	long n = gb_iterations(argc, argv, 1000);
	gb_pin(0);
	for (long i = 0; i < n / 10 + 1; i++)
		round_trip();
	long good = 0;
	struct gb_laps laps;
	MARKER_BEGIN(TAG_MMAP_TOUCH);
	gb_laps_start(&laps, n);
	for (int lap = 0; lap < GB_LAPS; lap++) {
		for (long i = gb_lap_first(n, lap); i < gb_lap_first(n, lap + 1); i++)
			good += round_trip() == PAGES * (PAGES - 1) / 2;
		gb_lap_done(&laps);
	}
	MARKER_END(TAG_MMAP_TOUCH);
	CHECK(good == n);
	gb_laps_row("mmap_touch_munmap_16", TAG_MMAP_TOUCH, &laps, 1);
	ut_ok();
}
