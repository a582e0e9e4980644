/* hello: the smallest program, one write and exit 0: the first thing a new loader runs. */
#include "ut.h"

int main(void)
{
	ut_start("hello");
	say("hello from user space\n");
	ut_ok();
}
