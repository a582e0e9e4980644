/* A system-call fuzzer: one thread per CPU makes random calls with random arguments: kernel
 * addresses, unmapped, misaligned and non-canonical pointers, huge lengths, bad flags. Memory calls
 * aim only at a scratch region (or at addresses that are not user memory), so the program's own code
 * and stack survive; everything else is fair game. The kernel must survive, answer every call, and
 * give back all memory once the program exits. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SCRATCH_PAGES 16

static char *scratch;
static long calls_per_thread = 20000;

static long raw6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static long pointer(uint64_t *s)
{
	static const unsigned long bad[] = { 0, 1, 0x1000, 0x7ffffffff000UL, 0x800000000000UL, 0xffff800000000000UL,
					     0xffffffff80000000UL, ~0UL, 0x7fffffffeff9UL };
	uint64_t r = next(s);
	switch (r % 4) {
	case 0:
		return (long)bad[(r >> 8) % (sizeof bad / sizeof bad[0])];
	case 1:
		return (long)(scratch + ((r >> 8) % (SCRATCH_PAGES * 4096)));
	case 2:
		return (long)(scratch + (((r >> 8) % SCRATCH_PAGES) * 4096));
	default:
		/* Random, but never memory this program uses: below the image (unmapped), or not a
		 * canonical user address at all. */
		return (r >> 8) & 1 ? (long)(0x10000 + (r >> 16) % 0x3f0000) : (long)(r | 0x800000000000UL);
	}
}

static long length(uint64_t *s)
{
	static const long lens[] = { 0, 1, 7, 8, 16, 4096, 65536, 1L << 31, -1, 1L << 40 };
	uint64_t r = next(s);
	return r % 3 ? lens[(r >> 8) % (sizeof lens / sizeof lens[0])] : (long)(r >> 40);
}

static long small(uint64_t *s)
{
	return (long)(next(s) % 600) - 50;
}

/* Arguments for the calls that change mappings: a page of the scratch region with a length that
 * stays inside it, or an address that is no user memory at all with any length. */
static void region(uint64_t *s, long *addr, long *len)
{
	uint64_t r = next(s);
	if (r & 1) {
		long page = (long)((r >> 8) % SCRATCH_PAGES);
		*addr = (long)(scratch + page * 4096);
		*len = (long)((r >> 20) % ((SCRATCH_PAGES - page) * 4096 + 1));
	} else {
		*addr = (long)((r >> 8) | 0x800000000000UL);
		*len = length(s);
	}
}

/* The fuzzers start together, once every thread exists: a thread stack mapped later could land in
 * a hole one of them made in the scratch region, and they would then unmap it under its thread. */
static pthread_barrier_t all_created;

