/*
 * files: the RAM filesystem and descriptors through the calls programs use: create, write, read,
 * seek, positioned I/O, O_APPEND, stat/lstat/fstat, rename, link counts, unlink (an open file
 * stays readable), mkdir/rmdir, getdents64, symlink/readlink, dup/dup2/dup3, fcntl, truncate,
 * umask, access, getcwd/chdir/fchdir, the errno of each misuse, /dev/null, /dev/zero,
 * /dev/urandom, and /proc/self/stat. Everything happens in a fresh directory under /tmp.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "ut.h"

static char top[64];

static void write_all(int fd, const char *s)
{
	size_t n = strlen(s);
	CHECK(write(fd, s, n) == (ssize_t)n);
}

static void test_create_read_write(void)
{
	int fd = open("f", O_CREAT | O_EXCL | O_RDWR, 0666);
	CHECK(fd >= 0);
	write_all(fd, "hello world");
	char buf[64] = {0};
	CHECK(lseek(fd, 0, SEEK_CUR) == 11);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	CHECK(read(fd, buf, sizeof(buf)) == 11);
	CHECK(memcmp(buf, "hello world", 11) == 0);
	CHECK(read(fd, buf, sizeof(buf)) == 0);
	CHECK(lseek(fd, -5, SEEK_END) == 6);
	CHECK(read(fd, buf, 5) == 5 && memcmp(buf, "world", 5) == 0);
	CHECK(pwrite(fd, "W", 1, 6) == 1);
	CHECK(pread(fd, buf, 5, 6) == 5 && memcmp(buf, "World", 5) == 0);
	CHECK(lseek(fd, 0, SEEK_CUR) == 11);
	/* A hole reads as zeros. */
	CHECK(lseek(fd, 20, SEEK_SET) == 20);
	write_all(fd, "!");
	CHECK(pread(fd, buf, 10, 11) == 10);
	for (int i = 0; i < 9; i++)
		CHECK(buf[i] == 0);
	struct stat st;
	CHECK(fstat(fd, &st) == 0);
	CHECK(S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0644 && st.st_size == 21 && st.st_nlink == 1);
	CHECK_ERR(lseek(fd, -100, SEEK_CUR), EINVAL);
	CHECK_ERR(lseek(fd, 0, 99), EINVAL);
	CHECK(close(fd) == 0);
	CHECK_ERR(close(fd), EBADF);
	CHECK_ERR(open("f", O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
	CHECK_ERR(open("missing", O_RDONLY), ENOENT);
	CHECK_ERR(open("f/x", O_RDONLY), ENOTDIR);
	CHECK_ERR(open(".", O_WRONLY), EISDIR);
	CHECK_ERR(open("f", O_RDONLY | O_DIRECTORY), ENOTDIR);
	fd = open("f", O_WRONLY);
	CHECK(fd >= 0);
	CHECK_ERR(read(fd, buf, 1), EBADF);
	close(fd);
	fd = open("f", O_RDONLY);
	CHECK_ERR(write(fd, "x", 1), EBADF);
	CHECK_ERR(ftruncate(fd, 0), EINVAL);
	close(fd);
	say("create, write, read, lseek, pread, pwrite, holes, fstat; EINVAL, EBADF, EEXIST, ENOENT, ENOTDIR, EISDIR\n");

	fd = open("f", O_WRONLY | O_APPEND);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	write_all(fd, "+");
	CHECK(lseek(fd, 0, SEEK_CUR) == 22);
	CHECK((fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_WRONLY | O_APPEND));
	CHECK(fcntl(fd, F_SETFL, 0) == 0);
	CHECK((fcntl(fd, F_GETFL) & O_APPEND) == 0);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	write_all(fd, "H");
	close(fd);
	fd = open("f", O_RDWR | O_TRUNC);
	CHECK(fstat(fd, &st) == 0 && st.st_size == 0);
	CHECK(ftruncate(fd, 100) == 0 && fstat(fd, &st) == 0 && st.st_size == 100);
	close(fd);
	CHECK(truncate("f", 3) == 0 && stat("f", &st) == 0 && st.st_size == 3);
	CHECK_ERR(truncate(".", 0), EISDIR);
	CHECK_ERR(truncate("f", -1), EINVAL);
	say("O_APPEND writes at the end, F_GETFL/F_SETFL, O_TRUNC, ftruncate, truncate; EISDIR, EINVAL\n");
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_dirs(void)
{
	CHECK(mkdir("d", 0755) == 0);
	CHECK_ERR(mkdir("d", 0755), EEXIST);
	CHECK_ERR(mkdir("nope/d", 0755), ENOENT);
	CHECK(mkdir("d/e", 0700) == 0);
	int fd = open("d/g", O_CREAT | O_WRONLY, 0600);
	close(fd);
	CHECK(symlink("g", "d/link") == 0);
	CHECK_ERR(rmdir("d"), ENOTEMPTY);
	CHECK_ERR(rmdir("d/g"), ENOTDIR);
	CHECK_ERR(unlink("d/e"), EISDIR);
	CHECK_ERR(rmdir("d/e/."), EINVAL);

	/* getdents64 through readdir, names sorted here (the order is the filesystem's). */
	DIR *dir = opendir("d");
	CHECK(dir != NULL);
	char *names[16];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(dir)) != NULL && n < 16) {
		names[n] = strdup(e->d_name);
		if (strcmp(e->d_name, "e") == 0)
			CHECK(e->d_type == DT_DIR);
		if (strcmp(e->d_name, "g") == 0)
			CHECK(e->d_type == DT_REG);
		if (strcmp(e->d_name, "link") == 0)
			CHECK(e->d_type == DT_LNK);
		n++;
	}
	closedir(dir);
	qsort(names, n, sizeof(names[0]), cmp_names);
	say("getdents64 of d:");
	for (int i = 0; i < n; i++) {
		say(" %s", names[i]);
		free(names[i]);
	}
	say("\n");

	char buf[64] = {0};
	CHECK(readlink("d/link", buf, sizeof(buf)) == 1 && buf[0] == 'g');
	CHECK_ERR(readlink("d/g", buf, sizeof(buf)), EINVAL);
	struct stat st, lst;
	CHECK(stat("d/link", &st) == 0 && S_ISREG(st.st_mode));
	CHECK(lstat("d/link", &lst) == 0 && S_ISLNK(lst.st_mode) && lst.st_size == 1);
	CHECK(stat("d/e", &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
	CHECK(stat("d", &st) == 0 && st.st_nlink == 3);
	say("mkdir, rmdir, symlink, readlink, stat, lstat, directory link counts; EEXIST, ENOENT, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL\n");

	/* rename, link and unlink. */
	CHECK(rename("d/g", "d/e/moved") == 0);
	CHECK_ERR(stat("d/g", &st), ENOENT);
	CHECK_ERR(stat("d/link", &st), ENOENT);
	CHECK(link("d/e/moved", "hard") == 0);
	CHECK(stat("hard", &st) == 0 && st.st_nlink == 2);
	CHECK_ERR(rename("d", "d/e/inside"), EINVAL);
	CHECK_ERR(rename("d/e", "f"), ENOTDIR);
	CHECK_ERR(rename("f", "d"), EISDIR);
	fd = open("hard", O_RDWR);
	write_all(fd, "still here");
	CHECK(unlink("hard") == 0 && unlink("d/e/moved") == 0);
	CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0);
	CHECK(pread(fd, buf, 10, 0) == 10 && memcmp(buf, "still here", 10) == 0);
	close(fd);
	CHECK(unlink("d/link") == 0);
	CHECK(rmdir("d/e") == 0 && rmdir("d") == 0);
	CHECK_ERR(rmdir("d"), ENOENT);
	say("rename, link, unlink (an open file stays readable with 0 links), rmdir\n");

	/* The working directory. */
	CHECK(mkdir("w", 0755) == 0);
	CHECK(chdir("w") == 0);
	char cwd[256];
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	CHECK(strlen(cwd) > 2 && strcmp(cwd + strlen(cwd) - 2, "/w") == 0);
	CHECK(getcwd(cwd, 2) == NULL && errno == ERANGE);
	fd = open("..", O_RDONLY | O_DIRECTORY);
	CHECK(fd >= 0 && fchdir(fd) == 0);
	close(fd);
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL && strcmp(cwd, top) == 0);
	int dfd = open("w", O_RDONLY | O_DIRECTORY);
	CHECK(mkdirat(dfd, "sub", 0755) == 0);
	fd = openat(dfd, "sub/x", O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0);
	close(fd);
	CHECK(fstatat(dfd, "sub/x", &st, 0) == 0 && S_ISREG(st.st_mode));
	CHECK(renameat(dfd, "sub/x", dfd, "y") == 0);
	/* readlinkat and fstatat without following, relative to the directory and to the cwd. */
	CHECK(symlinkat("sub/../y", dfd, "l") == 0);
	memset(buf, 0, sizeof(buf));
	CHECK(readlinkat(dfd, "l", buf, sizeof(buf)) == 8 && strcmp(buf, "sub/../y") == 0);
	CHECK(readlinkat(AT_FDCWD, "w/l", buf, 3) == 3 && memcmp(buf, "sub", 3) == 0);
	CHECK_ERR(readlinkat(dfd, "y", buf, sizeof(buf)), EINVAL);
	CHECK_ERR(readlinkat(dfd, "none", buf, sizeof(buf)), ENOENT);
	CHECK_ERR(readlinkat(999, "l", buf, sizeof(buf)), EBADF);
	CHECK_RAW(rsys4(SYS_readlinkat, dfd, "l", 8, sizeof(buf)), EFAULT);
	CHECK(fstatat(dfd, "l", &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode) && lst.st_size == 8);
	CHECK(fstatat(dfd, "l", &st, 0) == 0 && S_ISREG(st.st_mode));
	CHECK(unlinkat(dfd, "l", 0) == 0);
	CHECK(unlinkat(dfd, "y", 0) == 0);
	CHECK(unlinkat(dfd, "sub", AT_REMOVEDIR) == 0);
	CHECK_ERR(chdir("f"), ENOTDIR);
	CHECK_ERR(fchdir(0 + 999), EBADF);
	close(dfd);
	CHECK(rmdir("w") == 0);
	say("getcwd, chdir, fchdir, mkdirat, openat, fstatat, renameat, symlinkat, readlinkat, unlinkat; ERANGE, ENOTDIR, EBADF, EINVAL, EFAULT\n");
}

