/* A first user program: stdio, the heap (brk), a large anonymous mapping, thread-local errno,
 * argv and the auxiliary vector. It prints what it checked and exits with the status given as its
 * first argument (0 without one), so a test can tell its exit from any other. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	printf("smoke: hello from ring 3, argc %d, argv[0] %s\n", argc, argv[0]);

	char *heap = malloc(100000);
	if (!heap)
		return 100;
	memset(heap, 0x5a, 100000);
	long sum = 0;
	for (int i = 0; i < 100000; i++)
		sum += heap[i];
	free(heap);
	printf("smoke: heap ok (%ld)\n", sum);

	size_t len = 4 << 20;
	unsigned char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 101;
	for (size_t i = 0; i < len; i += 4096)
		m[i] = (unsigned char)(i >> 12);
	unsigned long check = 0;
	for (size_t i = 0; i < len; i += 4096)
		check += m[i];
	if (munmap(m, len) != 0)
		return 102;
	printf("smoke: mmap ok (%lu)\n", check);

	/* mremap: a three-page mapping whose first two pages grow to four; the third page blocks the
	 * growth in place, so the two pages must move with their contents. */
	char *a = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return 107;
	a[0] = 'x';
	a[4096] = 'y';
	char *q = mremap(a, 2 * 4096, 4 * 4096, MREMAP_MAYMOVE);
	if (q == MAP_FAILED || q == a || q[0] != 'x' || q[4096] != 'y' || q[3 * 4096] != 0)
		return 108;
	if (mprotect(q, 4096, PROT_READ) != 0 || munmap(q, 4 * 4096) != 0 || munmap(a + 2 * 4096, 4096) != 0)
		return 109;
	printf("smoke: mremap ok\n");

	errno = 0;
	if (write(-1, "x", 1) != -1 || errno != EBADF)
		return 103;
	if (write(1, (void *)16, 1) != -1 || errno != EFAULT)
		return 104;
	printf("smoke: errno ok\n");

	unsigned char *rnd = (unsigned char *)getauxval(AT_RANDOM);
	if (!rnd || getauxval(AT_PAGESZ) != 4096)
		return 105;
	struct utsname u;
	if (uname(&u) != 0 || strcmp(u.machine, "x86_64") != 0)
		return 106;
	printf("smoke: auxv and uname ok\n");

	int status = argc > 1 ? atoi(argv[1]) : 0;
	printf("smoke: exiting with %d\n", status);
	return status;
}
