/* Extended state per thread: each thread loads its own values into xmm0-xmm15 and its own MXCSR
 * rounding mode, then yields to the others thousands of times from inside one asm block (so the
 * compiler cannot touch the registers in between), and checks that every register came back. All
 * run on CPU 0 and start together, so that every yield switches: between them no thread touches a
 * vector register, which a kernel that switches lazily within a process (trap on first use) may
 * exploit, and each thread's first use after its yields must still find its own values. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 2000

static int bad[THREADS];
/* Threads pinned to CPU 0 so far: each starts its yields only when all are there, so that every
 * yield has another thread to switch to. */
static atomic_int pinned;

static void *worker(void *arg)
{
	int me = (int)(long)arg;
	unsigned long cpu0 = 1;
	if (syscall(SYS_sched_setaffinity, 0, sizeof(cpu0), &cpu0) != 0)
		bad[me] = 1000;
	atomic_fetch_add(&pinned, 1);
	while (atomic_load(&pinned) < THREADS)
		syscall(SYS_sched_yield);
	uint64_t in[32], out[32];
	for (int i = 0; i < 32; i++)
		in[i] = 0x1000000000000000ULL * (uint64_t)(me + 1) + (uint64_t)i * 0x0101010101ULL;
	unsigned mxcsr_in = 0x1f80 | ((unsigned)(me & 3) << 13), mxcsr_out = 0;
	long n = ROUNDS;
	__asm__ volatile(
		"ldmxcsr %[mi]\n"
		"movdqu 0(%[p]), %%xmm0\n movdqu 16(%[p]), %%xmm1\n movdqu 32(%[p]), %%xmm2\n movdqu 48(%[p]), %%xmm3\n"
		"movdqu 64(%[p]), %%xmm4\n movdqu 80(%[p]), %%xmm5\n movdqu 96(%[p]), %%xmm6\n movdqu 112(%[p]), %%xmm7\n"
		"movdqu 128(%[p]), %%xmm8\n movdqu 144(%[p]), %%xmm9\n movdqu 160(%[p]), %%xmm10\n movdqu 176(%[p]), %%xmm11\n"
		"movdqu 192(%[p]), %%xmm12\n movdqu 208(%[p]), %%xmm13\n movdqu 224(%[p]), %%xmm14\n movdqu 240(%[p]), %%xmm15\n"
		"1: mov $24, %%eax\n syscall\n dec %[n]\n jnz 1b\n" /* sched_yield */
		"movdqu %%xmm0, 0(%[o])\n movdqu %%xmm1, 16(%[o])\n movdqu %%xmm2, 32(%[o])\n movdqu %%xmm3, 48(%[o])\n"
		"movdqu %%xmm4, 64(%[o])\n movdqu %%xmm5, 80(%[o])\n movdqu %%xmm6, 96(%[o])\n movdqu %%xmm7, 112(%[o])\n"
		"movdqu %%xmm8, 128(%[o])\n movdqu %%xmm9, 144(%[o])\n movdqu %%xmm10, 160(%[o])\n movdqu %%xmm11, 176(%[o])\n"
		"movdqu %%xmm12, 192(%[o])\n movdqu %%xmm13, 208(%[o])\n movdqu %%xmm14, 224(%[o])\n movdqu %%xmm15, 240(%[o])\n"
		"stmxcsr %[mo]\n"
		"ldmxcsr %[md]\n"
		: [n] "+r"(n), [mo] "=m"(mxcsr_out)
		: [p] "r"(in), [o] "r"(out), [mi] "m"(mxcsr_in), [md] "m"((unsigned){ 0x1f80 })
		: "rax", "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
		  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	for (int i = 0; i < 32; i++)
		bad[me] += in[i] != out[i];
	bad[me] += (mxcsr_out & ~0x3fu) != (mxcsr_in & ~0x3fu);
	return 0;
}

int main(void)
{
	pthread_t t[THREADS];
	for (long i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], 0, worker, (void *)i))
			return 10;
	int total = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], 0);
		total += bad[i];
	}
	printf("fpu: %d threads x %d yields, %d registers changed under them\n", THREADS, ROUNDS, total);
	printf("fpu: %s\n", total == 0 ? "ok" : "FAILED");
	return total != 0;
}
