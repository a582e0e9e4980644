/*
 * pipes: pipe semantics in one process with threads: bytes in order, FIONREAD, fstat, ESPIPE;
 * non-blocking EAGAIN on both ends; EOF after the last writer closes; EPIPE (SIGPIPE ignored)
 * after the last reader closes; a blocked reader and a blocked writer woken by the other side;
 * PIPE_BUF writes from several writer threads on different CPUs arriving whole, every byte
 * counted; poll, ppoll, select and pselect on pipes with and without timeouts.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>

#include "ut.h"

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static void test_basics(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	CHECK(write(p[1], "abcdef", 6) == 6);
	int avail = -1;
	CHECK(ioctl(p[0], FIONREAD, &avail) == 0 && avail == 6);
	char buf[16];
	CHECK(read(p[0], buf, 4) == 4 && memcmp(buf, "abcd", 4) == 0);
	CHECK(read(p[0], buf, 16) == 2 && memcmp(buf, "ef", 2) == 0);
	struct stat st;
	CHECK(fstat(p[0], &st) == 0 && S_ISFIFO(st.st_mode));
	CHECK_ERR(lseek(p[0], 0, SEEK_SET), ESPIPE);
	CHECK_ERR(write(p[0], "x", 1), EBADF);
	CHECK_ERR(read(p[1], buf, 1), EBADF);
	CHECK((fcntl(p[0], F_GETFL) & O_ACCMODE) == O_RDONLY && (fcntl(p[1], F_GETFL) & O_ACCMODE) == O_WRONLY);
	/* A bad buffer fails the read and leaves the bytes in the pipe. */
	CHECK(write(p[1], "q", 1) == 1);
	CHECK_RAW(rsys3(SYS_read, p[0], 0, 1), EFAULT);
	CHECK(read(p[0], buf, 16) == 1 && buf[0] == 'q');
	close(p[1]);
	CHECK(read(p[0], buf, 16) == 0);
	close(p[0]);
	CHECK(pipe2(p, O_CLOEXEC) == 0 && fcntl(p[0], F_GETFD) == FD_CLOEXEC && fcntl(p[1], F_GETFD) == FD_CLOEXEC);
	close(p[0]), close(p[1]);
	CHECK_ERR(pipe2(p, O_RDWR), EINVAL);
	say("bytes in order, FIONREAD, S_ISFIFO, ESPIPE, EBADF on the wrong end, EFAULT keeps the bytes, EOF, pipe2 flags; EINVAL\n");
}

static void test_nonblocking(void)
{
	int p[2];
	CHECK(pipe2(p, O_NONBLOCK) == 0);
	char buf[4096];
	CHECK_ERR(read(p[0], buf, 1), EAGAIN);
	memset(buf, 'x', sizeof(buf));
	long total = 0;
	ssize_t n;
	while ((n = write(p[1], buf, sizeof(buf))) > 0)
		total += n;
	CHECK(n == -1 && errno == EAGAIN);
	CHECK(total >= 4096 && total % 4096 == 0);
	info("a non-blocking pipe took %ld bytes\n", total);
	struct pollfd pf = {p[1], POLLOUT, 0};
	CHECK(poll(&pf, 1, 0) == 0);
	long got = 0;
	while ((n = read(p[0], buf, sizeof(buf))) > 0)
		got += n;
	CHECK(n == -1 && errno == EAGAIN && got == total);
	/* F_SETFL clears O_NONBLOCK on the description. */
	CHECK(fcntl(p[0], F_SETFL, 0) == 0 && (fcntl(p[0], F_GETFL) & O_NONBLOCK) == 0);
	close(p[0]), close(p[1]);
	say("O_NONBLOCK: EAGAIN on an empty read and a full write, every byte read back\n");
}

