/*
 * fuzz: random system calls with hostile arguments, seeded, safe to run on the host Linux.
 *
 *   fuzz [CALLS [SEED [THREADS [trace]]]]
 *
 * THREADS copies (default: one per CPU of the mask, each pinned to its CPU) each make CALLS calls
 * (default 10^6 / CPUs, so 10^6 in all), copy i with seed SEED + i (SEED default 1); trace: each
 * call on stderr before it is made. The copies are threads of one process, so they also race each
 * other inside the kernel's memory and descriptor paths.
 *
 * Processes, pipes and signals in the mix: one draw in 1024 is an operation of the copy's own
 * instead of a random call (the same seed gives the same ones): a fork whose child makes a few
 * harmless calls and exits with a random code; a fork whose child execs this program
 * (`fuzz exit-with CODE`) or a path that does not exist; a fork whose child blocks in a pipe read
 * until the parent kills it; a pipe filled and drained; a signal to the copy's own thread. Every
 * child is reaped by its own copy with the status it must have, every byte read back, every
 * signal handled: conserved counts, then a compared line.
 *
 * Numbers: most draws are 0..441; the rest are numbers no kernel knows (lower 32 bits in
 * 1000..0x3fffffff or 0x80000000..0xffffffff, upper 32 bits sometimes set: Linux ignores them,
 * so they must not turn an unknown number into a known one; bit 30, the x32 ABI bit, is never
 * set). Arguments: NULL, the first page, kernel and non-canonical addresses, pointers into a
 * scratch area of our own (aligned, misaligned, running into its PROT_NONE guard page), 0, -1,
 * small and huge integers, random words.
 *
 * The policy table below is the deny list written the safe way round: a known number is called
 * only when its row allows it, so a call that would kill or block the fuzzer (exit, kill, fork,
 * clone, execve, pause, blocking reads, futex waits, sleeps), change its signals or its own
 * memory under it, leave something behind on the host (files, IPC objects, sockets, descriptors),
 * or harm the host as root (reboot, modules, clocks, priorities of other processes, hwpoison)
 * is never made. Two classes are called with one argument tamed:
 *   FD  the descriptor argument is forced to a closed descriptor (>= 1000): EBADF paths, and no
 *       write ever reaches stdout;
 *   MM  addresses are forced into the scratch area (or made kernel, non-canonical or misaligned),
 *       lengths are clamped to it, MAP_FIXED only ever lands there, populate/lock flags and
 *       hwpoison advice are dropped; a mapping made elsewhere is unmapped at once.
 *
 * The compared output says only that the calls were made and the process survived them intact
 * (a canary, the FS base and the signal mask checked every 4096 calls); results go to "# " lines.
 */
#include <asm/prctl.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "ut.h"

enum cls { DENY = 0, ANY, FD, MM };

#define MAXNR 442
static unsigned char policy[MAXNR];

#define A(nr) policy[nr] = ANY
#define F(nr) policy[nr] = FD
#define M(nr) policy[nr] = MM

