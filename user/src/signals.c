/*
 * signals: handlers with siginfo, masks and pending sets, coalescing of standard signals and
 * queueing of real-time ones, sigsuspend, sigaltstack, SA_RESETHAND, SA_NODEFER, SA_RESTART
 * against EINTR (futex waits, nanosleep), faults to handlers (SIGSEGV that longjmps and one that
 * fixes the page and returns, SIGFPE, SIGILL, SIGTRAP), every user register and the vector state
 * intact across a handler run from an interrupt, alarm, setitimer and getitimer.
 *
 * Signals to another thread reach it at an unknown point: where a check needs the thread to be
 * inside a blocking call, the sender repeats the signal until the thread reports the outcome, so
 * nothing printed depends on timing.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <ucontext.h>

#include "ut.h"

static volatile sig_atomic_t hits[65];
static volatile siginfo_t last_info;
static volatile int blocked_in_handler;
static volatile int other_blocked_in_handler;

static void on_info(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	hits[sig]++;
	last_info = *si;
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	blocked_in_handler = sigismember(&cur, sig);
	other_blocked_in_handler = sigismember(&cur, SIGUSR2);
}

static void install(int sig, void (*h)(int, siginfo_t *, void *), int flags, int mask_sig)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = h;
	sa.sa_flags = SA_SIGINFO | flags;
	sigemptyset(&sa.sa_mask);
	if (mask_sig)
		sigaddset(&sa.sa_mask, mask_sig);
	CHECK(sigaction(sig, &sa, NULL) == 0);
}

static pid_t gettid_(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static void test_siginfo(void)
{
	install(SIGUSR1, on_info, 0, SIGUSR2);
	CHECK(kill(getpid(), SIGUSR1) == 0);
	CHECK(hits[SIGUSR1] == 1);
	CHECK(last_info.si_signo == SIGUSR1 && last_info.si_code == SI_USER && last_info.si_pid == getpid());
	CHECK(blocked_in_handler == 1 && other_blocked_in_handler == 1);
	CHECK(syscall(SYS_tgkill, getpid(), gettid_(), SIGUSR1) == 0);
	CHECK(hits[SIGUSR1] == 2 && last_info.si_code == SI_TKILL);
	say("siginfo: kill SI_USER, tgkill SI_TKILL, own signal and sa_mask blocked in the handler\n");
	install(SIGUSR1, on_info, SA_NODEFER, 0);
	raise(SIGUSR1);
	CHECK(hits[SIGUSR1] == 3 && blocked_in_handler == 0);
	say("SA_NODEFER: the signal stays unblocked in its handler\n");
}

static void test_mask_and_pending(void)
{
	sigset_t b, old, p;
	install(SIGUSR1, on_info, 0, 0);
	install(SIGUSR2, on_info, 0, 0);
	install(SIGRTMIN, on_info, 0, 0);
	sigemptyset(&b);
	sigaddset(&b, SIGUSR1);
	sigaddset(&b, SIGUSR2);
	sigaddset(&b, SIGRTMIN);
	CHECK(sigprocmask(SIG_BLOCK, &b, &old) == 0);
	int u1 = hits[SIGUSR1], u2 = hits[SIGUSR2], rt = hits[SIGRTMIN];
	for (int i = 0; i < 3; i++) {
		CHECK(kill(getpid(), SIGUSR2) == 0);
		CHECK(kill(getpid(), SIGRTMIN) == 0);
	}
	CHECK(kill(getpid(), SIGUSR1) == 0);
	CHECK(sigpending(&p) == 0);
	CHECK(sigismember(&p, SIGUSR1) && sigismember(&p, SIGUSR2) && sigismember(&p, SIGRTMIN) && !sigismember(&p, SIGINT));
	CHECK(hits[SIGUSR1] == u1 && hits[SIGUSR2] == u2 && hits[SIGRTMIN] == rt);
	say("blocked signals stay pending and sigpending lists them\n");
	CHECK(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
	/* Linux delivers every one before sigprocmask returns; a kernel may take a few more calls. */
	for (int i = 0; i < 100 && hits[SIGRTMIN] - rt < 3; i++)
		sched_yield();
	say("unblocked: SIGUSR1 %d, SIGUSR2 %d (merged), SIGRTMIN %d (queued)\n", hits[SIGUSR1] - u1, hits[SIGUSR2] - u2,
	    hits[SIGRTMIN] - rt);
	CHECK(sigpending(&p) == 0);
	CHECK(sigisemptyset(&p));
	sigset_t all, got;
	sigfillset(&all);
	CHECK(sigprocmask(SIG_SETMASK, &all, &old) == 0);
	CHECK(sigprocmask(SIG_SETMASK, NULL, &got) == 0);
	CHECK(!sigismember(&got, SIGKILL) && !sigismember(&got, SIGSTOP) && sigismember(&got, SIGINT));
	CHECK(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
	CHECK_RAW(rsys6(SYS_rt_sigprocmask, 7, (long)&b, 0, 8, 0, 0), EINVAL);
	CHECK_RAW(rsys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&b, 0, 4, 0, 0), EINVAL);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	CHECK_ERR(sigaction(SIGKILL, &sa, NULL), EINVAL);
	CHECK_ERR(sigaction(SIGSTOP, &sa, NULL), EINVAL);
	CHECK_ERR(sigaction(65, &sa, NULL), EINVAL);
	CHECK(sigaction(SIGKILL, NULL, &sa) == 0);
	say("SIGKILL and SIGSTOP can be neither blocked nor caught\n");
	sigset_t w;
	sigemptyset(&w);
	sigaddset(&w, SIGUSR1);
	CHECK(sigprocmask(SIG_BLOCK, &w, &old) == 0);
	int h = hits[SIGUSR1];
	CHECK(kill(getpid(), SIGUSR1) == 0);
	siginfo_t si;
	struct timespec zero = { 0, 0 }, shortly = { 0, 20 * 1000 * 1000 };
	CHECK(sigtimedwait(&w, &si, &zero) == SIGUSR1 && si.si_signo == SIGUSR1 && si.si_code == SI_USER);
	CHECK_ERR(sigtimedwait(&w, &si, &zero), EAGAIN);
	CHECK_ERR(sigtimedwait(&w, &si, &shortly), EAGAIN);
	CHECK(hits[SIGUSR1] == h);
	CHECK(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
	say("sigtimedwait takes a pending blocked signal without its handler, EAGAIN when none comes\n");
}

