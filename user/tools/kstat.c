/*
 * kstat [FILE]: the kernel's per-CPU scheduler and TLB counters as a table, one row per counter
 * and one column per CPU, with a total column.
 *
 * FILE (default /proc/kstat) holds lines "cpuN KEY VALUE". Keys keep the order of their first
 * appearance; a CPU without a line for a key shows "-". Lines of another shape are skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 64
#define MAX_CPUS 512
#define KEY_LEN 40

static char keys[MAX_KEYS][KEY_LEN];
static unsigned long long value[MAX_KEYS][MAX_CPUS];
static unsigned char present[MAX_KEYS][MAX_CPUS];

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/proc/kstat";
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return 1;
	}
	int nkeys = 0, ncpus = 0;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		unsigned cpu;
		char key[KEY_LEN];
		unsigned long long v;
		if (sscanf(line, "cpu%u %39s %llu", &cpu, key, &v) != 3 || cpu >= MAX_CPUS)
			continue;
		int k;
		for (k = 0; k < nkeys && strcmp(keys[k], key); k++)
			;
		if (k == nkeys) {
			if (nkeys == MAX_KEYS)
				continue;
			strcpy(keys[nkeys++], key);
		}
		value[k][cpu] = v;
		present[k][cpu] = 1;
		if ((int)cpu + 1 > ncpus)
			ncpus = cpu + 1;
	}
	fclose(f);
	if (nkeys == 0) {
		fprintf(stderr, "%s: no \"cpuN key value\" lines\n", path);
		return 1;
	}
	printf("%-22s", "");
	for (int c = 0; c < ncpus; c++) {
		char name[16];
		snprintf(name, sizeof(name), "cpu%d", c);
		printf(" %10s", name);
	}
	printf(" %12s\n", "total");
	for (int k = 0; k < nkeys; k++) {
		unsigned long long total = 0;
		printf("%-22s", keys[k]);
		for (int c = 0; c < ncpus; c++) {
			if (present[k][c]) {
				printf(" %10llu", value[k][c]);
				total += value[k][c];
			} else {
				printf(" %10s", "-");
			}
		}
		printf(" %12llu\n", total);
	}
	return 0;
}
