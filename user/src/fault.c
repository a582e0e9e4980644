/*
 * fault_KIND: a program that dies by a signal on purpose, one per kind of user fault; built once
 * per kind with -DFAULT_KIND. The expected signal of each is in programs.toml. Each prints what
 * it is about to do (compared), then does it; nothing after that may print.
 *
 *   read      read of an unmapped page (#PF, not present)           SIGSEGV
 *   write     write to a read-only page (#PF, protection)           SIGSEGV
 *   noncanon  read of a non-canonical address (#GP)                 SIGSEGV
 *   gp        hlt in ring 3 (#GP, privileged instruction)          SIGSEGV
 *   ud        ud2 (#UD)                                             SIGILL
 *   div       integer division by zero (#DE)                        SIGFPE
 *   int3      int3 (#BP)                                            SIGTRAP
 *   stack     unbounded recursion into the stack guard (#PF)       SIGSEGV
 *   sysret    syscall whose return address is past the last page   SIGSEGV (below)
 *   abort     abort(): tkill(SIGABRT)                               SIGABRT
 *   kill      tgkill(getpid(), gettid(), SIGKILL)                   SIGKILL
 *   inhandler a SIGSEGV handler that faults again (SIGSEGV blocked)  SIGSEGV
 *   ignored   a read of an unmapped page with SIGSEGV ignored        SIGSEGV
 *
 * sysret: SYSRET to a non-canonical RIP faults in ring 0 on Intel CPUs (CVE-2012-0217), so a
 * kernel must never do it. Linux never lets user space map the last page below the canonical
 * boundary (0x7ffffffff000: mmap says ENOMEM, MAP_FIXED or not), which keeps every RIP after a
 * syscall canonical. The program first checks that refusal (compared), then puts a syscall in the
 * last two bytes of the highest page that can be mapped, 0x7fffffffe000, and jumps there: the
 * return lands on the unmapped 0x7ffffffff000 and the instruction fetch faults in ring 3: SIGSEGV.
 * When 0x7fffffffe000 is taken (a stack placed at the very top), any page followed by an unmapped
 * one does. If a kernel does map 0x7ffffffff000, the program says so (a difference from Linux)
 * and runs the real case: syscall at 0x7ffffffffffe, whose return RIP is non-canonical; so it
 * does when that page is already mapped (a stack at the very top), after mprotect makes it
 * executable.
 */
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "ut.h"

#define PAGE 4096UL

#if defined(FAULT_STACK)
/* The limit is never reached: it only keeps the compiler from calling the recursion infinite. */
static volatile long depth_limit = 1L << 40;

static long recurse(volatile char *prev, long depth)
{
	volatile char frame[1024];
	frame[0] = prev ? (char)(prev[0] + 1) : 0;
	if (depth >= depth_limit)
		return depth;
	return recurse(frame, depth + 1) + frame[0];
}
#endif

#if defined(FAULT_SYSRET)
/* Puts `syscall` (0f 05) at page + PAGE - 2 and jumps there with rax = getpid. */
__attribute__((noreturn)) static void syscall_at_end(unsigned char *page)
{
	page[PAGE - 2] = 0x0f;
	page[PAGE - 1] = 0x05;
	fflush(stdout);
	__asm__ volatile("jmp *%1" : : "a"((long)SYS_getpid), "r"(page + PAGE - 2) : "memory");
	__builtin_unreachable();
}
#endif

#if defined(FAULT_INHANDLER)
static void fault_again(int sig)
{
	(void)sig;
	(void)*(volatile uint64_t *)0x10000;
}
#endif

int main(void)
{
#if defined(FAULT_READ)
	ut_start("fault_read");
	volatile uint64_t *p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED && munmap((void *)p, PAGE) == 0);
	say("reading an unmapped page\n");
	fflush(stdout);
	(void)*p;
#elif defined(FAULT_WRITE)
	ut_start("fault_write");
	volatile uint64_t *p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	CHECK(*p == 0);
	say("writing a read-only page\n");
	fflush(stdout);
	*p = 1;
