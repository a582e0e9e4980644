/*
 * avx: two threads pinned to one CPU each hold their own values in all sixteen ymm registers
 * across preemption. One asm block per thread loads ymm0-15 with the thread's pattern (upper
 * halves differ from lower halves, so an FXSAVE-only switch that keeps just the xmm halves is
 * caught), spins counting how often the other thread's counter moved (on one CPU it can move
 * only when this thread was preempted), keeps spinning until both have seen it move SWITCHES
 * times, then stores the registers back for comparison. The spin touches no vector register, so
 * a kernel that switches lazily within a process (trap on first use) lets each thread run on
 * with the other's values in the registers, and must give it its own back at the store. Each
 * round does this with two threads of one process, then with two processes (fork, the two sides
 * in shared memory), whose switches must restore every time. argv[1] rounds (default 3).
 *
 * Without AVX (CPUID.1:ECX.AVX and OSXSAVE, XCR0 bits 1-2) the program prints "# skipped" and
 * still ends on "ok avx": its only compared lines are "start avx" and the verdict, so they are
 * the same everywhere. Boot QEMU with a CPU model that has AVX (-cpu max) for the real test.
 */
#include <cpuid.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "ut.h"

#define SWITCHES 20

struct side {
	volatile uint64_t count;
	volatile uint64_t done;
	uint8_t in[16][32] __attribute__((aligned(32)));
	uint8_t out[16][32] __attribute__((aligned(32)));
	struct side *other;
	int cpu;
	int tag;
	volatile uint64_t *abort;
	pthread_t th;
} __attribute__((aligned(64)));

/* The two sides and the abort flag, in memory the two processes of a round share. */
struct shared {
	struct side sides[2];
	volatile uint64_t abort_all;
};

static int have_avx(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	if (!(c & (1u << 27)) || !(c & (1u << 28)))
		return 0;
	unsigned lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6;
}

