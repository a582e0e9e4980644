//! The Linux user ABI as portable data, host-tested: everything the system-call layer needs that does
//! not touch hardware.
//!
//! - [`elf`]: the load plan of a static executable (`ET_EXEC` or static-PIE);
//! - [`stack`]: the initial user stack (argv, envp, auxv, strings) as bytes plus the entry `rsp`;
//! - [`script`]: `#!` interpreter lines for `execve`;
//! - [`cpio`]: the initramfs reader (cpio "newc");
//! - [`tty`]: the terminal line discipline (canonical and raw modes, echo, ISIG, termios bytes);
//! - [`fdtable`]: a process's descriptor table (lowest free number, the dup family, close-on-exec);
//! - [`futex`]: the futex wait queues (keys, bitsets, wake and requeue) as a pure data structure;
//! - [`jobs`]: the process tree with groups and sessions: fork, exit, zombies, wait selection,
//!   stop/continue reports, `setpgid`/`setsid` rules, `kill` targets;
//! - [`vma`]: the set of user mappings (`mmap` with `MAP_FIXED` replacement, `munmap`, `mprotect`,
//!   `mremap`, `brk`), which says what the kernel must unmap or move;
//! - [`pipe`]: a pipe's buffer with Linux's semantics (atomic `PIPE_BUF` writes, EOF, `EPIPE`);
//! - [`ramfs`]: the RAM filesystem at `/` (inodes, path resolution, Linux's errno for each failure,
//!   `stat` and `getdents64` records), filled from the initramfs;
//! - [`openfile`]: open file descriptions of the RAM filesystem: `openat`'s flag rules, offsets,
//!   `O_APPEND`, `lseek`, `F_GETFL`/`F_SETFL`;
//! - [`signal`]: signal sets, default actions, wait statuses, `sigaction`/`siginfo` bytes, the
//!   restart rule, and the x86-64 signal frame with the checks `rt_sigreturn` applies;
//! - [`procfs`]: the text of `/proc` files in Linux's formats (what busybox `ps`, `top`, `free`
//!   read), the load average, and the kernel's own counter file;
//! - [`poll`]: `pollfd` records, `fd_set` bitmaps and select's mapping to poll events, timeouts;
//! - [`timer`]: `alarm` and `setitimer(ITIMER_REAL)` with Linux's rounding;
//! - [`limits`]: resource limits with Linux's defaults, and `struct sysinfo`;
//! - [`linux`]: Linux's numbers, errno values and struct layouts (from `linux-raw-sys`), and the names
//!   of system calls for log lines.
//!
//! Neighbours: the kernel's process and syscall services use these under their locks; `arch` does the
//! copies to and from user memory. Nothing here is unsafe, and nothing panics on user input.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cpio;
pub mod elf;
pub mod fdtable;
pub mod futex;
pub mod jobs;
pub mod limits;
pub mod linux;
pub mod openfile;
pub mod pipe;
pub mod poll;
pub mod procfs;
pub mod ramfs;
pub mod script;
pub mod signal;
pub mod stack;
pub mod timer;
pub mod tty;
pub mod vma;

/// This kernel's own system call (Linux has no such number and answers `ENOSYS`): copy the TLB
/// counters summed over the online CPUs since boot, three `u64`s (address-space changes that
/// needed TLB work, shootdown IPIs sent for them, changes that sent none), to the address in the
/// first argument. The user tests print them as information (`# ` lines), e.g. IPIs per change.
pub const SYS_KERNEL_TLB_COUNTERS: u32 = 0x4b54_0001;

/// The page size of every user mapping.
pub const PAGE_SIZE: u64 = 4096;

/// The end (exclusive) of the user address range: one page below the canonical boundary
/// `0x0000_8000_0000_0000`, as Linux's `TASK_SIZE_MAX` with 4-level paging. The last canonical page is
/// never mapped, so a `syscall` instruction at the very top of user memory leaves an `rcx` that is
/// still canonical (`USER_TOP` itself) and can never be turned into a `sysret` to a non-canonical
/// address (CVE-2012-0217).
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;