#elif defined(FAULT_NONCANON)
	ut_start("fault_noncanon");
	say("reading a non-canonical address\n");
	fflush(stdout);
	(void)*(volatile uint64_t *)0x8000000000000000UL;
#elif defined(FAULT_GP)
	ut_start("fault_gp");
	say("executing hlt in ring 3\n");
	fflush(stdout);
	__asm__ volatile("hlt");
#elif defined(FAULT_UD)
	ut_start("fault_ud");
	say("executing ud2\n");
	fflush(stdout);
	__asm__ volatile("ud2");
#elif defined(FAULT_DIV)
	ut_start("fault_div");
	say("dividing by zero\n");
	fflush(stdout);
	long q, r;
	__asm__ volatile("idivq %2" : "=a"(q), "=d"(r) : "r"(0L), "a"(1L), "d"(0L));
	(void)q;
	(void)r;
#elif defined(FAULT_INT3)
	ut_start("fault_int3");
	say("executing int3\n");
	fflush(stdout);
	__asm__ volatile("int3");
#elif defined(FAULT_STACK)
	ut_start("fault_stack");
	struct rlimit rl;
	/* getrlimit is not part of the ABI this program tests: information only. */
	if (getrlimit(RLIMIT_STACK, &rl) == 0)
		info("stack limit %lld bytes\n", (long long)rl.rlim_cur);
	say("recursing without end\n");
	fflush(stdout);
	recurse(NULL, 0);
#elif defined(FAULT_SYSRET)
	ut_start("fault_sysret");
	void *top = mmap((void *)0x7ffffffff000UL, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (top == MAP_FAILED && errno == ENOMEM) {
		say("mmap of the last page below the canonical boundary: ENOMEM\n");
		unsigned char *page = mmap((void *)0x7fffffffe000UL, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (page == MAP_FAILED) {
			info("0x7fffffffe000 is taken (%s): using a page followed by a hole\n", strerror(errno));
			page = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			CHECK(page != MAP_FAILED && munmap(page + PAGE, PAGE) == 0);
		}
		CHECK(page != MAP_FAILED);
		info("syscall at %p, returning to %p\n", (void *)(page + PAGE - 2), (void *)(page + PAGE));
		say("syscall in the last bytes of the highest page, returning to an unmapped page\n");
		syscall_at_end(page);
	}
	if (top != MAP_FAILED) {
		say("mmap of the last page below the canonical boundary succeeded (Linux refuses it)\n");
		say("syscall at 0x7ffffffffffe: its return address is not canonical\n");
		syscall_at_end(top);
	}
	if (errno == EEXIST) {
		/* Something, a stack perhaps, already lives there: make it executable and run the real case. */
		say("the last page below the canonical boundary is already mapped (Linux never maps it)\n");
		top = (void *)0x7ffffffff000UL;
		CHECK(mprotect(top, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC) == 0);
		say("syscall at 0x7ffffffffffe: its return address is not canonical\n");
		syscall_at_end(top);
	}
	ut_fail("mmap of 0x7ffffffff000: %s", strerror(errno));
#elif defined(FAULT_ABORT)
	ut_start("fault_abort");
	say("calling abort\n");
	fflush(stdout);
	abort();
#elif defined(FAULT_KILL)
	ut_start("fault_kill");
	say("sending SIGKILL to this thread\n");
	fflush(stdout);
	rsys3(SYS_tgkill, getpid(), ut_gettid(), SIGKILL);
#elif defined(FAULT_INHANDLER)
	ut_start("fault_inhandler");
	signal(SIGSEGV, fault_again);
	say("faulting, and again inside the SIGSEGV handler\n");
	fflush(stdout);
	(void)*(volatile uint64_t *)0x10000;
#elif defined(FAULT_IGNORED)
	ut_start("fault_ignored");
	signal(SIGSEGV, SIG_IGN);
	say("reading an unmapped page with SIGSEGV ignored\n");
	fflush(stdout);
	(void)*(volatile uint64_t *)0x10000;
#else
#error "build with -DFAULT_<KIND>"
#endif
	ut_fail("still alive after the fault");
}