static void build_policy(void)
{
	/* Read-only queries of our own process or of the system. */
	A(SYS_getpid); A(SYS_getppid); A(SYS_gettid); A(SYS_getuid); A(SYS_geteuid); A(SYS_getgid);
	A(SYS_getegid); A(SYS_getresuid); A(SYS_getresgid); A(SYS_getgroups); A(SYS_getpgid);
	A(SYS_getpgrp); A(SYS_getsid); A(SYS_capget); A(SYS_uname); A(SYS_sysinfo); A(SYS_times);
	A(SYS_getrusage); A(SYS_getrlimit); A(SYS_getpriority); A(SYS_gettimeofday); A(SYS_time);
	A(SYS_clock_gettime); A(SYS_clock_getres); A(SYS_getcpu); A(SYS_getrandom);
	A(SYS_sched_yield); A(SYS_sched_getaffinity); A(SYS_sched_getparam); A(SYS_sched_getscheduler);
	A(SYS_sched_get_priority_max); A(SYS_sched_get_priority_min); A(SYS_sched_rr_get_interval);
	A(SYS_sched_getattr); A(SYS_ioprio_get); A(SYS_rt_sigpending); A(SYS_getitimer);
	/* Not set_tid_address: a copy's pthread_join waits on the word the kernel clears at its exit. */
	A(SYS_get_robust_list); A(SYS_set_robust_list); A(SYS_restart_syscall);
	A(SYS_get_mempolicy); A(SYS_timer_gettime); A(SYS_timer_getoverrun); A(SYS_timer_delete);
	A(SYS_io_destroy); A(SYS_io_submit); A(SYS_io_cancel); A(SYS_lookup_dcookie); A(SYS_sysfs);
	A(SYS_ustat); A(SYS_pkey_alloc); A(SYS_pkey_free); A(SYS_shmdt); A(SYS_munlockall);
	/* Path lookups that change nothing (and chdir, which changes only our own directory). */
	A(SYS_stat); A(SYS_lstat); A(SYS_newfstatat); A(SYS_statx); A(SYS_access); A(SYS_faccessat);
	A(SYS_faccessat2); A(SYS_readlink); A(SYS_readlinkat); A(SYS_statfs); A(SYS_getxattr);
	A(SYS_lgetxattr); A(SYS_listxattr); A(SYS_llistxattr); A(SYS_getcwd); A(SYS_chdir); A(SYS_umask);
	/* Descriptor calls, made on a closed descriptor. */
	F(SYS_read); F(SYS_write); F(SYS_readv); F(SYS_writev); F(SYS_pread64); F(SYS_pwrite64);
	F(SYS_preadv); F(SYS_pwritev); F(SYS_preadv2); F(SYS_pwritev2); F(SYS_close); F(SYS_lseek);
	F(SYS_ioctl); F(SYS_fcntl); F(SYS_fstat); F(SYS_fstatfs); F(SYS_fsync); F(SYS_fdatasync);
	F(SYS_ftruncate); F(SYS_fallocate); F(SYS_getdents); F(SYS_getdents64); F(SYS_fchdir);
	F(SYS_fchmod); F(SYS_fchown); F(SYS_flock); F(SYS_readahead); F(SYS_fadvise64); F(SYS_fgetxattr);
	F(SYS_flistxattr); F(SYS_fsetxattr); F(SYS_fremovexattr); F(SYS_epoll_ctl); F(SYS_timerfd_settime);
	F(SYS_timerfd_gettime); F(SYS_getsockopt); F(SYS_setsockopt); F(SYS_bind); F(SYS_listen);
	F(SYS_getsockname); F(SYS_getpeername); F(SYS_shutdown); F(SYS_sendto); F(SYS_recvfrom);
	F(SYS_sendmsg); F(SYS_recvmsg); F(SYS_sendmmsg); F(SYS_recvmmsg); F(SYS_accept); F(SYS_accept4);
	F(SYS_connect); F(SYS_dup); F(SYS_syncfs); F(SYS_sync_file_range);
	/* Memory calls, kept inside the scratch area. */
	M(SYS_mmap); M(SYS_munmap); M(SYS_mprotect); M(SYS_mremap); M(SYS_madvise); M(SYS_msync);
	M(SYS_mincore); M(SYS_munlock); M(SYS_pkey_mprotect); M(SYS_brk);
}

/* xorshift64*: the same SEED gives the same calls everywhere. */
static __thread uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}
static uint64_t below(uint64_t n) { return rnd() % n; }

#define PAGE 4096UL
#define SCRATCH_LEN (16UL << 20)
static unsigned char *scratch; /* SCRATCH_LEN bytes, then one PROT_NONE guard page */
static uintptr_t brk_start;

static uint64_t bad_address(void)
{
	static const uint64_t bad[] = {
		0, 1, 8, 0xfff, 0x1000, 0x8000, 0xffff800000000000ULL, 0xffffffff80000000ULL, 0xffffffffffffe000ULL,
		0xfffffffffffffff0ULL, 0x0000800000000000ULL, 0x8000000000000000ULL, 0x00007ffffffff000ULL,
		0x0000800000000000ULL - 8,
	};
	return bad[below(sizeof(bad) / sizeof(bad[0]))];
}

static uint64_t scratch_pointer(void)
{
	switch (below(4)) {
	case 0: return (uint64_t)scratch + below(SCRATCH_LEN / PAGE) * PAGE;
	case 1: return (uint64_t)scratch + below(SCRATCH_LEN);
	case 2: return (uint64_t)scratch + SCRATCH_LEN - 1 - below(64);
	default: return (uint64_t)scratch + below(256) * 8;
	}
}

