/*
 * memory: brk, mmap, munmap, mprotect, mremap and madvise, through their success and errno paths.
 *
 * Signals are not delivered yet, so nothing here touches an address that would fault: every
 * check is a return value or the contents of memory that must be mapped.
 */
#include <sys/mman.h>

#include "ut.h"

#define PAGE 4096UL

static int all_bytes(const unsigned char *p, size_t len, unsigned char v)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

static void test_brk(void)
{
	uintptr_t start = (uintptr_t)rsys1(SYS_brk, 0);
	CHECK(start != 0);
	uintptr_t want = start + 16 * PAGE;
	CHECK((uintptr_t)rsys1(SYS_brk, want) == want);
	unsigned char *p = (unsigned char *)((start + PAGE - 1) & ~(PAGE - 1));
	size_t len = want - (uintptr_t)p;
	CHECK(all_bytes(p, len, 0));
	memset(p, 0x5a, len);
	CHECK(all_bytes(p, len, 0x5a));
	/* Shrinking gives the pages back; growing again brings zeroes, not the old bytes. */
	CHECK((uintptr_t)rsys1(SYS_brk, start) == start);
	CHECK((uintptr_t)rsys1(SYS_brk, 0) == start);
	CHECK((uintptr_t)rsys1(SYS_brk, want) == want);
	CHECK(all_bytes(p, len, 0));
	CHECK((uintptr_t)rsys1(SYS_brk, start) == start);
	/* Below the start of the heap, or absurdly high, brk refuses and returns the current break. */
	CHECK((uintptr_t)rsys1(SYS_brk, PAGE) == start);
	CHECK((uintptr_t)rsys1(SYS_brk, 0xffff800000000000UL) == start);
	say("brk: grow, zero-filled, shrink, grow again zero-filled, refusals keep the break\n");
}

static void test_mmap(void)
{
	size_t len = 16 * PAGE;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	CHECK((uintptr_t)p % PAGE == 0);
	CHECK(all_bytes(p, len, 0));
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 7 + i / PAGE);
	for (size_t i = 0; i < len; i++)
		CHECK(p[i] == (unsigned char)(i * 7 + i / PAGE));
	say("mmap: anonymous private pages are zero and keep what is written\n");

	CHECK_ERR(mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), EINVAL);
	CHECK_ERR(mmap(NULL, PAGE, PROT_READ, MAP_ANONYMOUS, -1, 0), EINVAL);
	CHECK_ERR(mmap(p + 1, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), EINVAL);
	CHECK_ERR(mmap(NULL, 1UL << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), ENOMEM);
	CHECK_ERR(mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, 99, 0), EBADF);
	CHECK_ERR(mmap(p, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0), EEXIST);
	say("mmap: EINVAL for zero length, no sharing type, misaligned fixed; ENOMEM, EBADF, EEXIST\n");

	/* MAP_FIXED over a mapped page replaces it with a fresh zero page. */
	CHECK(mmap(p + PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p + PAGE);
	CHECK(all_bytes(p + PAGE, PAGE, 0));
	CHECK(p[0] == 0 && p[2 * PAGE + 1] == (unsigned char)(2 * PAGE + 1) * 7 + 2);
	say("mmap: MAP_FIXED replaces a page with zeroes and leaves its neighbours\n");

	CHECK_ERR(munmap(p + 1, PAGE), EINVAL);
	CHECK_ERR(munmap(p, 0), EINVAL);
	CHECK_ERR(munmap((void *)0xffff800000000000UL, PAGE), EINVAL);
	CHECK(munmap(p + 15 * PAGE, PAGE) == 0);
	CHECK(munmap(p + 15 * PAGE, PAGE) == 0);
	say("munmap: EINVAL for misaligned, zero length, kernel range; unmapping a hole is fine\n");

	CHECK(mprotect(p, PAGE, PROT_READ) == 0);
	CHECK(p[0] == 0 && p[3] == 21);
	CHECK(mprotect(p, PAGE, PROT_READ | PROT_WRITE) == 0);
	p[0] = 1;
	CHECK(p[0] == 1);
	/* musl's mprotect() rounds the start down: the raw call sees the misalignment. */
	CHECK_RAW(rsys3(SYS_mprotect, p + 1, PAGE, PROT_READ), EINVAL);
	CHECK_RAW(rsys3(SYS_mprotect, p + 15 * PAGE, PAGE, PROT_READ), ENOMEM);
	CHECK_RAW(rsys3(SYS_mprotect, p, PAGE, 0x1000), EINVAL);
	say("mprotect: read-only still reads, back to writable; EINVAL misaligned or bad prot, ENOMEM hole\n");

	/* madvise(DONTNEED) on private anonymous memory: the next touch reads zeroes. */
	CHECK(p[4 * PAGE + 5] != 0);
	CHECK(madvise(p + 4 * PAGE, 2 * PAGE, MADV_DONTNEED) == 0);
	CHECK(all_bytes(p + 4 * PAGE, 2 * PAGE, 0));
	CHECK(p[6 * PAGE + 1] == (unsigned char)((6 * PAGE + 1) * 7 + 6));
	CHECK_ERR(madvise(p + 1, PAGE, MADV_DONTNEED), EINVAL);
	CHECK_ERR(madvise(p, PAGE, 12345), EINVAL);
	CHECK(madvise(p, PAGE, MADV_NORMAL) == 0);
	say("madvise: DONTNEED zeroes private pages; EINVAL misaligned or unknown advice\n");

	/* mremap: shrink in place, grow with MAYMOVE (contents kept, the new tail zero). */
	CHECK(mremap(p + 8 * PAGE, 7 * PAGE, 4 * PAGE, 0) == p + 8 * PAGE);
	CHECK_ERR(mremap(p + 4 * PAGE, 2 * PAGE, 3 * PAGE, 0), ENOMEM);
	CHECK_ERR(mremap(p, PAGE, 2 * PAGE, 0), ENOMEM);
	unsigned char *q = mremap(p + 8 * PAGE, 4 * PAGE, 64 * PAGE, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED);
	for (size_t i = 0; i < 4 * PAGE; i++)
		CHECK(q[i] == (unsigned char)((i + 8 * PAGE) * 7 + (i / PAGE + 8)));
	CHECK(all_bytes(q + 4 * PAGE, 60 * PAGE, 0));
	CHECK_ERR(mremap(p + 1, PAGE, PAGE, 0), EINVAL);
	CHECK_ERR(mremap(p, PAGE, 0, 0), EINVAL);
	CHECK_ERR(mremap(p, PAGE, PAGE, 0x100), EINVAL);
	say("mremap: shrink in place, ENOMEM without MAYMOVE, grow and move keeps contents\n");

	/* MREMAP_FIXED moves a page onto another, replacing it. */
	q[0] = 0xab;
	CHECK(mremap(q, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, p + 2 * PAGE) == p + 2 * PAGE);
	CHECK(p[2 * PAGE] == 0xab && p[2 * PAGE + 1] == (unsigned char)((8 * PAGE + 1) * 7 + 8));
	say("mremap: MAYMOVE|FIXED puts the page at the new address\n");

	CHECK(munmap(q + PAGE, 63 * PAGE) == 0);
	CHECK(munmap(p, 8 * PAGE) == 0);
}

int main(void)
{
	ut_start("memory");
	test_brk();
	test_mmap();
	ut_ok();
}