static void *hold(void *arg)
{
	struct side *s = arg;
	ut_pin(s->cpu);
	uint64_t threshold = SWITCHES;
	__asm__ volatile(
		"vmovdqa 0x000(%[in]), %%ymm0\n\t"
		"vmovdqa 0x020(%[in]), %%ymm1\n\t"
		"vmovdqa 0x040(%[in]), %%ymm2\n\t"
		"vmovdqa 0x060(%[in]), %%ymm3\n\t"
		"vmovdqa 0x080(%[in]), %%ymm4\n\t"
		"vmovdqa 0x0a0(%[in]), %%ymm5\n\t"
		"vmovdqa 0x0c0(%[in]), %%ymm6\n\t"
		"vmovdqa 0x0e0(%[in]), %%ymm7\n\t"
		"vmovdqa 0x100(%[in]), %%ymm8\n\t"
		"vmovdqa 0x120(%[in]), %%ymm9\n\t"
		"vmovdqa 0x140(%[in]), %%ymm10\n\t"
		"vmovdqa 0x160(%[in]), %%ymm11\n\t"
		"vmovdqa 0x180(%[in]), %%ymm12\n\t"
		"vmovdqa 0x1a0(%[in]), %%ymm13\n\t"
		"vmovdqa 0x1c0(%[in]), %%ymm14\n\t"
		"vmovdqa 0x1e0(%[in]), %%ymm15\n\t"
		"xor %%ecx, %%ecx\n\t"          /* rcx: times the other counter moved */
		"mov (%[their]), %%rdx\n\t"      /* rdx: its last value seen */
		"1:\n\t"
		"incq (%[mine])\n\t"
		"mov (%[their]), %%rax\n\t"
		"cmp %%rax, %%rdx\n\t"
		"je 2f\n\t"
		"mov %%rax, %%rdx\n\t"
		"inc %%rcx\n\t"
		"2:\n\t"
		"cmp %[threshold], %%rcx\n\t"
		"jb 3f\n\t"
		"movq $1, (%[mydone])\n\t"
		"cmpq $0, (%[theirdone])\n\t"
		"jne 4f\n\t"
		"3:\n\t"
		"cmpq $0, (%[abort])\n\t"
		"je 1b\n\t"
		"4:\n\t"
		"vmovdqa %%ymm0, 0x000(%[out])\n\t"
		"vmovdqa %%ymm1, 0x020(%[out])\n\t"
		"vmovdqa %%ymm2, 0x040(%[out])\n\t"
		"vmovdqa %%ymm3, 0x060(%[out])\n\t"
		"vmovdqa %%ymm4, 0x080(%[out])\n\t"
		"vmovdqa %%ymm5, 0x0a0(%[out])\n\t"
		"vmovdqa %%ymm6, 0x0c0(%[out])\n\t"
		"vmovdqa %%ymm7, 0x0e0(%[out])\n\t"
		"vmovdqa %%ymm8, 0x100(%[out])\n\t"
		"vmovdqa %%ymm9, 0x120(%[out])\n\t"
		"vmovdqa %%ymm10, 0x140(%[out])\n\t"
		"vmovdqa %%ymm11, 0x160(%[out])\n\t"
		"vmovdqa %%ymm12, 0x180(%[out])\n\t"
		"vmovdqa %%ymm13, 0x1a0(%[out])\n\t"
		"vmovdqa %%ymm14, 0x1c0(%[out])\n\t"
		"vmovdqa %%ymm15, 0x1e0(%[out])\n\t"
		"vzeroupper\n\t"
		:
		: [in] "r"(s->in), [out] "r"(s->out), [mine] "r"(&s->count), [their] "r"(&s->other->count),
		  [mydone] "r"(&s->done), [theirdone] "r"(&s->other->done), [abort] "r"(s->abort),
		  [threshold] "r"(threshold)
		: "rax", "rcx", "rdx", "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	return NULL;
}

int main(int argc, char **argv)
{
	ut_start("avx");
	long rounds = ut_arg(argc, argv, 1, 3);
	if (!have_avx()) {
		info("skipped: this CPU or OS has no AVX\n");
		ut_ok();
	}
	int cpus[1024];
	ut_cpus(cpus, 1024);
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	struct side *sides = sh->sides;
	static const char *const kinds[2] = { "thread", "process" };
	for (long r = 0; r < rounds; r++) {
		for (int procs = 0; procs < 2; procs++) {
			for (int t = 0; t < 2; t++) {
				struct side *s = &sides[t];
				s->count = 0;
				s->done = 0;
				s->other = &sides[1 - t];
				s->cpu = cpus[0];
				s->abort = &sh->abort_all;
				for (int reg = 0; reg < 16; reg++)
					for (int b = 0; b < 32; b++)
						s->in[reg][b] = (uint8_t)(0x11 * (t + 1) + 7 * reg + 3 * b + 13 * r + 5 * procs +
									  (b >= 16 ? 0x80 : 0));
				memset(s->out, 0, sizeof(s->out));
			}
			sh->abort_all = 0;
			pid_t pids[2] = { 0, 0 };
			for (int t = 0; t < 2; t++) {
				if (!procs) {
					CHECK(pthread_create(&sides[t].th, NULL, hold, &sides[t]) == 0);
					continue;
				}
				pids[t] = fork();
				CHECK(pids[t] >= 0);
				if (pids[t] == 0) {
					hold(&sides[t]);
					_exit(0);
				}
			}
			/* A kernel that never preempts would spin here forever: give up after 60 s. */
			int64_t deadline = ut_now_ns(CLOCK_MONOTONIC) + 60LL * 1000000000;
			while (!(sides[0].done && sides[1].done) && ut_now_ns(CLOCK_MONOTONIC) < deadline) {
				struct timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000 * 1000 };
				nanosleep(&ts, NULL);
			}
			sh->abort_all = !(sides[0].done && sides[1].done);
			for (int t = 0; t < 2; t++) {
				if (!procs) {
					CHECK(pthread_join(sides[t].th, NULL) == 0);
					continue;
				}
				int status;
				CHECK(waitpid(pids[t], &status, 0) == pids[t]);
				CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
			}
			if (sh->abort_all)
				ut_fail("round %ld: the two %ss on CPU %d did not see %d switches in 60 s", r, kinds[procs],
					cpus[0], SWITCHES);
			for (int t = 0; t < 2; t++)
				for (int reg = 0; reg < 16; reg++)
					if (memcmp(sides[t].in[reg], sides[t].out[reg], 32) != 0)
						ut_fail("round %ld: %s %d lost ymm%d (%s half)", r, kinds[procs], t, reg,
							memcmp(sides[t].in[reg], sides[t].out[reg], 16) ? "lower" : "upper");
			info("round %ld, %ss: loop counts %llu / %llu on CPU %d\n", r, kinds[procs],
			     (unsigned long long)sides[0].count, (unsigned long long)sides[1].count, cpus[0]);
		}
	}
	/* Information only: a CPU without AVX prints just its verdict, and the two outputs must match. */
	info("avx: two threads, then two processes, on one CPU kept all 16 ymm registers across %d switches each, "
	     "%ld rounds\n", SWITCHES, rounds);
	ut_ok();
}