static void test_ignore_and_default(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
	CHECK(raise(SIGUSR2) == 0);
	CHECK(raise(SIGURG) == 0);
	CHECK(raise(SIGCHLD) == 0);
	CHECK(raise(SIGWINCH) == 0);
	say("ignored and default-ignored signals do nothing\n");
	/* Blocked then ignored: pending is discarded. */
	install(SIGUSR2, on_info, 0, 0);
	sigset_t b, p;
	sigemptyset(&b);
	sigaddset(&b, SIGUSR2);
	sigprocmask(SIG_BLOCK, &b, NULL);
	raise(SIGUSR2);
	sigpending(&p);
	CHECK(sigismember(&p, SIGUSR2));
	CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
	sigpending(&p);
	CHECK(!sigismember(&p, SIGUSR2));
	sigprocmask(SIG_UNBLOCK, &b, NULL);
	say("setting SIG_IGN discards a pending signal\n");
	CHECK(kill(getpid(), 0) == 0);
	CHECK_ERR(syscall(SYS_tgkill, getpid() + 100000, gettid_(), SIGUSR1), ESRCH);
	CHECK_ERR(kill(getpid(), 65), EINVAL);
	say("kill 0 probes, bad targets and numbers fail\n");
}

static void test_resethand(void)
{
	install(SIGUSR1, on_info, SA_RESETHAND, 0);
	int before = hits[SIGUSR1];
	raise(SIGUSR1);
	CHECK(hits[SIGUSR1] == before + 1);
	struct sigaction sa;
	CHECK(sigaction(SIGUSR1, NULL, &sa) == 0);
	CHECK(sa.sa_handler == SIG_DFL);
	say("SA_RESETHAND: one handler run, then SIG_DFL\n");
}

