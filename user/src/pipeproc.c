/*
 * pipeproc [N]: pipe traffic between processes, every byte counted, first with every process on
 * one CPU (each hand-off switches address space), then with the parent on one CPU and its children
 * spread over the others (on one CPU: the same program, all on that CPU; where they ran is
 * information). Two patterns per placement:
 *
 *   many to one  WRITERS child processes share one pipe and each writes N records of their own
 *                sizes (7 to PIPE_BUF bytes: a header with the writer, the length and a sequence
 *                number, then a payload made of both). Writes up to PIPE_BUF are atomic, so the
 *                parent, reading in pieces of varying size, must find every record whole, each
 *                writer's in order, and EOF once the last writer exited: as many records and bytes
 *                per writer as it computed it would send.
 *   one to one   the parent writes a stream in chunks of up to 3 x PIPE_BUF (not atomic: a chunk
 *                may be split, never lost or reordered) to a reader child, which reads with
 *                buffers of its own sizes until EOF and sends its byte count and checksum back
 *                through a second pipe.
 *
 * Every child is reaped with status 0. The lines compared give the counts, which depend on N only.
 */
#include <limits.h>
#include <sys/wait.h>

#include "ut.h"

#define WRITERS 3
#define HEADER 7

static int parent_cpu;
static int ncpus, cpus[256];

/* The size of writer w's record i: a spread over 7..PIPE_BUF with many small ones. */
static size_t record_size(int w, long i)
{
	uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ULL + (uint64_t)w * 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	size_t span = (x & 3) == 0 ? PIPE_BUF - HEADER : 200;
	return HEADER + (size_t)((x >> 8) % (span + 1));
}

static unsigned char payload_byte(int w, long i, size_t k)
{
	return (unsigned char)(w * 61 + i * 7 + k);
}

static void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t r = write(fd, p, n);
		if (r <= 0)
			ut_fail("write: %s", r < 0 ? strerror(errno) : "0 bytes");
		p += r;
		n -= (size_t)r;
	}
}

/* Pins the calling process to the CPU of its role: 0 the parent, 1 + i child i. */
static void place(int across, int role)
{
	int cpu = across ? cpus[role % ncpus] : cpus[0];
	int got = ut_pin(cpu);
	if (role == 0)
		parent_cpu = got;
}

static void writer(int w, long n, int fd, int across)
{
	place(across, 1 + w);
	unsigned char rec[PIPE_BUF];
	for (long i = 0; i < n; i++) {
		size_t len = record_size(w, i);
		rec[0] = (unsigned char)w;
		rec[1] = (unsigned char)(len & 0xff);
		rec[2] = (unsigned char)(len >> 8);
		memcpy(rec + 3, &(uint32_t){(uint32_t)i}, 4);
		for (size_t k = HEADER; k < len; k++)
			rec[k] = payload_byte(w, i, k);
		/* One write of at most PIPE_BUF bytes: all of it or nothing, never split. */
		ssize_t r = write(fd, rec, len);
		if (r != (ssize_t)len)
			_exit(10 + w);
	}
	_exit(0);
}

static void reap(pid_t pid, const char *who)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		ut_fail("%s ended with status %#x", who, status);
}

