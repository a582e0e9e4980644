/*
 * console: write, writev and read on the console descriptors, and ioctl TIOCGWINSZ.
 *
 * Under the host runner stdout is a pipe and stdin /dev/null; in our kernel both are the serial
 * console. Only what holds for both is asserted: byte counts, zero-length calls, bad descriptors,
 * bad pointers and bad vector counts. Whether fd 1 is a terminal is printed as information.
 * (Run by hand with stdout on /dev/null it fails: that device never reads the buffer, so a bad
 * pointer is no EFAULT there.)
 */
#include <sys/ioctl.h>
#include <sys/uio.h>

#include "ut.h"

int main(void)
{
	ut_start("console");

	fflush(stdout);
	static const char line[] = "write: one line\n";
	CHECK(write(1, line, sizeof(line) - 1) == (ssize_t)(sizeof(line) - 1));
	CHECK(write(1, line, 0) == 0);
	CHECK_ERR(write(99, line, 1), EBADF);
	CHECK_ERR(write(-1, line, 1), EBADF);
	CHECK_RAW(rsys3(SYS_write, 1, 8, 5), EFAULT);
	CHECK_RAW(rsys3(SYS_write, 1, 0xffff800000000000UL, 5), EFAULT);

	struct iovec iov[4] = {
		{ .iov_base = "writev: ", .iov_len = 8 },
		{ .iov_base = "three ", .iov_len = 6 },
		{ .iov_base = NULL, .iov_len = 0 },
		{ .iov_base = "pieces\n", .iov_len = 7 },
	};
	CHECK(writev(1, iov, 4) == 21);
	CHECK(writev(1, iov, 0) == 0);
	CHECK_ERR(writev(1, iov, -1), EINVAL);
	CHECK_ERR(writev(1, iov, 1025), EINVAL);
	CHECK_ERR(writev(42, iov, 4), EBADF);
	CHECK_RAW(rsys3(SYS_writev, 1, 16, 2), EFAULT);

	char buf[16];
	CHECK(read(0, buf, 0) == 0);
	CHECK_ERR(read(99, buf, 1), EBADF);
	struct iovec riov = { .iov_base = buf, .iov_len = 0 };
	CHECK(readv(0, &riov, 1) == 0);
	CHECK_ERR(readv(0, &riov, -1), EINVAL);
	say("read: zero-length reads return 0, bad descriptors EBADF\n");

	struct winsize ws;
	errno = 0;
	int r = ioctl(1, TIOCGWINSZ, &ws);
	CHECK(r == 0 || errno == ENOTTY);
	info("ioctl(1, TIOCGWINSZ) = %d (%s)\n", r, r ? strerror(errno) : "a terminal");
	CHECK_ERR(ioctl(99, TIOCGWINSZ, &ws), EBADF);
	say("ioctl: TIOCGWINSZ on a bad descriptor is EBADF\n");

	/* stderr goes to the same place in the kernel; the host runner keeps it apart. */
	CHECK(write(2, "", 0) == 0);
	ut_ok();
}