static void test_sigsuspend(void)
{
	install(SIGUSR1, on_info, 0, 0);
	sigset_t b, old, empty, now;
	sigemptyset(&b);
	sigaddset(&b, SIGUSR1);
	sigprocmask(SIG_BLOCK, &b, &old);
	int before = hits[SIGUSR1];
	raise(SIGUSR1);
	CHECK(hits[SIGUSR1] == before);
	sigemptyset(&empty);
	CHECK_ERR(sigsuspend(&empty), EINTR);
	CHECK(hits[SIGUSR1] == before + 1);
	sigprocmask(SIG_BLOCK, NULL, &now);
	CHECK(sigismember(&now, SIGUSR1));
	sigprocmask(SIG_SETMASK, &old, NULL);
	say("sigsuspend: runs the pending handler, EINTR, the old mask back\n");
}

static char altstack[65536] __attribute__((aligned(16)));
static volatile int on_alt, alt_flags_onstack;

static void on_alt_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	char here;
	on_alt = &here >= altstack && &here < altstack + sizeof altstack;
	stack_t cur;
	sigaltstack(NULL, &cur);
	alt_flags_onstack = (cur.ss_flags & SS_ONSTACK) != 0;
	if (on_alt) {
		stack_t other = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
		CHECK(sigaltstack(&other, NULL) == -1 && errno == EPERM);
	}
	ucontext_t *u = uc;
	CHECK(u->uc_stack.ss_sp == altstack && u->uc_stack.ss_size == sizeof altstack);
}

static void test_altstack(void)
{
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 }, old;
	CHECK(sigaltstack(&ss, &old) == 0);
	CHECK(old.ss_flags == SS_DISABLE);
	stack_t small = { .ss_sp = altstack, .ss_size = 100, .ss_flags = 0 };
	CHECK_ERR(sigaltstack(&small, NULL), ENOMEM);
	install(SIGUSR1, on_alt_handler, SA_ONSTACK, 0);
	raise(SIGUSR1);
	CHECK(on_alt && alt_flags_onstack);
	install(SIGUSR1, on_alt_handler, 0, 0);
	on_alt = 1;
	stack_t dis = { .ss_flags = SS_DISABLE };
	raise(SIGUSR1);
	CHECK(!on_alt);
	CHECK(sigaltstack(&dis, NULL) == 0);
	CHECK(sigaltstack(NULL, &old) == 0 && old.ss_flags == SS_DISABLE);
	say("sigaltstack: SA_ONSTACK runs there with SS_ONSTACK, EPERM to change it from there\n");
}

/* ---- SA_RESTART against EINTR, in another thread ---------------------------------------------- */

static volatile int fword;
static atomic_int waiter_result = 1, waiter_in, handled_in_waiter;
static atomic_int stop_waiter;

static void on_count(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	atomic_fetch_add(&handled_in_waiter, 1);
}

enum wait_kind { FUTEX_UNTIMED, FUTEX_TIMED, SLEEP };

static void *waiter(void *arg)
{
	enum wait_kind k = (enum wait_kind)(long)arg;
	atomic_store(&waiter_in, 1);
	for (;;) {
		long r;
		if (k == SLEEP) {
			struct timespec req = { .tv_sec = 30 }, rem = { 0, 0 };
			r = rsys6(SYS_nanosleep, (long)&req, (long)&rem, 0, 0, 0, 0);
			if (r == -EINTR)
				/* Linux counts the timer slack in: rem may exceed the request by microseconds. */
				if (!(rem.tv_sec <= 30 && (rem.tv_sec > 0 || rem.tv_nsec > 0)))
					ut_fail("nanosleep: EINTR with %ld.%09ld s left of 30", (long)rem.tv_sec, (long)rem.tv_nsec);
		} else {
			struct timespec t = { .tv_sec = 30 };
			r = rsys6(SYS_futex, (long)&fword, FUTEX_WAIT_PRIVATE, 0, k == FUTEX_TIMED ? (long)&t : 0, 0, 0);
		}
		if (r == -EAGAIN || (r == 0 && atomic_load(&stop_waiter)) || r == -EINTR) {
			atomic_store(&waiter_result, (int)r);
			return NULL;
		}
	}
}

