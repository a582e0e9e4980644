/*
 * misc: uname, getrandom, arch_prctl FS base round trip, rt_sigprocmask and rt_sigaction round
 * trips (recorded only: nothing is delivered), an unknown system call, set_robust_list and rseq
 * (either works or is ENOSYS: nothing printed depends on which), getpid/gettid, getresuid,
 * getresgid and getgroups; the auxiliary vector the kernel put on the initial stack (every entry
 * glibc and musl read, with its value).
 */
#include <asm/prctl.h>
#include <cpuid.h>
#include <elf.h>
#include <linux/rseq.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <sys/utsname.h>

#include "ut.h"

static void test_uname(void)
{
	struct utsname u;
	CHECK(uname(&u) == 0);
	CHECK(strcmp(u.sysname, "Linux") == 0);
	CHECK(strcmp(u.machine, "x86_64") == 0);
	CHECK(u.nodename[0] && u.release[0] && u.version[0]);
	info("uname: %s %s %s %s %s\n", u.sysname, u.nodename, u.release, u.version, u.machine);
	CHECK_RAW(rsys1(SYS_uname, 8), EFAULT);
	say("uname: sysname Linux, machine x86_64, other fields non-empty; EFAULT\n");
}

static void test_getrandom(void)
{
	unsigned char a[256], b[256];
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	CHECK(rsys3(SYS_getrandom, a, sizeof(a), 0) == (long)sizeof(a));
	CHECK(rsys3(SYS_getrandom, b, sizeof(b), GRND_NONBLOCK) == (long)sizeof(b));
	CHECK(memcmp(a, b, sizeof(a)) != 0);
	int zeros = 0;
	for (size_t i = 0; i < sizeof(a); i++)
		zeros += a[i] == 0;
	CHECK(zeros < 32);
	CHECK(rsys3(SYS_getrandom, a, 0, 0) == 0);
	CHECK(rsys3(SYS_getrandom, a, 1, GRND_NONBLOCK | GRND_RANDOM) == 1);
	CHECK_RAW(rsys3(SYS_getrandom, a, 16, 0x100), EINVAL);
	CHECK_RAW(rsys3(SYS_getrandom, 8, 16, 0), EFAULT);
	say("getrandom: returns the length asked, two draws differ, GRND_NONBLOCK; EINVAL bad flags, EFAULT\n");
}

/* A TLS block of our own: the x86-64 ABI wants its first word to point at itself. */
static uint64_t private_tls[8] __attribute__((aligned(64)));

static void test_arch_prctl(void)
{
	uint64_t saved = 0, got = 0, through_fs = 0;
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_FS, &saved) == 0);
	CHECK(saved != 0);
	private_tls[0] = (uint64_t)private_tls;
	private_tls[1] = 0x1122334455667788ULL;

	/* From here until FS is restored nothing may use libc: errno lives behind FS. */
	long set = rsys2(SYS_arch_prctl, ARCH_SET_FS, private_tls);
	long get = rsys2(SYS_arch_prctl, ARCH_GET_FS, &got);
	__asm__ volatile("mov %%fs:8, %0" : "=r"(through_fs));
	long bad = rsys2(SYS_arch_prctl, ARCH_SET_FS, 0x800000000000UL);
	long restore = rsys2(SYS_arch_prctl, ARCH_SET_FS, saved);

	CHECK(set == 0 && get == 0 && restore == 0);
	CHECK(got == (uint64_t)private_tls);
	CHECK(through_fs == 0x1122334455667788ULL);
	CHECK(bad == -EPERM);
	uint64_t again = 0;
	CHECK(rsys2(SYS_arch_prctl, ARCH_GET_FS, &again) == 0 && again == saved);
	CHECK_RAW(rsys2(SYS_arch_prctl, 0x9999, 0), EINVAL);
	CHECK_RAW(rsys2(SYS_arch_prctl, ARCH_GET_FS, 8), EFAULT);
	say("arch_prctl: SET_FS/GET_FS round trip, %%fs reads the new block, restored; EPERM, EINVAL, EFAULT\n");
}

static void test_sigprocmask(void)
{
	uint64_t old = ~0ULL, now = 0, set = (1ULL << (SIGUSR1 - 1)) | (1ULL << (SIGTERM - 1));
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_BLOCK, &set, &old, 8) == 0);
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_SETMASK, 0, &now, 8) == 0);
	CHECK(now == (old | set));
	uint64_t unblock = 1ULL << (SIGTERM - 1);
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_UNBLOCK, &unblock, 0, 8) == 0);
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, &now, 8) == 0);
	CHECK(now == ((old | set) & ~unblock));
	/* SIGKILL and SIGSTOP cannot be blocked: the kernel drops them silently. */
	uint64_t all = ~0ULL;
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_SETMASK, &all, 0, 8) == 0);
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_SETMASK, &old, &now, 8) == 0);
	CHECK(now == (~0ULL & ~((1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1)))));
	CHECK(rsys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, &now, 8) == 0 && now == old);
	CHECK_RAW(rsys4(SYS_rt_sigprocmask, 99, &set, 0, 8), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigprocmask, SIG_BLOCK, &set, 0, 4), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigprocmask, SIG_BLOCK, 8, 0, 8), EFAULT);
	say("rt_sigprocmask: block, unblock, setmask round trip; SIGKILL and SIGSTOP never blocked; EINVAL, EFAULT\n");
}