static void *fuzzer(void *arg)
{
	pthread_barrier_wait(&all_created);
	uint64_t s = 0x9e3779b97f4a7c15ULL * ((uint64_t)(long)arg + 1);
	/* A valid, short timeout for the calls that may sleep. */
	static const long tiny[2] = { 0, 1000 };
	for (long i = 0; i < calls_per_thread; i++) {
		uint64_t r = next(&s);
		long a = pointer(&s), b = length(&s), c = small(&s);
		switch (r % 24) {
		case 0: raw6(SYS_read, 3 + (long)(r >> 8) % 100, a, b, 0, 0, 0); break;
		case 1: raw6(SYS_write, 3 + (long)(r >> 8) % 100, a, b, 0, 0, 0); break;
		case 2: raw6(SYS_writev, -1, a, c, 0, 0, 0); break;
		case 3: raw6(SYS_readv, -1 - (long)(r >> 8) % 100, a, c, 0, 0, 0); break;
		case 4: raw6(SYS_ioctl, small(&s), (long)next(&s), a, 0, 0, 0); break;
		case 5: raw6(SYS_mmap, pointer(&s), b, c, (long)next(&s) & 0x1ffffff & ~MAP_FIXED, small(&s), 0); break;
		case 6: { long ra, rl; region(&s, &ra, &rl); raw6(SYS_mprotect, ra, rl, c, 0, 0, 0); break; }
		case 7: { long ra, rl; region(&s, &ra, &rl); raw6(SYS_munmap, ra, rl, 0, 0, 0, 0); break; }
		/* MAYMOVE or nothing: MREMAP_FIXED could land on the program itself. */
		case 8: { long ra, rl; region(&s, &ra, &rl); raw6(SYS_mremap, ra, rl, length(&s), c & 1, 0, 0); break; }
		case 9: { long ra, rl; region(&s, &ra, &rl); raw6(SYS_madvise, ra, rl, c, 0, 0, 0); break; }
		case 10: raw6(SYS_brk, (r >> 8) & 1 ? 0 : (long)0xffff800000000000UL, 0, 0, 0, 0, 0); break;
		case 11: raw6(SYS_uname, a, 0, 0, 0, 0, 0); break;
		case 12: raw6(SYS_clock_gettime, c, a, 0, 0, 0, 0); break;
		case 13: raw6(SYS_clock_getres, c, a, 0, 0, 0, 0); break;
		/* Sleeps get a tiny valid request or no user memory (scratch may hold any duration), and
		 * wall-clock or monotonic time (9: a bad clock): a CPU-time clock could wait for ever. */
		case 14: raw6(SYS_nanosleep, (r >> 8) & 1 ? (long)tiny : (long)(r | 0x800000000000UL), a, 0, 0, 0, 0); break;
		case 15: {
			/* The ops of this kernel, with random PRIVATE/CLOCK_REALTIME flags (no PI ops: they
			 * can block a host thread for good). */
			static const int ops[] = { 0, 1, 3, 4, 9, 10 };
			raw6(SYS_futex, a, ops[(r >> 8) % 6] | (int)(r & 0x180), (long)next(&s) | 1, (long)tiny, pointer(&s), (long)next(&s));
			break;
		}
		case 16: raw6(SYS_sched_yield, 0, 0, 0, 0, 0, 0); break;
		case 17: raw6(SYS_getcpu, a, pointer(&s), 0, 0, 0, 0); break;
		case 18: raw6(SYS_sched_getaffinity, 0, b, a, 0, 0, 0); break;
		case 19: raw6(SYS_getrandom, a, b & 0xffff, c, 0, 0, 0); break;
		case 20: raw6(SYS_rt_sigprocmask, c, a, pointer(&s), b, 0, 0); break;
		case 21: raw6(SYS_rt_sigaction, c, a, pointer(&s), b, 0, 0); break;
		case 22: raw6(SYS_clock_nanosleep, c & 1 ? (c & 2 ? 9 : 1) : 0, c & 1, (r >> 8) & 1 ? (long)tiny : (long)(r | 0x800000000000UL), a, 0, 0); break;
		default: {
			/* Calls this kernel does not implement (ENOSYS), harmless on Linux. */
			static const long other[] = { SYS_getppid, SYS_times, SYS_sysinfo, SYS_getrlimit, SYS_getcwd,
						      SYS_gettimeofday, SYS_getitimer, SYS_sched_getparam, SYS_capget,
						      SYS_getgroups, SYS_statfs, SYS_access, 1000, -1 };
			long n = other[(r >> 8) % (sizeof other / sizeof other[0])];
			raw6(n, n == SYS_sched_getparam ? 0 : a, a, c, 0, 0, 0);
			break;
		}
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		calls_per_thread = atol(argv[1]);
	scratch = mmap(0, SCRATCH_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (scratch == MAP_FAILED)
		return 10;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1 || cpus > 64)
		return 11;
	pthread_t t[64];
	if (pthread_barrier_init(&all_created, 0, (unsigned)cpus))
		return 13;
	for (long i = 0; i < cpus; i++)
		if (pthread_create(&t[i], 0, fuzzer, (void *)i))
			return 12;
	for (long i = 0; i < cpus; i++)
		pthread_join(t[i], 0);
	printf("fuzz: %ld threads x %ld calls answered\n", cpus, calls_per_thread);
	return 0;
}
