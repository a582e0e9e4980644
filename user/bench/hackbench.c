/*
 * hackbench: G groups, each of S senders and S receivers; every sender writes M 64-byte messages
 * to every receiver of its group over that receiver's pipe, every receiver reads S * M messages.
 * Senders and receivers are processes (fork) or, with "threads", threads of this process; none is
 * pinned, so they spread over every CPU. A window holder on each other CPU opens the tag there.
 * Per message. Conservation: every receiver got exactly S * M messages, each intact.
 *
 * One lap (gb_row), unlike the other programs: the run is one burst, not a loop of like
 * operations. A receiver's pipe holds all its S * M messages unread, so the senders write theirs
 * in the first moments, and laps taken at the receivers' eighths (tried) measured the draining of
 * full pipes: 40 ns per message on the host where the whole run takes 1500 to 2000.
 *
 *     hackbench [M [G [threads]]]
 */
#include <sys/wait.h>

#include "gb.h"

#define SENDERS 4
#define MSG 64

static long messages;
static int use_threads;

static void sender(int *fds)
{
	char buf[MSG];
	memset(buf, 's', sizeof(buf));
	for (long m = 0; m < messages; m++)
		for (int r = 0; r < SENDERS; r++)
			if (write(fds[r], buf, MSG) != MSG)
				ut_fail("hackbench write: %s", strerror(errno));
}

/* Returns the number of whole, intact messages read. */
static long receiver(int fd)
{
	char buf[MSG];
	long got = 0;
	for (long m = 0; m < SENDERS * messages; m++) {
		size_t have = 0;
		while (have < MSG) {
			ssize_t r = read(fd, buf + have, MSG - have);
			if (r <= 0)
				ut_fail("hackbench read: %s", r == 0 ? "end of file" : strerror(errno));
			have += (size_t)r;
		}
		got += buf[0] == 's' && buf[MSG - 1] == 's';
	}
	return got;
}

struct worker {
	pthread_t thread;
	pid_t pid;
	int is_sender, fd;
	int *fds;
	long got;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	if (w->is_sender)
		sender(w->fds);
	else
		w->got = receiver(w->fd);
	return NULL;
}

static void start(struct worker *w)
{
	if (use_threads) {
		CHECK(pthread_create(&w->thread, NULL, worker_main, w) == 0);
		return;
	}
	w->pid = fork();
	CHECK(w->pid >= 0);
	if (w->pid == 0) {
		worker_main(w);
		_exit(w->is_sender || w->got == SENDERS * messages ? 0 : 1);
	}
}

static int finish(struct worker *w)
{
	if (use_threads) {
		CHECK(pthread_join(w->thread, NULL) == 0);
		return w->is_sender || w->got == SENDERS * messages;
	}
	int status;
	CHECK(waitpid(w->pid, &status, 0) == w->pid);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
	ut_start("hackbench");
	messages = gb_iterations(argc, argv, 100);
	int groups = argc > 2 ? atoi(argv[2]) : 2;
	use_threads = argc > 3 && strcmp(argv[3], "threads") == 0;
	if (groups < 1)
		groups = 1;
	int nworkers = groups * 2 * SENDERS;
	struct worker *w = calloc((size_t)nworkers, sizeof(*w));
	int *fds = calloc((size_t)groups * SENDERS, sizeof(int));
	CHECK(w != NULL && fds != NULL);

	int tag = use_threads ? TAG_HACKBENCH_THREADS : TAG_HACKBENCH;
	gb_pin(0);
	struct gb_holder *holders = gb_hold_begin(tag, 0);
	/* Unpin: the workers inherit the whole machine. */
	cpu_set_t all;
	CPU_ZERO(&all);
	for (int cpu = 0; cpu < gb_cpus(); cpu++)
		CPU_SET(cpu, &all);
	gb_begin(tag);
	struct gb_clock t0 = gb_now();
	for (int g = 0; g < groups; g++) {
		for (int r = 0; r < SENDERS; r++) {
			int p[2];
			CHECK(pipe(p) == 0);
			struct worker *rw = &w[g * 2 * SENDERS + r];
			rw->fd = p[0];
			fds[g * SENDERS + r] = p[1];
		}
		for (int s = 0; s < SENDERS; s++) {
			struct worker *sw = &w[g * 2 * SENDERS + SENDERS + s];
			sw->is_sender = 1;
			sw->fds = &fds[g * SENDERS];
		}
	}
	CHECK(sched_setaffinity(0, sizeof(all), &all) == 0);
	for (int i = 0; i < nworkers; i++)
		start(&w[i]);
	int good = 0;
	for (int i = 0; i < nworkers; i++)
		good += finish(&w[i]);
	struct gb_clock t1 = gb_now();
	gb_pin(0);
	gb_end(tag);
	gb_hold_end(holders, 0);
	CHECK(good == nworkers);
	long total = (long)groups * SENDERS * SENDERS * messages;
	gb_row(use_threads ? "hackbench_threads" : "hackbench_procs", tag, total, t0, t1);
	ut_ok();
}
