/*
 * kstat [FILE]: the kernel's per-CPU scheduler and TLB counters as a table, one row per counter
 * and one column per CPU, with a total column.
 *
 * FILE (default /proc/kcounters) is the kernel's table: a header "cpu KEY KEY ...", then one line
 * "cpuN VALUE VALUE ..." per CPU (a "total" line and lines of another shape are skipped). The
 * table is printed turned: a row per counter, a column per CPU, and the totals.
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
	const char *path = argc > 1 ? argv[1] : "/proc/kcounters";
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return 1;
	}
	int nkeys = 0, ncpus = 0;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok = strtok_r(line, " \t\n", &save);
		if (!tok)
			continue;
		if (!strcmp(tok, "cpu")) {
			/* The header names the columns. */
			nkeys = 0;
			while ((tok = strtok_r(NULL, " \t\n", &save)) && nkeys < MAX_KEYS)
				snprintf(keys[nkeys++], KEY_LEN, "%s", tok);
			continue;
		}
		unsigned cpu;
		if (sscanf(tok, "cpu%u", &cpu) != 1 || cpu >= MAX_CPUS)
			continue;
		for (int k = 0; k < nkeys && (tok = strtok_r(NULL, " \t\n", &save)); k++) {
			value[k][cpu] = strtoull(tok, NULL, 10);
			present[k][cpu] = 1;
		}
		if ((int)cpu + 1 > ncpus)
			ncpus = cpu + 1;
	}
	fclose(f);
	if (nkeys == 0) {
		fprintf(stderr, "%s: no \"cpu KEY...\" header\n", path);
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
