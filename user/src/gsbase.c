/*
 * gsbase: the user's own FS and GS bases, where the kernel lets user code write them with
 * WRFSBASE/WRGSBASE (AT_HWCAP2 has HWCAP2_FSGSBASE, bit 1).
 *
 * - FS, in one thread only (musl's thread pointer lives there, and the test never calls libc while
 *   FS is borrowed): a value set with WRFSBASE is what arch_prctl(ARCH_GET_FS) returns and what
 *   RDFSBASE reads after a sched_yield, then the real one goes back.
 * - GS: arch_prctl(ARCH_SET_GS) and ARCH_GET_GS round trip, RDGSBASE agreeing; a kernel-half value
 *   is EPERM there (WRGSBASE may still load one).
 * - THREADS threads pinned to one CPU each load a GS base of their own with WRGSBASE (one of them
 *   0, one a kernel-half canonical address, as a user may load to fool a kernel that trusts the
 *   sign of the GS base) and yield to each other ROUNDS times (argv[1]), checking RDGSBASE after
 *   every yield and ARCH_GET_GS now and then.
 * - fork: the child starts with the parent's GS base (a kernel-half one).
 *
 * Without HWCAP2_FSGSBASE it prints "# skipped" and still ends on "ok gsbase": the compared lines
 * are "start gsbase" and the verdict alone, so they are the same everywhere. Boot QEMU with a CPU
 * model that has FSGSBASE (-cpu max) for the real test.
 */
#include <pthread.h>
#include <sys/auxv.h>
#include <sys/wait.h>

#include "ut.h"

#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#define HWCAP2_FSGSBASE (1UL << 1)

#define THREADS 4
#define KERNEL_HALF 0xffff800000001000UL

static inline uint64_t rdgsbase(void)
{
	uint64_t v;
	__asm__ volatile("rdgsbase %0" : "=r"(v));
	return v;
}

static inline void wrgsbase(uint64_t v)
{
	__asm__ volatile("wrgsbase %0" : : "r"(v) : "memory");
}

static inline uint64_t rdfsbase(void)
{
	uint64_t v;
	__asm__ volatile("rdfsbase %0" : "=r"(v));
	return v;
}

static inline void wrfsbase(uint64_t v)
{
	__asm__ volatile("wrfsbase %0" : : "r"(v) : "memory");
}

struct worker {
	pthread_t th;
	int cpu;
	uint64_t gs;
	long rounds;
	long bad;          /* RDGSBASE or ARCH_GET_GS saw another value */
	uint64_t seen;     /* the first wrong value */
} __attribute__((aligned(64)));

static void *work(void *arg)
{
	struct worker *w = arg;
	ut_pin(w->cpu);
	wrgsbase(w->gs);
	for (long i = 0; i < w->rounds; i++) {
		rsys0(SYS_sched_yield);
		uint64_t now = rdgsbase();
		if (now == w->gs && i % 64 == 0) {
			uint64_t got = ~0UL;
			if (rsys2(SYS_arch_prctl, ARCH_GET_GS, &got) != 0)
				got = ~0UL;
			now = got;
		}
		if (now != w->gs && w->bad++ == 0)
			w->seen = now;
	}
	/* Back to 0 before libc's thread exit runs (it does not use GS, but leave nothing behind). */
	wrgsbase(0);
	return NULL;
}

/* FS in this thread alone: WRFSBASE, then the kernel's view and a yield, all without libc. */
static void fs_round_trip(void)
{
	uint64_t real = rdfsbase(), via = 0, after;
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_FS, &via) == 0 && via == real);
	uint64_t borrowed = real + 0x1000;
	wrfsbase(borrowed);
	long r = rsys2(SYS_arch_prctl, ARCH_GET_FS, &via);
	rsys0(SYS_sched_yield);
	after = rdfsbase();
	wrfsbase(real);
	CHECK(r == 0);
	CHECK(via == borrowed);
	CHECK(after == borrowed);
	/* ARCH_SET_FS lands where RDFSBASE reads it. */
	long set = rsys2(SYS_arch_prctl, ARCH_SET_FS, borrowed);
	after = rdfsbase();
	long back = rsys2(SYS_arch_prctl, ARCH_SET_FS, real);
	wrfsbase(real);
	CHECK(set == 0 && back == 0);
	CHECK(after == borrowed);
	CHECK(rdfsbase() == real);
}

static void gs_round_trip(void)
{
	uint64_t got = ~0UL;
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_GS, &got) == 0 && got == 0);
	CHECK(rdgsbase() == 0);
	CHECK(rsys2(SYS_arch_prctl, ARCH_SET_GS, 0x12345000UL) == 0);
	CHECK(rdgsbase() == 0x12345000UL);
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_GS, &got) == 0 && got == 0x12345000UL);
	CHECK_RAW(rsys2(SYS_arch_prctl, ARCH_SET_GS, KERNEL_HALF), EPERM);
	CHECK(rdgsbase() == 0x12345000UL);
	wrgsbase(0x2345000UL);
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_GS, &got) == 0 && got == 0x2345000UL);
	CHECK(rsys2(SYS_arch_prctl, ARCH_SET_GS, 0) == 0);
	CHECK(rdgsbase() == 0);
}

static void fork_inherits(void)
{
	wrgsbase(KERNEL_HALF + 0x1000);
	pid_t pid = fork();
	if (pid == 0) {
		uint64_t got = ~0UL;
		int ok = rdgsbase() == KERNEL_HALF + 0x1000 && rsys2(SYS_arch_prctl, ARCH_GET_GS, &got) == 0 &&
			 got == KERNEL_HALF + 0x1000;
		_exit(ok ? 0 : 1);
	}
	uint64_t mine = rdgsbase();
	wrgsbase(0);
	CHECK(pid > 0);
	CHECK(mine == KERNEL_HALF + 0x1000);
	int status = 0;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
	ut_start("gsbase");
	long rounds = ut_arg(argc, argv, 1, 2000);
	if (!(getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE)) {
		info("skipped: no HWCAP2_FSGSBASE in AT_HWCAP2\n");
		ut_ok();
	}
	fs_round_trip();
	gs_round_trip();
	fork_inherits();

	int cpus[1];
	CHECK(ut_cpus(cpus, 1) == 1);
	static struct worker w[THREADS];
	const uint64_t values[THREADS] = { 0, KERNEL_HALF, 0x7fffdead0000UL, 0x1000UL };
	for (int i = 0; i < THREADS; i++) {
		w[i].cpu = cpus[0];
		w[i].gs = values[i];
		w[i].rounds = rounds;
		CHECK(pthread_create(&w[i].th, NULL, work, &w[i]) == 0);
	}
	for (int i = 0; i < THREADS; i++)
		CHECK(pthread_join(w[i].th, NULL) == 0);
	for (int i = 0; i < THREADS; i++)
		if (w[i].bad)
			ut_fail("thread %d (GS base %#lx): %ld of %ld checks saw another GS base, first %#lx", i,
				(unsigned long)w[i].gs, w[i].bad, rounds, (unsigned long)w[i].seen);
	CHECK(rdgsbase() == 0);
	info("%d threads on CPU %d, %ld yields each, GS bases kept\n", THREADS, cpus[0], rounds);
	ut_ok();
}