/* Signal the waiter until it reports (EINTR), or until it has handled `want` signals (restart). */
static int run_waiter(enum wait_kind k, int restart, int want)
{
	install(SIGUSR1, on_count, restart ? SA_RESTART : 0, 0);
	fword = 0;
	atomic_store(&waiter_result, 1);
	atomic_store(&waiter_in, 0);
	atomic_store(&handled_in_waiter, 0);
	atomic_store(&stop_waiter, 0);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, waiter, (void *)(long)k) == 0);
	while (!atomic_load(&waiter_in))
		sched_yield();
	struct timespec tick = { 0, 5 * 1000 * 1000 };
	for (int i = 0; i < 4000 && atomic_load(&waiter_result) == 1; i++) {
		if (atomic_load(&handled_in_waiter) >= want) {
			atomic_store(&stop_waiter, 1);
			fword = 1;
			syscall(SYS_futex, &fword, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
		} else {
			pthread_kill(t, SIGUSR1);
		}
		nanosleep(&tick, NULL);
	}
	CHECK(pthread_join(t, NULL) == 0);
	return atomic_load(&waiter_result);
}

static const char *res(int r)
{
	return r == -EINTR ? "EINTR" : r == 0 ? "woken" : r == -EAGAIN ? "woken (EAGAIN)" : "?";
}

static void test_restart(void)
{
	int r = run_waiter(FUTEX_UNTIMED, 0, 1000);
	say("futex wait, no SA_RESTART: %s\n", res(r));
	r = run_waiter(FUTEX_UNTIMED, 1, 3);
	say("futex wait, SA_RESTART: %s after 3 handlers\n", r == -EAGAIN ? "woken" : res(r));
	r = run_waiter(FUTEX_TIMED, 1, 1000);
	say("timed futex wait, SA_RESTART: %s\n", res(r));
	r = run_waiter(SLEEP, 1, 1000);
	say("nanosleep, SA_RESTART: %s with time left\n", res(r));
}

/* ---- faults ------------------------------------------------------------------------------------- */

static sigjmp_buf jb;
static volatile siginfo_t fault_info;
static volatile void *fault_rip;

static void on_fault_jump(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	ucontext_t *uc = ucv;
	fault_info = *si;
	fault_rip = (void *)uc->uc_mcontext.gregs[REG_RIP];
	siglongjmp(jb, 1);
}

static char *ro_page;

static void on_fault_fix(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	fault_info = *si;
	CHECK(mprotect(ro_page, 4096, PROT_READ | PROT_WRITE) == 0);
}

static volatile int trap_seen;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	trap_seen++;
}

extern char ud2_at[];

