/*
 * init: PID 1 of the Linux guest's initramfs. Mounts devtmpfs for a console, prints the kernel
 * release and the interrupt entry points from /proc/kallsyms (Debian ships no System.map: the
 * counter needs them to tell an interrupt taken), runs every benchmark program of /bench.list (one line each: the program and its
 * arguments) with fork + execve + waitpid, says how each ended, and powers the machine off.
 */
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "ut.h"

static void console(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int fd = open("/dev/console", O_RDWR);
	if (fd < 0)
		fd = open("/dev/ttyS0", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

/* The IDT's targets: "guest symbol ADDRESS NAME" for asm_exc_*, asm_sysvec_* and the stub arrays. */
static void entry_symbols(void)
{
	mkdir("/proc", 0555);
	if (mount("proc", "/proc", "proc", 0, NULL) != 0) {
		printf("guest no /proc: %s\n", strerror(errno));
		return;
	}
	FILE *f = fopen("/proc/kallsyms", "r");
	if (!f) {
		printf("guest no /proc/kallsyms: %s\n", strerror(errno));
		return;
	}
	char line[256], addr[32], type[8], name[128];
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%31s %7s %127s", addr, type, name) != 3)
			continue;
		if (strncmp(name, "asm_exc_", 8) == 0 || strncmp(name, "asm_sysvec_", 11) == 0 ||
		    strcmp(name, "irq_entries_start") == 0 || strcmp(name, "spurious_entries_start") == 0 ||
		    strcmp(name, "asm_common_interrupt") == 0 || strcmp(name, "asm_spurious_interrupt") == 0)
			printf("guest symbol %s %s\n", addr, name);
	}
	fclose(f);
}

static void run(char *line)
{
	char *argv[16];
	int argc = 0;
	for (char *word = strtok(line, " \t\n"); word && argc < 15; word = strtok(NULL, " \t\n"))
		argv[argc++] = word;
	argv[argc] = NULL;
	if (argc == 0 || argv[0][0] == '#')
		return;
	printf("guest run %s\n", argv[0]);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		char *envp[] = { "PATH=/bin", NULL };
		execve(argv[0], argv, envp);
		printf("guest execve %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		printf("guest ended %s fork/wait failed: %s\n", argv[0], strerror(errno));
	else if (WIFEXITED(status))
		printf("guest ended %s exit %d\n", argv[0], WEXITSTATUS(status));
	else
		printf("guest ended %s signal %d\n", argv[0], WTERMSIG(status));
	fflush(stdout);
}

int main(void)
{
	console();
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct utsname u;
	if (uname(&u) == 0)
		printf("guest kernel %s %s %s\n", u.sysname, u.release, u.version);
	entry_symbols();
	FILE *list = fopen("/bench.list", "r");
	if (!list) {
		printf("guest no /bench.list: %s\n", strerror(errno));
	} else {
		char line[512];
		while (fgets(line, sizeof(line), list))
			run(line);
		fclose(list);
	}
	printf("guest done\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
