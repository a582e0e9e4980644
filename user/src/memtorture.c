/*
 * memtorture: user memory changed under readers on other CPUs.
 *
 * The main thread (pinned to the first CPU of the mask) owns a region of PAGES pages; every word
 * of it holds the current generation g. Readers (one per other CPU, or one beside the writer
 * when there is a single CPU) read random words forever. Each change g -> g+1 is one of:
 *
 *   remap   mmap(MAP_FIXED) fresh zero pages over the region, then fill them with g+1;
 *   move    fill a spare mapping with g+1, then mremap(MAYMOVE|FIXED) it over the region
 *           (the old pages are unmapped by that same call);
 *   protect mprotect(PROT_READ), mprotect(PROT_READ|PROT_WRITE), then rewrite with g+1;
 *
 * and then munmap of a page the readers read in the previous round and acknowledged. The writer
 * publishes, after the call that changed the mapping returned, `floor` = the generation below
 * which no read may ever be seen again, and whether zero (a fresh page not yet filled) may be
 * seen: from before a remap starts until its pages are filled.
 * A reader loads floor, reads a word, loads floor again: a non-zero value below the first floor
 * is a read through a stale translation; a zero is only allowed while the second says so. Every
 * eighth batch of 256 reads a reader sleeps 0.2 ms, so its CPU also goes idle between changes.
 * Signals are not delivered yet, so no reader ever touches a page that might be unmapped.
 *
 * The shootdown IPIs the kernel sent during the changes are printed as information, read through
 * this kernel's own call SYS_KERNEL_TLB_COUNTERS (abi::SYS_KERNEL_TLB_COUNTERS); Linux answers it
 * ENOSYS, and then the line says the count is not available.
 *
 * argv[1]: the number of changes (default 10^4).
 */
#include <pthread.h>
#include <sys/mman.h>

#include "ut.h"

/* abi::SYS_KERNEL_TLB_COUNTERS: (changes, shootdown IPIs, changes without an IPI) since boot. */
#define SYS_KERNEL_TLB_COUNTERS 0x4b540001L

#define PAGE 4096UL
#define PAGES 4
#define WORDS (PAGES * PAGE / sizeof(uint64_t))

static uint64_t *region;
/* floor << 1 | zero_allowed */
static volatile uint64_t published;
static volatile int stop;
/* A page that readers touch once per round, then ack; the writer unmaps it afterwards. */
static uint64_t *volatile probe;
static volatile long probe_round;

struct reader {
	int cpu;
	long reads;
	long stale;
	long zero_bad;
	long batches;
	uint64_t stale_value, stale_floor;
	volatile long acked_round;
	pthread_t th;
} __attribute__((aligned(64)));

static void *read_loop(void *arg)
{
	struct reader *r = arg;
	ut_pin(r->cpu);
	uint64_t x = (uint64_t)r->cpu * 0x9e3779b97f4a7c15ULL + 1;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < 256; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			uint64_t before = __atomic_load_n(&published, __ATOMIC_ACQUIRE);
			uint64_t v = __atomic_load_n(&region[x % WORDS], __ATOMIC_ACQUIRE);
			uint64_t after = __atomic_load_n(&published, __ATOMIC_ACQUIRE);
			r->reads++;
			if (v == 0) {
				if (!(after & 1) && after == before)
					r->zero_bad++;
			} else if (v < (before >> 1)) {
				r->stale++;
				r->stale_value = v;
				r->stale_floor = before >> 1;
			}
		}
		/* Now and then a short sleep: the CPU goes idle with the space still loaded (lazily,
		 * where the kernel spares idle CPUs the shootdown IPI), and the next reads, after
		 * the wake-up, must not see an old generation either. It also leaves the host cores
		 * to the writer where more CPUs are emulated than the host has. */
		if (++r->batches % 8 == 0) {
			struct timespec nap = { 0, 200000 };
			nanosleep(&nap, NULL);
		}
		long round = __atomic_load_n(&probe_round, __ATOMIC_ACQUIRE);
		if (round != r->acked_round) {
			uint64_t *p = probe;
			CHECK(p[0] == (uint64_t)round);
			__atomic_store_n(&r->acked_round, round, __ATOMIC_RELEASE);
		}
	}
	return NULL;
}

static void fill(uint64_t *p, uint64_t g)
{
	for (size_t i = 0; i < WORDS; i++)
		__atomic_store_n(&p[i], g, __ATOMIC_RELAXED);
}

static void publish(uint64_t floor, int zero_allowed)
{
	__atomic_store_n(&published, floor << 1 | (uint64_t)zero_allowed, __ATOMIC_RELEASE);
}