static uint64_t any_arg(void)
{
	switch (below(12)) {
	case 0: return 0;
	case 1: return (uint64_t)-1;
	case 2: return below(64);
	case 3: return below(1 << 16);
	case 4: return (uint32_t)rnd();
	case 5: return rnd();
	case 6: return 1ULL << below(64);
	case 7: return (uint64_t)INT32_MAX + below(3);
	case 8:
	case 9: return scratch_pointer();
	default: return bad_address();
	}
}

static int in_scratch(uint64_t a) { return a >= (uint64_t)scratch && a < (uint64_t)scratch + SCRATCH_LEN; }

/* An address for a memory call: mostly the scratch area, sometimes somewhere it must refuse. */
static uint64_t mm_addr(void)
{
	uint64_t r = below(10);
	if (r < 6)
		return (uint64_t)scratch + below(SCRATCH_LEN / PAGE) * PAGE;
	if (r < 8)
		return (uint64_t)scratch + below(SCRATCH_LEN);
	uint64_t a = bad_address();
	/* The first pages are below mmap_min_addr; anything else in the user half could be ours. */
	return a < 0x10000 || a >= 0x0000800000000000ULL ? a : 0xffff800000000000ULL;
}

static uint64_t mm_len(uint64_t addr)
{
	uint64_t len;
	switch (below(4)) {
	case 0: len = PAGE; break;
	case 1: len = below(16) * PAGE; break;
	case 2: len = below(SCRATCH_LEN); break;
	default: len = rnd(); break;
	}
	if (in_scratch(addr)) {
		if (len > (uint64_t)scratch + SCRATCH_LEN - addr)
			len = (uint64_t)scratch + SCRATCH_LEN - addr;
	} else if (addr < 0x10000 && len > 0x10000 - addr) {
		/* From the first pages a range must stay below our program, or be absurd. */
		len = below(2) ? 0x10000 - addr : (1ULL << 63) + below(1 << 20);
	}
	return len;
}