/* The kernel's struct sigaction for x86-64. */
struct ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

static void handler(int sig) { (void)sig; }
static void restorer(void) {}

static void test_sigaction(void)
{
	struct ksigaction old, mine = {
		.handler = (void *)handler,
		.flags = SA_RESTORER | SA_RESTART | SA_SIGINFO,
		.restorer = (void *)restorer,
		.mask = 1ULL << (SIGUSR2 - 1),
	}, back;
	memset(&old, 0x55, sizeof(old));
	CHECK(rsys4(SYS_rt_sigaction, SIGUSR1, &mine, &old, 8) == 0);
	CHECK(old.handler == SIG_DFL);
	memset(&back, 0, sizeof(back));
	CHECK(rsys4(SYS_rt_sigaction, SIGUSR1, &old, &back, 8) == 0);
	CHECK(back.handler == mine.handler && back.flags == mine.flags && back.restorer == mine.restorer &&
	      back.mask == mine.mask);
	CHECK(rsys4(SYS_rt_sigaction, SIGUSR1, 0, &back, 8) == 0);
	CHECK(back.handler == SIG_DFL);
	/* SIGKILL's action can be read, not changed. */
	CHECK(rsys4(SYS_rt_sigaction, SIGKILL, 0, &back, 8) == 0 && back.handler == SIG_DFL);
	CHECK_RAW(rsys4(SYS_rt_sigaction, SIGKILL, &mine, 0, 8), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigaction, SIGSTOP, &mine, 0, 8), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigaction, 0, &mine, 0, 8), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigaction, 65, &mine, 0, 8), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigaction, SIGUSR1, &mine, 0, 4), EINVAL);
	CHECK_RAW(rsys4(SYS_rt_sigaction, SIGUSR1, 8, 0, 8), EFAULT);
	say("rt_sigaction: new/old round trip keeps handler, flags, restorer, mask; EINVAL, EFAULT\n");
}

static struct rseq rseq_area __attribute__((aligned(32)));

static void test_optional(void)
{
	/* musl registers no robust list and no rseq area: both calls are ours to make. */
	static uint64_t head[3];
	head[0] = (uint64_t)head;
	long r = rsys2(SYS_set_robust_list, head, sizeof(head));
	CHECK(r == 0 || r == -ENOSYS);
	r = rsys2(SYS_set_robust_list, head, 1);
	CHECK(r == -EINVAL || r == -ENOSYS);
	info("set_robust_list: %s\n", r == -ENOSYS ? "ENOSYS" : "supported");

	const uint32_t sig = 0x53053053;
	r = rsys4(SYS_rseq, &rseq_area, sizeof(rseq_area), 0, sig);
	CHECK(r == 0 || r == -ENOSYS);
	if (r == 0) {
		unsigned cpu = ~0u;
		CHECK(rsys3(SYS_getcpu, &cpu, 0, 0) == 0);
		CHECK(rseq_area.cpu_id_start < 1024);
		CHECK(rsys4(SYS_rseq, &rseq_area, sizeof(rseq_area), RSEQ_FLAG_UNREGISTER, sig) == 0);
	}
	info("rseq: %s\n", r == -ENOSYS ? "ENOSYS" : "registered and unregistered");
	say("set_robust_list and rseq: each works or is ENOSYS\n");
}

extern char **environ;
/* musl's entry point: AT_ENTRY of a program loaded where it was linked, or moved with it. */
extern char _start[];

/* The value of auxv entry `type`, walking the vector the kernel wrote after envp's NULL; `found`
 * says whether the entry is there at all (getauxval cannot tell a 0 from a missing entry). */
static unsigned long aux_entry(char **envp, unsigned long type, int *found)
{
	while (*envp)
		envp++;
	for (unsigned long *a = (unsigned long *)(envp + 1); a[0] != AT_NULL; a += 2) {
		if (a[0] == type) {
			*found = 1;
			return a[1];
		}
	}
	*found = 0;
	return 0;
}

