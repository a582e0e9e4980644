/*
 * ut.h: the few helpers every user test program shares.
 *
 * Output convention (user/README.md): a line starting with "# " is information (timings, counts,
 * CPU numbers) and is never compared; every other line must be the same on Linux and on our
 * kernel. A program's last line is "ok NAME" or "FAILED NAME: why" (then it exits 1).
 *
 * stdout is line buffered so that a program that dies by a signal has printed all it said, and so
 * that lines from several threads never mix inside one line.
 *
 * rsys*() are raw system calls through inline assembly: they return -errno and touch neither
 * errno nor the thread pointer, for the places where libc must not run (a borrowed FS base, a
 * clone child without TLS) and for errno checks that must not go through libc's wrappers.
 */
#ifndef UT_H
#define UT_H


#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *ut_name = "?";

__attribute__((unused)) static void ut_start(const char *name)
{
	ut_name = name;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("start %s\n", name);
}

/* A compared line. */
#define say(...) printf(__VA_ARGS__)
/* An informational line, never compared: the format must not carry the "# " itself. */
#define info(...) do { printf("# "); printf(__VA_ARGS__); } while (0)

__attribute__((noreturn, format(printf, 1, 2), unused)) static void ut_fail(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	printf("FAILED %s: ", ut_name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

__attribute__((noreturn, unused)) static void ut_ok(void)
{
	printf("ok %s\n", ut_name);
	fflush(stdout);
	exit(0);
}

/* Fails the program with the condition's text and line when it does not hold. */
#define CHECK(cond) do { if (!(cond)) ut_fail("line %d: %s", __LINE__, #cond); } while (0)
/* A libc call that must fail with this errno. */
#define CHECK_ERR(call, err) do { errno = 0; long r_ = (long)(call); \
	if (r_ != -1 || errno != (err)) ut_fail("line %d: %s gave %ld errno %d (%s), wanted %s", \
		__LINE__, #call, r_, errno, strerror(errno), #err); } while (0)
/* A raw call (rsys*) that must return -err. */
#define CHECK_RAW(call, err) do { long r_ = (long)(call); if (r_ != -(long)(err)) \
	ut_fail("line %d: %s gave %ld, wanted -%s", __LINE__, #call, r_, #err); } while (0)

__attribute__((unused)) static inline long rsys6(long n, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#define rsys0(n) rsys6((n), 0, 0, 0, 0, 0, 0)
#define rsys1(n, a) rsys6((n), (long)(a), 0, 0, 0, 0, 0)
#define rsys2(n, a, b) rsys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define rsys3(n, a, b, c) rsys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define rsys4(n, a, b, c, d) rsys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

__attribute__((unused)) static inline long ut_gettid(void) { return rsys0(SYS_gettid); }

__attribute__((unused)) static int64_t ut_now_ns(clockid_t clock)
{
	struct timespec ts;
	if (clock_gettime(clock, &ts) != 0)
		ut_fail("clock_gettime(%d): %s", (int)clock, strerror(errno));
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The CPUs this process may run on, in increasing order; returns how many. */
__attribute__((unused)) static int ut_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		ut_fail("sched_getaffinity: %s", strerror(errno));
	for (int cpu = 0; cpu < CPU_SETSIZE && n < max; cpu++)
		if (CPU_ISSET(cpu, &set))
			cpus[n++] = cpu;
	return n;
}

/* Pins the calling thread to one CPU; returns the CPU it then runs on (getcpu). */
__attribute__((unused)) static int ut_pin(int cpu)
{
	cpu_set_t set;
	unsigned got = ~0u;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		ut_fail("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
	if (rsys3(SYS_getcpu, &got, 0, 0) != 0)
		ut_fail("getcpu failed");
	return (int)got;
}

/* A count from argv[1], or the default. */
__attribute__((unused)) static long ut_arg(int argc, char **argv, int i, long dflt)
{
	if (argc > i) {
		char *end;
		long v = strtol(argv[i], &end, 0);
		if (*end || v <= 0)
			ut_fail("bad argument %s", argv[i]);
		return v;
	}
	return dflt;
}

#endif
