/* staticpie: a static position-independent executable (ET_DYN, no PT_INTERP), linked with musl's
 * rcrt1.o, which relocates itself at start (_dl_relocate_static_pie). The loader places it at a
 * load bias of its choice; the program then reads pointers that only relocation made right:
 * pointers in data to data, to strings and to functions, a thread-local variable in the main
 * thread and in a second one, and its own program headers through AT_PHDR. Where it was loaded
 * is information only.
 */
#include <elf.h>
#include <pthread.h>
#include <sys/auxv.h>

#include "ut.h"

static int answer = 42;
static int *const to_answer = &answer;
static const char *const words[] = { "relocated", "pointers", "in", "data" };
static int twice(int x) { return 2 * x; }
static int thrice(int x) { return 3 * x; }
static int (*const table[])(int) = { twice, thrice };
static __thread int per_thread = 7;

static void *other_thread(void *arg)
{
	/* A fresh copy of the TLS image, not the main thread's changed value. */
	CHECK(per_thread == 7);
	per_thread = 9;
	return arg;
}

int main(void)
{
	ut_start("staticpie");
	const Elf64_Phdr *ph = (const Elf64_Phdr *)getauxval(AT_PHDR);
	unsigned long phnum = getauxval(AT_PHNUM);
	CHECK(ph != NULL && phnum > 0);
	int dynamic = 0, interp = 0;
	for (unsigned long i = 0; i < phnum; i++) {
		dynamic += ph[i].p_type == PT_DYNAMIC;
		interp += ph[i].p_type == PT_INTERP;
	}
	CHECK(dynamic == 1 && interp == 0);
	/* The first PT_LOAD starts at the load bias for a PIE linked at 0. */
	info("loaded with main at %p, AT_ENTRY %#lx\n", (void *)main, getauxval(AT_ENTRY));
	CHECK((unsigned long)(void *)main > 0x10000);
	say("static-PIE: PT_DYNAMIC and no PT_INTERP, loaded away from 0\n");

	CHECK(*to_answer == 42 && to_answer == &answer);
	CHECK(strcmp(words[0], "relocated") == 0 && strcmp(words[3], "data") == 0);
	CHECK(table[0](5) == 10 && table[1](5) == 15);
	say("relocations: data pointers to data, strings and functions are right\n");

	CHECK(per_thread == 7);
	per_thread = 8;
	pthread_t th;
	CHECK(pthread_create(&th, NULL, other_thread, NULL) == 0);
	CHECK(pthread_join(th, NULL) == 0);
	CHECK(per_thread == 8);
	say("thread-local storage: each thread starts from the image, keeps its own value\n");
	ut_ok();
}