static void test_faults(void)
{
	install(SIGSEGV, on_fault_jump, 0, 0);
	volatile int *bad = (volatile int *)0x10008;
	if (sigsetjmp(jb, 1) == 0) {
		(void)*bad;
		ut_fail("read of an unmapped page returned");
	}
	CHECK(fault_info.si_signo == SIGSEGV && fault_info.si_code == SEGV_MAPERR && fault_info.si_addr == (void *)bad);
	say("SIGSEGV to a handler: SEGV_MAPERR at the address, siglongjmp out\n");
	ro_page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(ro_page != MAP_FAILED);
	install(SIGSEGV, on_fault_fix, 0, 0);
	((volatile char *)ro_page)[10] = 42;
	CHECK(ro_page[10] == 42 && fault_info.si_code == SEGV_ACCERR && fault_info.si_addr == ro_page + 10);
	say("SIGSEGV handler fixes the protection and returns: the write is retried (SEGV_ACCERR)\n");
	install(SIGFPE, on_fault_jump, 0, 0);
	if (sigsetjmp(jb, 1) == 0) {
		volatile int z = 0, x = 7;
		x = x / z;
		ut_fail("division by zero returned");
	}
	CHECK(fault_info.si_signo == SIGFPE && fault_info.si_code == FPE_INTDIV && fault_info.si_addr == fault_rip);
	say("SIGFPE to a handler: FPE_INTDIV at the instruction\n");
	install(SIGILL, on_fault_jump, 0, 0);
	if (sigsetjmp(jb, 1) == 0) {
		__asm__ volatile(".globl ud2_at\nud2_at: ud2");
		ut_fail("ud2 returned");
	}
	CHECK(fault_info.si_signo == SIGILL && fault_info.si_code == ILL_ILLOPN && fault_info.si_addr == (void *)ud2_at &&
	      fault_rip == (void *)ud2_at);
	say("SIGILL to a handler: ILL_ILLOPN at the ud2\n");
	install(SIGTRAP, on_trap, 0, 0);
	__asm__ volatile("int3");
	CHECK(trap_seen == 1);
	say("SIGTRAP to a handler that returns: execution goes on after int3\n");
	/* A fault inside the handler of the same signal, which blocks it, is fatal: not tested here
	 * (it ends the program), the fault_* programs cover that end. */
	signal(SIGSEGV, SIG_DFL);
	signal(SIGFPE, SIG_DFL);
	signal(SIGILL, SIG_DFL);
	signal(SIGTRAP, SIG_DFL);
}

/* ---- registers across a handler run from an interrupt ------------------------------------------- */

static volatile int spin_release;

static void on_clobber(int sig)
{
	(void)sig;
	/* Use vector registers and the caller-saved ones freely. */
	volatile double d = 1.5;
	for (int i = 0; i < 10; i++)
		d = d * 1.25 + 0.5;
	spin_release = 1;
}

static void *sender(void *arg)
{
	pthread_t t = *(pthread_t *)arg;
	struct timespec tick = { 0, 2 * 1000 * 1000 };
	while (!spin_release) {
		pthread_kill(t, SIGUSR2);
		nanosleep(&tick, NULL);
	}
	return NULL;
}

static void test_registers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_clobber;
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
	spin_release = 0;
	pthread_t me = pthread_self(), s;
	CHECK(pthread_create(&s, NULL, sender, &me) == 0);
	unsigned long out[13];
	/* Known values in rax..r15 (but rsp) and xmm0..xmm1, then spin in ring 3 on the flag only the
	 * handler sets: the signal arrives by an interrupt, never by a system call of this thread. */
	__asm__ volatile(
		"push %%rbp\n"
		"push %%rbx\n"
		"push %%r12\n"
		"push %%r13\n"
		"push %%r14\n"
		"push %%r15\n"
		"push %%rdi\n"
		"mov $0x1111, %%rax\n"
		"mov $0x3333, %%rcx\n"
		"mov $0x4444, %%rdx\n"
		"mov $0x5555, %%rsi\n"
		"mov $0x6666, %%rbp\n"
		"mov $0x2222, %%rbx\n"
		"mov $0x8888, %%r8\n"
		"mov $0x9999, %%r9\n"
		"mov $0xaaaa, %%r10\n"
		"mov $0xbbbb, %%r11\n"
		"mov $0xcccc, %%r12\n"
		"mov $0xdddd, %%r13\n"
		"mov $0xeeee, %%r14\n"
		"mov $0xffff, %%r15\n"
		"movq %%rax, %%xmm0\n"
		"movq %%rbx, %%xmm1\n"
		"1: pause\n"
		"cmpl $0, %[flag]\n"
		"je 1b\n"
		"mov (%%rsp), %%rdi\n"
		"mov %%rax, 0(%%rdi)\n"
		"mov %%rbx, 8(%%rdi)\n"
		"mov %%rcx, 16(%%rdi)\n"
		"mov %%rdx, 24(%%rdi)\n"
		"mov %%rsi, 32(%%rdi)\n"
		"mov %%rbp, 40(%%rdi)\n"
		"mov %%r8, 48(%%rdi)\n"
		"mov %%r9, 56(%%rdi)\n"
		"mov %%r12, 64(%%rdi)\n"
		"mov %%r15, 72(%%rdi)\n"
		"movq %%xmm0, %%rax\n"
		"mov %%rax, 80(%%rdi)\n"
		"movq %%xmm1, %%rax\n"
		"mov %%rax, 88(%%rdi)\n"
		"mov %%r10, 96(%%rdi)\n"
		"pop %%rdi\n"
		"pop %%r15\n"
		"pop %%r14\n"
		"pop %%r13\n"
		"pop %%r12\n"
		"pop %%rbx\n"
		"pop %%rbp\n"
		:
		: "D"(out), [flag] "m"(spin_release)
		: "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "memory", "cc");
	CHECK(pthread_join(s, NULL) == 0);
	unsigned long want[13] = { 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666, 0x8888, 0x9999, 0xcccc, 0xffff, 0x1111, 0x2222, 0xaaaa };
	for (int i = 0; i < 13; i++)
		if (out[i] != want[i])
			ut_fail("register %d is %#lx after the handler, was %#lx", i, out[i], want[i]);
	say("a handler run from an interrupt leaves every register and xmm0/xmm1 as they were\n");
	signal(SIGUSR2, SIG_DFL);
}