static void test_descriptors(void)
{
	int fd = open("f", O_RDWR);
	CHECK(fd >= 0);
	int d = dup(fd);
	CHECK(d == fd + 1);
	CHECK(lseek(fd, 2, SEEK_SET) == 2 && lseek(d, 0, SEEK_CUR) == 2);
	CHECK(dup2(fd, 20) == 20 && lseek(20, 0, SEEK_CUR) == 2);
	CHECK(dup2(fd, fd) == fd);
	CHECK(fcntl(20, F_GETFD) == 0);
	CHECK(dup3(fd, 21, O_CLOEXEC) == 21 && fcntl(21, F_GETFD) == FD_CLOEXEC);
	CHECK_ERR(dup3(fd, fd, 0), EINVAL);
	CHECK(fcntl(fd, F_DUPFD, 30) == 30);
	CHECK(fcntl(fd, F_DUPFD_CLOEXEC, 30) == 31 && fcntl(31, F_GETFD) == FD_CLOEXEC);
	CHECK(fcntl(31, F_SETFD, 0) == 0 && fcntl(31, F_GETFD) == 0);
	CHECK_ERR(fcntl(fd, F_DUPFD, -1), EINVAL);
	CHECK_ERR(dup(999), EBADF);
	CHECK_ERR(dup2(999, 5), EBADF);
	CHECK_ERR(fcntl(999, F_GETFD), EBADF);
	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0 && (fcntl(d, F_GETFL) & O_NONBLOCK));
	close(20), close(21), close(30), close(31), close(d);
	/* The lowest free number is taken. */
	CHECK(close(fd) == 0);
	CHECK(open("f", O_RDONLY) == fd);
	close(fd);
	say("dup, dup2, dup3, F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD/F_SETFD, shared offsets and flags; EINVAL, EBADF\n");

	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= 64);
	struct rlimit small = {8, rl.rlim_max};
	CHECK(setrlimit(RLIMIT_NOFILE, &small) == 0);
	int fds[8], n = 0, r;
	while ((r = open("f", O_RDONLY)) >= 0 && n < 8)
		fds[n++] = r;
	CHECK(r == -1 && errno == EMFILE);
	CHECK_ERR(dup2(0, 8), EBADF);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	struct rlimit bad = {10, 5};
	CHECK_ERR(setrlimit(RLIMIT_NOFILE, &bad), EINVAL);
	CHECK_RAW(rsys4(SYS_prlimit64, 0, 999, 0, &rl), EINVAL);
	say("RLIMIT_NOFILE bounds descriptors: EMFILE, dup2 EBADF above it; EINVAL\n");
}