static void many_to_one(const char *label, int across, long n)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t pids[WRITERS];
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		CHECK(pids[w] >= 0);
		if (pids[w] == 0) {
			close(p[0]);
			writer(w, n, p[1], across);
		}
	}
	/* The children hold the only write ends now: EOF comes when the last of them exits. */
	close(p[1]);
	place(across, 0);
	long next[WRITERS] = {0}, want_bytes = 0, got_bytes = 0;
	for (int w = 0; w < WRITERS; w++)
		for (long i = 0; i < n; i++)
			want_bytes += (long)record_size(w, i);
	static unsigned char buf[4 * PIPE_BUF];
	size_t have = 0, piece = 1;
	for (;;) {
		/* Reads of varying size: a record may arrive in several of them. */
		piece = piece * 5 % 4093 + 1;
		size_t want = piece < sizeof(buf) - have ? piece : sizeof(buf) - have;
		ssize_t r = read(p[0], buf + have, want);
		CHECK(r >= 0);
		if (r == 0)
			break;
		have += (size_t)r;
		got_bytes += r;
		size_t off = 0;
		while (have - off >= HEADER) {
			unsigned char *rec = buf + off;
			int w = rec[0];
			size_t len = rec[1] | (size_t)rec[2] << 8;
			if (w >= WRITERS || len < HEADER || len > PIPE_BUF)
				ut_fail("%s: a broken header after %ld bytes", label, got_bytes);
			if (have - off < len)
				break;
			uint32_t seq;
			memcpy(&seq, rec + 3, 4);
			if (seq != next[w] || len != record_size(w, seq))
				ut_fail("%s: writer %d: record %u (%zu bytes) where %ld was due", label, w, seq, len, next[w]);
			for (size_t k = HEADER; k < len; k++)
				if (rec[k] != payload_byte(w, seq, k))
					ut_fail("%s: writer %d record %u: a foreign byte at %zu (interleaved)", label, w, seq, k);
			next[w]++;
			off += len;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	close(p[0]);
	CHECK(have == 0);
	for (int w = 0; w < WRITERS; w++) {
		reap(pids[w], "a writer");
		if (next[w] != n)
			ut_fail("%s: writer %d: %ld records of %ld", label, w, next[w], n);
	}
	CHECK(got_bytes == want_bytes);
	say("pipeproc: %s: %d writer processes x %ld records, %ld bytes read whole and in order, then EOF\n", label,
	    WRITERS, n, got_bytes);
}

static void one_to_one(const char *label, int across, long n)
{
	int down[2], up[2];
	CHECK(pipe(down) == 0 && pipe(up) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(down[1]);
		close(up[0]);
		place(across, 1);
		static unsigned char in[3 * PIPE_BUF];
		uint64_t bytes = 0, sum = 0;
		size_t piece = 3;
		for (;;) {
			piece = piece * 7 % sizeof(in) + 1;
			ssize_t r = read(down[0], in, piece);
			if (r < 0)
				_exit(2);
			if (r == 0)
				break;
			for (ssize_t k = 0; k < r; k++)
				sum = sum * 31 + in[k] + (bytes + (uint64_t)k);
			bytes += (uint64_t)r;
		}
		uint64_t report[2] = {bytes, sum};
		write_all(up[1], report, sizeof(report));
		_exit(0);
	}
	close(down[0]);
	close(up[1]);
	place(across, 0);
	static unsigned char out[3 * PIPE_BUF];
	uint64_t bytes = 0, sum = 0;
	size_t chunk = 1;
	for (long i = 0; i < n; i++) {
		chunk = chunk * 13 % sizeof(out) + 1;
		for (size_t k = 0; k < chunk; k++) {
			out[k] = (unsigned char)(i * 3 + k);
			sum = sum * 31 + out[k] + (bytes + k);
		}
		write_all(down[1], out, chunk);
		bytes += chunk;
	}
	close(down[1]);
	uint64_t report[2];
	CHECK(read(up[0], report, sizeof(report)) == sizeof(report));
	close(up[0]);
	reap(pid, "the reader");
	if (report[0] != bytes || report[1] != sum)
		ut_fail("%s: the reader got %llu bytes (checksum %#llx), %llu were sent (%#llx)", label,
			(unsigned long long)report[0], (unsigned long long)report[1], (unsigned long long)bytes,
			(unsigned long long)sum);
	say("pipeproc: %s: %llu bytes in %ld chunks of up to 3 x PIPE_BUF to a reader process, every one counted\n", label,
	    (unsigned long long)bytes, n);
}

int main(int argc, char **argv)
{
	ut_start("pipeproc");
	long n = ut_arg(argc, argv, 1, 4000);
	ncpus = ut_cpus(cpus, 256);
	CHECK(ncpus > 0);
	many_to_one("one CPU", 0, n);
	one_to_one("one CPU", 0, n);
	info("one CPU: every process on CPU %d\n", parent_cpu);
	many_to_one("across CPUs", 1, n);
	one_to_one("across CPUs", 1, n);
	info("across CPUs: parent on CPU %d, children round the %d allowed CPUs from CPU %d\n", parent_cpu, ncpus, cpus[1 % ncpus]);
	ut_ok();
}
