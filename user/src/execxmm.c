/*
 * execxmm: the vector state a new image starts with. The program loads its own values into
 * xmm8-xmm15 and sets MXCSR's rounding mode to round-toward-zero, then, from inside the same asm
 * block, execs itself with the argument "image"; the new image reads xmm8-xmm15 and MXCSR first
 * thing in main (the C start-up code before main leaves xmm8-xmm15 and MXCSR alone) and must find
 * the clean state: every register zero, MXCSR 0x1f80. A kernel that kept the registers across
 * execve would hand the old image's values to the new one, as Linux never does.
 */
#include "ut.h"

extern char **environ;

static int image(void)
{
	uint64_t regs[16];
	unsigned mxcsr;
	__asm__ volatile(
		"movdqu %%xmm8, 0x00(%[r])\n movdqu %%xmm9, 0x10(%[r])\n movdqu %%xmm10, 0x20(%[r])\n"
		"movdqu %%xmm11, 0x30(%[r])\n movdqu %%xmm12, 0x40(%[r])\n movdqu %%xmm13, 0x50(%[r])\n"
		"movdqu %%xmm14, 0x60(%[r])\n movdqu %%xmm15, 0x70(%[r])\n stmxcsr %[m]\n"
		: [m] "=m"(mxcsr)
		: [r] "r"(regs)
		: "memory");
	/* The same program, started again: its verdict ends the run (no second start line). */
	ut_name = "execxmm";
	int dirty = 0;
	for (int i = 0; i < 16; i++)
		dirty += regs[i] != 0;
	say("new image: %d of 16 xmm8-15 halves not zero, mxcsr %#x\n", dirty, mxcsr & ~0x3fu);
	CHECK(dirty == 0);
	CHECK((mxcsr & ~0x3fu) == 0x1f80);
	ut_ok();
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "image") == 0)
		return image();
	ut_start("execxmm");
	uint64_t pattern[16];
	for (int i = 0; i < 16; i++)
		pattern[i] = 0x0123456789abcdefULL * (uint64_t)(i + 1);
	unsigned mxcsr = 0x1f80 | (3u << 13);
	/* The program's own path, whatever argv[0] says (a shell passes the bare name). */
	static char self[4096];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	CHECK(len > 0);
	self[len] = 0;
	char *v[] = { self, "image", NULL };
	long ret;
	fflush(stdout);
	__asm__ volatile(
		"ldmxcsr %[m]\n"
		"movdqu 0x00(%[p]), %%xmm8\n movdqu 0x10(%[p]), %%xmm9\n movdqu 0x20(%[p]), %%xmm10\n"
		"movdqu 0x30(%[p]), %%xmm11\n movdqu 0x40(%[p]), %%xmm12\n movdqu 0x50(%[p]), %%xmm13\n"
		"movdqu 0x60(%[p]), %%xmm14\n movdqu 0x70(%[p]), %%xmm15\n"
		"syscall\n"
		: "=a"(ret)
		: "a"(59L), "D"(self), "S"(v), "d"(environ), [p] "r"(pattern), [m] "m"(mxcsr)
		: "rcx", "r11", "memory", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	ut_fail("execve(%s) returned %ld", self, ret);
}
