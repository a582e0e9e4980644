/*
 * ttyctl: the terminal ioctls a shell and its line editor use, from the foreground process group
 * of a session that owns the terminal: TCGETS, TCSETS, TCSETSW and TCSETSF round trips (canonical
 * and raw settings), FIONREAD with nothing typed, TIOCGWINSZ/TIOCSWINSZ with the SIGWINCH a change
 * (and only a change) sends the foreground group, TIOCGPGRP; ENOTTY on a device and a pipe that are
 * not terminals, EBADF, EFAULT. Every setting is restored before the session gives the terminal up.
 *
 * The terminal is a new pty where the system has one (Linux); on a system without ptys it is
 * /dev/console, taken with TIOCSCTTY's force flag (this kernel), as ttyjob does.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

#include "ut.h"
#include "uttty.h"

static atomic_int winches;

static void on_winch(int sig)
{
	(void)sig;
	atomic_fetch_add(&winches, 1);
}

/* The fields both kinds of terminal keep as set: modes and the control characters we change. */
static int same_settings(const struct termios *a, const struct termios *b)
{
	return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_lflag == b->c_lflag &&
	       a->c_cc[VERASE] == b->c_cc[VERASE] && a->c_cc[VKILL] == b->c_cc[VKILL] &&
	       a->c_cc[VMIN] == b->c_cc[VMIN] && a->c_cc[VTIME] == b->c_cc[VTIME];
}

static void termios_round_trips(int fd)
{
	struct termios saved, t, got;
	CHECK(ioctl(fd, TCGETS, &saved) == 0);
	t = saved;
	t.c_cc[VERASE] = 0x08;
	t.c_cc[VKILL] = 0x0b;
	CHECK(ioctl(fd, TCSETS, &t) == 0);
	CHECK(ioctl(fd, TCGETS, &got) == 0 && same_settings(&got, &t));
	/* Raw, as a line editor sets it, through TCSETSW (after output drains). */
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG | IEXTEN);
	t.c_iflag &= ~(tcflag_t)(ICRNL | IXON);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	CHECK(ioctl(fd, TCSETSW, &t) == 0);
	CHECK(ioctl(fd, TCGETS, &got) == 0 && same_settings(&got, &t) && !(got.c_lflag & ICANON));
	/* Back to the saved settings through TCSETSF (pending input dropped). */
	CHECK(ioctl(fd, TCSETSF, &saved) == 0);
	CHECK(ioctl(fd, TCGETS, &got) == 0 && same_settings(&got, &saved));
	CHECK_RAW(rsys3(SYS_ioctl, fd, TCGETS, 8), EFAULT);
	CHECK_RAW(rsys3(SYS_ioctl, fd, TCSETS, 8), EFAULT);
	say("TCGETS, TCSETS, TCSETSW (raw), TCSETSF (restored): each reads back as set; EFAULT\n");
}

static void window_size(int fd)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_winch;
	CHECK(sigaction(SIGWINCH, &sa, NULL) == 0);
	struct winsize saved, w = {0}, got;
	CHECK(ioctl(fd, TIOCGWINSZ, &saved) == 0);
	w.ws_row = saved.ws_row == 33 ? 34 : 33;
	w.ws_col = 101;
	CHECK(ioctl(fd, TIOCSWINSZ, &w) == 0);
	CHECK(ioctl(fd, TIOCGWINSZ, &got) == 0 && got.ws_row == w.ws_row && got.ws_col == 101);
	CHECK(atomic_load(&winches) == 1);
	/* The same size again: no change, no signal. */
	CHECK(ioctl(fd, TIOCSWINSZ, &w) == 0);
	CHECK(atomic_load(&winches) == 1);
	CHECK(ioctl(fd, TIOCSWINSZ, &saved) == 0);
	CHECK(ioctl(fd, TIOCGWINSZ, &got) == 0 && got.ws_row == saved.ws_row && got.ws_col == saved.ws_col);
	CHECK(atomic_load(&winches) == 2);
	CHECK_RAW(rsys3(SYS_ioctl, fd, TIOCSWINSZ, 8), EFAULT);
	sa.sa_handler = SIG_DFL;
	CHECK(sigaction(SIGWINCH, &sa, NULL) == 0);
	say("TIOCGWINSZ, TIOCSWINSZ: read back as set; SIGWINCH to the foreground group on a change only\n");
}

static void not_terminals(void)
{
	struct termios t;
	struct winsize w;
	int null = open("/dev/null", O_RDWR);
	CHECK(null >= 0);
	CHECK_ERR(ioctl(null, TCGETS, &t), ENOTTY);
	CHECK_ERR(ioctl(null, TIOCGWINSZ, &w), ENOTTY);
	close(null);
	int p[2];
	CHECK(pipe(p) == 0);
	CHECK_ERR(ioctl(p[0], TCGETS, &t), ENOTTY);
	CHECK_ERR(ioctl(p[1], TIOCSWINSZ, &w), ENOTTY);
	close(p[0]);
	close(p[1]);
	CHECK_ERR(ioctl(999, TCGETS, &t), EBADF);
	say("ENOTTY on /dev/null and a pipe, EBADF on a closed descriptor\n");
}

static int leader(const char *path, int force)
{
	CHECK(setsid() == getpid());
	int fd = open(path, O_RDWR | O_NOCTTY);
	CHECK(fd >= 0);
	CHECK(ioctl(fd, TIOCSCTTY, force) == 0);
	CHECK(isatty(fd));
	pid_t pg = 0;
	CHECK(ioctl(fd, TIOCGPGRP, &pg) == 0 && pg == getpid());
	say("session leader: isatty, TIOCGPGRP is its group\n");
	int n = -1;
	CHECK(ioctl(fd, FIONREAD, &n) == 0 && n == 0);
	CHECK_RAW(rsys3(SYS_ioctl, fd, FIONREAD, 8), EFAULT);
	say("FIONREAD: 0 with nothing typed; EFAULT\n");
	termios_round_trips(fd);
	window_size(fd);
	not_terminals();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	CHECK(sigaction(SIGHUP, &sa, NULL) == 0);
	CHECK(ioctl(fd, TIOCNOTTY) == 0);
	return 0;
}

int main(void)
{
	ut_terminal_main("ttyctl", leader);
}