static void test_auxv(char **envp, const char *argv0)
{
	static const unsigned long required[] = {
		AT_PHDR, AT_PHNUM, AT_PHENT, AT_PAGESZ, AT_ENTRY, AT_RANDOM, AT_HWCAP, AT_CLKTCK,
		AT_UID, AT_EUID, AT_GID, AT_EGID, AT_SECURE, AT_EXECFN,
	};
	for (unsigned i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		int found;
		aux_entry(envp, required[i], &found);
		if (!found)
			ut_fail("auxv: no entry of type %lu", required[i]);
	}
	CHECK(getauxval(AT_PAGESZ) == 4096);
	CHECK(getauxval(AT_PHENT) == sizeof(Elf64_Phdr));
	CHECK(getauxval(AT_PHNUM) > 0 && getauxval(AT_PHDR) != 0);
	const Elf64_Phdr *ph = (const Elf64_Phdr *)getauxval(AT_PHDR);
	int loads = 0;
	for (unsigned long i = 0; i < getauxval(AT_PHNUM); i++)
		loads += ph[i].p_type == PT_LOAD;
	CHECK(loads > 0);
	CHECK(getauxval(AT_ENTRY) == (unsigned long)_start);
	CHECK(getauxval(AT_CLKTCK) == (unsigned long)sysconf(_SC_CLK_TCK) && getauxval(AT_CLKTCK) == 100);
	CHECK(getauxval(AT_UID) == getuid() && getauxval(AT_EUID) == geteuid());
	CHECK(getauxval(AT_GID) == getgid() && getauxval(AT_EGID) == getegid());
	CHECK(getauxval(AT_SECURE) == 0);
	unsigned a, b, c, d;
	CHECK(__get_cpuid(1, &a, &b, &c, &d));
	/* CPUID.1:EDX; the bits every x86-64 CPU has (FPU, TSC, CX8, CMOV, MMX, FXSR, SSE, SSE2) must be there. */
	const unsigned long base = 1ul << 0 | 1ul << 4 | 1ul << 8 | 1ul << 15 | 1ul << 23 | 1ul << 24 | 1ul << 25 | 1ul << 26;
	unsigned long hwcap = getauxval(AT_HWCAP);
	CHECK((hwcap & base) == base && (hwcap & ~(unsigned long)d) == 0);
	info("AT_HWCAP %#lx, CPUID.1:EDX %#x\n", hwcap, d);
	const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
	CHECK(rnd != NULL);
	int nonzero = 0;
	for (int i = 0; i < 16; i++)
		nonzero |= rnd[i];
	CHECK(nonzero);
	const char *execfn = (const char *)getauxval(AT_EXECFN);
	CHECK(execfn != NULL && strcmp(execfn, argv0) == 0);
	say("auxv: PHDR, PHNUM, PHENT, PAGESZ, ENTRY, RANDOM, HWCAP, CLKTCK, UID, EUID, GID, EGID, SECURE, EXECFN\n");
}

int main(int argc, char **argv)
{
	(void)argc;
	char **envp = environ;
	ut_start("misc");
	CHECK(getpid() == ut_gettid());
	CHECK(getpid() > 0);
	say("getpid: equals gettid in a single-threaded process\n");
	test_uname();
	test_getrandom();
	test_arch_prctl();
	test_sigprocmask();
	test_sigaction();
	CHECK_RAW(rsys0(500), ENOSYS);
	CHECK_RAW(rsys0(1000), ENOSYS);
	CHECK_RAW(rsys0(-1), ENOSYS);
	say("unknown system calls 500, 1000, -1: ENOSYS\n");
	/* The number is the low 32 bits of rax: Linux ignores the upper ones. */
	CHECK(rsys0(SYS_getpid | 1L << 32) == getpid());
	CHECK(rsys0(SYS_gettid | 0xffffffffL << 32) == ut_gettid());
	CHECK_RAW(rsys0(500 | 1L << 32), ENOSYS);
	say("system-call numbers: the upper 32 bits of rax are ignored\n");
	uid_t ru = 99, eu = 99, su = 99;
	gid_t rg = 99, eg = 99, sg = 99;
	CHECK(getresuid(&ru, &eu, &su) == 0 && ru == getuid() && eu == geteuid() && su != 99);
	CHECK(getresgid(&rg, &eg, &sg) == 0 && rg == getgid() && eg == getegid() && sg != 99);
	CHECK_RAW(rsys3(SYS_getresuid, &ru, &eu, 8), EFAULT);
	CHECK_RAW(rsys3(SYS_getresgid, 8, &eg, &sg), EFAULT);
	gid_t groups[64];
	int ngroups = getgroups(64, groups);
	CHECK(ngroups >= 0 && getgroups(0, NULL) == ngroups);
	CHECK_RAW(rsys2(SYS_getgroups, -1, groups), EINVAL);
	info("getgroups: %d groups\n", ngroups);
	say("getresuid, getresgid: the ids getuid and friends give; getgroups; EFAULT, EINVAL\n");
	/* A number Linux reserves and never implemented, twice: the kernel logs it once, by name. */
	CHECK_RAW(rsys0(SYS_tuxcall), ENOSYS);
	CHECK_RAW(rsys0(SYS_tuxcall), ENOSYS);
	say("tuxcall: ENOSYS\n");
	test_optional();
	test_auxv(envp, argv[0]);
	ut_ok();
}