static void test_epipe(void)
{
	int p[2];
	CHECK(signal(SIGPIPE, SIG_IGN) != SIG_ERR);
	CHECK(pipe(p) == 0);
	close(p[0]);
	CHECK_ERR(write(p[1], "x", 1), EPIPE);
	struct pollfd pf = {p[1], POLLOUT, 0};
	CHECK(poll(&pf, 1, 0) == 1 && (pf.revents & POLLERR));
	close(p[1]);
	say("EPIPE after the last reader closed (SIGPIPE ignored), POLLERR on the write end\n");
}

struct blk {
	int fd;
	int done;
	long n;
};

static void *blocked_reader(void *arg)
{
	struct blk *b = arg;
	char buf[64];
	b->n = read(b->fd, buf, sizeof(buf));
	__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *blocked_writer(void *arg)
{
	struct blk *b = arg;
	static char big[8192];
	b->n = write(b->fd, big, sizeof(big));
	__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_blocking(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	struct blk b = {p[0], 0, 0};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, blocked_reader, &b) == 0);
	sleep_ms(50);
	CHECK(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE) == 0);
	CHECK(write(p[1], "wake", 4) == 4);
	pthread_join(t, NULL);
	CHECK(b.n == 4);
	/* A reader blocked on an empty pipe sees EOF when the writer closes. */
	b.done = 0;
	CHECK(pthread_create(&t, NULL, blocked_reader, &b) == 0);
	sleep_ms(20);
	close(p[1]);
	pthread_join(t, NULL);
	CHECK(b.n == 0);
	close(p[0]);

	/* A writer blocked on a full pipe continues when the reader drains it. */
	CHECK(pipe(p) == 0);
	CHECK(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
	char buf[4096];
	long total = 0;
	ssize_t n;
	while ((n = write(p[1], buf, sizeof(buf))) > 0)
		total += n;
	CHECK(fcntl(p[1], F_SETFL, 0) == 0);
	struct blk w = {p[1], 0, 0};
	CHECK(pthread_create(&t, NULL, blocked_writer, &w) == 0);
	sleep_ms(50);
	CHECK(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE) == 0);
	long got = 0;
	while (got < total + 8192) {
		n = read(p[0], buf, sizeof(buf));
		CHECK(n > 0);
		got += n;
	}
	pthread_join(t, NULL);
	CHECK(w.n == 8192 && got == total + 8192);
	close(p[0]), close(p[1]);
	say("a blocked reader wakes for data and for EOF; a blocked writer wakes when the reader drains\n");
}

#define WRITERS 4
#define RECORDS 300

struct writer {
	int fd;
	int id;
	int cpu;
};

static void *atomic_writer(void *arg)
{
	struct writer *w = arg;
	if (w->cpu >= 0)
		ut_pin(w->cpu);
	char rec[PIPE_BUF];
	for (int i = 0; i < RECORDS; i++) {
		memset(rec, 'A' + w->id, sizeof(rec));
		memcpy(rec, &i, sizeof(i));
		CHECK(write(w->fd, rec, sizeof(rec)) == sizeof(rec));
	}
	return NULL;
}

static void test_atomic_writes(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	int cpus[64];
	int ncpu = ut_cpus(cpus, 64);
	pthread_t t[WRITERS];
	struct writer w[WRITERS];
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){p[1], i, ncpu > 1 ? cpus[i % ncpu] : -1};
		CHECK(pthread_create(&t[i], NULL, atomic_writer, &w[i]) == 0);
	}
	static char rec[PIPE_BUF];
	int next[WRITERS] = {0};
	long bytes = 0;
	for (int r = 0; r < WRITERS * RECORDS; r++) {
		size_t have = 0;
		while (have < sizeof(rec)) {
			ssize_t n = read(p[0], rec + have, sizeof(rec) - have);
			CHECK(n > 0);
			have += n;
			bytes += n;
		}
		int id = rec[sizeof(int)] - 'A', seq;
		CHECK(id >= 0 && id < WRITERS);
		memcpy(&seq, rec, sizeof(seq));
		CHECK(seq == next[id]);
		next[id]++;
		for (size_t i = sizeof(int); i < sizeof(rec); i++)
			if (rec[i] != 'A' + id)
				ut_fail("record %d of writer %d is mixed at byte %zu", seq, id, i);
	}
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(t[i], NULL);
		CHECK(next[i] == RECORDS);
	}
	close(p[1]);
	char x;
	CHECK(read(p[0], &x, 1) == 0);
	close(p[0]);
	CHECK(bytes == (long)WRITERS * RECORDS * PIPE_BUF);
	say("%d writers x %d records of PIPE_BUF bytes: each arrived whole and in its writer's order, %ld bytes\n", WRITERS, RECORDS, bytes);
}