/* ---- alarm and setitimer ------------------------------------------------------------------------ */

static void test_timers(void)
{
	install(SIGALRM, on_info, 0, 0);
	int before = hits[SIGALRM];
	CHECK(alarm(5) == 0);
	CHECK(alarm(0) == 5);
	/* Blocked until sigsuspend waits, so the expiry cannot come before the wait. */
	sigset_t alrm, empty;
	sigemptyset(&alrm);
	sigaddset(&alrm, SIGALRM);
	sigemptyset(&empty);
	sigprocmask(SIG_BLOCK, &alrm, NULL);
	struct itimerval v = { .it_value = { 0, 20 * 1000 }, .it_interval = { 0, 0 } }, old;
	CHECK(setitimer(ITIMER_REAL, &v, &old) == 0);
	CHECK(old.it_value.tv_sec == 0 && old.it_value.tv_usec == 0);
	CHECK_ERR(sigsuspend(&empty), EINTR);
	sigprocmask(SIG_UNBLOCK, &alrm, NULL);
	CHECK(hits[SIGALRM] == before + 1 && last_info.si_signo == SIGALRM && last_info.si_code == SI_KERNEL);
	say("setitimer one shot: SIGALRM (SI_KERNEL) ends sigsuspend with EINTR\n");
	struct itimerval p = { .it_value = { 0, 10 * 1000 }, .it_interval = { 0, 10 * 1000 } };
	CHECK(setitimer(ITIMER_REAL, &p, NULL) == 0);
	while (hits[SIGALRM] < before + 4)
		sigsuspend(&empty);
	struct itimerval cur;
	CHECK(getitimer(ITIMER_REAL, &cur) == 0);
	CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 10000);
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	CHECK(setitimer(ITIMER_REAL, &off, &old) == 0);
	CHECK(old.it_interval.tv_usec == 10000);
	CHECK(getitimer(ITIMER_REAL, &cur) == 0 && cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0);
	say("setitimer periodic: three more SIGALRMs, getitimer reads the interval, zero disarms\n");
	CHECK(alarm(1) == 0);
	CHECK_ERR(pause(), EINTR);
	say("alarm(1): SIGALRM ends pause\n");
	struct itimerval bad = { .it_value = { 0, 1000000 } };
	CHECK_ERR(setitimer(ITIMER_REAL, &bad, NULL), EINVAL);
}

int main(void)
{
	ut_start("signals");
	test_siginfo();
	test_mask_and_pending();
	test_ignore_and_default();
	test_resethand();
	test_sigsuspend();
	test_altstack();
	test_restart();
	test_faults();
	test_registers();
	test_timers();
	ut_ok();
}