static void test_modes(void)
{
	mode_t old = umask(077);
	CHECK(umask(old) == 077);
	umask(027);
	int fd = open("m", O_CREAT | O_WRONLY, 0777);
	close(fd);
	struct stat st;
	CHECK(stat("m", &st) == 0 && (st.st_mode & 0777) == 0750);
	umask(old);
	CHECK(access("m", F_OK) == 0 && access("m", R_OK | W_OK | X_OK) == 0);
	CHECK(chmod("m", 0644) == 0);
	CHECK_ERR(access("m", X_OK), EACCES);
	CHECK_ERR(access("none", F_OK), ENOENT);
	CHECK(faccessat(AT_FDCWD, "m", R_OK, 0) == 0);
	fd = open("m", O_RDWR);
	CHECK(fchmod(fd, 0600) == 0 && fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(fsync(fd) == 0 && fdatasync(fd) == 0);
	CHECK(fchown(fd, 0, 0) == 0 || errno == EPERM);
	close(fd);
	CHECK_ERR(fsync(fd), EBADF);
	CHECK(utimensat(AT_FDCWD, "m", NULL, 0) == 0);
	CHECK_ERR(utimensat(AT_FDCWD, "none", NULL, 0), ENOENT);
	CHECK(unlink("m") == 0);
	say("umask, chmod, fchmod, access, faccessat, fsync, utimensat; EACCES (X_OK without x bits), ENOENT, EBADF\n");
}

static void test_devices(void)
{
	char buf[256];
	int fd = open("/dev/null", O_RDWR);
	CHECK(fd >= 0);
	CHECK(read(fd, buf, sizeof(buf)) == 0);
	CHECK(write(fd, buf, sizeof(buf)) == sizeof(buf));
	struct stat st;
	CHECK(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
	close(fd);
	fd = open("/dev/zero", O_RDONLY);
	memset(buf, 0x55, sizeof(buf));
	CHECK(read(fd, buf, sizeof(buf)) == sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK(buf[i] == 0);
	close(fd);
	unsigned char a[64] = {0}, b[64] = {0};
	fd = open("/dev/urandom", O_RDONLY);
	CHECK(read(fd, a, sizeof(a)) == sizeof(a) && read(fd, b, sizeof(b)) == sizeof(b));
	CHECK(memcmp(a, b, sizeof(a)) != 0);
	close(fd);
	CHECK(stat("/dev/console", &st) == 0 && S_ISCHR(st.st_mode));
	/* Files and these devices are always ready. */
	struct pollfd pf[2] = {{open("/dev/null", O_RDWR), POLLIN | POLLOUT, 0}, {open("f", O_RDWR), POLLIN | POLLOUT, 0}};
	CHECK(poll(pf, 2, -1) == 2 && pf[0].revents == (POLLIN | POLLOUT) && pf[1].revents == (POLLIN | POLLOUT));
	close(pf[0].fd), close(pf[1].fd);
	/* A redirection's open of a device: O_CREAT and O_TRUNC leave it a device. */
	fd = open("/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && write(fd, "x", 1) == 1 && fstat(fd, &st) == 0 && S_ISCHR(st.st_mode));
	close(fd);
	say("/dev/null, /dev/zero, /dev/urandom, /dev/console, poll on files and devices\n");
}

/* The start of a /proc file (up to size - 1 bytes, NUL-terminated); the bytes read. */
static ssize_t proc_read(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n;
}

/* The state letter of /proc/PID/stat. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (proc_read(path, buf, sizeof(buf)) <= 0)
		return '?';
	char *close_paren = strrchr(buf, ')');
	return close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}

/* A stopped process is T in /proc, and no longer T once continued. */
static void test_proc_stopped(void)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		for (;;)
			pause();
	}
	int st;
	CHECK(kill(pid, SIGSTOP) == 0);
	CHECK(waitpid(pid, &st, WUNTRACED) == pid && WIFSTOPPED(st));
	CHECK(proc_state(pid) == 'T');
	CHECK(kill(pid, SIGCONT) == 0);
	CHECK(waitpid(pid, &st, WCONTINUED) == pid && WIFCONTINUED(st));
	char s = proc_state(pid);
	CHECK(s == 'S' || s == 'R');
	/* Back in pause(), waiting for a signal: S (within two seconds of being continued). */
	for (int i = 0; i < 2000 && s != 'S'; i++) {
		usleep(1000);
		s = proc_state(pid);
	}
	CHECK(s == 'S');
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	/* A child that never waits is R, running or runnable, whenever it is looked at. */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		for (;;)
			__asm__ volatile("" ::: "memory");
	}
	for (int i = 0; i < 5; i++)
		CHECK(proc_state(pid) == 'R');
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	say("/proc/PID/stat: T while stopped, S once waiting again, R while it spins\n");
}

static void test_proc(void)
{
	char buf[1024] = {0};
	int fd = open("/proc/self/stat", O_RDONLY);
	CHECK(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	CHECK(n > 0);
	int pid = 0;
	char comm[32] = {0}, state = 0;
	CHECK(sscanf(buf, "%d (%31[^)]) %c", &pid, comm, &state) == 3);
	CHECK(pid == getpid());
	CHECK(strcmp(comm, "files") == 0);
	CHECK(state == 'R');
	char link[64] = {0};
	CHECK(readlink("/proc/self", link, sizeof(link)) > 0 && atoi(link) == getpid());
	struct stat st;
	CHECK(stat("/proc/self/status", &st) == 0 && S_ISREG(st.st_mode));
	/* exe: the absolute path of this program; cmdline: its argv, NUL-terminated strings. */
	char exe[4096] = {0};
	CHECK(readlink("/proc/self/exe", exe, sizeof(exe) - 1) > 0 && exe[0] == '/');
	CHECK(strcmp(strrchr(exe, '/'), "/files") == 0);
	CHECK(proc_read("/proc/self/cmdline", buf, sizeof(buf)) == (ssize_t)strlen(buf) + 1);
	CHECK(strcmp(strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf, "files") == 0);
	CHECK(proc_read("/proc/self/status", buf, sizeof(buf)) > 0 && strncmp(buf, "Name:\tfiles\n", 12) == 0);
	/* The system files busybox's ps, top, free and uptime read, in Linux's formats. */
	double l1, l5, l15;
	int running, total, last;
	CHECK(proc_read("/proc/loadavg", buf, sizeof(buf)) > 0);
	CHECK(sscanf(buf, "%lf %lf %lf %d/%d %d", &l1, &l5, &l15, &running, &total, &last) == 6 && running >= 1 && total >= running);
	CHECK(proc_read("/proc/meminfo", buf, sizeof(buf)) > 0 && strncmp(buf, "MemTotal:", 9) == 0);
	CHECK(strstr(buf, "\nMemFree:") && strstr(buf, "\nMemAvailable:"));
	CHECK(proc_read("/proc/stat", buf, sizeof(buf)) > 0 && strncmp(buf, "cpu ", 4) == 0 && strstr(buf, "\ncpu0 "));
	CHECK(proc_read("/proc/cpuinfo", buf, sizeof(buf)) > 0 && strncmp(buf, "processor\t: 0\n", 14) == 0);
	fd = open("/proc/uptime", O_RDONLY);
	CHECK(fd >= 0 && read(fd, buf, sizeof(buf)) > 0);
	close(fd);
	double up = 0;
	CHECK(sscanf(buf, "%lf", &up) == 1 && up > 0);
	struct sysinfo si;
	CHECK(sysinfo(&si) == 0 && si.totalram > 0 && si.mem_unit >= 1 && si.procs > 0);
	struct statfs sf;
	CHECK(statfs("/", &sf) == 0 && sf.f_bsize > 0 && sf.f_blocks > 0);
	CHECK(statfs("/proc/self", &sf) == 0 && sf.f_type == 0x9fa0);
	CHECK_ERR(statfs("/nonexistent", &sf), ENOENT);
	CHECK_ERR(fstatfs(999, &sf), EBADF);
	say("/proc/self/stat names this process (pid, comm, state R), /proc/self, exe, cmdline, status; /proc/uptime, loadavg, meminfo, stat, cpuinfo; sysinfo; statfs\n");
}

/* uptime and date ask these directly (musl goes through clock_gettime; glibc may not). */
static void test_time_calls(void)
{
	struct timeval tv;
	long t = rsys1(SYS_time, 0);
	CHECK(rsys2(SYS_gettimeofday, &tv, 0) == 0);
	CHECK(t > 1000000000 && tv.tv_sec >= t && tv.tv_sec - t <= 2 && tv.tv_usec >= 0 && tv.tv_usec < 1000000);
	long stored = 0;
	CHECK(rsys1(SYS_time, &stored) >= t && stored >= t);
	CHECK_RAW(rsys1(SYS_time, 8), EFAULT);
	say("time and gettimeofday agree; EFAULT\n");
}

int main(void)
{
	ut_start("files");
	snprintf(top, sizeof(top), "/tmp/files.%d", (int)getpid());
	CHECK(mkdir(top, 0755) == 0);
	CHECK(chdir(top) == 0);
	test_create_read_write();
	test_dirs();
	test_descriptors();
	test_modes();
	test_devices();
	test_proc();
	test_proc_stopped();
	test_time_calls();
	CHECK(unlink("f") == 0);
	CHECK(chdir("/") == 0 && rmdir(top) == 0);
	ut_ok();
}