static void *late_writer(void *arg)
{
	sleep_ms(30);
	CHECK(write(*(int *)arg, "z", 1) == 1);
	return NULL;
}

static void test_poll_select(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	struct pollfd pf[2] = {{p[0], POLLIN, 0}, {p[1], POLLOUT, 0}};
	CHECK(poll(pf, 1, 30) == 0 && pf[0].revents == 0);
	CHECK(poll(pf, 2, 0) == 1 && pf[1].revents == POLLOUT);
	CHECK(write(p[1], "y", 1) == 1);
	CHECK(poll(pf, 2, -1) == 2 && pf[0].revents == POLLIN && pf[1].revents == POLLOUT);
	struct timespec ts = {0, 10000000};
	CHECK(ppoll(pf, 1, &ts, NULL) == 1 && pf[0].revents == POLLIN);
	struct pollfd bad = {999, POLLIN, 0};
	CHECK(poll(&bad, 1, 0) == 1 && bad.revents == POLLNVAL);

	fd_set r, w;
	FD_ZERO(&r);
	FD_ZERO(&w);
	FD_SET(p[0], &r);
	FD_SET(p[1], &w);
	struct timeval tv = {0, 0};
	CHECK(select(p[1] + 1, &r, &w, NULL, &tv) == 2 && FD_ISSET(p[0], &r) && FD_ISSET(p[1], &w));
	char c;
	CHECK(read(p[0], &c, 1) == 1);
	FD_ZERO(&r);
	FD_SET(p[0], &r);
	tv = (struct timeval){0, 20000};
	CHECK(select(p[0] + 1, &r, NULL, NULL, &tv) == 0 && !FD_ISSET(p[0], &r));
	FD_ZERO(&r);
	FD_SET(p[0], &r);
	ts = (struct timespec){0, 20000000};
	CHECK(pselect(p[0] + 1, &r, NULL, NULL, &ts, NULL) == 0);
	FD_ZERO(&r);
	FD_SET(60, &r); /* closed, below the first table size: Linux ignores bits beyond its table */
	tv = (struct timeval){0, 0};
	CHECK_ERR(select(61, &r, NULL, NULL, &tv), EBADF);

	/* A poll without timeout wakes for a write from another thread. */
	pthread_t t;
	CHECK(pthread_create(&t, NULL, late_writer, &p[1]) == 0);
	pf[0] = (struct pollfd){p[0], POLLIN, 0};
	CHECK(poll(pf, 1, -1) == 1 && pf[0].revents == POLLIN);
	pthread_join(t, NULL);
	FD_ZERO(&r);
	FD_SET(p[0], &r);
	CHECK(select(p[0] + 1, &r, NULL, NULL, NULL) == 1);
	CHECK(read(p[0], &c, 1) == 1 && c == 'z');
	close(p[1]);
	pf[0] = (struct pollfd){p[0], POLLIN, 0};
	CHECK(poll(pf, 1, -1) == 1 && pf[0].revents == POLLHUP);
	close(p[0]);
	say("poll, ppoll, select, pselect: timeouts, readiness, POLLNVAL, EBADF, wake-up by another thread, POLLHUP\n");
}

int main(void)
{
	ut_start("pipes");
	test_basics();
	test_nonblocking();
	test_epipe();
	test_blocking();
	test_atomic_writes();
	test_poll_select();
	ut_ok();
}