static uint64_t *map_pages(size_t n)
{
	void *p = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

int main(int argc, char **argv)
{
	ut_start("memtorture");
	long changes = ut_arg(argc, argv, 1, 10000);
	int cpus[1024];
	int ncpu = ut_cpus(cpus, 1024);
	int nreaders = ncpu > 1 ? ncpu - 1 : 1;
	ut_pin(cpus[0]);

	region = map_pages(PAGES);
	fill(region, 1);
	publish(1, 0);
	struct reader *readers = aligned_alloc(64, sizeof(*readers) * (size_t)nreaders);
	CHECK(readers != NULL);
	memset(readers, 0, sizeof(*readers) * (size_t)nreaders);
	for (int i = 0; i < nreaders; i++) {
		readers[i].cpu = ncpu > 1 ? cpus[i + 1] : cpus[0];
		CHECK(pthread_create(&readers[i].th, NULL, read_loop, &readers[i]) == 0);
	}

	uint64_t tlb0[3], tlb1[3];
	int counted = rsys1(SYS_KERNEL_TLB_COUNTERS, tlb0) == 0;
	long by_kind[3] = { 0, 0, 0 };
	for (long c = 0; c < changes; c++) {
		uint64_t g = (uint64_t)c + 2;
		int kind = (int)(c % 3);
		by_kind[kind]++;
		if (kind == 0) {
			/* Zeroes may show from the moment the call starts. */
			publish(g - 1, 1);
			void *p = mmap(region, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
				       -1, 0);
			CHECK(p == region);
			publish(g, 1);
			fill(region, g);
			publish(g, 0);
		} else if (kind == 1) {
			uint64_t *spare = map_pages(PAGES);
			fill(spare, g);
			void *p = mremap(spare, PAGES * PAGE, PAGES * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, region);
			CHECK(p == region);
			publish(g, 0);
		} else {
			CHECK(mprotect(region, PAGES * PAGE, PROT_READ) == 0);
			CHECK(mprotect(region, PAGES * PAGE, PROT_READ | PROT_WRITE) == 0);
			fill(region, g);
			publish(g, 0);
		}

		/* Every 16 changes: a page all readers read, then its munmap once they all acked. */
		if (c % 16 == 0) {
			uint64_t *p = map_pages(1);
			long round = c / 16 + 1;
			p[0] = (uint64_t)round;
			probe = p;
			__atomic_store_n(&probe_round, round, __ATOMIC_RELEASE);
			for (int i = 0; i < nreaders; i++)
				while (__atomic_load_n(&readers[i].acked_round, __ATOMIC_ACQUIRE) != round)
					sched_yield();
			CHECK(munmap(p, PAGE) == 0);
		}
	}
	counted = counted && rsys1(SYS_KERNEL_TLB_COUNTERS, tlb1) == 0;
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	if (counted) {
		uint64_t kchanges = tlb1[0] - tlb0[0], ipis = tlb1[1] - tlb0[1], quiet = tlb1[2] - tlb0[2];
		info("shootdowns: %llu IPIs for %ld changes (%.2f per change); the kernel counted %llu mapping changes "
		     "needing TLB work (%.2f IPIs each), %llu of them without an IPI\n",
		     (unsigned long long)ipis, changes, (double)ipis / (double)changes, (unsigned long long)kchanges,
		     kchanges ? (double)ipis / (double)kchanges : 0.0, (unsigned long long)quiet);
	} else {
		info("shootdowns: IPIs not counted by this kernel\n");
	}
	long reads = 0, stale = 0, zero_bad = 0;
	for (int i = 0; i < nreaders; i++) {
		CHECK(pthread_join(readers[i].th, NULL) == 0);
		reads += readers[i].reads;
		stale += readers[i].stale;
		zero_bad += readers[i].zero_bad;
		if (readers[i].stale)
			info("reader on CPU %d: read generation %llu after the floor was %llu\n", readers[i].cpu,
			     (unsigned long long)readers[i].stale_value, (unsigned long long)readers[i].stale_floor);
	}
	info("%d readers, %ld reads; changes: %ld remap, %ld move, %ld protect; %ld probe pages unmapped\n", nreaders,
	     reads, by_kind[0], by_kind[1], by_kind[2], (changes + 15) / 16);
	if (stale || zero_bad)
		ut_fail("%ld reads of an old generation, %ld zero reads after a page was filled", stale, zero_bad);
	say("memtorture: %ld changes by mmap, mremap, mprotect and munmap; no read of an old generation\n", changes);
	ut_ok();
}