/* Makes a memory call's arguments harmless to us; returns 0 to skip the call. */
static int tame_mm(long nr, uint64_t *a)
{
	switch (nr) {
	case SYS_brk:
		a[0] = below(2) ? brk_start + below(16UL << 20) : (below(2) ? 0 : bad_address());
		if (a[0] && a[0] < brk_start && a[0] >= 0x10000)
			a[0] = 0;
		return 1;
	case SYS_mmap: {
		a[0] = mm_addr();
		a[1] = mm_len(a[0]);
		a[3] &= ~(uint64_t)(MAP_POPULATE | MAP_LOCKED | MAP_HUGETLB | MAP_STACK | MAP_SYNC | MAP_SHARED_VALIDATE);
		a[3] |= below(4) ? MAP_PRIVATE : MAP_SHARED;
		if (below(4))
			a[3] |= MAP_ANONYMOUS;
		if (!in_scratch(a[0]) || !in_scratch(a[0] + (a[1] ? a[1] - 1 : 0)))
			a[3] &= ~(uint64_t)(MAP_FIXED | MAP_FIXED_NOREPLACE);
		else if (below(2))
			a[3] |= MAP_FIXED;
		if (!(a[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && a[1] > (1UL << 24))
			a[1] = 1UL << 24;
		a[4] = below(2) ? (uint64_t)-1 : 1000 + below(100);
		return 1;
	}
	case SYS_mremap:
		a[0] = mm_addr();
		a[1] = mm_len(a[0]);
		a[2] = below(2) ? mm_len(a[0]) : below(SCRATCH_LEN);
		a[3] &= MREMAP_MAYMOVE | MREMAP_FIXED | 4 /* MREMAP_DONTUNMAP */ | (below(8) ? 0 : 0x10);
		a[4] = mm_addr();
		if ((a[3] & MREMAP_FIXED) && (!in_scratch(a[4]) || a[2] > (uint64_t)scratch + SCRATCH_LEN - a[4]))
			a[3] &= ~(uint64_t)MREMAP_FIXED;
		return 1;
	case SYS_madvise:
		a[0] = mm_addr();
		a[1] = mm_len(a[0]);
		if (a[2] == 100 /* MADV_HWPOISON */ || a[2] == 101 /* MADV_SOFT_OFFLINE */)
			a[2] = MADV_DONTNEED;
		return 1;
	default: /* munmap, mprotect, msync, mincore, munlock, pkey_mprotect */
		a[0] = mm_addr();
		a[1] = mm_len(a[0]);
		return 1;
	}
}

struct copy {
	long seed;
	long calls;
	int cpu;
	int trace;
	long counts[4];
	long ok_results, fault_results, enosys_results, other_results;
	/* The process operations: children forked and reaped with the right status, pipe bytes
	 * written and read back, signals sent to the copy's thread and handled there. */
	long forked, reaped, pipe_out, pipe_in, sig_sent;
	atomic_long sig_handled;
	pthread_t th;
};

static const char *self_path;
static __thread struct copy *this_copy;

static void on_usr1(int sig)
{
	(void)sig;
	if (this_copy)
		atomic_fetch_add(&this_copy->sig_handled, 1);
}

/* A forked child's end: raw calls only (it is a copy of one thread of a threaded process). */
__attribute__((noreturn)) static void child_exit(int code)
{
	for (;;)
		rsys1(SYS_exit_group, code);
}

/* Reaps `pid`, which must end as `want_code` (>= 0) or by signal `-want_code`. */
static void reap(struct copy *c, pid_t pid, int want)
{
	int st = 0;
	long r;
	do
		r = rsys4(SYS_wait4, pid, &st, 0, 0);
	while (r == -EINTR);
	if (r != pid)
		ut_fail("wait4(%d) gave %ld", (int)pid, r);
	if (want >= 0 ? !(WIFEXITED(st) && WEXITSTATUS(st) == want) : !(WIFSIGNALED(st) && WTERMSIG(st) == -want))
		ut_fail("child %d ended with status %#x, not %d", (int)pid, st, want);
	c->reaped++;
}

static void proc_op(struct copy *c)
{
	switch (below(5)) {
	case 0: { /* fork, a few harmless calls, exit */
		int code = (int)below(256);
		int n = (int)below(8);
		pid_t pid = (pid_t)rsys0(SYS_fork);
		if (pid == 0) {
			for (int i = 0; i < n; i++)
				rsys0(i % 2 ? SYS_getppid : SYS_getpid);
			child_exit(code);
		}
		CHECK(pid > 0);
		c->forked++;
		reap(c, pid, code);
		break;
	}
	case 1: { /* fork and execve: this program, or a path that is not there */
		int code = (int)below(100);
		int missing = below(4) == 0;
		char arg[16];
		snprintf(arg, sizeof(arg), "%d", code);
		char *argv[] = { (char *)self_path, "exit-with", arg, NULL };
		char *envp[] = { NULL };
		pid_t pid = (pid_t)rsys0(SYS_fork);
		if (pid == 0) {
			rsys3(SYS_execve, missing ? "/nonexistent/fuzz" : self_path, argv, envp);
			child_exit(missing ? 200 : 201);
		}
		CHECK(pid > 0);
		c->forked++;
		reap(c, pid, missing ? 200 : code);
		break;
	}
	case 2: { /* a child blocked in a pipe read, killed */
		int p[2];
		CHECK(rsys2(SYS_pipe2, p, O_CLOEXEC) == 0);
		pid_t pid = (pid_t)rsys0(SYS_fork);
		if (pid == 0) {
			char b;
			rsys3(SYS_read, p[0], &b, 1);
			child_exit(202);
		}
		CHECK(pid > 0);
		c->forked++;
		if (below(2))
			rsys0(SYS_sched_yield);
		CHECK(rsys2(SYS_kill, pid, SIGTERM) == 0);
		reap(c, pid, -SIGTERM);
		rsys1(SYS_close, p[0]);
		rsys1(SYS_close, p[1]);
		break;
	}
	case 3: { /* a pipe filled and drained */
		int p[2];
		CHECK(rsys2(SYS_pipe2, p, O_CLOEXEC) == 0);
		static __thread unsigned char buf[4096];
		long n = 1 + (long)below(sizeof(buf));
		for (long i = 0; i < n; i++)
			buf[i] = (unsigned char)i;
		CHECK(rsys3(SYS_write, p[1], buf, n) == n);
		c->pipe_out += n;
		rsys1(SYS_close, p[1]);
		long got = 0, r;
		while ((r = rsys3(SYS_read, p[0], buf + got, sizeof(buf) - got)) > 0)
			got += r;
		CHECK(r == 0 && got == n);
		for (long i = 0; i < n; i++)
			CHECK(buf[i] == (unsigned char)i);
		c->pipe_in += got;
		rsys1(SYS_close, p[0]);
		break;
	}
	default: /* a signal to this thread, handled before tgkill returns */
		CHECK(rsys3(SYS_tgkill, rsys0(SYS_getpid), rsys0(SYS_gettid), SIGUSR1) == 0);
		c->sig_sent++;
		break;
	}
}

static void check_intact(const uint64_t *canary, uint64_t fs_base, uint64_t sigmask)
{
	uint64_t fs = 0, mask = 1;
	if (canary[0] != 0x5afe5afe5afe5afeULL || canary[1] != ~0x5afe5afe5afe5afeULL)
		ut_fail("our own memory changed under a system call");
	if (rsys2(SYS_arch_prctl, ARCH_GET_FS, &fs) != 0 || fs != fs_base)
		ut_fail("FS base changed");
	if (rsys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, &mask, 8) != 0 || mask != sigmask)
		ut_fail("signal mask changed");
}

static uint64_t canary[2] = { 0x5afe5afe5afe5afeULL, ~0x5afe5afe5afe5afeULL };

/* Every copy starts only when all are created: a thread stack mapped after the first copy began
 * could land in a hole that copy made in the scratch area, and the copies would then write over it. */
static pthread_barrier_t all_created;

static void *fuzz_copy(void *arg)
{
	struct copy *c = arg;
	this_copy = c;
	if (c->cpu >= 0)
		ut_pin(c->cpu);
	pthread_barrier_wait(&all_created);
	rng_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)c->seed * 0xbf58476d1ce4e5b9ULL;
	if (!rng_state)
		rng_state = 1;
	uint64_t fs_base = 0, sigmask = 0;
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_FS, &fs_base) == 0);
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, &sigmask, 8) == 0);
	/* `i` counts the calls made: a denied draw or a process operation is not one of them. */
	for (long i = 0; i < c->calls;) {
		uint64_t a[6];
		for (int k = 0; k < 6; k++)
			a[k] = any_arg();
		long nr;
		enum cls cls;
		if (below(1024) == 0) {
			proc_op(c);
			continue;
		}
		if (below(16) == 0) {
			uint64_t lo = below(2) ? 1000 + below(0x3fffffff - 1000) : 0x80000000ULL + (uint32_t)rnd() % 0x80000000ULL;
			nr = (long)(lo | (below(2) ? rnd() << 32 : 0));
			cls = ANY;
		} else {
			nr = (long)below(MAXNR);
			cls = policy[nr];
		}
		c->counts[cls]++;
		if (cls == DENY)
			continue;
		if (cls == FD)
			a[0] = 1000 + below(1 << 20);
		if (cls == MM && !tame_mm(nr, a))
			continue;
		if (c->trace)
			dprintf(2, "%ld/%ld: %ld(%#lx, %#lx, %#lx, %#lx, %#lx, %#lx)\n", c->seed, i, nr, a[0], a[1], a[2], a[3],
				a[4], a[5]);
		long r = rsys6(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
		i++;
		if (r >= 0 || r < -4095)
			c->ok_results++;
		else if (r == -EFAULT)
			c->fault_results++;
		else if (r == -ENOSYS)
			c->enosys_results++;
		else
			c->other_results++;
		/* A mapping the kernel placed outside the scratch area is given back at once. */
		if ((nr == SYS_mmap || nr == SYS_mremap) && r > 0 && (r & (PAGE - 1)) == 0 && !in_scratch((uint64_t)r))
			munmap((void *)r, nr == SYS_mmap ? a[1] : a[2]);
		if (i % 4096 == 0)
			check_intact(canary, fs_base, sigmask);
	}
	check_intact(canary, fs_base, sigmask);
	return NULL;
}

