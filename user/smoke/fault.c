/* Faults on purpose, one kind per run (argv[1]): each must end this process only, with the signal
 * Linux gives for it. "syscall-top" runs a `syscall` in the last two bytes below the highest user
 * page: the kernel must return by IRET (never SYSRET to the next, unmapped address), and the
 * program then faults fetching there. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static volatile int depth_sink;

static int recurse(int n)
{
	volatile char pad[4096];
	pad[0] = (char)n;
	depth_sink = pad[0];
	return recurse(n + 1) + pad[0];
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	printf("fault: %s\n", what);
	fflush(stdout);
	/* Not a fault: a half-second sleep that a stop and SIGCONT must not cut short (EINTR). */
	if (!strcmp(what, "sleep")) {
		struct timespec t = { 0, 500 * 1000 * 1000 };
		int r = nanosleep(&t, 0);
		printf("sleep: %d\n", r);
		return r;
	}
	/* Not a fault: one dot per stretch of pure user-mode work, for ever (stop/continue tests). */
	if (!strcmp(what, "spin")) {
		for (;;) {
			for (volatile long i = 0; i < 200000; i++)
				;
			fputs(".", stdout);
			fflush(stdout);
		}
	}
	if (!strcmp(what, "null"))
		return *(volatile int *)0;
	if (!strcmp(what, "ud2"))
		__asm__ volatile("ud2");
	if (!strcmp(what, "hlt"))
		__asm__ volatile("hlt");
	if (!strcmp(what, "int3"))
		__asm__ volatile("int3");
	if (!strcmp(what, "div0")) {
		unsigned long zero = 0, lo = 1, hi = 0;
		__asm__ volatile("div %2" : "+a"(lo), "+d"(hi) : "r"(zero));
		return (int)lo;
	}
	if (!strcmp(what, "stack"))
		return recurse(0);
	if (!strcmp(what, "syscall-top")) {
		unsigned long top = 0x7ffffffff000UL;
		unsigned char *page = mmap((void *)(top - 4096), 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (page == MAP_FAILED)
			return 2;
		/* mov eax, 39 (getpid); syscall -- ending exactly at `top` */
		static const unsigned char code[] = { 0xb8, 39, 0, 0, 0, 0x0f, 0x05 };
		memcpy(page + 4096 - sizeof code, code, sizeof code);
		((void (*)(void))(page + 4096 - sizeof code))();
	}
	return 1;
}
