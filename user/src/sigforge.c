/*
 * sigforge_KIND: a signal handler forges the frame rt_sigreturn restores, and the process (only
 * it) dies by SIGSEGV; built once per kind with -DFORGE_KIND. Each prints what it forges
 * (compared), then returns from its handler; nothing after that may print.
 *
 *   cs      the code selector of the kernel (0x08): never reaches ring 3 as such
 *   flags   every RFLAGS bit but TF, DF and AC (IOPL 3, NT, VM, ...), and rip at a `cli`: the
 *           kernel keeps only the user-settable flags, so IOPL stays 0 and `cli` faults
 *   xstate  a reserved byte of the XSAVE header set: XRSTOR would fault on the image
 *   rip     a non-canonical rip (0x800000000000): SYSRET there would fault in ring 0 on Intel
 *           CPUs (CVE-2012-0217); a user program cannot put a `syscall` before that address (the
 *           last page below it is never mapped), so a forged frame is the one way to ask for it
 *   handler a non-canonical handler (0x800000000000) for SIGALRM, taken while the process spins
 *           in user mode, so the delivery is on an interrupt's way back, not a system call's: the
 *           return to the handler must not be attempted (IRET there faults in ring 0, after the
 *           switch to the user's GS base, which a user with WRGSBASE chooses)
 *
 * Linux refuses xstate in rt_sigreturn, and faults the others on the way back (IRET with a
 * ring-0 selector or a non-canonical rip; `cli` without IOPL): SIGSEGV each time, as here (this
 * kernel refuses the rip in rt_sigreturn already).
 */
#include <signal.h>
#include <sys/time.h>
#include <ucontext.h>

#include "ut.h"

extern char cli_at[];

__attribute__((used)) static void cli_here(void)
{
	__asm__ volatile(".globl cli_at\ncli_at: cli\nud2");
}

static void forge(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	(void)si;
	ucontext_t *uc = ucv;
#if defined(FORGE_CS)
	greg_t *csgsfs = &uc->uc_mcontext.gregs[REG_CSGSFS];
	*csgsfs = (*csgsfs & ~0xffffL) | 0x08;
#elif defined(FORGE_FLAGS)
	uc->uc_mcontext.gregs[REG_EFL] = 0xffffffffL & ~(0x100L | 0x400L | 0x40000L);
	uc->uc_mcontext.gregs[REG_RIP] = (greg_t)cli_at;
#elif defined(FORGE_XSTATE)
	unsigned char *fp = (unsigned char *)uc->uc_mcontext.fpregs;
	if (!fp)
		ut_fail("no extended state in the frame");
	fp[512 + 20] = 0x5a; /* XSAVE header bytes 16..63 are reserved and must be zero */
#elif defined(FORGE_RIP)
	uc->uc_mcontext.gregs[REG_RIP] = (greg_t)0x0000800000000000L;
#elif defined(FORGE_HANDLER)
	(void)uc;
#else
#error "build with -DFORGE_CS, -DFORGE_FLAGS, -DFORGE_XSTATE, -DFORGE_RIP or -DFORGE_HANDLER"
#endif
}

int main(void)
{
#if defined(FORGE_CS)
	ut_start("sigforge_cs");
#elif defined(FORGE_FLAGS)
	ut_start("sigforge_flags");
#elif defined(FORGE_RIP)
	ut_start("sigforge_rip");
#elif defined(FORGE_HANDLER)
	ut_start("sigforge_handler");
#else
	ut_start("sigforge_xstate");
#endif
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = forge;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
#if defined(FORGE_HANDLER)
	sa.sa_sigaction = NULL;
	sa.sa_handler = (void (*)(int))0x0000800000000000L;
	sa.sa_flags = 0;
	CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
	say("a non-canonical handler, its signal taken in user mode\n");
	fflush(stdout);
	struct itimerval it = { .it_value = { .tv_usec = 20000 } };
	CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
	for (volatile unsigned long spin = 0;; spin++)
		;
#endif
#if defined(FORGE_CS)
	say("forging the code selector\n");
#elif defined(FORGE_FLAGS)
	say("forging RFLAGS (IOPL 3) and returning to cli\n");
#elif defined(FORGE_RIP)
	say("forging a non-canonical rip\n");
#else
	say("forging the XSAVE header\n");
#endif
	fflush(stdout);
	raise(SIGUSR1);
	ut_fail("the forged frame was restored and returned");
}