int main(int argc, char **argv)
{
	/* A child's new image (the exec operation): end at once with the code it was given. */
	if (argc == 3 && strcmp(argv[1], "exit-with") == 0)
		return atoi(argv[2]);
	ut_start("fuzz");
	/* Absolute: a random chdir must not change what the exec operation finds. */
	static char path[4096];
	if (argv[0][0] == '/')
		snprintf(path, sizeof(path), "%s", argv[0]);
	else
		CHECK(getcwd(path, sizeof(path) - 256) && strlen(argv[0]) < 255 && strcat(path, "/") && strcat(path, argv[0]));
	self_path = path;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	int cpus[1024];
	int ncpu = ut_cpus(cpus, 1024);
	long calls = ut_arg(argc, argv, 1, 1000000 / ncpu);
	long seed = ut_arg(argc, argv, 2, 1);
	long nthreads = ut_arg(argc, argv, 3, ncpu);
	int trace = argc > 4 && strcmp(argv[4], "trace") == 0;
	build_policy();

	scratch = mmap(NULL, SCRATCH_LEN + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(scratch != MAP_FAILED);
	CHECK(mprotect(scratch + SCRATCH_LEN, PAGE, PROT_NONE) == 0);
	/* No allocation from here on: the copies move the break, never below where it is now. */
	static struct copy copies[256];
	if (nthreads > 256)
		ut_fail("at most 256 copies");
	brk_start = (uintptr_t)rsys1(SYS_brk, 0);

	CHECK(pthread_barrier_init(&all_created, NULL, (unsigned)nthreads) == 0);
	int64_t t0 = ut_now_ns(CLOCK_MONOTONIC);
	for (long t = 0; t < nthreads; t++) {
		copies[t].seed = seed + t;
		copies[t].calls = calls;
		copies[t].cpu = cpus[t % ncpu];
		copies[t].trace = trace;
		CHECK(pthread_create(&copies[t].th, NULL, fuzz_copy, &copies[t]) == 0);
	}
	struct copy sum = { 0 };
	for (long t = 0; t < nthreads; t++) {
		CHECK(pthread_join(copies[t].th, NULL) == 0);
		for (int k = 0; k < 4; k++)
			sum.counts[k] += copies[t].counts[k];
		sum.ok_results += copies[t].ok_results;
		sum.fault_results += copies[t].fault_results;
		sum.enosys_results += copies[t].enosys_results;
		sum.other_results += copies[t].other_results;
		struct copy *c = &copies[t];
		if (c->reaped != c->forked || c->pipe_in != c->pipe_out || atomic_load(&c->sig_handled) != c->sig_sent)
			ut_fail("copy %ld: %ld forked, %ld reaped; %ld bytes into pipes, %ld out; %ld signals sent, %ld handled", t,
				c->forked, c->reaped, c->pipe_out, c->pipe_in, c->sig_sent, atomic_load(&c->sig_handled));
		sum.forked += c->forked;
		sum.pipe_out += c->pipe_out;
		sum.sig_sent += c->sig_sent;
	}
	CHECK(rsys4(SYS_wait4, -1, 0, WNOHANG, 0) == -ECHILD);
	rsys1(SYS_brk, brk_start);
	info("%ld copies x %ld calls, seeds %ld..%ld, %lld ms; called %ld (any %ld, fd %ld, mm %ld), denied %ld\n",
	     nthreads, calls, seed, seed + nthreads - 1, (long long)(ut_now_ns(CLOCK_MONOTONIC) - t0) / 1000000,
	     sum.counts[ANY] + sum.counts[FD] + sum.counts[MM], sum.counts[ANY], sum.counts[FD], sum.counts[MM],
	     sum.counts[DENY]);
	info("results: %ld succeeded, %ld EFAULT, %ld ENOSYS, %ld other errors\n", sum.ok_results, sum.fault_results,
	     sum.enosys_results, sum.other_results);
	info("processes: %ld forked and reaped, %ld pipe bytes through, %ld signals handled\n", sum.forked, sum.pipe_out,
	     sum.sig_sent);
	say("fuzz: every child reaped with its status, every pipe byte read back, every signal handled\n");
	/* The default counts depend on the CPU count: information, not compared. */
	say("fuzz: every copy made its random system calls, the process is intact\n");
	ut_ok();
}
