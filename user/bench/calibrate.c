/*
 * calibrate: a window whose user instruction count is known, so the counter can be checked to
 * count the same on both kernels: `mov $K, %ecx` and K rounds of `dec %ecx; jnz`, i.e. 1 + 2K user
 * instructions, in one asm statement with its markers so no compiler code falls inside.
 */
#include "gb.h"

#define CALIBRATE_ROUNDS 100000

int main(int argc, char **argv)
{
	ut_start("calibrate");
	(void)argc;
	(void)argv;
	gb_pin(0);
	struct gb_clock start = gb_now();
	__asm__ volatile(".byte 0x0f, 0x1f, 0x80\n\t.4byte %c0\n\t"
			 "mov %2, %%ecx\n"
			 "1:\n\t"
			 "dec %%ecx\n\t"
			 "jnz 1b\n\t"
			 ".byte 0x0f, 0x1f, 0x80\n\t.4byte %c1"
			 :
			 : "i"(MARKER_DISPLACEMENT(MARKER_KIND_BEGIN, TAG_CALIBRATE)),
			   "i"(MARKER_DISPLACEMENT(MARKER_KIND_END, TAG_CALIBRATE)), "i"(CALIBRATE_ROUNDS)
			 : "ecx", "cc", "memory");
	struct gb_clock end = gb_now();
	gb_row("calibrate", TAG_CALIBRATE, 1, start, end);
	printf("calibrate expect_user=%d\n", 1 + 2 * CALIBRATE_ROUNDS);
	ut_ok();
}
